"""Every request the server answers, one row in the ``requests`` table of the server's database
(:mod:`routecast.storage`: a SQLite file by default, or PostgreSQL).

Writes happen off the event loop: :meth:`RequestLog.write` only appends the row to a list (about
a microsecond), and one writer thread inserts the rows in batches, on one SQLAlchemy
connection it keeps, committing as soon as ``batch_rows`` rows are waiting and otherwise every
``batch_ms`` milliseconds, and everything left on :meth:`RequestLog.close`. No request waits on
the database, whichever it is: with PostgreSQL the network round trips of a commit are the
writer thread's, once per batch.

The writer thread shares the process (and the GIL) with the event loop, so its CPU per row is
the server's CPU per request. A batch goes to the driver as plain tuples: in SQLite one
``executemany`` of the insert SQLAlchemy compiles from :data:`~routecast.storage.schema.requests`;
in PostgreSQL one ``COPY ... FROM STDIN`` (psycopg) of the same columns, in the connection's
transaction. SQLAlchemy's own executemany of dictionaries cost 3 to 4 times more CPU per row
(about 21 us a row in SQLite and 29 us in PostgreSQL, against 7 us for either path here; the
raw ``sqlite3`` writer before this cost as much: benchmarks/storage_writes.py, docs/storage.md).

SQLite runs in WAL mode, so ``routecast stats`` can read while the server writes. With
``synchronous=NORMAL`` a committed batch survives a crash of the server process (an OS crash may
lose the last batch; full fsync per batch would cost more than the proxying it logs).
PostgreSQL commits as its server is configured (durable by default).

With ``durable`` on, :meth:`RequestLog.write_durable` returns a future that completes once the
row is committed, and the server sends the response only then: a ``kill -9`` of the server
then loses no row of a response a client received (in SQLite a commit in WAL mode is a
``write()`` to the WAL file, which the OS keeps when the process dies; in PostgreSQL the row is
the database server's once committed). Rows waiting together commit together (group commit),
so under load the cost is shared; the rows of requests still in flight at the kill are lost
with them, and no client saw those answers.

A batch that fails to commit (a full disk, the PostgreSQL server restarting) is kept and
retried with the next batch, up to ``MAX_RETRY_ROWS`` rows; the failure is logged once.

Prompt text is stored only when ``log_prompts`` is on: prompts may hold personal data.

The table is :data:`routecast.storage.schema.requests`; files from releases before the
Alembic migrations (schema version 1 or 2, ``PRAGMA user_version``) are upgraded in place
when the server opens them (:mod:`routecast.storage.migrate`), keeping every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert
from sqlalchemy.exc import SQLAlchemyError

from routecast.backends.transport import json_dumps as dumps
from routecast.storage.database import Database, driver_errors, open_database
from routecast.storage.schema import requests

if TYPE_CHECKING:
    from routecast.backends.trace import Trace

def _write_errors() -> tuple[type[Exception], ...]:
    """What a failed write raises: SQLAlchemy's errors, and the drivers' own (COPY)."""
    return (SQLAlchemyError, *driver_errors())


#: Rows of failed batches kept for the next attempt; beyond this the oldest are dropped.
MAX_RETRY_ROWS = 100_000

COLUMNS = ("ts", "endpoint", "model", "route", "status", "stream", "prompt_tokens",
           "completion_tokens", "cached_tokens", "reasoning_tokens", "usage_estimated",
           "cost_usd", "baseline_model", "baseline_cost_usd", "latency_s", "routing_s",
           "error", "session", "prompt", "excluded", "request_id", "key_name", "trace")

@dataclass(slots=True)
class LogRow:
    """One request; the fields are :data:`COLUMNS`, in order."""

    ts: float
    endpoint: str
    model: str | None
    route: str
    status: int
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    baseline_model: str | None = None
    baseline_cost_usd: float = 0.0
    latency_s: float = 0.0
    routing_s: float = 0.0
    error: str | None = None
    session: str | None = None
    prompt: str | None = None
    excluded: str | None = None
    request_id: str | None = None
    key_name: str | None = None
    trace: Trace | None = None


def _trace_json(trace: Trace | None) -> str | None:
    return None if trace is None else dumps(trace.as_dict()).decode()


def _values(row: LogRow) -> tuple[object, ...]:
    """A row's values in :data:`COLUMNS` order, its flags as 0/1 and its trace as JSON
    (encoded on the writer thread, off the request's path)."""
    v = _AS_TUPLE(row)
    return (*v[:5], int(v[5]), *v[6:10], int(v[10]), *v[11:-1], _trace_json(row.trace))


#: Inserts one batch of :func:`_values` tuples on a connection (in its transaction).
Inserter = Callable[[Connection, list[tuple[object, ...]]], None]


def inserter(db: Database) -> Inserter:
    """The cheapest way to put a batch into ``db``'s ``requests`` (see the module docstring);
    the SQL comes from the schema, not written here."""
    if db.is_sqlite:
        compiled = insert(requests).compile(dialect=db.engine.dialect, column_keys=list(COLUMNS))
        assert tuple(compiled.positiontup or ()) == COLUMNS, compiled.positiontup
        sql = str(compiled)

        def executemany(conn: Connection, batch: list[tuple[object, ...]]) -> None:
            conn.exec_driver_sql(sql, batch)

        return executemany
    quote = db.engine.dialect.identifier_preparer
    copy_sql = (f"COPY {quote.format_table(requests)} "
                f"({', '.join(quote.quote(c) for c in COLUMNS)}) FROM STDIN")

    def copy(conn: Connection, batch: list[tuple[object, ...]]) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(copy_sql) as out:
            for values in batch:
                out.write_row(values)

    return copy


_AS_TUPLE = operator.attrgetter(*COLUMNS)


def prompt_text(body: dict[str, object]) -> str:
    """What ``log_prompts`` stores: the messages (JSON) or the completion prompt."""
    if "messages" in body:
        return json.dumps(body["messages"], ensure_ascii=False)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)


