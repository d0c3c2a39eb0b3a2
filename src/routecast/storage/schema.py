"""Every table the server stores, in one place: SQLAlchemy Core :data:`metadata`.

The same definitions serve SQLite (the embedded default) and PostgreSQL. Columns keep the
types earlier releases created in SQLite (``REAL`` is :class:`~sqlalchemy.Float`, a double in
both databases; flags are integers 0/1, as the old files hold them), so a file from before
this module reads and writes unchanged. Row ids are ``INTEGER PRIMARY KEY`` (SQLite's rowid)
and ``BIGINT`` identities in PostgreSQL, where a request log can outgrow 2^31 rows.

This module is the schema as the code uses it; the database gets there through the Alembic
revisions in :mod:`routecast.storage.migrations` (``tests/test_storage.py`` checks the two agree).
A change here needs a new revision there.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

#: Constraint names, so that migrations can name them in both databases.
metadata = MetaData(naming_convention={
    "ix": "%(table_name)s_%(column_0_name)s",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "pk": "%(table_name)s_pkey",
})

#: A row id: SQLite's rowid alias (``INTEGER PRIMARY KEY``), a 64-bit identity in PostgreSQL.
RowId = BigInteger().with_variant(Integer(), "sqlite")

requests = Table(
    "requests", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("model", Text),
    Column("route", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("stream", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("usage_estimated", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("baseline_model", Text),
    Column("baseline_cost_usd", Float, nullable=False),
    Column("latency_s", Float, nullable=False),
    Column("routing_s", Float, nullable=False),
    Column("error", Text),
    Column("session", Text),
    Column("prompt", Text),
    Column("excluded", Text),
    Column("request_id", Text),
    Column("key_name", Text),
    Column("trace", Text),
    Index(None, "ts"),
    Index(None, "request_id"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("budget_usd", Float),
    Column("spent_usd", Float, nullable=False, server_default="0"),
    Column("rpm", Integer),
    Column("created", Float, nullable=False),
    Column("revoked", Integer, nullable=False, server_default="0"),
    UniqueConstraint("name"),
)

labels = Table(
    "labels", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("quality", Float, nullable=False),
    Column("cost_usd", Float),
    Column("source", Text, nullable=False),
    Column("response_id", Text),
    Column("client", Text),
    #: A cascade step's signal score (-inf: the signal failed) and the row's sampling weight
    #: (:mod:`routecast.learning.cascade`); NULL for a routed endpoint's labels.
    Column("score", Float),
    Column("weight", Float),
    Index(None, "endpoint", "id"),
)

learning_spend = Table(
    "learning_spend", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("cost_usd", Float, nullable=False),
)

learning_refits = Table(
    "learning_refits", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("swapped", Integer, nullable=False),
    Column("router", Text, nullable=False),
    Column("labels", Integer, nullable=False),
    Column("scores", Text, nullable=False),
    Column("cost_weight", Float, nullable=False),
    Column("seconds", Float, nullable=False),
)

responses = Table(
    "responses", metadata,
    Column("id", Text, primary_key=True),
    Column("ts", Float, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("conversation", Text),
    Column("owner", Text),
    Column("messages", Text, nullable=False),
    Column("response", Text, nullable=False),
    Index(None, "ts"),
)

artifacts = Table(
    "artifacts", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("endpoint", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("publisher", Text),
    UniqueConstraint("endpoint", "kind", "version", name="artifacts_version_key"),
)
