"""The request log records every request as answered, and ``routecast stats`` sums it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from routecast.cli import cli
from routecast.server.requestlog import LogRow, RequestLog
from routecast.server.stats import ALL, request_stats
from tests.routecast_live import PRICES, log_rows, make_config, serve
from tests.stub_upstream import Step, StubUpstream


def price(model: str, prompt: int, completion: int) -> float:
    price_in, price_out, _ = PRICES[model]
    return (prompt * price_in + completion * price_out) / 1e6


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Any]]]:
    """Requests sent through a server with prompt logging on; yields (db, what came back)."""
    db = tmp_path_factory.mktemp("log") / "requests.db"
    with StubUpstream() as stub:
        config = make_config(stub.url, db, endpoints={
            "guarded": {"type": "plain", "model": "large", "fallbacks": ["small"]}})
        config.storage.log_prompts = True
        seen: list[Any] = []
        with serve(config) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
            for endpoint, text in [("small", "one two"), ("medium", "three"),
                                   ("guarded", "four five six"), ("guarded", "seven")]:
                if text == "seven":
                    stub.then(*[Step(503)] * 3)  # large fails: small answers
                raw = client.chat.completions.with_raw_response.create(
                    model=endpoint, messages=[{"role": "user", "content": text}])
                seen.append((endpoint, text, raw.parse(), raw.headers))
            chunks = list(client.chat.completions.create(
                model="medium", messages=[{"role": "user", "content": "streamed"}],
                stream=True))
            seen.append(("medium", "streamed", chunks, None))
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=[
                    {"role": "user", "content": "x"}])
        yield db, seen  # the server has shut down: the log is flushed


def test_rows_match_the_requests(traffic: tuple[Path, list[Any]]) -> None:
    db, seen = traffic
    rows = log_rows(db, 6)
    assert len(rows) == 6
    for row, (endpoint, text, reply, headers) in zip(rows, seen, strict=False):
        assert row["endpoint"] == endpoint
        assert row["status"] == 200
        assert json.loads(row["prompt"]) == [{"role": "user", "content": text}]
        if headers is None:  # the stream
            summary = reply[-1].model_extra["routecast"]
            assert (row["stream"], row["model"]) == (1, "medium")
            assert row["cost_usd"] == pytest.approx(summary["cost_usd"])
            assert row["completion_tokens"] == summary["usage"]["completion_tokens"]
            continue
        assert row["model"] == reply.model == headers["x-routecast-model"]
        assert row["route"] == headers["x-routecast-route"]
        assert row["prompt_tokens"] == reply.usage.prompt_tokens
        assert row["completion_tokens"] == reply.usage.completion_tokens
        assert row["cost_usd"] == pytest.approx(float(headers["x-routecast-cost-usd"]))
        assert row["latency_s"] * 1000 <= float(headers["x-routecast-latency-ms"]) + 50
    failed = rows[-1]
    assert (failed["endpoint"], failed["status"], failed["model"]) == ("nope", 404, None)
    assert "unknown model 'nope'" in failed["error"]
    assert rows[3]["route"] == "large,small"


def test_stats_spend_savings_and_escalations(traffic: tuple[Path, list[Any]]) -> None:
    db, seen = traffic
    stats = {(r.endpoint, r.model): r for r in request_stats(db)}
    guarded = [(reply.model, reply.usage) for e, _, reply, _ in seen if e == "guarded"]
    spend = sum(price(m, u.prompt_tokens, u.completion_tokens) for m, u in guarded)
    baseline = sum(price("large", u.prompt_tokens, u.completion_tokens) for _, u in guarded)
    total = stats[("guarded", ALL)]
    assert total.requests == 2 and total.errors == 0
    assert total.baseline_model == "large"
    assert total.spend_usd == pytest.approx(spend)
    assert total.baseline_usd == pytest.approx(baseline)
    assert total.saved_fraction == pytest.approx(1 - spend / baseline)
    assert total.escalation_rate == pytest.approx(0.5)
    assert stats[("guarded", "small")].requests == 1
    assert stats[("nope", "(failed)")].errors == 1
    medium = stats[("medium", ALL)]
    assert medium.requests == 2 and medium.saved_fraction == pytest.approx(0.0)
    assert medium.latency_p50_ms is not None and medium.latency_p99_ms is not None
    assert 0 < medium.latency_p50_ms <= medium.latency_p99_ms


def test_stats_command(traffic: tuple[Path, list[Any]]) -> None:
    db, _ = traffic
    result = CliRunner().invoke(cli, ["stats", "--db", str(db)])
    assert result.exit_code == 0, result.output
    for word in ("guarded", "medium", "escalated", "saved", "50.0%", "guarded -> large"):
        assert word in result.output
    as_json = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    rows = json.loads(as_json.output)
    assert {r["endpoint"] for r in rows} == {"small", "medium", "guarded", "nope"}


def test_prompts_are_not_logged_by_default(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "log.db")
    log.start()
    log.write(LogRow(ts=1.0, endpoint="e", model="m", route="m", status=200, stream=False,
                     prompt="secret"))
    log.close()
    (prompt,) = sqlite3.connect(tmp_path / "log.db").execute(
        "SELECT prompt FROM requests").fetchone()
    assert prompt is None


def test_the_writer_batches_and_flushes_everything_on_close(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "log.db", batch_rows=100, batch_ms=10_000)
    log.start()
    for i in range(1050):
        log.write(LogRow(ts=float(i), endpoint="e", model="m", route="m", status=200,
                         stream=False, cost_usd=0.5))
    log.close()
    con = sqlite3.connect(tmp_path / "log.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*), sum(cost_usd) FROM requests").fetchone() == (1050,
                                                                                     525.0)
