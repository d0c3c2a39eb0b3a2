"""``routecast fit`` -> ``calibrate`` -> ``route``: routers as artifacts on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routecast.cli import main
from routecast.cli.router import parse_param
from routecast.data import load_dataset, save_dataset
from routecast.errors import ConfigError
from routecast.explain import explain
from routecast.policy import Policy, choose
from routecast.routers import make_router
from routecast.routers.persist import load_router, read_calibration, save_router
from tests.toy import toy_dataset

PROMPT = "Write a Python function that returns the n-th Fibonacci number."


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routecast.cli", *args], capture_output=True,
                          text=True, check=False)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A kNN router fitted and calibrated on the real RouterBench subset, through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "knn"
    data = str(shared_data / "routerbench-subset")
    fit = cli("fit", data, "--router", "knn", "--param", "k=20", "--encoder", "tfidf",
              "--out", str(out))
    assert fit.returncode == 0, fit.stderr
    assert "fitted" in fit.stdout and "1764 train prompts" in fit.stdout
    cal = cli("calibrate", str(out), "--quality-fraction", "0.95", "--data", data)
    assert cal.returncode == 0, cal.stderr
    assert "cost weight" in cal.stdout
    return out


def test_calibrate_solves_the_policy_on_validation(artifact: Path, shared_data: Path) -> None:
    router, policy = load_router(artifact)
    assert router.name == "knn" and router.get_params()["k"] == 20
    validation = load_dataset(shared_data / "routerbench-subset").subset("validation")
    assert policy == Policy.for_quality(router, validation, 0.95)
    record = read_calibration(artifact)
    assert record["target"] == "quality_fraction" and record["split"] == "validation"
    assert record["n_prompts"] == validation.n_prompts
    pick = policy.choose(router.predict(validation.prompts),
                         router.predict_cost(validation.prompts))
    rows = np.arange(validation.n_prompts)
    assert record["realised"]["quality"] == pytest.approx(validation.quality[rows, pick].mean())
    assert record["realised"]["quality"] >= 0.95 * validation.mean_quality().max() - 1e-12


def test_route_names_every_model_and_says_why(artifact: Path) -> None:
    router, policy = load_router(artifact)
    assert policy is not None
    res = cli("route", str(artifact), PROMPT)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    q = router.predict([PROMPT])
    c = router.predict_cost([PROMPT])
    chosen = router.models_[int(policy.choose(q, c)[0])]
    assert lines[0] == chosen
    rows = lines[2:2 + len(router.models_)]  # after the chosen model and the header
    assert sorted(row[2:].split()[0] for row in rows) == sorted(router.models_)
    assert [row[2:].split()[0] for row in rows if row.startswith("*")] == [chosen]
    why = next(line for line in lines if line.startswith("why:"))
    assert why.startswith(f"why: {chosen} scores ")
    assert any(line.startswith("policy: cost weight") for line in lines)


def test_route_json_is_consistent_with_the_router(artifact: Path) -> None:
    router, policy = load_router(artifact)
    assert policy is not None
    res = cli("route", str(artifact), PROMPT, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [m["name"] for m in out["models"]] == list(router.models_)
    quality = np.array([[m["quality"] for m in out["models"]]])
    cost = np.array([[m["cost_usd"] for m in out["models"]]])
    np.testing.assert_allclose(quality, router.predict([PROMPT]), rtol=0, atol=1e-12)
    w = out["cost_weight"]
    assert w == policy.cost_weight
    for m in out["models"]:
        assert m["score"] == pytest.approx(m["quality"] - w * m["cost_usd"])
    assert out["model"] == router.models_[int(choose(quality, cost, w)[0])]
    assert out["calibration"]["target"] == "quality_fraction"
    override = json.loads(cli("route", str(artifact), PROMPT, "--json", "--cost-weight",
                              "inf").stdout)
    assert override["model"] == router.models_[int(np.argmin(cost))]


def test_route_imports_neither_sklearn_nor_torch(artifact: Path) -> None:
    code = ("import sys; from routecast.cli import main; "
            f"main(['route', {str(artifact)!r}, {PROMPT!r}]); "
            "print([m for m in ('sklearn', 'torch') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.splitlines()[-1] == "[]"


# -- explanations ------------------------------------------------------------------------------


MODELS = ("a", "b", "c")
QUALITY = [0.9, 0.8, 0.5]
COST = [0.01, 0.002, 0.0005]


def test_explain_names_the_trades_the_policy_turned_down() -> None:
    # w = 10: scores a 0.8, b 0.78, c 0.495, so a wins; b saves $0.008 for 0.1 quality.
    why = explain(MODELS, QUALITY, COST, 10.0, 0)
    assert why[0] == "a scores 0.900 - 10 x $0.01 = 0.800, the best score"
    assert len(why) == 2
    assert why[1].startswith("b would save $0.008 but lose 0.100 quality: 12.5 quality per $")
    # w = 20: a 0.7, b 0.76, c 0.49: b wins; a adds 0.1 for $0.008 (12.5/$ < 20), and
    # c saves $0.0015 for 0.3 quality (200/$ > 20).
    why = explain(MODELS, QUALITY, COST, 20.0, 1)
    assert why[0].startswith("b scores 0.800 - 20 x $0.002 = 0.760")
    assert why[1].startswith("a would add 0.100 quality for $0.008 more: 12.5 quality per $")
    assert why[2].startswith("c would save $0.0015 but lose 0.300 quality: 200 quality per $")


def test_explain_edge_weights() -> None:
    assert "highest quality" in explain(MODELS, QUALITY, COST, 0.0, 0)[0]
    assert "cheapest" in explain(MODELS, QUALITY, COST, float("inf"), 2)[0]


def test_parse_param_reads_json_values() -> None:
    assert parse_param("k=20") == ("k", 20)
    assert parse_param("weighted=false") == ("weighted", False)
    assert parse_param("encoder=minilm") == ("encoder", "minilm")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_param("k")


# -- bad inputs: one line each, exit status 2 ----------------------------------------------------


def run_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.rstrip().endswith(errors[0])  # nothing after the one error line
    return errors[0]


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.jsonl"
    save_dataset(toy_dataset(200), path)
    return path


def test_bad_fit_inputs(capsys: pytest.CaptureFixture[str], toy_file: Path,
                        tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    assert "unknown router 'nope'" in run_error(capsys, "fit", str(toy_file), "--router",
                                                "nope", "--out", out)
    assert "KEY=VALUE" in run_error(capsys, "fit", str(toy_file), "--router", "knn",
                                    "--param", "k", "--out", out)
    assert "bad parameters" in run_error(capsys, "fit", str(toy_file), "--router", "knn",
                                         "--param", "depth=3", "--out", out)
    assert "evaluation" in run_error(capsys, "fit", str(toy_file), "--router", "oracle",
                                     "--out", out)
    assert "once" in run_error(capsys, "fit", str(toy_file), "--router", "knn", "--encoder",
                               "tfidf", "--param", "encoder=tfidf", "--out", out)
    assert "does not exist" in run_error(capsys, "fit", str(tmp_path / "missing.jsonl"),
                                         "--router", "knn", "--out", out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    assert "holds no router" in run_error(capsys, "fit", str(toy_file), "--router", "knn",
                                          "--out", str(tmp_path / "busy"))


def test_bad_route_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "routecast fit" in run_error(capsys, "route", str(tmp_path), PROMPT)
    save_router(make_router("best-single").fit(toy_dataset(60)), tmp_path)
    assert "no calibrated policy" in run_error(capsys, "route", str(tmp_path), PROMPT)
    assert "empty" in run_error(capsys, "route", str(tmp_path), "  ")


def test_bad_calibrate_inputs(capsys: pytest.CaptureFixture[str], toy_file: Path,
                              artifact: Path, tmp_path: Path) -> None:
    both = ("calibrate", str(artifact), "--budget-usd", "0.001", "--quality-fraction", "0.9",
            "--data", str(toy_file))
    assert "exactly one" in run_error(capsys, *both)
    assert "exactly one" in run_error(capsys, "calibrate", str(artifact), "--data",
                                      str(toy_file))
    # The RouterBench router does not know the toy models.
    assert "models" in run_error(capsys, "calibrate", str(artifact), "--quality-fraction",
                                 "0.9", "--data", str(toy_file))
    # Fitted on train + validation: calibrating on that validation split is refused.
    out = str(tmp_path / "all")
    main(["fit", str(toy_file), "--router", "best-single", "--out", out, "--all"])
    capsys.readouterr()
    assert "over-confident" in run_error(capsys, "calibrate", out, "--quality-fraction", "0.9",
                                         "--data", str(toy_file))
    assert "--seed 0" in run_error(capsys, "calibrate", out, "--quality-fraction", "0.9",
                                   "--data", str(toy_file), "--split", "test", "--seed", "1")
    main(["calibrate", out, "--budget-usd", "0.01", "--data", str(toy_file), "--split", "test"])
    assert load_router(out)[1] is not None
    assert "raise the budget" in run_error(capsys, "calibrate", out, "--budget-usd", "0",
                                           "--data", str(toy_file), "--split", "test")


def test_calibrate_with_confidence_records_the_guarantee_and_route_names_it(
        artifact: Path, shared_data: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "knn"
    shutil.copytree(artifact, folder)
    data = str(shared_data / "routerbench-subset")
    cal = cli("calibrate", str(folder), "--quality-fraction", "0.95", "--confidence", "0.9",
              "--data", data)
    assert cal.returncode == 0, cal.stderr
    assert "certified with confidence 0.9" in cal.stdout
    record = read_calibration(folder)
    assert record["guarantee"]["confidence"] == 0.9
    bound = record["guarantee"]["quality_bound"]
    assert 0 < bound < record["realised"]["quality"]
    _, policy = load_router(folder)
    assert policy is not None and record["policy"] == policy.describe()
    out = json.loads(cli("route", str(folder), PROMPT, "--json").stdout)
    assert out["policy"] == policy.to_dict() and out["fallback"] == policy.fallback
    text = cli("route", str(folder), PROMPT).stdout
    if policy.fallback:  # the guarantee at 441 prompts may well need the single-model mix
        assert "fallback:" in text
    bad = cli("calibrate", str(folder), "--budget-usd", "0.001", "--confidence", "0.9",
              "--data", data)
    assert bad.returncode != 0 and "--confidence goes with --quality-fraction" in bad.stderr
