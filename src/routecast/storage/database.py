"""One database for the server's storage, named by a URL: SQLite (the default) or PostgreSQL.

:class:`Database` wraps a SQLAlchemy :class:`~sqlalchemy.engine.Engine`. URLs as users write
them are accepted: ``sqlite:///path/to/file.db`` (or a plain path), ``postgresql://...`` and
``postgres://...`` (both driven by psycopg 3, ``postgresql+psycopg://``). SQLite connections
run in WAL mode with ``synchronous=NORMAL`` (a committed transaction survives a crash of the
process) and a 30-second busy timeout, as the modules that opened SQLite themselves did.

:meth:`Database.open` brings the schema to the newest Alembic revision
(:mod:`routecast.storage.migrate`) unless asked not to; :meth:`Database.open_readonly` opens
an existing database for reading only (``routecast stats``), creating and migrating nothing.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from routecast.errors import ConfigError

#: Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0


def normalize_url(target: str | Path) -> URL:
    """The SQLAlchemy URL of ``target``: a path (a SQLite file) or a database URL as users
    write it (``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``)."""
    if isinstance(target, Path) or "://" not in target:
        return URL.create("sqlite", database=str(Path(target)))
    text = target
    scheme, _, rest = text.partition("://")
    if scheme.lower() in ("postgres", "postgresql"):
        text = f"postgresql+psycopg://{rest}"
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"{_redacted(target)!r} is not a database URL; write "
                          "sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"
                          ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{_redacted(target)!r}: routecast stores in SQLite or PostgreSQL; "
                          "write sqlite:///path/to/file.db or postgresql://user@host:5432/db")
    return url


def _unreachable(db: Database, error: OperationalError) -> ConfigError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    return ConfigError(f"cannot open the database {db.describe()}: {reason}. Fix: check "
                       "storage.url (or the variable storage.url_env names): host, port, "
                       "database name and credentials, and that the server is running")


def _redacted(url: str) -> str:
    """``url`` without its credentials, for messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


class Database:
    """An engine over one database; see the module docstring. Thread-safe (connections come
    from the engine's pool, one per thread at a time)."""

    def __init__(self, url: URL, engine: Engine, *, readonly: bool = False) -> None:
        self.url = url
        self.engine = engine
        self.readonly = readonly

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, target: str | Path | URL, *, migrate: bool = True) -> Database:
        """Open (creating a SQLite file and its folder if needed) and, with ``migrate``, bring
        the schema to the newest revision. A database that cannot be reached is a
        :class:`ConfigError` naming it."""
        url = target if isinstance(target, URL) else normalize_url(target)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        db = cls(url, _engine(url, readonly=False))
        if migrate:
            from routecast.storage.migrate import upgrade

            try:
                upgrade(db)
            except OperationalError as e:
                raise _unreachable(db, e) from None
            finally:
                # No pooled connection outlives the upgrade: a server that forks workers
                # after opening its storage must not share one between processes.
                db.close()
        return db

    @classmethod
    def open_readonly(cls, target: str | Path | URL) -> Database:
        """Open an existing database for reading. A SQLite file is opened ``mode=ro`` (a
        reader can never change or lock what the server writes); a missing file is a
        :class:`ConfigError`."""
        url = target if isinstance(target, URL) else normalize_url(target)
        if url.get_backend_name() == "sqlite":
            path = Path(url.database or "")
            if not path.is_file():
                raise ConfigError(f"no database at {path}. Fix: pass the database the server "
                                  "writes (storage.db in its config) with --db, or the config "
                                  "itself with --config")
        db = cls(url, _engine(url, readonly=True), readonly=True)
        if not db.is_sqlite:
            try:
                db.engine.connect().close()  # fail here, with a message, not on the query
            except OperationalError as e:
                db.close()
                raise _unreachable(db, e) from None
        return db

    # -- use -----------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def path(self) -> Path | None:
        """The SQLite file, or ``None`` for PostgreSQL."""
        return Path(self.url.database) if self.is_sqlite and self.url.database else None

    def describe(self) -> str:
        """The database for messages: a SQLite path, or a PostgreSQL URL without password."""
        path = self.path
        return str(path) if path is not None else self.url.render_as_string(hide_password=True)

    @contextmanager
    def begin(self, *, immediate: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, committed on success. ``immediate``: a transaction
        that reads and then writes; in SQLite it takes the write lock first (``BEGIN
        IMMEDIATE``), so two of them queue instead of failing with "database is locked"."""
        engine = (self.engine.execution_options(sqlite_immediate=True)
                  if immediate and self.is_sqlite else self.engine)
        with engine.begin() as conn:
            yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def close(self) -> None:
        """Close the pool's connections (connections checked out stay usable until closed)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.describe()!r})"


def _engine(url: URL, *, readonly: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, readonly=readonly)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError("PostgreSQL storage needs psycopg 3: pip install 'routecast[scale]' "
                          "(or psycopg[binary])") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 8}
    if readonly:
        kwargs["execution_options"] = {"postgresql_readonly": True}
    return create_engine(url, **kwargs)


def _sqlite_engine(url: URL, *, readonly: bool) -> Engine:
    database = url.database or ":memory:"
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S,
                                    "check_same_thread": False}
    if readonly:
        # A URI opens the file read-only: the dashboard and `routecast stats` cannot write.
        url = url.set(database=f"file:{os.path.abspath(database)}?mode=ro",
                      query={**url.query, "uri": "true"})
    engine = create_engine(url, connect_args=connect_args)

    # SQLAlchemy's recipe for transactions that mean what they say in SQLite: the driver
    # begins none itself (it would not before DDL), and each SQLAlchemy transaction emits
    # BEGIN (BEGIN IMMEDIATE, taking the write lock first, with ``sqlite_immediate``). Then
    # migrations are atomic, and concurrent migrators queue on the lock.
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            # The busy timeout first: switching a new file to WAL takes a lock that a
            # process starting beside this one may hold for a moment.
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if not readonly:
                _wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting out other connections as the busy timeout would.

    SQLite answers "database is locked" at once, without calling its busy handler, when the
    switch cannot take its lock because another connection (a server starting beside this
    one, migrating the new file) holds one: four servers opening one new file together failed
    this way about once in 20 starts (tests/test_storage.py)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def open_database(target: str | Path | Database, *, migrate: bool = True,
                  readonly: bool = False) -> tuple[Database, bool]:
    """``target`` as a :class:`Database` and whether the caller owns it (and must close it):
    a :class:`Database` is used as given; a path or URL is opened (and migrated, unless
    ``readonly``: then opened with :meth:`Database.open_readonly`)."""
    if isinstance(target, Database):
        return target, False
    if readonly:
        return Database.open_readonly(target), True
    return Database.open(target, migrate=migrate), True


def driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' own errors, for code that talks to a driver directly (the request log's
    COPY), where SQLAlchemy does not wrap them. psycopg's count only once it is loaded (by a
    PostgreSQL database), so a SQLite server never imports it (about 20 MiB less)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def missing_table(error: BaseException) -> bool:
    """Whether a database error says a table does not exist (a database written before the
    table's release, read without migrating it)."""
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    return ("no such table" in str(orig)
            or getattr(orig, "sqlstate", None) == "42P01")  # PostgreSQL's undefined_table
