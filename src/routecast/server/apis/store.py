"""Stored responses of the Responses API, for ``previous_response_id`` and ``GET
/v1/responses/{id}``.

A stored response keeps what a later turn needs to carry on: the conversation so far as chat
messages (the input items of every turn and the answers, without the ``instructions``, which
OpenAI's reference says a new turn does not inherit), the response object as it was sent, and
the conversation's key (see :mod:`routecast.server.apis.common`), and the client key that made
it: with ``auth.required``, only that key can fetch or continue it.

Where: the table ``responses`` of the server's SQLite database (``storage.db``, next to the
request log), written off the event loop. Without ``storage.db``, a bounded in-memory map of the
latest ``MEMORY_ROWS`` responses, lost on restart. Retention: rows older than
``apis.response_retention_days`` (default 30) are deleted at start-up and then at most hourly,
on the next write. A request with ``store: false`` is not stored (and cannot be continued or
fetched); the request log's own row is kept either way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routecast.backends.transport import json_dumps, json_loads

MEMORY_ROWS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,         -- the response's id (resp_...)
    ts REAL NOT NULL,            -- unix time it was created
    endpoint TEXT NOT NULL,
    conversation TEXT,           -- the conversation key its routing was pinned by
    owner TEXT,                  -- the id of the client key that made it (NULL: no auth)
    messages TEXT NOT NULL,      -- JSON: the conversation so far as chat messages
    response TEXT NOT NULL       -- JSON: the response object as sent
);
CREATE INDEX IF NOT EXISTS responses_ts ON responses (ts);
"""


@dataclass(slots=True)
class Stored:
    id: str
    endpoint: str
    conversation: str | None
    messages: list[dict[str, Any]]
    response: dict[str, Any]
    owner: str | None = None


class ResponseStore:
    """See the module docstring. Thread-safe; the async methods run SQLite in a thread."""

    def __init__(self, db: Path | None, retention_days: float = 30.0) -> None:
        self.db = db
        self.retention_s = retention_days * 86400.0
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._memory: OrderedDict[str, Stored] = OrderedDict()
        self._purged_at = 0.0

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            assert self.db is not None
            self.db.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.db, check_same_thread=False, timeout=10.0)
            con.execute("PRAGMA journal_mode=WAL")
            # As the request log: a committed row survives a crash of the server process.
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            self._con = con
        return self._con

    def _purge(self, con: sqlite3.Connection, now: float) -> None:
        if now - self._purged_at > 3600.0:
            con.execute("DELETE FROM responses WHERE ts < ?", (now - self.retention_s,))
            self._purged_at = now

    def put_sync(self, item: Stored) -> None:
        now = time.time()
        if self.db is None:
            with self._lock:
                self._memory[item.id] = item
                while len(self._memory) > MEMORY_ROWS:
                    self._memory.popitem(last=False)
            return
        with self._lock:
            con = self._connection()
            self._purge(con, now)
            con.execute("INSERT OR REPLACE INTO responses (id, ts, endpoint, conversation, "
                        "owner, messages, response) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (item.id, now, item.endpoint, item.conversation, item.owner,
                         json_dumps(item.messages).decode(), json_dumps(item.response).decode()))
            con.commit()

    def get_sync(self, response_id: str) -> Stored | None:
        if self.db is None:
            with self._lock:
                return self._memory.get(response_id)
        with self._lock:
            con = self._connection()
            row = con.execute("SELECT id, endpoint, conversation, messages, response, ts, "
                              "owner FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None or row[5] < time.time() - self.retention_s:
            return None
        return Stored(row[0], row[1], row[2], json_loads(row[3].encode()),
                      json_loads(row[4].encode()), row[6])

    async def put(self, item: Stored) -> None:
        await asyncio.to_thread(self.put_sync, item)

    async def get(self, response_id: str, owner: str | None) -> Stored | None:
        """The stored response, if ``owner`` (a client key's id, ``None`` without auth) made
        it: one client cannot read or continue another's conversation."""
        stored = await asyncio.to_thread(self.get_sync, response_id)
        return stored if stored is not None and stored.owner == owner else None

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
