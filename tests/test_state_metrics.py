"""/metrics for what the server writes elsewhere: the shared state (Redis calls failed or timed
out, calls answered without it, settles waiting to reach it), the request log's writer (rows
written, failed batches, lost rows, backlog) and reads of the key table; and how they add up
across ``--workers`` processes."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from routecast.server import requestlog
from routecast.server.gauges import key_gauges, request_log_gauges, state_gauges
from routecast.server.keys import ClientKey, KeyStore, add_key
from routecast.server.prometheus import Gauge, ServerMetrics, render_families
from routecast.server.requestlog import LogRow, RequestLog
from routecast.server.worker_metrics import merge
from routecast.state import RedisState, StateUnavailableError
from routecast.storage.database import Database
from tests.http_calls import call
from tests.routecast_live import make_config, serve
from tests.services import redis_prefix, redis_url
from tests.stub_upstream import StubUpstream
from tests.tcp_proxy import TcpProxy

__all__ = ["redis_prefix", "redis_url"]  # fixtures, used by name


def scrape(gauges: list[Gauge]) -> dict[str, float]:
    """``name{labels}`` -> value of what :class:`ServerMetrics` renders with ``gauges``."""
    metrics = ServerMetrics()
    metrics.extra = gauges
    return parse(metrics.render())


def parse(exposition: str) -> dict[str, float]:
    out = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def key(budget: float = 10.0) -> ClientKey:
    return ClientKey("0badc0de", "k", b"", b"", budget, 0.0, None)


def test_redis_failures_and_pending_settles_are_counted(redis_url: str,
                                                        redis_prefix: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        state = RedisState(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix,
                           timeout_s=0.2, poll_s=0.1)
        gauges = state_gauges(state)
        k = key()

        async def body() -> list[dict[str, float]]:
            await state.start()
            seen = [scrape(gauges)]
            reservations = [await state.admit_key(k) for _ in range(2)]
            proxy.cut()
            for reservation, cost in zip(reservations, (0.25, 0.5), strict=True):
                assert reservation is not None
                state.settle_key(k, reservation, cost)
            await state.flush_settles()
            with pytest.raises(StateUnavailableError):
                await state.admit_key(k)  # backing off: refused without trying
            seen.append(scrape(gauges))
            proxy.restore()
            deadline = time.monotonic() + 5
            while state.pending_settles()[0] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            seen.append(scrape(gauges))
            await state.aclose()
            return seen

        before, down, after = asyncio.run(body())
    assert before["routecast_state_settles_pending"] == 0
    assert not any(n.startswith("routecast_state_failures_total") for n in before)
    assert down["routecast_state_settles_pending"] == 2
    assert down["routecast_state_settles_pending_usd"] == 0.75
    assert down['routecast_state_failures_total{call="settle",error="error"}'] >= 1
    assert down['routecast_state_unavailable_total{call="admission"}'] == 1
    assert after["routecast_state_settles_pending"] == 0  # written once Redis was back
    assert after["routecast_state_settles_pending_usd"] == 0
    assert (after['routecast_state_failures_total{call="settle",error="error"}']
            == down['routecast_state_failures_total{call="settle",error="error"}'])


def test_a_redis_that_does_not_answer_counts_as_a_timeout(redis_prefix: str) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        state = RedisState(f"redis://127.0.0.1:{port}/0", prefix=redis_prefix, timeout_s=0.1)

        async def body() -> None:
            with pytest.raises(StateUnavailableError):
                await state.admit_key(key())
            await state.client.aclose()

        asyncio.run(body())
    seen = scrape(state_gauges(state))
    assert seen['routecast_state_failures_total{call="admission",error="timeout"}'] == 1
    assert seen['routecast_state_unavailable_total{call="admission"}'] == 1


def row(i: int) -> LogRow:
    return LogRow(ts=float(i), endpoint="auto", model="small", route="direct", status=200,
                  stream=False, request_id=f"r{i}")


def test_request_log_errors_backlog_and_lost_rows(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requestlog, "MAX_RETRY_ROWS", 3)
    db = Database.open(str(tmp_path / "log.db"))
    log = RequestLog(db, batch_ms=5)
    gauges = request_log_gauges(log)
    log.start()
    with db.begin() as conn:  # the table away (a full disk, a database restarting)
        conn.execute(text("ALTER TABLE requests RENAME TO requests_away"))
    for i in range(5):
        log.write(row(i))
    deadline = time.monotonic() + 10
    while log.write_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    down = scrape(gauges)
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE requests_away RENAME TO requests"))
    log.write(row(5))
    log.close()
    after = scrape(gauges)
    db.close()
    assert down["routecast_request_log_write_errors_total"] >= 1
    assert down["routecast_request_log_rows_dropped_total"] == 2  # 5 failed, 3 kept
    assert down["routecast_request_log_backlog_rows"] == 3
    assert down["routecast_request_log_rows_written_total"] == 0
    assert after["routecast_request_log_rows_written_total"] == 4  # the 3 kept, then row 5
    assert after["routecast_request_log_backlog_rows"] == 0
    assert after["routecast_request_log_rows_dropped_total"] == 2


def test_key_table_reads_are_counted(tmp_path: Path) -> None:
    db = Database.open(str(tmp_path / "keys.db"))
    add_key(db, "a")
    store = KeyStore(db)
    store.open()
    asyncio.run(store.reload_async())
    assert scrape(key_gauges(store))["routecast_key_table_reads_total"] == 2
    store.close()
    db.close()


def test_the_new_metrics_add_up_across_workers(tmp_path: Path) -> None:
    """Totals are summed over every worker that ran (dead ones too); backlogs and pending
    settles over the live workers (worker_metrics.merge)."""
    logs = []
    for i in range(2):
        log = RequestLog(str(tmp_path / "log.db"))
        log.rows_written, log.write_errors, log._committing = 10 * (i + 1), i, 2
        logs.append(log)
    states = [RedisState("redis://127.0.0.1:1/0") for _ in range(2)]
    for i, state in enumerate(states):
        state.failed[("settle", "timeout")] = i + 1
        state._settles = [("k", "r", 0.5, 0.0)] * (i + 1)
    families = [
        [m.family() for m in (*request_log_gauges(log), *state_gauges(state))]
        for log, state in zip(logs, states, strict=True)]
    families = json.loads(json.dumps(families))  # as the snapshots travel
    merged = parse(render_families(merge([("1", True, families[0]),
                                          ("2", False, families[1])])))
    assert merged["routecast_request_log_rows_written_total"] == 30  # both, one dead
    assert merged["routecast_request_log_write_errors_total"] == 1
    assert merged["routecast_request_log_backlog_rows"] == 2  # the live one only
    assert merged['routecast_state_failures_total{call="settle",error="timeout"}'] == 3
    assert merged["routecast_state_settles_pending"] == 1
    assert merged["routecast_state_settles_pending_usd"] == 0.5
    assert not any("worker=" in name for name in merged)


def test_a_server_with_redis_and_auth_shows_them(redis_url: str, redis_prefix: str,
                                                 tmp_path: Path) -> None:
    db = tmp_path / "rc.db"
    token = add_key(db, "app", budget_usd=1.0)
    with StubUpstream() as stub:
        config = make_config(stub.url, db, auth={"required": True},
                             state={"redis_url": redis_url, "key_prefix": redis_prefix})
        with serve(config) as base:
            body = json.dumps({"model": "small",
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            status = call(base, "POST", "/v1/chat/completions", body,
                          {"authorization": f"Bearer {token}"})[0]
            assert status == 200
            deadline = time.monotonic() + 5
            while True:
                seen = parse(call(base, "GET", "/metrics")[2].decode())
                written = seen.get("routecast_request_log_rows_written_total", 0)
                if written >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    assert written == 1
    assert seen["routecast_request_log_backlog_rows"] == 0
    assert seen["routecast_state_settles_pending"] == 0
    assert seen["routecast_key_table_reads_total"] >= 1
    assert not any(re.match(r"routecast_state_failures_total", n) for n in seen)
