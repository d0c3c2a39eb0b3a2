"""Cascades and cascade routing in `routecast bench`, on real and synthetic recorded outcomes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from routecast.bench.evaluate import evaluate
from routecast.bench.schema import BenchResult
from routecast.cli import cli
from routecast.data import load_dataset
from routecast.data.dataset import Dataset
from routecast.metrics import delta_ibc
from routecast.signals import make_signal
from tests.toy import toy_dataset, toy_with_answers

KINDS = {"router", "cascade", "cascade_routing"}


@pytest.fixture(scope="module")
def zellinger(shared_data: Path) -> tuple[Dataset, BenchResult]:
    data = load_dataset(shared_data / "llm-cascades-zellinger")
    return data, evaluate(data, routers=("best-single", "linear"), n_boot=5)


def _walk(cascade: dict[str, Any], data: Dataset, scores: np.ndarray
          ) -> tuple[list[float], list[float], list[float], list[int]]:
    """The cascade replayed prompt by prompt with plain Python, for comparison."""
    assert data.latency_s is not None
    cols = [data.models.index(m) for m in cascade["models"]]
    quality, cost, latency, calls = [], [], [], []
    for i in range(data.n_prompts):
        c = lat = 0.0
        for step, j in enumerate(cols):
            c += data.cost_usd[i, j]
            lat += data.latency_s[i, j]
            last = step == len(cols) - 1
            if last or scores[i, j] >= cascade["thresholds"][step]:
                quality.append(data.quality[i, j])
                calls.append(step + 1)
                break
        cost.append(c)
        latency.append(lat)
    return quality, cost, latency, calls


def test_cascade_points_match_a_plain_replay(zellinger: tuple[Dataset, dict[str, Any]]) -> None:
    data, res = zellinger
    train, test = data.subset("train"), data.subset("test")
    entry = next(r for r in res["routers"] if r["name"] == "cascade:confidence")
    scores = make_signal("confidence").fit(train).score(test)
    points = entry["points"]
    assert len(points) == len(entry["curve"]) > 3
    for point in points[:: max(1, len(points) // 6)]:
        q, c, lat, calls = _walk(point["cascade"], test, scores)
        assert point["quality"] == pytest.approx(np.mean(q))
        assert point["cost_usd"] == pytest.approx(np.mean(c))
        assert point["latency_p50_s"] == pytest.approx(np.quantile(lat, 0.5))
        assert point["latency_p99_s"] == pytest.approx(np.quantile(lat, 0.99))
        assert point["escalation_rate"] == pytest.approx(np.mean(np.array(calls) > 1))
        assert point["mean_calls"] == pytest.approx(np.mean(calls))


def test_entries_kinds_and_calibrated_points(zellinger: tuple[Dataset, dict[str, Any]]) -> None:
    _, res = zellinger
    names = {r["name"]: r for r in res["routers"]}
    assert set(names) >= {"cascade:confidence", "cascade:learned",
                          "cascade-routing:confidence", "cascade-routing:learned"}
    best = res["best_single"]
    assert best["latency_p99_s"] >= best["latency_p50_s"] > 0
    for r in res["routers"]:
        assert r["kind"] in KINDS
        if r["kind"] == "router":
            continue
        assert all(len(p) == 2 for p in r["curve"])
        for p in r["points"]:
            assert 0 <= p["escalation_rate"] <= 1
            assert p["latency_p99_s"] >= p["latency_p50_s"] > 0
        cal = r["calibrated_95"]
        assert cal["quality_vs_best"] == pytest.approx(cal["quality"] / best["quality"])
        assert cal["cost_vs_best"] == pytest.approx(cal["cost_usd"] / best["cost_usd"])
        # A cascade's figures are test-split replays: never above the oracle's quality.
        assert r["max_quality"] <= res["oracle"]["quality"] + 1e-12
        assert set(r["ci"]) >= {"aiq", "savings_at_95"}
    # The tuned cascades keep 95 % of the best single model's quality for far less.
    cascade = names["cascade:learned"]
    assert cascade["savings_at_95"] is not None and cascade["savings_at_95"] > 0.5
    assert cascade["tuning"]["cascades"] > 10_000


def test_delta_ibc_follows_automix(zellinger: tuple[Dataset, dict[str, Any]]) -> None:
    _, res = zellinger
    cheap = min(res["models"], key=lambda m: m["cost_usd"])
    best = res["best_single"]
    for r in res["routers"]:
        cal = r["calibrated_95"]
        if cal is None or cal.get("quality") is None:
            assert r["delta_ibc"] is None
            continue
        slope = (cal["quality"] - cheap["quality"]) / (cal["cost_usd"] - cheap["cost_usd"])
        base = (best["quality"] - cheap["quality"]) / (best["cost_usd"] - cheap["cost_usd"])
        assert r["delta_ibc"] == pytest.approx((slope - base) / base)
    assert delta_ibc(0.8, 1.0, (0.5, 1.0), (0.9, 5.0)) is None  # no cost over the SLM
    assert delta_ibc(0.7, 3.0, (0.5, 1.0), (0.9, 5.0)) == pytest.approx(0.0)


def test_routerbench_gets_the_signals_that_read_its_answers(shared_data: Path) -> None:
    # RouterBench records responses but no confidence: the learned and cross-model scorers,
    # not the confidence signal.
    data = load_dataset(shared_data / "routerbench-subset")
    rng = np.random.default_rng(0)
    small = data.take(np.sort(rng.choice(data.n_prompts, 600, replace=False)))
    res = evaluate(small, routers=("linear",), n_boot=0)
    kinds = {r["name"]: r["kind"] for r in res["routers"]}
    assert kinds == {"linear": "router", "cascade:learned": "cascade",
                     "cascade-routing:learned": "cascade_routing",
                     "cascade:cross-agreement": "cascade",
                     "cascade-routing:cross-agreement": "cascade_routing"}
    cascade = res["routers"][1]
    assert cascade["points"][0]["latency_p50_s"] is None  # RouterBench records no latency
    assert "latency_p50_s" not in res["best_single"]


def test_evaluating_validation_never_tunes_on_it() -> None:
    data = toy_with_answers(300)
    res = evaluate(data, split="validation", routers=("linear",), n_boot=0)
    cascade = next(r for r in res["routers"] if r["kind"] == "cascade")
    assert cascade["tuning"]["splits"] == ["train"]
    assert cascade["tuning"]["n_prompts"] == res["n_train"]
    res = evaluate(data, routers=("linear",), n_boot=0)
    cascade = next(r for r in res["routers"] if r["kind"] == "cascade")
    assert cascade["tuning"]["splits"] == ["train", "validation"]


def test_no_cascades_without_signals_or_when_asked() -> None:
    res = evaluate(toy_dataset(120), routers=("linear",), n_boot=0)
    assert [r["kind"] for r in res["routers"]] == ["router"]
    assert "delta_ibc" in res["routers"][0]


# -- a cascade folder with both _train and _test files --------------------------------------

def _chain(models: list[str], n: int, rng: np.random.Generator, offset: int
           ) -> dict[str, Any]:
    skill = {m: 0.45 + 0.2 * k for k, m in enumerate(models)}
    right = {m: (rng.random(n) < skill[m]).tolist() for m in models}
    return {
        "chain": "Chain(conf_signal=ModelIntrinsicLogProb)",
        "system_prompts": ["Answer."] * n,
        "user_prompts": [f"Question {offset + i} about topic {i % 4}?" for i in range(n)],
        "model_answers": {m: [("yes " if r else "no ") + str(i % 3)
                              for i, r in enumerate(right[m])] for m in models},
        "model_correctness": right,
        "model_costs": {m: [1e-5 * (1 + 5 * k) for _ in range(n)]
                        for k, m in enumerate(models)},
        "model_latencies": {m: [100.0 * (1 + k) + i for i in range(n)]
                            for k, m in enumerate(models)},
        "model_tokens": {m: [{"in": 20, "out": 3} for _ in range(n)] for m in models},
        "raw_confidences": {m: [float(np.log(0.9 if r else 0.3) - rng.random() * 0.2)
                                for r in right[m]] for m in models},
    }


def _folder(tmp_path: Path, n_train: int = 80, n_test: int = 40) -> Path:
    results = tmp_path / "set" / "chain_results"
    results.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for dataset in ("alpha", "beta"):
        for split, n in (("train", n_train), ("test", n_test)):
            state = rng.bit_generator.state
            for chain, models in (("small", ["s1", "s2"]), ("big", ["b1"])):
                rng.bit_generator.state = state  # the same prompts in every chain
                data = _chain(models, n, rng, offset=0 if split == "train" else 10_000)
                file = results / f"{dataset}_full_{chain}_chain_results_{split}.json.gz"
                with gzip.open(file, "wt", encoding="utf-8") as f:
                    json.dump(data, f)
    return tmp_path / "set"


def test_bench_split_test_uses_the_source_test_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["bench", str(folder), "--split", "test", "--json",
                                      str(out), "--bootstrap", "0", "--routers", "linear"])
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    assert res["n_prompts"] == 2 * 40  # exactly the _test files' queries
    assert res["n_train"] + res["n_validation"] == 2 * 80
    assert {r["kind"] for r in res["routers"]} == KINDS
    assert "cascade:confidence" in result.output  # the table shows them
    result = CliRunner().invoke(cli, ["bench", str(folder), "--json", str(out), "--bootstrap",
                                      "0", "--routers", "linear", "--no-cascades"])
    assert result.exit_code == 0, result.output
    assert [r["kind"] for r in json.loads(out.read_text())["routers"]] == ["router"]
