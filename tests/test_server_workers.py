"""``routecast serve --workers N``: one port, N processes, and a ``/metrics`` of the whole server
whatever worker answers the scrape; SIGTERM drains, SIGHUP reaches every worker, a killed
worker is replaced without its counts leaving the totals, and a config that would let budgets
multiply is refused before any worker starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from routecast.server.prometheus import Counter, Gauge, Histogram
from routecast.server.worker_metrics import FLUSH_S, SharedMetrics, merge
from tests.routecast_live import model_entry
from tests.server_process import ServerProcess
from tests.services import redis_prefix, redis_url
from tests.stub_upstream import Step, StubUpstream

__all__ = ["redis_prefix", "redis_url"]  # fixtures, used by name

USER = [{"role": "user", "content": "one two three"}]
WORKERS = 2


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


def config(stub: StubUpstream, db: Path, redis: str | None = None,
           prefix: str = "routecast:") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "models": {"small": model_entry(stub.url, "small"),
                   "large": model_entry(stub.url, "large")},
        "storage": {"db": str(db), "batch_ms": 50}}
    if redis is not None:
        doc["state"] = {"redis_url": redis, "key_prefix": prefix}
    return doc


@pytest.fixture
def server(stub: StubUpstream, tmp_path: Path, redis_url: str,
           redis_prefix: str) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, config(stub, tmp_path / "r.db", redis_url, redis_prefix))
    server.start(timeout_s=60, args=("--workers", str(WORKERS)))
    try:
        yield server
    finally:
        assert server.proc is not None
        if server.proc.poll() is None:
            workers = worker_pids(server)
            server.signal(signal.SIGTERM)
            try:
                server.wait(30)
            finally:
                server.stop()
                for pid in workers:  # a supervisor that would not stop: no orphans either
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def worker_pids(server: ServerProcess) -> set[int]:
    """The supervisor's worker processes (its children running multiprocessing's spawn)."""
    assert server.proc is not None
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server.proc.pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


async def ask(url: str, n: int, model: str = "small", concurrency: int = 8) -> list[str]:
    """``n`` chat requests, each on a new connection (so the kernel spreads them over the
    workers); returns the request ids (their prefix names the process that answered)."""
    ids: list[str] = []
    queue = list(range(n))

    async def one(session: aiohttp.ClientSession) -> None:
        while queue:
            queue.pop()
            async with session.post(f"{url}/v1/chat/completions",
                                    json={"model": model, "messages": USER}) as r:
                await r.read()
                assert r.status == 200, r.status
                ids.append(r.headers["x-routecast-request-id"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        await asyncio.gather(*(one(s) for _ in range(concurrency)))
    return ids


def answered_by(ids: list[str]) -> set[str]:
    return {i.rsplit("-", 1)[0] for i in ids}


def spread(url: str, at_least: int = 40, limit: int = 2000) -> int:
    """Send requests until every worker has answered some; returns how many were sent."""
    ids: list[str] = []
    while len(ids) < at_least or len(answered_by(ids)) < WORKERS:
        assert len(ids) < limit, f"only {answered_by(ids)} answered {len(ids)} requests"
        ids += asyncio.run(ask(url, 40))
    return len(ids)


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:  # a new connection each
        return str(r.read().decode())


def total(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (any labels)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                      re.MULTILINE))


def settled(url: str, sent: int) -> None:
    """Wait until a scrape counts every request sent: each worker's snapshot is at most
    FLUSH_S old (a margin for a busy machine; typically the first scrape passes)."""
    deadline = time.monotonic() + FLUSH_S + 5.0
    time.sleep(FLUSH_S)
    while total(scrape(url), "routecast_requests_total") != sent:
        assert time.monotonic() < deadline, "the workers' counts never added up"
        time.sleep(0.1)


def rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM requests WHERE status = 200").fetchone()[0])
    finally:
        con.close()


def test_metrics_count_every_worker_whatever_worker_is_scraped(server: ServerProcess,
                                                                tmp_path: Path) -> None:
    sent = spread(server.url)
    settled(server.url, sent)
    for _ in range(8):  # new connections: different workers answer
        text = scrape(server.url)
        assert total(text, "routecast_requests_total") == sent
        assert total(text, "routecast_request_latency_seconds_count") == sent
        # Per-worker gauges carry the worker; every live worker is there.
        workers = set(re.findall(r'routecast_breaker_state\{model="small",worker="(\d+)"\}',
                                 text))
        assert workers == {str(p) for p in worker_pids(server)}
        assert total(text, "routecast_requests_in_flight") == 0
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert rows(tmp_path / "r.db") == sent  # each worker's log writer, one SQLite file


def test_sigterm_drains_requests_in_flight(server: ServerProcess, stub: StubUpstream,
                                           tmp_path: Path) -> None:
    stub.then(Step(delay_s=1.0))

    async def slow_then_term() -> tuple[int, float]:
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            task = asyncio.create_task(s.post(f"{server.url}/v1/chat/completions",
                                              json={"model": "small", "messages": USER}))
            await asyncio.sleep(0.3)
            server.signal(signal.SIGTERM)
            async with await task as r:
                await r.read()
                return r.status, time.perf_counter() - t0

    status, elapsed = asyncio.run(slow_then_term())
    assert status == 200 and elapsed >= 1.0  # answered, not cut off
    assert server.wait(30) == 0
    assert rows(tmp_path / "r.db") == 1


def test_killed_worker_is_replaced_and_its_counts_stay(server: ServerProcess) -> None:
    before = spread(server.url)
    settled(server.url, before)  # so each worker's snapshot file holds all its requests
    old = worker_pids(server)
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (len(pids := worker_pids(server)) < WORKERS or victim in pids):
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)
    assert len(pids - old) == 1
    after = spread(server.url)
    settled(server.url, before + after)
    for _ in range(6):
        text = scrape(server.url)
        # The dead worker's requests stay counted; its gauges are gone.
        assert total(text, "routecast_requests_total") == before + after
        assert f'worker="{victim}"' not in text


def running(pid: int) -> bool:
    """Whether ``pid`` is still a worker (a zombie's command line is empty)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_workers_exit_with_a_killed_supervisor(server: ServerProcess) -> None:
    workers = worker_pids(server)
    assert len(workers) == WORKERS
    server.signal(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(running(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.1)


def test_sighup_reloads_every_worker(server: ServerProcess, stub: StubUpstream,
                                     tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    cfg = config(stub, tmp_path / "r.db", redis_url, redis_prefix)
    cfg["endpoints"] = {"smart": {"type": "plain", "model": "large"}}
    server.write_config(cfg)
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while True:  # every worker serves the new endpoint: 40 requests over new connections
        try:
            ids = asyncio.run(ask(server.url, 40, model="smart"))
            if len(answered_by(ids)) == WORKERS:
                break
        except AssertionError:  # a 404 from a worker that has not reloaded yet
            pass
        assert time.monotonic() < deadline, "not every worker reloaded"
        time.sleep(0.2)
    assert worker_pids(server) and server.proc is not None and server.proc.poll() is None


def test_workers_without_shared_state_are_refused(stub: StubUpstream, tmp_path: Path) -> None:
    path = tmp_path / "routecast.yaml"
    ServerProcess(tmp_path, config(stub, tmp_path / "r.db"))  # writes the file
    done = subprocess.run([sys.executable, "-m", "routecast.cli", "serve", "--config",
                           str(path), "--workers", "2", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "state.replicas is 2 but state.redis_url is not set" in done.stderr
    assert "Fix:" in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert "serving" not in done.stderr  # refused before any worker started


def test_embedded_default_refuses_workers() -> None:
    done = subprocess.run([sys.executable, "-m", "routecast.cli", "serve", "--workers", "2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers 2 needs --config" in done.stderr and "Traceback" not in done.stderr


# -- merging snapshots, without processes ----------------------------------------------------

def families(requests: float, in_flight: float, state: float,
             latencies: list[float]) -> list[dict[str, Any]]:
    counter = Counter("c_total", "c", ("endpoint",))
    counter.inc(("e",), requests)
    hist = Histogram("h_seconds", "h", ("endpoint",), buckets=(0.1, 1.0))
    for x in latencies:
        hist.observe(("e",), x)
    return [counter.family(), hist.family(),
            Gauge("g", "g", (), lambda: [((), in_flight)], merge="sum").family(),
            Gauge("b", "b", ("model",), lambda: [(("m",), state)]).family(),
            Gauge("o_total", "o", (), lambda: [((), 1.0)], kind="counter").family()]


def test_merge_sums_counters_of_all_workers_and_gauges_of_live_ones() -> None:
    merged = {f["name"]: f for f in merge([
        ("1", True, families(3, 2, 0, [0.0625, 2.0])),
        ("2", True, families(4, 1, 1, [0.5])),
        ("3", False, families(5, 7, 2, [0.0625]))])}  # dead: counts stay, gauges go
    assert merged["c_total"]["samples"] == [[["e"], 12]]
    assert merged["h_seconds"]["samples"] == [[["e"], [2.0, 1.0, 1.0, 2.625]]]
    assert merged["g"]["samples"] == [[[], 3]]
    assert merged["b"]["labels"] == ["model", "worker"]
    assert merged["b"]["samples"] == [[["m", "1"], 0], [["m", "2"], 1]]
    assert merged["o_total"]["samples"] == [[[], 3.0]]  # counter-typed gauge: summed


def test_a_scrape_never_reports_less_than_an_earlier_one(tmp_path: Path) -> None:
    a, b = SharedMetrics(tmp_path, pid=os.getpid()), SharedMetrics(tmp_path, pid=os.getpid())
    b.write(families(1, 0, 0, []))
    # a answers a scrape with its live counts (5), and dies before its next timed snapshot:
    first = a.render(families(5, 0, 0, []))
    assert "c_total{endpoint=\"e\"} 6" in first
    second = b.render(families(1, 0, 0, []))  # b is scraped next: a's 5 are still there
    assert "c_total{endpoint=\"e\"} 6" in second


def test_router_problems_are_reported_before_any_worker_starts(
        stub: StubUpstream, tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    doc = config(stub, tmp_path / "r.db", redis_url, redis_prefix)
    doc["endpoints"] = {"auto": {"type": "routed", "router": "no-such-router",
                                 "cost_weight": 1}}
    ServerProcess(tmp_path, doc)  # writes routecast.yaml
    done = subprocess.run([sys.executable, "-m", "routecast.cli", "serve", "--config",
                           str(tmp_path / "routecast.yaml"), "--workers", "2", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no-such-router" in done.stderr and "Traceback" not in done.stderr
    assert "serving" not in done.stderr
