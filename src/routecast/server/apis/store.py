"""Stored responses of the Responses API, for ``previous_response_id`` and ``GET
/v1/responses/{id}``.

A stored response keeps what a later turn needs to carry on: the conversation so far as chat
messages (the input items of every turn and the answers, without the ``instructions``, which
OpenAI's reference says a new turn does not inherit), the response object as it was sent, and
the conversation's key (see :mod:`routecast.server.apis.common`), and the client key that made
it: with ``auth.required``, only that key can fetch or continue it.

Where: the table ``responses`` of the server's database (:mod:`routecast.storage`: SQLite or
PostgreSQL, next to the request log; replicas sharing it continue each other's conversations),
written off the event loop. Without storage (``storage.db: null``), a bounded in-memory map of
the latest ``MEMORY_ROWS`` responses, lost on restart. Retention: rows older than
``apis.response_retention_days`` (default 30) are deleted at start-up and then at most hourly,
on the next write. A request with ``store: false`` is not stored (and cannot be continued or
fetched); the request log's own row is kept either way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update

from routecast.backends.transport import json_dumps, json_loads
from routecast.storage.database import Database, open_database
from routecast.storage.schema import responses

MEMORY_ROWS = 1000

@dataclass(slots=True)
class Stored:
    id: str
    endpoint: str
    conversation: str | None
    messages: list[dict[str, Any]]
    response: dict[str, Any]
    owner: str | None = None


class ResponseStore:
    """See the module docstring. Thread-safe; the async methods run the database in a thread.
    ``db`` is the server's :class:`Database` (not closed here), a SQLite path or URL (opened
    on first use), or ``None`` (memory)."""

    def __init__(self, db: str | Path | Database | None, retention_days: float = 30.0) -> None:
        self.target = db
        self.retention_s = retention_days * 86400.0
        self._lock = threading.Lock()
        self._db: Database | None = db if isinstance(db, Database) else None
        self._owned = False
        self._memory: OrderedDict[str, Stored] = OrderedDict()
        self._purged_at = 0.0

    @property
    def db(self) -> str | Path | Database | None:
        return self.target

    def _database(self) -> Database:
        if self._db is None:
            assert self.target is not None
            with self._lock:
                if self._db is None:
                    self._db, self._owned = open_database(self.target)
        return self._db

    def put_sync(self, item: Stored) -> None:
        now = time.time()
        if self.target is None:
            with self._lock:
                self._memory[item.id] = item
                while len(self._memory) > MEMORY_ROWS:
                    self._memory.popitem(last=False)
            return
        values = {"ts": now, "endpoint": item.endpoint, "conversation": item.conversation,
                  "owner": item.owner, "messages": json_dumps(item.messages).decode(),
                  "response": json_dumps(item.response).decode()}
        with self._database().begin() as conn:
            if now - self._purged_at > 3600.0:
                conn.execute(delete(responses).where(responses.c.ts < now - self.retention_s))
                self._purged_at = now
            # Insert or replace, portably: an id is written again only when a client reuses
            # one, so the update usually finds nothing and the insert runs.
            if not conn.execute(update(responses).where(responses.c.id == item.id)
                                .values(values)).rowcount:
                conn.execute(insert(responses).values(id=item.id, **values))

    def get_sync(self, response_id: str) -> Stored | None:
        if self.target is None:
            with self._lock:
                return self._memory.get(response_id)
        with self._database().connect() as conn:
            row = conn.execute(select(responses.c.id, responses.c.endpoint,
                                      responses.c.conversation, responses.c.messages,
                                      responses.c.response, responses.c.ts, responses.c.owner)
                               .where(responses.c.id == response_id)).first()
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
            if self._db is not None and self._owned:
                self._db.close()
                self._db = None
