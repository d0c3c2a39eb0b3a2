"""Unknown well-formed keys: the key table is re-read off the event loop, at most once per
``MISS_READ_S`` whatever the flood, and a key added after start-up is still accepted in time."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from routecast.errors import RequestError
from routecast.server import keys as keys_module
from routecast.server.keys import KeyStore, add_key
from routecast.storage.database import Database
from tests.services import pg_url

__all__ = ["pg_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (str(tmp_path / "keys.db") if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    database = Database.open(url)
    yield database
    database.close()


class Reads:
    """Counts the SELECTs of the key table the database runs, and which thread ran them."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        self.threads: set[int] = set()

        @event.listens_for(database.engine, "before_cursor_execute")
        def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
                self.count += 1
                self.threads.add(threading.get_ident())


def random_token() -> str:
    return f"rc-{secrets.token_hex(4)}-{secrets.token_urlsafe(32)}"


async def outcome(store: KeyStore, token: str) -> int:
    try:
        await store.authenticate(f"Bearer {token}")
    except RequestError as e:
        return e.status
    return 200


def test_a_flood_of_random_keys_costs_at_most_one_read_a_second(db: Database) -> None:
    known = add_key(db, "known")
    store = KeyStore(db)
    store.open()
    reads = Reads(db)

    async def run() -> tuple[list[int], list[int], float, float, int]:
        loop_thread = threading.get_ident()
        flood = [random_token() for _ in range(200)]
        t0 = time.perf_counter()
        first = await asyncio.gather(*(outcome(store, t) for t in flood))
        first_s = time.perf_counter() - t0
        # The same ids again, at once: refused from the negative cache, no read.
        t0 = time.perf_counter()
        again = await asyncio.gather(*(outcome(store, t) for t in flood))
        again_s = time.perf_counter() - t0
        # A known key never waits nor reads.
        assert store.cached(f"Bearer {known}") is not None
        assert loop_thread not in reads.threads
        return first, again, first_s, again_s, reads.count

    first, again, first_s, again_s, count = asyncio.run(run())
    assert first == [401] * 200 and again == [401] * 200
    assert 1 <= count <= 2, count  # 200 unknown ids, one read (two if one started mid-flood)
    assert first_s < MISS_BOUND and again_s < 0.2, (first_s, again_s)
    assert reads.count == count  # the repeat read nothing
    store.close()


MISS_BOUND = keys_module.MISS_READ_S + 0.8  # the interval, plus a loaded machine's slack


def test_a_key_added_after_start_is_accepted_within_the_interval(db: Database) -> None:
    store = KeyStore(db)
    store.open()
    reads = Reads(db)

    async def run() -> tuple[int, int, float, int]:
        # A flood first, so the next read must wait for the interval.
        await asyncio.gather(*(outcome(store, random_token()) for _ in range(50)))
        token = await asyncio.to_thread(add_key, db, "late")
        t0 = time.perf_counter()
        status = await outcome(store, token)
        waited = time.perf_counter() - t0
        # A key refused once (not yet added) is remembered as absent only briefly.
        late = random_token()
        refused = await outcome(store, late)
        return status, refused, waited, reads.count

    status, refused, waited, count = asyncio.run(run())
    assert status == 200 and refused == 401
    assert waited < MISS_BOUND, waited
    assert count <= 3, count
    store.close()


def test_a_key_refused_while_absent_is_accepted_once_added(db: Database) -> None:
    store = KeyStore(db)
    store.open()

    async def run() -> tuple[int, int, float]:
        token = add_key(db, "soon")
        # Fake the id as not yet in the table on the first lookup: a read that missed it.
        key_id = token[3:11]
        await store.reload_async()
        store.keys.pop(key_id)
        store._absent.add(key_id)
        refused = await outcome(store, token)  # negative cache: at once, no read
        assert key_id not in store.keys
        await asyncio.sleep(keys_module.MISS_READ_S)
        t0 = time.perf_counter()
        accepted = await outcome(store, token)
        return refused, accepted, time.perf_counter() - t0

    refused, accepted, waited = asyncio.run(run())
    assert refused == 401 and accepted == 200
    assert waited < MISS_BOUND
    store.close()


