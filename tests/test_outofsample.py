"""Leave one task out and repeated random splits (bench/outofsample.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from routecast.bench.outofsample import (
    out_of_sample,
    repeated_splits,
    spread,
    task_groups,
    task_splits,
)
from routecast.cli import cli
from routecast.errors import ConfigError
from tests.toy import toy_dataset


def test_each_task_is_held_out_once_and_never_trained_on() -> None:
    data = toy_dataset(200)
    data = replace(data, task=tuple(f"{t}/sub{i % 3}" for i, t in enumerate(data.task or ())))
    assert set(task_groups(data).tolist()) == {"easy", "hard"}  # grouped before the "/"
    folds = task_splits(data, seed=1)
    assert [t for t, _ in folds] == ["easy", "hard"]
    groups = task_groups(data)
    for task, split in folds:
        assert set(groups[split == "test"].tolist()) == {task}
        assert task not in set(groups[split != "test"].tolist())
        val = (split == "validation").sum() / (split != "test").sum()
        assert 0.15 < val < 0.25
    with pytest.raises(ConfigError, match="no task labels"):
        task_splits(replace(data, task=None))


def test_repeated_splits_differ_and_spread_summarises() -> None:
    a, b = repeated_splits(toy_dataset(100), 2, seed=0)
    assert (a[1] != b[1]).any()
    s = spread([float(x) for x in range(101)])
    assert (s["median"], s["p5"], s["p95"], s["min"], s["max"], s["n"]) == (50, 5, 95, 0, 100,
                                                                            101)
    assert spread([])["median"] is None


def test_leave_one_task_out_reports_every_fold_and_the_target_share() -> None:
    data = toy_dataset(400)
    oos = out_of_sample(data, "task", routers=("linear",), confidence=0.9)
    assert [f["fold"] for f in oos["folds"]] == ["easy", "hard"]
    (linear,) = oos["summary"]
    assert linear["name"] == "linear"
    assert linear["spread"]["aiq_minus_zero"]["n"] == 2
    # With the single models in every curve, no fold's AIQ falls below the zero router's.
    lowest = linear["spread"]["aiq_minus_zero"]["min"]
    assert lowest is not None and lowest >= -1e-12
    met = [e["met_95"] for f in oos["folds"] for e in f["entries"]]
    if linear["met_95_share"] is not None:
        assert linear["met_95_share"] == pytest.approx(
            np.mean([m for m in met if m is not None]))


def test_cli_folds_task_writes_the_out_of_sample_section(tmp_path: Path) -> None:
    from routecast.data.canonical import save as save_dataset

    path = tmp_path / "toy"
    save_dataset(toy_dataset(300), path)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(cli, ["bench", str(path), "--routers", "linear", "--bootstrap",
                                   "0", "--folds", "task", "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["out_of_sample"]["protocol"] == "leave-one-task-out"
    assert "aiq_routerbench" in got["routers"][0]
    assert got["aiq_conventions"]["aiq_routerbench"].startswith("RouterBench")
    bad = CliRunner().invoke(cli, ["bench", str(path), "--folds", "seven"])
    assert bad.exit_code != 0 and "'task'" in str(bad.exception)


def test_repeated_splits_refit_per_split_and_respect_the_time_limit() -> None:
    data = toy_dataset(300)
    oos = out_of_sample(data, "repeats", repeats=2, routers=("linear",), cascades=False,
                        confidence=None)
    assert oos["protocol"] == "repeated-splits" and len(oos["folds"]) == 2
    assert oos["summary"][0]["spread"]["aiq"]["n"] == 2
    assert oos["folds"][0]["n_test"] == 60  # 20 % of 300
    cut = out_of_sample(data, "repeats", repeats=3, routers=("linear",), cascades=False,
                        confidence=None, time_limit_s=0.0)
    assert cut["folds"] == [] and "time limit" in cut.get("skipped", [""])[0]
