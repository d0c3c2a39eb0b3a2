"""Every request the server answers, one row in SQLite.

Writes happen off the event loop: :meth:`RequestLog.write` only appends the row to a list (about
a microsecond), and one writer thread inserts the rows in batches, committing as soon as
``batch_rows`` rows are waiting and otherwise every ``batch_ms`` milliseconds, and everything
left on :meth:`RequestLog.close`. The database is in WAL mode, so ``routecast stats`` can read while
the server writes. With ``synchronous=NORMAL`` a committed batch survives a crash of the server
process (an OS crash may lose the last batch; full fsync per batch would cost more than the
proxying it logs).

With ``durable`` on, :meth:`RequestLog.write_durable` returns a future that completes once the
row is committed, and the server sends the response only then: a ``kill -9`` of the server
then loses no row of a response a client received (a commit in WAL mode is a ``write()`` to the
WAL file, which the OS keeps when the process dies). Rows waiting together commit together
(group commit), so under load the cost is shared; the rows of requests still in flight at the
kill are lost with them, and no client saw those answers.

Prompt text is stored only when ``log_prompts`` is on: prompts may hold personal data.

Schema version 2 added ``excluded`` (the models that could not serve the request, and
why), ``request_id`` (the ``x-routecast-request-id`` the client got),
``key_name`` (the client key's name, with ``auth.required``) and ``trace`` (the routing
debugger's JSON record, :mod:`routecast.backends.trace`); a version-1 file is migrated in place
when opened (columns added, no row changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from routecast.backends.transport import json_dumps as dumps

if TYPE_CHECKING:
    from routecast.backends.trace import Trace

SCHEMA_VERSION = 2

COLUMNS = ("ts", "endpoint", "model", "route", "status", "stream", "prompt_tokens",
           "completion_tokens", "cached_tokens", "reasoning_tokens", "usage_estimated",
           "cost_usd", "baseline_model", "baseline_cost_usd", "latency_s", "routing_s",
           "error", "session", "prompt", "excluded", "request_id", "key_name", "trace")

#: Columns each schema version added, for migrating older files in place.
_ADDED = {2: ("excluded TEXT", "request_id TEXT", "key_name TEXT", "trace TEXT")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,                  -- unix time the request arrived
    endpoint TEXT NOT NULL,            -- the request's `model`
    model TEXT,                        -- the model that answered (NULL: none did)
    route TEXT NOT NULL,               -- models asked, in order, comma-separated
    status INTEGER NOT NULL,           -- HTTP status sent to the client
    stream INTEGER NOT NULL,           -- 1 for a streamed answer
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    usage_estimated INTEGER NOT NULL,  -- 1 when the upstream reported no usage
    cost_usd REAL NOT NULL,
    baseline_model TEXT,               -- the endpoint's most expensive model
    baseline_cost_usd REAL NOT NULL,   -- the same tokens at that model's prices
    latency_s REAL NOT NULL,           -- arrival to last byte
    routing_s REAL NOT NULL,           -- of which choosing the model
    error TEXT,
    session TEXT,
    prompt TEXT,                       -- only with storage.log_prompts
    excluded TEXT,                     -- models that could not serve it: "m (why); ..."
    request_id TEXT,                   -- x-routecast-request-id (version 2)
    key_name TEXT,                     -- the client key's name (version 2)
    trace TEXT                         -- JSON: why this route (version 2)
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""


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


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a request-log database."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    _migrate(db)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.commit()
    db.execute("CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id)")
    db.commit()
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns later versions introduced to a file an older server created."""
    have = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for version in sorted(_ADDED):
        for column in _ADDED[version]:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE requests ADD COLUMN {column}")


def _trace_json(trace: Trace | None) -> str | None:
    return None if trace is None else dumps(trace.as_dict()).decode()


def _values(row: LogRow) -> tuple[object, ...]:
    """A row's values in :data:`COLUMNS` order, its trace as JSON (encoded on the writer
    thread, off the request's path)."""
    values = _AS_TUPLE(row)
    return (*values[:-1], _trace_json(row.trace))


_AS_TUPLE = operator.attrgetter(*COLUMNS)


def prompt_text(body: dict[str, object]) -> str:
    """What ``log_prompts`` stores: the messages (JSON) or the completion prompt."""
    if "messages" in body:
        return json.dumps(body["messages"], ensure_ascii=False)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)


class RequestLog:
    """A background writer of :class:`LogRow` to one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, *, log_prompts: bool = False, batch_rows: int = 256,
                 batch_ms: float = 200.0, durable: bool = False) -> None:
        self.path = Path(path)
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
        self._sql = (f"INSERT INTO requests ({', '.join(COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(COLUMNS))})")
        self.rows_written = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        # Open here, not in the thread, so a bad path fails the server's start-up loudly.
        db = connect(self.path)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(db,), name="routecast-log",
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

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, commit and stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self, db: sqlite3.Connection) -> None:
        while True:
            self._wake.wait(self.batch_s)
            self._wake.clear()
            # Read before taking the rows: whatever was written before close() is taken below.
            stopping = self._stopping
            with self._lock:
                rows, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
            if rows:
                self._commit(db, [_values(r) for r in rows])
            for loop, future in waiters:
                with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                    loop.call_soon_threadsafe(_resolve, future)
            if stopping:
                break
        db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[tuple[object, ...]]) -> None:
        try:
            with db:
                db.executemany(self._sql, batch)
            self.rows_written += len(batch)
        except sqlite3.Error as e:  # a full disk must not take the server down with it
            if self.error is None:
                logging.getLogger("routecast.server").error(
                    "request log %s: cannot write (%s); requests are served but not logged",
                    self.path, e)
            self.error = e


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the request may have been cancelled meanwhile
        future.set_result(None)
