"""Readiness (``GET /ready``) against liveness (``GET /health``): a replica whose Redis or
database does not answer, or that drains, is not ready, but alive; the stores are asked at most
once a second however many probes come; ``/health`` and ``/ready`` name the replica (the
prefix of its request ids)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from routecast.server.readiness import Readiness
from tests.http_calls import call
from tests.routecast_live import make_config, serve, stub_fixture
from tests.services import pg_url, redis_prefix, redis_url
from tests.tcp_proxy import TcpProxy

__all__ = ["pg_url", "redis_prefix", "redis_url"]  # fixtures, used by name

stub = stub_fixture()


class FakeState:
    shared = True

    def __init__(self) -> None:
        self.pings = 0
        self.problem: str | None = None

    async def ping(self) -> str | None:
        self.pings += 1
        await asyncio.sleep(0.01)  # concurrent probes overlap this call
        return self.problem


class FakeDatabase:
    """``connect()`` blocks for ``hang_s`` (a network that drops packets), then works."""

    def __init__(self, hang_s: float = 0.0) -> None:
        self.hang_s = hang_s
        self.calls = 0

    def describe(self) -> str:
        return "postgresql://db.example/routecast"

    def connect(self) -> Any:
        self.calls += 1
        time.sleep(self.hang_s)
        outer = self

        class Conn:
            def __enter__(self) -> Conn:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def execute(self, statement: Any) -> None:
                assert str(statement) == "SELECT 1" and outer is not None

        return Conn()


def test_the_stores_are_asked_at_most_once_per_interval() -> None:
    now = [100.0]
    state, db = FakeState(), FakeDatabase()
    ready = Readiness(state, db, every_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]

    async def run() -> list[list[str]]:
        first = await asyncio.gather(*(ready.problems() for _ in range(20)))  # one check
        now[0] += 0.5
        again = [await ready.problems() for _ in range(10)]  # the cached answer
        state.problem = "the shared state (Redis at x) is unreachable"
        now[0] += 0.6
        later = await ready.problems()  # a second since the last check: asked again
        return [*first, *again, later]

    answers = asyncio.run(run())
    assert answers[:30] == [[]] * 30
    assert answers[30] == ["the shared state (Redis at x) is unreachable"]
    assert state.pings == 2 and db.calls == 2


def test_a_hanging_database_is_reported_and_not_asked_again_while_it_hangs() -> None:
    db = FakeDatabase(hang_s=0.6)
    state = FakeState()
    state.shared = False  # one process: only the database is asked
    ready = Readiness(state, db, every_s=0.0, timeout_s=0.2)  # type: ignore[arg-type]

    async def run() -> tuple[list[str], list[str], list[str], float]:
        t0 = time.monotonic()
        first = await ready.problems()
        second = await ready.problems()  # the first call is still stuck
        took = time.monotonic() - t0
        await asyncio.sleep(0.6)
        return first, second, await ready.problems(), took

    db_hang = asyncio.run(run())
    first, second, _, took = db_hang
    assert first == ["the database (postgresql://db.example/routecast) did not answer "
                     "within 0.2 s"]
    assert second == ["the database (postgresql://db.example/routecast) has not answered for "
                      "over 0.2 s"]
    assert took < 0.5  # neither probe waited for the hang
    assert db.calls == 2 and state.pings == 0  # the third check was a new call (hang again)


def test_sigterm_marks_the_replica_draining_and_reaches_the_previous_handler() -> None:
    assert threading.current_thread() is threading.main_thread()
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:  # uvicorn's, in a server
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        ready = Readiness(FakeState(), None)  # type: ignore[arg-type]
        undo = ready.watch_sigterm()
        assert undo is not None
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM] and ready.draining
        assert asyncio.run(ready.problems()) == ["draining: the server is shutting down"]
        undo()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)


def test_without_redis_a_replica_is_alive_but_not_ready(stub: Any, tmp_path: Path,
                                                       redis_url: str,
                                                       redis_prefix: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        config = make_config(stub.url, tmp_path / "rc.db", state={
            "redis_url": f"redis://127.0.0.1:{proxy.port}/0", "key_prefix": redis_prefix,
            "replicas": 2, "timeout_s": 0.25})
        with serve(config) as base:
            def get(path: str) -> tuple[int, dict[str, Any]]:
                status, _, raw = call(base, "GET", path)
                return status, json.loads(raw)

            health, ready = get("/health"), get("/ready")
            _, headers, _ = call(base, "POST", "/v1/chat/completions", json.dumps(
                {"model": "small", "messages": [{"role": "user", "content": "hi"}]}).encode())
            proxy.cut()
            time.sleep(1.05)  # the last check's answer is kept for a second
            down, down_health = get("/ready"), get("/health")
            proxy.restore()
            time.sleep(1.3)  # Redis is tried again a second after a failure
            back = get("/ready")
    replica = health[1]["replica"]
    assert health[0] == 200 and len(replica) == 8
    assert headers["x-routecast-request-id"].startswith(f"req-{replica}-")
    assert ready == (200, {"status": "ready", "replica": replica})
    assert down[0] == 503 and down[1]["status"] == "not ready"
    assert down[1]["problems"] == [f"the shared state (Redis at 127.0.0.1:{proxy.port}/0) is "
                                   "unreachable"]
    assert down_health[0] == 200  # alive: a liveness probe must not restart it
    assert back == (200, {"status": "ready", "replica": replica})


def test_a_server_on_sqlite_is_ready(
        stub: Any, tmp_path: Path) -> None:
    with serve(make_config(stub.url, tmp_path / "rc.db")) as base:
        status, _, raw = call(base, "GET", "/ready")
    assert (status, json.loads(raw)["status"]) == (200, "ready")


def test_requests_do_not_wait_for_postgresql(stub: Any, pg_url: str) -> None:
    """PostgreSQL stalls (every byte to and from it held: calls hang rather than fail): a
    request that needs no admission is still answered at once, because the request log is
    written in batches by a background thread; the replica says it is not ready, yet alive.
    Then PostgreSQL is cut off (connections reset) and comes back: every row arrives (failed
    batches are kept and retried), none twice. With a round trip per request (or
    ``storage.durable``, where each answer waits for its batch's commit) the stalled
    requests would hang."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(pg_url)
    with TcpProxy(parts.port or 5432) as proxy:
        via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
        config = make_config(stub.url, None, storage={"url": via_proxy, "batch_ms": 20})
        body = json.dumps({"model": "small", "messages": [
            {"role": "user", "content": "hi"}]}).encode()
        with serve(config) as base:
            assert call(base, "POST", "/v1/chat/completions", body)[0] == 200
            proxy.stall()
            slowest, statuses = 0.0, []
            for _ in range(20):
                t0 = time.perf_counter()
                statuses.append(call(base, "POST", "/v1/chat/completions", body)[0])
                slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(1.05)  # the last readiness check's answer is kept for a second
            ready, health = call(base, "GET", "/ready"), call(base, "GET", "/health")
            proxy.cut()  # the stalled connections reset: the writer's batch fails, is kept
            proxy.flow()
            proxy.restore()
            deadline = time.monotonic() + 20
            while True:
                with psycopg.connect(pg_url) as pg:
                    (rows,), = pg.execute("SELECT count(*) FROM requests").fetchall()
                if rows >= 21 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(1.05)
            back = call(base, "GET", "/ready")[0]
    assert statuses == [200] * 20
    assert slowest < 0.5, slowest  # no request waited on the database
    assert ready[0] == 503 and "the database" in json.loads(ready[2])["problems"][0]
    assert health[0] == 200
    assert rows == 21  # none lost, none twice
    assert back == 200
