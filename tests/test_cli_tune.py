"""``routecast tune-cascade``: a cascade tuned on recorded outcomes, into a folder the server
serves, on the real cascade data of Zellinger & Thomson."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from routecast.backends.cascade import CascadeBackend
from routecast.backends.judges import LearnedJudge
from routecast.cascades.cascade import Cascade
from routecast.cli import main
from routecast.data import load_dataset
from routecast.data.dataset import Dataset
from routecast.server.config import parse_config
from routecast.server.endpoints import build_endpoints
from routecast.signals.persist import META_FILE, load_scorer

if TYPE_CHECKING:
    from routecast.signals.learned import LearnedScorer

MODELS = ["llama3.2-1b", "llama3.1-8b", "llama3.1-70b"]


def new_scorer(**params: Any) -> LearnedScorer:
    """An unfitted learned scorer, imported only now: importing its module registers the
    signal, and the registry keeps the order of first imports, which other tests read."""
    from routecast.signals.learned import LearnedScorer

    return LearnedScorer(**params)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``routecast ARGS``, in this process."""
    try:
        main(list(args))
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.fixture(scope="module")
def data_path(shared_data: Path) -> str:
    return str(shared_data / "llm-cascades-zellinger")


@pytest.fixture(scope="module")
def data(data_path: str) -> Dataset:
    return load_dataset(data_path)


@pytest.fixture(scope="module")
def learned(data_path: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Tuned once for the module (capsys is per test, so stdout is captured by hand)."""
    out = tmp_path_factory.mktemp("tuned") / "learned"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(["tune-cascade", data_path, "--out", str(out), "--signal", "learned",
              "--models", ",".join(MODELS), "--quality-fraction", "0.9"])
    return out, buffer.getvalue()


def replay(cascade: Cascade, data: Dataset, scores: Any) -> tuple[float, float]:
    r = cascade.replay(data, scores)
    return r.mean_quality, r.mean_cost_usd


def test_learned_cascade_meets_its_goal_and_records_its_figures(
        learned: tuple[Path, str], data: Dataset) -> None:
    out, printed = learned
    saved = json.loads((out / "cascade.json").read_text())
    cascade = Cascade.from_dict(saved)
    assert cascade.signal == "learned" and set(cascade.models) <= set(MODELS)
    assert f"cascade (learned): {cascade.describe()}" in printed
    assert str(out / META_FILE) in printed
    scorer = load_scorer(out)
    assert scorer.models_ == tuple(MODELS)  # the --models only

    data = data.select_models(MODELS)
    val = data.subset("validation")
    record = saved["tuning"]
    assert record["goal"]["quality_fraction"] == 0.9
    assert record["tuned_on"] == {"train (out-of-fold)": 891, "validation": 297}
    # the saved scorer and thresholds give the figures the command reported
    quality, cost = replay(cascade, val, scorer.score(val))
    assert record["validation"]["quality"] == pytest.approx(quality)
    assert record["validation"]["cost_usd"] == pytest.approx(cost)
    assert f"quality {quality:.3f}" in printed
    # the goal holds on the data it was tuned on: train scored out of fold, then validation
    train = data.subset("train")
    tuning = data.take(np.isin(data.split, ("train", "validation")))
    scores = np.empty((tuning.n_prompts, tuning.n_models))
    scores[tuning.split == "train"] = new_scorer().fit(train).cross_fit(train, 3, 0)
    scores[tuning.split == "validation"] = scorer.score(val)
    quality, cost = replay(cascade, tuning, scores)
    assert quality >= 0.9 * tuning.mean_quality().max() - 1e-9
    assert cost < tuning.mean_cost_usd().max()  # cheaper than always asking the dearest


def test_the_server_serves_the_tuned_folder(learned: tuple[Path, str]) -> None:
    out, _ = learned
    config = parse_config({
        "models": {m: {"base_url": "http://127.0.0.1:9/v1"} for m in MODELS},
        "endpoints": {"tuned": {"type": "cascade", "file": str(out)}}})
    backend = build_endpoints(config, env={}).backends["tuned"]
    assert isinstance(backend, CascadeBackend) and isinstance(backend.judge, LearnedJudge)
    assert backend.cascade == Cascade.from_dict(json.loads((out / "cascade.json").read_text()))
    assert backend.judge.scorer.uses_confidence_  # the data records confidences


def test_confidence_cascade_within_a_budget(data_path: str, data: Dataset, tmp_path: Path,
                                            learned: tuple[Path, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tuned"
    shutil.copytree(learned[0], out)  # re-tuning a folder replaces it, stale scorer included
    budget = 2e-4
    status, printed = run(capsys, "tune-cascade", data_path, "--out", str(out),
                          "--budget-usd", str(budget))
    assert status == 0, printed
    assert not (out / META_FILE).exists()
    cascade = Cascade.from_dict(json.loads((out / "cascade.json").read_text()))
    assert cascade.signal == "confidence"
    # confidence thresholds are on the recorded confidence as it is (what log-probs give live)
    tuning = data.take(np.isin(data.split, ("train", "validation")))
    assert tuning.confidence is not None
    quality, cost = replay(cascade, tuning, tuning.confidence)
    assert cost <= budget * (1 + 1e-9)
    # one model alone is a cascade too: the best within the budget is at least as good
    affordable = tuning.mean_cost_usd() <= budget
    assert quality >= tuning.mean_quality()[affordable].max() - 1e-12


@pytest.mark.parametrize(("args", "message"), [
    (["--quality-fraction", "0.9", "--budget-usd", "1"], "give one goal"),
    (["--models", "llama3.2-1b,gpt-5"], "unknown model 'gpt-5'"),
    (["--quality-fraction", "1.5"], "must lie in (0, 1]"),
])
def test_bad_options_say_what_to_do(data_path: str, tmp_path: Path, args: list[str],
                                    message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, printed = run(capsys, "tune-cascade", data_path, "--out", str(tmp_path / "x"), *args)
    assert status == 2 and message in printed


def test_a_folder_holding_something_else_is_not_overwritten(
        data_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    status, printed = run(capsys, "tune-cascade", data_path, "--out", str(tmp_path))
    assert status == 2 and "holds no cascade" in printed
    assert (tmp_path / "notes.txt").read_text() == "mine"
