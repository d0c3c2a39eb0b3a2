"""`routecast bench` end to end on the real RouterBench subset, checked independently."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from routecast.bench.evaluate import evaluate
from routecast.cli import cli
from routecast.errors import ConfigError
from tests.toy import toy_dataset

COST = "|total_cost"


def _independent_test_split(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-model quality and cost of the *_test.csv rows, read with nothing but csv."""
    csv.field_size_limit(sys.maxsize)
    models: list[str] = []
    q_rows, c_rows = [], []
    for path in sorted(folder.glob("*_test.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            models = [h[: -len(COST)] for h in reader.fieldnames or [] if h.endswith(COST)]
            for row in reader:
                cells = [row[m] for m in models] + [row[m + COST] for m in models]
                if any(cell.strip() == "" for cell in cells):
                    continue  # the documented drop rule
                q_rows.append([float(row[m]) for m in models])
                c_rows.append([float(row[m + COST]) for m in models])
    return models, np.array(q_rows), np.array(c_rows)


@pytest.fixture(scope="module")
def bench_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(cli, [
        "bench", str(shared_data / "routerbench-subset"), "--split", "test",
        "--json", str(out / "r.json"), "--plot", str(out / "r.png"),
        "--report", str(out / "r.md"), "--bootstrap", "30",
    ])
    assert result.exit_code == 0, result.output
    return json.loads((out / "r.json").read_text()), out


def test_json_contract(bench_run: tuple[dict[str, Any], Path]) -> None:
    res, _ = bench_run
    assert isinstance(res["dataset"], str) and res["split"] == "test"
    assert isinstance(res["n_prompts"], int)
    for m in res["models"]:
        assert isinstance(m["name"], str)
        assert isinstance(m["quality"], float) and isinstance(m["cost_usd"], float)
    for key in ("best_single", "oracle"):
        assert isinstance(res[key]["quality"], float) and isinstance(res[key]["cost_usd"], float)
    assert isinstance(res["zero_router_aiq"], float)
    # Cascades join the list after the routers, marked by their "kind" (bench/cascades.py).
    names = [r["name"] for r in res["routers"] if r["kind"] == "router"]
    assert names == ["random", "best-single", "cheapest", "knn", "linear"]
    for r in res["routers"]:
        assert r["kind"] in ("router", "cascade", "cascade_routing")
        assert isinstance(r["aiq"], float) and isinstance(r["max_quality"], float)
        for key in ("savings_at_95", "savings_at_100"):
            assert r[key] is None or isinstance(r[key], float)
        assert set(r["calibrated_95"]) >= {"quality", "cost_usd"}
        assert all(len(p) == 2 for p in r["curve"])


def test_figures_match_an_independent_recomputation(
        bench_run: tuple[dict[str, Any], Path], shared_data: Path) -> None:
    res, _ = bench_run
    models, q, c = _independent_test_split(shared_data / "routerbench-subset")
    assert res["n_prompts"] == len(q)
    got = {m["name"]: m for m in res["models"]}
    assert set(got) == set(models)
    for j, name in enumerate(models):
        assert got[name]["quality"] == pytest.approx(q[:, j].mean(), abs=1e-12)
        assert got[name]["cost_usd"] == pytest.approx(c[:, j].mean(), abs=1e-15)
    best = max(range(len(models)), key=lambda j: (q[:, j].mean(), -c[:, j].mean()))
    assert res["best_single"]["name"] == models[best]
    assert res["best_single"]["quality"] == pytest.approx(q[:, best].mean())
    # Oracle: per prompt, the cheapest of the models with the best quality.
    oq, oc = [], []
    for qi, ci in zip(q, c, strict=True):
        winners = [j for j in range(len(models)) if qi[j] == qi.max()]
        j = min(winners, key=lambda k: ci[k])
        oq.append(qi[j])
        oc.append(ci[j])
    assert res["oracle"]["quality"] == pytest.approx(np.mean(oq))
    assert res["oracle"]["cost_usd"] == pytest.approx(np.mean(oc))


def test_linear_router_meets_the_foundation_targets(
        bench_run: tuple[dict[str, Any], Path]) -> None:
    res, _ = bench_run
    linear = next(r for r in res["routers"] if r["name"] == "linear")
    best = res["best_single"]
    assert linear["aiq"] > res["zero_router_aiq"]
    assert linear["savings_at_95"] >= 0.60
    # Calibrated on validation only, it still keeps >= 93 % of the best quality on test.
    assert linear["calibrated_95"]["quality"] >= 0.93 * best["quality"]


def test_plot_and_report_are_written(bench_run: tuple[dict[str, Any], Path]) -> None:
    _, out = bench_run
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "r.md").read_text()
    assert "| linear |" in report and "r.png" in report


def test_pair_metrics_on_two_models() -> None:
    data = toy_dataset(300).select_models(["small", "large"])
    res = evaluate(data, routers=["random", "linear"], n_boot=0)
    by_name = {r["name"]: r["pair"] for r in res["routers"]}
    assert by_name["linear"]["weak"] == "small" and by_name["linear"]["strong"] == "large"
    # Random routing recovers the gap about linearly (APGR ~ 0.5); a learned router more.
    assert by_name["linear"]["apgr"] > by_name["random"]["apgr"] + 0.1
    assert 0 <= by_name["linear"]["cpt_50"] <= by_name["linear"]["cpt_80"] <= 1


def test_evaluating_on_train_is_refused() -> None:
    with pytest.raises(ConfigError, match="flattering"):
        evaluate(toy_dataset(60), split="train")