def test_waiters_share_the_read_and_a_cancelled_one_does_not_stop_it(tmp_path: Path) -> None:
    db = Database.open(str(tmp_path / "keys.db"))
    store = KeyStore(db)
    store.open()

    async def run() -> tuple[int, int]:
        await store.reload_async()  # a read just now: the next one waits for the interval
        token = await asyncio.to_thread(add_key, db, "patient")
        impatient = asyncio.create_task(outcome(store, token))
        patient = asyncio.create_task(outcome(store, token))
        await asyncio.sleep(0.1)
        impatient.cancel()  # a client hanging up
        return await patient, store.reads

    before = store.reads
    status, reads = asyncio.run(run())
    assert status == 200
    assert reads - before == 2  # the reload and one shared read
    store.close()
    db.close()


def test_a_failed_read_is_a_503_and_paces_the_next(tmp_path: Path) -> None:
    db = Database.open(str(tmp_path / "keys.db"))
    store = KeyStore(db)
    store.open()
    real = store._read
    calls = 0

    def broken() -> Any:
        nonlocal calls
        calls += 1
        store._tried_at = time.monotonic()
        raise RuntimeError("database away")

    store._read = broken  # type: ignore[method-assign]

    async def run() -> tuple[list[int], list[int]]:
        await asyncio.sleep(keys_module.MISS_READ_S)  # the open's read is old
        first = await asyncio.gather(*(outcome(store, random_token()) for _ in range(20)))
        store._read = real  # type: ignore[method-assign]
        token = await asyncio.to_thread(add_key, db, "back")
        return first, [await outcome(store, token)]

    first, after = asyncio.run(run())
    assert first == [503] * 20 and calls == 1
    assert after == [200]
    store.close()
    db.close()


def test_a_server_flooded_with_random_keys_reads_the_table_about_once_a_second(
        tmp_path: Path) -> None:
    """Through HTTP: 300 concurrent requests with random keys are refused, cost the key table
    about one read a second (the background reload included: routecast_key_table_reads_total),
    and a key added meanwhile is served."""
    import aiohttp

    from tests.http_calls import call
    from tests.routecast_live import make_config, serve
    from tests.stub_upstream import StubUpstream

    db = tmp_path / "rc.db"
    add_key(db, "first")

    def reads(base: str) -> float:
        for line in call(base, "GET", "/metrics")[2].decode().splitlines():
            if line.startswith("routecast_key_table_reads_total "):
                return float(line.split()[1])
        raise AssertionError("no routecast_key_table_reads_total on /metrics")

    body = b'{"model": "small", "messages": [{"role": "user", "content": "hi"}]}'

    async def flood(base: str, tokens: list[str]) -> list[int]:
        async with aiohttp.ClientSession() as s:
            async def one(token: str) -> int:
                async with s.post(f"{base}/v1/chat/completions", data=body, headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/json"}) as r:
                    return r.status
            return list(await asyncio.gather(*(one(t) for t in tokens)))

    with StubUpstream() as stub:
        config = make_config(stub.url, db, auth={"required": True})
        with serve(config) as base:
            before, t0 = reads(base), time.monotonic()
            late = add_key(db, "late")
            statuses = asyncio.run(flood(base, [random_token() for _ in range(300)] + [late]))
            elapsed = time.monotonic() - t0
            spent = reads(base) - before
    assert statuses[:-1] == [401] * 300 and statuses[-1] == 200
    print(f"flood: {spent:.0f} reads of the key table in {elapsed:.2f} s")
    assert spent <= elapsed / keys_module.MISS_READ_S + 2, (spent, elapsed)
