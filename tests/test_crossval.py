"""Generalisation checks: fit on one data set and test on another; k-fold cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routecast.bench.crossval import (
    VALIDATION_FRACTION,
    cross_dataset,
    fold_splits,
    k_fold,
    stack,
    t_interval,
)
from routecast.bench.evaluate import evaluate
from routecast.cli import main
from routecast.data import load_dataset, save_dataset
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from tests.toy import toy_dataset


@pytest.fixture(scope="module")
def toy() -> Dataset:
    return toy_dataset(300)


def test_fold_splits_test_every_prompt_once() -> None:
    n, k = 103, 4
    splits = fold_splits(n, k, seed=3)
    tested = np.stack([s == "test" for s in splits])
    assert (tested.sum(axis=0) == 1).all()  # each prompt is tested in exactly one fold
    sizes = tested.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == n
    for s in splits:
        rest = int((s != "test").sum())
        assert int((s == "validation").sum()) == round(VALIDATION_FRACTION * rest)
    again = fold_splits(n, k, seed=3)
    assert all((a == b).all() for a, b in zip(splits, again, strict=True))
    other = fold_splits(n, k, seed=4)
    assert any((a != b).any() for a, b in zip(splits, other, strict=True))


def test_fold_splits_reject_bad_k() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        fold_splits(100, 1)
    with pytest.raises(ConfigError, match="fewer folds"):
        fold_splits(12, 5)


def test_t_interval_matches_the_textbook() -> None:
    # mean 3, sd sqrt(2.5); t(0.975, 4 df) = 2.7764 from any t table.
    out = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764 * np.sqrt(2.5) / np.sqrt(5)
    assert out["mean"] == pytest.approx(3.0) and out["sd"] == pytest.approx(np.sqrt(2.5))
    assert out["ci"] == pytest.approx([3 - half, 3 + half], abs=1e-4)
    assert t_interval([0.4]) == {"mean": 0.4, "sd": None, "ci": None, "n": 1}
    assert t_interval([])["mean"] is None


def test_k_fold_reports_every_fold_and_their_mean(toy: Dataset) -> None:
    routers = ("best-single", "linear")
    folds = k_fold(toy, 3, routers=routers, seed=1)
    assert folds["k"] == 3 and len(folds["per_fold"]) == 3
    assert sum(f["n_test"] for f in folds["per_fold"]) == toy.n_prompts
    for f in folds["per_fold"]:
        assert f["n_train"] + f["n_validation"] + f["n_test"] == toy.n_prompts
        assert [r["name"] for r in f["routers"]] == list(routers)
    linear = next(s for s in folds["summary"] if s["name"] == "linear")
    per = [r["aiq"] for f in folds["per_fold"] for r in f["routers"] if r["name"] == "linear"]
    assert linear["aiq"]["mean"] == pytest.approx(np.mean(per)) and linear["aiq"]["n"] == 3
    # The toy prompts say who is right: a learned router beats the zero router in every fold.
    assert linear["aiq_minus_zero"]["ci"][0] > 0
    # Each fold is an ordinary evaluation on its own split: fold 0 reproduces one by hand.
    split = fold_splits(toy.n_prompts, 3, seed=1)[0]
    by_hand = evaluate(toy.with_splits(split), routers=routers, n_boot=0, seed=1)
    assert folds["per_fold"][0]["routers"][1]["aiq"] == pytest.approx(
        by_hand["routers"][1]["aiq"])


def test_cross_dataset_tests_on_all_of_the_other_set(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "routerbench-subset")
    assert ds.task is not None
    mbpp = np.array([t == "mbpp" for t in ds.task])
    a, b = ds.take(~mbpp), ds.take(mbpp)  # multiple choice -> code: a real shift of task
    result = cross_dataset(a, b, routers=("best-single", "knn"), n_boot=0, cascades=False)
    assert result["n_prompts"] == b.n_prompts
    assert result["n_train"] == int((a.split == "train").sum())
    assert result["n_validation"] == int((a.split == "validation").sum())
    np.testing.assert_allclose([m["quality"] for m in result["models"]], b.mean_quality())
    assert result["cross"]["shared_prompts"] == 0
    assert result["cross"]["test"] == {"dataset": b.name, "split": "all",
                                       "n_prompts": b.n_prompts}


def test_cross_dataset_aligns_models_and_counts_shared_prompts(toy: Dataset) -> None:
    plain = cross_dataset(toy, toy, routers=("linear",), n_boot=0)
    reordered = cross_dataset(toy, toy.select_models(toy.models[::-1]), routers=("linear",),
                              n_boot=0)
    assert [m["name"] for m in reordered["models"]] == list(toy.models)
    assert reordered["routers"][0]["aiq"] == pytest.approx(plain["routers"][0]["aiq"])
    in_fit = int(np.isin(toy.split, ["train", "validation"]).sum())
    assert plain["cross"]["shared_prompts"] == in_fit
    with pytest.raises(ConfigError, match="same models"):
        cross_dataset(toy, toy.select_models(toy.models[:2]))


def test_stack_prefixes_ids_and_keeps_only_shared_extras(toy: Dataset) -> None:
    other = toy.take(np.arange(10))
    both = stack(toy, other, name="x")
    assert both.n_prompts == toy.n_prompts + 10
    assert both.ids[0] == f"a:{toy.ids[0]}" and both.ids[-1] == f"b:{other.ids[-1]}"
    assert both.task is not None
    no_task = Dataset(name="n", models=other.models, ids=other.ids, prompts=other.prompts,
                      quality=other.quality, cost_usd=other.cost_usd, split=other.split)
    assert stack(toy, no_task, name="y").task is None


def test_bench_cli_cross_and_folds(tmp_path: Path, toy: Dataset,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    save_dataset(toy, a)
    save_dataset(toy_dataset(120, seed=5), b)
    out = tmp_path / "cross.json"
    main(["bench", "--train", str(a), "--test", str(b), "--routers", "best-single,linear",
          "--bootstrap", "0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 120 and result["cross"]["train"]["dataset"] == "toy"
    assert "evaluated on all 120 prompts" in capsys.readouterr().out
    main(["bench", str(a), "--folds", "3", "--routers", "best-single,linear", "--bootstrap",
          "0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["split"] == "test" and len(result["folds"]["per_fold"]) == 3
    assert "3-fold cross-validation" in capsys.readouterr().out
    for argv in (["bench", "--train", str(a)], ["bench", str(a), "--train", str(a), "--test",
                                                  str(b)], ["bench"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1
