"""The stored responses behind ``previous_response_id``: SQLite in the server's database,
retention, ownership, and the bounded in-memory store without a database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from routecast.server.apis import store as store_module
from routecast.server.apis.store import ResponseStore, Stored


def item(response_id: str, owner: str | None = None) -> Stored:
    return Stored(response_id, "small", "conv_1", [{"role": "user", "content": "hi"}],
                  {"id": response_id, "object": "response"}, owner)


def test_rows_round_trip_and_expire_after_retention(tmp_path: Path) -> None:
    db = tmp_path / "routecast.db"
    store = ResponseStore(db, retention_days=0.2 / 86400)  # 0.2 s
    store.put_sync(item("resp_a", owner="key1"))
    got = store.get_sync("resp_a")
    assert got == item("resp_a", owner="key1")
    time.sleep(0.3)
    assert store.get_sync("resp_a") is None  # expired, though still on disk
    store.close()
    # A server started later purges expired rows on its first write.
    later = ResponseStore(db, retention_days=0.2 / 86400)
    later.put_sync(item("resp_b"))
    later.close()
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("SELECT id FROM responses")] == ["resp_b"]


def test_only_the_owner_gets_a_response(tmp_path: Path) -> None:
    import asyncio

    store = ResponseStore(tmp_path / "r.db")
    store.put_sync(item("resp_a", owner="key1"))

    async def both() -> tuple[Stored | None, Stored | None]:
        return await store.get("resp_a", "key1"), await store.get("resp_a", "key2")

    mine, theirs = asyncio.run(both())
    assert mine is not None and mine.id == "resp_a" and theirs is None
    store.close()


def test_without_a_database_the_latest_responses_are_kept_in_memory() -> None:
    store = ResponseStore(None)
    n = store_module.MEMORY_ROWS + 5
    for i in range(n):
        store.put_sync(item(f"resp_{i}"))
    assert store.get_sync("resp_0") is None and store.get_sync("resp_4") is None
    assert store.get_sync("resp_5") is not None and store.get_sync(f"resp_{n - 1}") is not None
