"""Three ``routecast serve`` replicas behind a real HAProxy (tests/replicas.py), sharing one
request log: HAProxy spreads requests over all of them, and a ``kill -9`` of one under load is
taken out by HAProxy's health checks, loses no logged row of any response a client received,
and leaves the others serving.

The storage is a parameter (a database URL): one SQLite file, or one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.replicas import CHECK_MS, FALL, Replicas, logged_requests, storage_config
from tests.routecast_live import model_entry
from tests.services import haproxy_bin, pg_url
from tests.stub_upstream import StubUpstream

__all__ = ["haproxy_bin", "pg_url"]  # fixtures, imported to be found by pytest

USER = [{"role": "user", "content": "one two three"}]
N = 3


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database every replica logs to: a SQLite file, or a fresh PostgreSQL database
    (``pg_url``: skips on a machine without PostgreSQL, fails under CI)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'requests.db'}"


def config(stub: StubUpstream, storage_url: str) -> dict[str, Any]:
    return {"models": {"small": model_entry(stub.url, "small")},
            "storage": storage_config(storage_url, batch_ms=50, durable=True)}


@dataclass
class Outcome:
    sent: float       # monotonic time the request was sent
    done: float       # ... and its answer read, or its failure seen
    status: int       # 0: the connection failed
    request_id: str | None


async def load(url: str, concurrency: int, duration_s: float, at_s: float,
               action: Any) -> list[Outcome]:
    """``concurrency`` clients asking in a loop for ``duration_s``; ``action()`` runs once,
    ``at_s`` seconds in."""
    outcomes: list[Outcome] = []
    end = time.monotonic() + duration_s

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            sent = time.monotonic()
            try:
                async with session.post(f"{url}/v1/chat/completions",
                                        json={"model": "small", "messages": USER}) as r:
                    await r.read()
                    outcomes.append(Outcome(sent, time.monotonic(), r.status,
                                            r.headers.get("x-routecast-request-id")))
            except (aiohttp.ClientError, OSError):
                outcomes.append(Outcome(sent, time.monotonic(), 0, None))
                await asyncio.sleep(0.01)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        await asyncio.sleep(at_s)
        action()
        await asyncio.gather(*clients)
    return outcomes


def test_haproxy_spreads_requests_over_every_replica(stub: StubUpstream, storage_url: str,
                                                     haproxy_bin: str) -> None:
    with Replicas(config(stub, storage_url), N, haproxy_bin) as fleet:
        fleet.learn_id_prefixes()
        outcomes = asyncio.run(load(fleet.url, 4, 1.0, 0.0, lambda: None))
        served = Counter(fleet.replica_of(o.request_id) for o in outcomes
                         if o.status == 200 and o.request_id)
        stats = {row["svname"]: row for row in fleet.stats() if row["pxname"] == "replicas"}
    assert len(outcomes) >= 30 and all(o.status == 200 for o in outcomes)
    assert set(served) == {f"r{i}" for i in range(N)}, served
    # Round robin: each replica answers about a third.
    assert min(served.values()) >= len(outcomes) / N * 0.7, served
    # HAProxy's own count of the requests it sent to each replica agrees.
    for name, count in served.items():
        assert name is not None and int(stats[name]["req_tot"] or 0) >= count


def test_kill_9_of_one_replica_under_load(stub: StubUpstream, storage_url: str,
                                          haproxy_bin: str) -> None:
    concurrency = 12
    killed_at = 0.0
    with Replicas(config(stub, storage_url), N, haproxy_bin) as fleet:
        fleet.learn_id_prefixes()
        victim = fleet.replicas[1]

        def kill() -> None:
            nonlocal killed_at
            killed_at = time.monotonic()
            fleet.kill(1)

        outcomes = asyncio.run(load(fleet.url, concurrency, 4.0, 1.5, kill))
        assert victim.proc.wait(10) == -signal.SIGKILL
        # HAProxy's health checks took it out; the other two are up.
        assert fleet.server_states() == {"r0": "UP", "r1": "DOWN", "r2": "UP"}
    # Leaving the block stopped the survivors with SIGTERM: their logs are flushed.

    window = 2 * FALL * CHECK_MS / 1000 + 0.5  # two failed checks, and slack for a busy box
    before = [o for o in outcomes if o.sent < killed_at]
    after = [o for o in outcomes if o.sent >= killed_at + window]
    failed = [o for o in outcomes if o.status != 200]
    assert len(before) > 50 and len(after) > 50, (len(before), len(after))
    # After the window every request succeeds; the only failures are requests that were in
    # flight on the victim when it died (a refused connection is retried on another replica).
    assert all(o.status == 200 for o in after), Counter(o.status for o in after)
    assert len(failed) <= concurrency, Counter(o.status for o in failed)
    assert all(o.sent <= killed_at + window for o in failed)
    # The others keep serving: both answer after the kill, the victim never again.
    after_by = Counter(fleet.replica_of(o.request_id) for o in after if o.request_id)
    assert after_by.keys() == {"r0", "r2"}, after_by
    assert min(after_by.values()) >= len(after) / 4, after_by
    assert not any(fleet.replica_of(o.request_id) == "r1" for o in outcomes
                   if o.request_id and o.done > killed_at + 0.5)

    # No row is missing for any response a client received, the victim's included.
    logged = logged_requests(storage_url)
    received = {o.request_id for o in outcomes if o.status == 200}
    assert None not in received
    missing = {rid for rid in received if logged.get(rid or "") != 200}
    assert not missing, f"{len(missing)} of {len(received)} answered requests have no row"
    victims = {rid for rid in received if fleet.replica_of(rid or "") == "r1"}
    assert len(victims) > 20  # the victim did answer, and its rows survived the kill
