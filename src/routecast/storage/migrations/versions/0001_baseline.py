"""Baseline: the tables of the releases before Alembic, created where missing.

Databases made by earlier releases (each module ran its own ``CREATE TABLE IF NOT EXISTS``;
the request log's ``PRAGMA user_version`` 1 or 2) may hold any subset of these tables, and a
version-1 request log lacks the columns version 2 added. This revision creates what is
missing (tables, the version-2 columns, indexes) and changes nothing that exists: every row
is kept. A new database gets all of it.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tables() -> list[sa.Table]:
    """The tables as this revision defines them (frozen: later changes are new revisions)."""
    meta = sa.MetaData()
    f, i, t = sa.Float, sa.Integer, sa.Text
    return [
        sa.Table(
            "requests", meta,
            sa.Column("id", RowId, primary_key=True, autoincrement=True),
            sa.Column("ts", f, nullable=False), sa.Column("endpoint", t, nullable=False),
            sa.Column("model", t), sa.Column("route", t, nullable=False),
            sa.Column("status", i, nullable=False), sa.Column("stream", i, nullable=False),
            sa.Column("prompt_tokens", i, nullable=False),
            sa.Column("completion_tokens", i, nullable=False),
            sa.Column("cached_tokens", i, nullable=False),
            sa.Column("reasoning_tokens", i, nullable=False),
            sa.Column("usage_estimated", i, nullable=False),
            sa.Column("cost_usd", f, nullable=False), sa.Column("baseline_model", t),
            sa.Column("baseline_cost_usd", f, nullable=False),
            sa.Column("latency_s", f, nullable=False), sa.Column("routing_s", f, nullable=False),
            sa.Column("error", t), sa.Column("session", t), sa.Column("prompt", t),
            # Version 2 of the request log (added to older files below).
            sa.Column("excluded", t), sa.Column("request_id", t), sa.Column("key_name", t),
            sa.Column("trace", t),
            sa.Index("requests_ts", "ts"), sa.Index("requests_request_id", "request_id")),
        sa.Table(
            "api_keys", meta,
            sa.Column("id", t, primary_key=True), sa.Column("name", t, nullable=False),
            sa.Column("salt", sa.LargeBinary, nullable=False),
            sa.Column("hash", sa.LargeBinary, nullable=False), sa.Column("budget_usd", f),
            sa.Column("spent_usd", f, nullable=False, server_default="0"),
            sa.Column("rpm", i), sa.Column("created", f, nullable=False),
            sa.Column("revoked", i, nullable=False, server_default="0"),
            sa.UniqueConstraint("name", name="api_keys_name_key")),
        sa.Table(
            "labels", meta,
            sa.Column("id", RowId, primary_key=True, autoincrement=True),
            sa.Column("ts", f, nullable=False), sa.Column("endpoint", t, nullable=False),
            sa.Column("prompt", t, nullable=False), sa.Column("model", t, nullable=False),
            sa.Column("quality", f, nullable=False), sa.Column("cost_usd", f),
            sa.Column("source", t, nullable=False), sa.Column("response_id", t),
            sa.Column("client", t),
            sa.Index("labels_endpoint", "endpoint", "id")),
        sa.Table(
            "learning_spend", meta,
            sa.Column("id", RowId, primary_key=True, autoincrement=True),
            sa.Column("ts", f, nullable=False), sa.Column("endpoint", t, nullable=False),
            sa.Column("kind", t, nullable=False), sa.Column("model", t, nullable=False),
            sa.Column("cost_usd", f, nullable=False)),
        sa.Table(
            "learning_refits", meta,
            sa.Column("id", RowId, primary_key=True, autoincrement=True),
            sa.Column("ts", f, nullable=False), sa.Column("endpoint", t, nullable=False),
            sa.Column("version", i, nullable=False), sa.Column("swapped", i, nullable=False),
            sa.Column("router", t, nullable=False), sa.Column("labels", i, nullable=False),
            sa.Column("scores", t, nullable=False), sa.Column("cost_weight", f, nullable=False),
            sa.Column("seconds", f, nullable=False)),
        sa.Table(
            "responses", meta,
            sa.Column("id", t, primary_key=True), sa.Column("ts", f, nullable=False),
            sa.Column("endpoint", t, nullable=False), sa.Column("conversation", t),
            sa.Column("owner", t), sa.Column("messages", t, nullable=False),
            sa.Column("response", t, nullable=False),
            sa.Index("responses_ts", "ts")),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    have = set(inspector.get_table_names())
    for table in _tables():
        if table.name not in have:
            table.create(bind)
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                # Only nullable columns were ever added to an existing table (version 2).
                assert column.nullable, f"{table.name}.{column.name}"
                op.add_column(table.name, sa.Column(column.name, column.type))
        indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: it holds the data of earlier "
                              "releases")