class RequestLog:
    """A background writer of :class:`LogRow` to one database; see the module docstring.

    ``db`` is the server's :class:`~routecast.storage.database.Database` (shared, not closed
    here) or a SQLite path or database URL, opened and migrated by :meth:`start`."""

    def __init__(self, db: str | Path | Database, *, log_prompts: bool = False,
                 batch_rows: int = 256, batch_ms: float = 200.0, durable: bool = False) -> None:
        self.target = db
        self.db: Database | None = db if isinstance(db, Database) else None
        self._owned = False
        self.durable = durable
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.log_prompts = log_prompts
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000.0
        # Rows collect in a list under a lock, and the writer is woken once per full batch or
        # by its timer, not once per row: waking a thread per request costs the event loop two
        # context switches and a GIL hand-off each time.
        self._pending: list[LogRow] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._insert: Inserter | None = None
        self._retry: list[tuple[object, ...]] = []
        self._committing = 0
        #: Rows committed, batches that failed to commit, and rows of failed batches dropped
        #: beyond :data:`MAX_RETRY_ROWS` (lost); read by /metrics.
        self.rows_written = 0
        self.write_errors = 0
        self.rows_dropped = 0
        self.error: BaseException | None = None

    @property
    def path(self) -> Path | None:
        """The SQLite file written to (``None`` for PostgreSQL, or before :meth:`start`)."""
        if self.db is not None:
            return self.db.path
        return None if isinstance(self.target, Database) or "://" in str(self.target) \
            else Path(self.target)

    def start(self) -> None:
        # Open here, not in the thread, so a bad path or an unreachable database fails the
        # server's start-up loudly.
        self.db, self._owned = open_database(self.target if self.db is None else self.db)
        self._insert = inserter(self.db)
        conn = self.db.connect()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(conn,), name="routecast-log",
                                        daemon=True)
        self._thread.start()

    def write(self, row: LogRow) -> None:
        """Queue one row (never blocks on the database); drops the prompt unless prompts are
        logged."""
        if not self.log_prompts:
            row.prompt = None
        with self._lock:
            self._pending.append(row)
            full = len(self._pending) == self.batch_rows
        if full:
            self._wake.set()

    def write_durable(self, row: LogRow) -> asyncio.Future[None]:
        """Queue one row and wake the writer; the future completes once the row is committed
        (or the commit failed: serving goes on, and the failure is logged once)."""
        if not self.log_prompts:
            row.prompt = None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._pending.append(row)
            self._waiters.append((loop, future))
        self._wake.set()
        return future

    def backlog(self) -> int:
        """Rows not yet committed: queued, being committed, or kept from failed batches to
        retry."""
        return len(self._pending) + self._committing + len(self._retry)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, commit and stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._thread = None
        if self._owned and self.db is not None:
            self.db.close()

    def _run(self, conn: Connection) -> None:
        while True:
            self._wake.wait(self.batch_s)
            self._wake.clear()
            # Read before taking the rows: whatever was written before close() is taken below.
            stopping = self._stopping
            with self._lock:
                rows, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
            if rows or self._retry:
                conn = self._commit(conn, [_values(r) for r in rows])
            for loop, future in waiters:
                with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                    loop.call_soon_threadsafe(_resolve, future)
            if stopping:
                break
        conn.close()

    def _commit(self, conn: Connection, batch: list[tuple[object, ...]]) -> Connection:
        """Insert ``batch`` (after the rows of failed batches) in one transaction; returns the
        connection to use next (a new one after a failure: the old may be broken)."""
        if self._retry:
            batch, self._retry = [*self._retry, *batch], []
        self._committing = len(batch)
        try:
            assert self._insert is not None
            with conn.begin():
                self._insert(conn, batch)
            self.rows_written += len(batch)
            self._committing = 0
            return conn
        except _write_errors() as e:  # a full disk must not take the server
            # down with it (COPY raises the driver's own errors)
            if self.error is None:
                assert self.db is not None
                logging.getLogger("routecast.server").error(
                    "request log %s: cannot write (%s); requests are served, their rows kept "
                    "to retry (up to %d)", self.db.describe(), e, MAX_RETRY_ROWS)
            self.error = e
            self.write_errors += 1
            self.rows_dropped += max(0, len(batch) - MAX_RETRY_ROWS)
            self._retry = batch[-MAX_RETRY_ROWS:]
            self._committing = 0
            with contextlib.suppress(*_write_errors()):
                conn.close()
            assert self.db is not None
            try:
                return self.db.connect()
            except SQLAlchemyError:
                return conn  # unreachable now: the next attempt fails, and retries, again


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the request may have been cancelled meanwhile
        future.set_result(None)
