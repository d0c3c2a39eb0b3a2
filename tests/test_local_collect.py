"""``collect`` with a scripted ``ask``: outcomes, costs, concurrency, journal and resume."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from routecast.data.canonical import load
from routecast.data.pricing import Price
from routecast.errors import ConfigError, DataFormatError, UpstreamError
from routecast.local.client import Answer, Endpoint
from routecast.local.collect import (
    CollectResult,
    ModelSpec,
    collect_async,
    journal_path,
    mean_token_probability,
)
from routecast.local.graders import Judge
from routecast.local.journal import Journal
from routecast.local.tasks import Task

TASKS = [Task(f"t{i}", f"What is {i} + {i}? Answer with the number only.", str(2 * i),
              "number", "arith", 1) for i in range(6)]


def specs() -> list[ModelSpec]:
    return [ModelSpec(Endpoint("good", "http://127.0.0.1:1"), power_w=20.0),
            ModelSpec(Endpoint("bad", "http://127.0.0.1:2", max_tokens=8),
                      price=Price(1.0, 2.0, "test"))]


class Scripted:
    """A fake backend: ``good`` answers right, ``bad`` answers wrong; records concurrency."""

    def __init__(self, fail: set[tuple[str, str]] | None = None, delay: float = 0.01):
        self.calls: list[tuple[str, str]] = []
        self.fail = fail or set()
        self.delay = delay
        self.in_flight: dict[str, int] = {}
        self.peak_total = 0
        self.peak_model: dict[str, int] = {}

    async def __call__(self, endpoint: Endpoint, prompt: str) -> Answer:
        model = endpoint.model
        self.calls.append((model, prompt))
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        self.peak_model[model] = max(self.peak_model.get(model, 0), self.in_flight[model])
        self.peak_total = max(self.peak_total, sum(self.in_flight.values()))
        try:
            await asyncio.sleep(self.delay)
            if (model, prompt) in self.fail:
                raise UpstreamError("boom", model=model, retryable=False)
            i = int(prompt.split()[2])
            text = str(2 * i) if model == "good" else str(2 * i + 1)
            return Answer(text, tokens_in=10 + i, tokens_out=2, latency_s=0.5 + i,
                          token_logprobs=(math.log(0.9), math.log(0.5)))
        finally:
            self.in_flight[model] -= 1


def run(out: Path, ask: Scripted, tasks: list[Task] = TASKS, **kw: object) -> CollectResult:
    return asyncio.run(collect_async(tasks, specs(), out, ask=ask, **kw))  # type: ignore[arg-type]


def test_mean_token_probability() -> None:
    assert mean_token_probability([math.log(0.9), math.log(0.5)]) == pytest.approx(0.7)
    assert mean_token_probability([]) is None
    assert mean_token_probability(None) is None


def test_collect_writes_canonical_outcomes(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run(out, Scripted(), seed=3, usd_per_kwh=0.5)
    assert (result.resumed, result.asked) == (0, 12)
    ds = load(out)
    assert ds.models == ("good", "bad") and ds.ids == tuple(t.id for t in TASKS)
    assert ds.prompts == tuple(t.prompt for t in TASKS)
    np.testing.assert_array_equal(ds.quality, np.tile([1.0, 0.0], (6, 1)))
    i = np.arange(6)
    assert ds.latency_s is not None and ds.tokens_in is not None and ds.confidence is not None
    np.testing.assert_allclose(ds.latency_s[:, 0], 0.5 + i)
    np.testing.assert_allclose(ds.tokens_in[:, 1], 10 + i)
    np.testing.assert_allclose(ds.confidence, 0.7)
    # local: 20 W x latency at 0.5 USD/kWh; priced: tokens x USD per million tokens
    np.testing.assert_allclose(ds.cost_usd[:, 0], 20 * (0.5 + i) / 3.6e6 * 0.5)
    np.testing.assert_allclose(ds.cost_usd[:, 1], ((10 + i) * 1.0 + 2 * 2.0) / 1e6)
    assert ds.responses is not None and ds.responses[2, 0] == "4"
    assert ds.task == ("arith",) * 6
    assert set(ds.split.tolist()) <= {"train", "validation", "test"}
    assert ds.meta["models"]["bad"]["max_tokens"] == 8
    assert ds.meta["energy_j_mean"]["good"] == pytest.approx(20 * (0.5 + i).mean())
    assert result.journal == journal_path(out) and result.journal.is_file()


def test_concurrency_is_capped_overall_and_per_model(tmp_path: Path) -> None:
    ask = Scripted(delay=0.02)
    run(tmp_path / "o.jsonl", ask, concurrency=2)
    assert ask.peak_total == 2
    assert ask.peak_model == {"good": 1, "bad": 1}  # both models busy at once, one request each
    ask1 = Scripted(delay=0.02)
    run(tmp_path / "p.jsonl", ask1, concurrency=1)
    assert ask1.peak_total == 1


def test_resume_asks_only_missing_pairs(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    failing = {("bad", TASKS[1].prompt), ("good", TASKS[4].prompt)}
    with pytest.raises(UpstreamError, match="2 of 12 requests failed") as info:
        run(out, Scripted(fail=failing))
    assert "rerun the same command" in str(info.value)
    assert not out.exists()  # no half dataset
    assert len(Journal(journal_path(out)).load()) == 10
    ask = Scripted()
    result = run(out, ask)
    assert sorted(ask.calls) == sorted(failing)
    assert (result.resumed, result.asked) == (10, 2)
    assert load(out).quality[:, 0].tolist() == [1.0] * 6


def test_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    run(out, Scripted())
    jpath = journal_path(out)
    lines = jpath.read_text().splitlines(keepends=True)
    jpath.write_text("".join(lines[:5]) + lines[5][:20])  # killed while writing record 6
    ask = Scripted()
    result = run(out, ask)
    assert (result.resumed, result.asked) == (5, 7)
    keys = [(r["id"], r["model"]) for r in map(json.loads, jpath.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 12


def test_resume_with_changed_settings_or_prompt_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    run(out, Scripted())
    changed = [ModelSpec(Endpoint("good", "http://127.0.0.1:1", max_tokens=99), power_w=20.0),
               specs()[1]]
    with pytest.raises(ConfigError, match="other settings"):
        asyncio.run(collect_async(TASKS, changed, out, ask=Scripted()))
    reworded = [Task("t0", "What is zero plus zero?", "0", "number"), *TASKS[1:]]
    with pytest.raises(ConfigError, match="changed"):
        run(out, Scripted(), tasks=reworded)
    # A subset of the same tasks resumes fine, and a new base URL (port) does not matter.
    ask = Scripted()
    assert run(tmp_path / "o.jsonl", ask, tasks=TASKS[:3]).asked == 0
    assert ask.calls == []


def test_corrupt_journal_line_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    journal_path(out).write_text('{"id": "t0", "model": "good"}\nnot json\n{"id": "x"}\n')
    with pytest.raises(DataFormatError, match=":2: invalid JSON"):
        run(out, Scripted())


def test_judge_grades_judge_tasks(tmp_path: Path) -> None:
    tasks = [Task("j0", "What is 3 + 3? Answer with the number only.", "6", "judge")]

    async def verdict(endpoint: Endpoint, prompt: str) -> Answer:
        return Answer("Y" if "Given answer: 6" in prompt else "N", 5, 1, 0.1, None)

    judge = Judge(verdict, Endpoint("judge", "http://127.0.0.1:3"))
    ds = run(tmp_path / "o.jsonl", Scripted(), tasks=tasks, judge=judge).dataset
    assert ds.quality.tolist() == [[1.0, 0.0]]
    replies = {r["model"]: r["judge_reply"] for r in Journal(
        journal_path(tmp_path / "o.jsonl")).load().values()}
    assert replies == {"good": "Y", "bad": "N"}  # kept for audits
    assert ds.meta["judge"] == "judge"
    with pytest.raises(ConfigError, match="--judge"):
        run(tmp_path / "p.jsonl", Scripted(), tasks=tasks)


def test_bad_configuration_is_refused_before_asking(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        ModelSpec(Endpoint("m", "http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="http"):
        Endpoint("m", "127.0.0.1:1")
    with pytest.raises(ConfigError, match="more than once"):
        asyncio.run(collect_async(TASKS, [specs()[0], specs()[0]], tmp_path / "o.jsonl",
                                  ask=Scripted()))
    with pytest.raises(ConfigError, match="no tasks"):
        run(tmp_path / "o.jsonl", Scripted(), tasks=[])


def test_progress_reports_every_pair_with_running_quality(tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    run(tmp_path / "o.jsonl", Scripted(), progress=lambda d, t, s: seen.append((d, t, s)))
    assert [d for d, _, _ in seen] == list(range(13)) and {t for _, t, _ in seen} == {12}
    assert seen[0][2] == "quality good - | bad -"
    assert seen[-1][2] == "quality good 1.00 | bad 0.00"
    # resumed pairs count from the start
    seen.clear()
    run(tmp_path / "o.jsonl", Scripted(), progress=lambda d, t, s: seen.append((d, t, s)))
    assert seen == [(12, 12, "quality good 1.00 | bad 0.00")]
