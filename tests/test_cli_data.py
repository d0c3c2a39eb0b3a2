"""The data side of the command line: import, info, and how bench reports bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from routecast.cli import cli, main
from routecast.data import canonical
from routecast.data.dataset import Dataset
from routecast.routers import router_names

FOLDER = "routerbench-subset"
#: from the folder's PROVENANCE.md
MODELS = ("WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2",
          "gpt-3.5-turbo-1106", "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat",
          "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
          "zero-one-ai/Yi-34B-Chat")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m routecast.cli ARGS`` as a user would run it, with stderr not a terminal."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "routecast.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def _squeezed(text: str) -> str:
    """The text without any whitespace: rich wraps long lines at the console width, breaking
    them at a space (which it drops) or inside a long word such as a path."""
    return re.sub(r"\s+", "", text)


def _says(output: str, expected: str) -> bool:
    return _squeezed(expected) in _squeezed(output)


def _small(tmp_path: Path) -> Path:
    n = 30
    rng = np.random.default_rng(0)
    ds = Dataset(name="small", models=("a", "b"), ids=tuple(f"q{i}" for i in range(n)),
                 prompts=tuple(f"question {i}" for i in range(n)),
                 quality=rng.integers(0, 2, size=(n, 2)).astype(np.float64),
                 cost_usd=np.tile([1e-4, 1e-3], (n, 1)),
                 split=np.array(["train", "validation", "test"] * 10))
    return canonical.save(ds, tmp_path / "small.jsonl")


def test_import_then_info(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rb.jsonl.gz"
    runner = CliRunner()
    result = runner.invoke(cli, ["import", str(shared_data / FOLDER), str(out)])
    assert result.exit_code == 0, result.output
    assert canonical.is_canonical(out)
    ds = canonical.load(out)
    assert set(ds.models) == set(MODELS)
    assert f"wrote {ds.n_prompts} prompts x 11 models to {out}" in result.stdout

    result = runner.invoke(cli, ["info", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert f"{ds.n_prompts} prompts" in result.stdout
    assert "responses" in result.stdout
    lines = result.stdout.splitlines()
    for model in MODELS:
        row = [line for line in lines if re.search(rf"\b{re.escape(model)}\b", line)]
        assert len(row) == 1, model
        j = ds.models.index(model)
        assert f"{ds.quality[:, j].mean():.4f}" in row[0], model


def test_import_through_main_with_a_seed(shared_data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    main(["import", str(shared_data / FOLDER), str(a)])
    main(["import", "--seed", "5", str(shared_data / FOLDER), str(b)])
    assert "wrote" in capsys.readouterr().out
    da, db = canonical.load(a), canonical.load(b)
    assert da.ids == db.ids
    assert da.split.tolist() != db.split.tolist()
    assert ((da.split == "test") == (db.split == "test")).all()


def test_import_to_a_non_jsonl_output_is_a_clean_error(shared_data: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    proc = _run("import", str(shared_data / FOLDER), str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:")
    assert _says(proc.stderr, f"output '{out}' must end in .jsonl or .jsonl.gz")
    assert not out.exists()


def test_error_message_is_one_line_even_when_long(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / ("a-long-folder-name-" * 4) / "out.csv"
    proc = _run("import", str(shared_data / FOLDER), str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert str(out) in lines[0]


def test_bench_on_a_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    header = {"format": "routecast-outcomes", "version": 1, "name": "bad", "models": ["a"]}
    rec = {"id": "1", "prompt": "p", "split": "train",
           "outcomes": {"a": {"quality": 0.5, "cost_usd": 0.1}}}
    bad.write_text(json.dumps(header) + "\n" + json.dumps(rec) + "\n"
                   + json.dumps({**rec, "id": "2", "split": "dev"}) + "\n", encoding="utf-8")
    proc = _run("bench", str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:")
    assert _says(proc.stderr, f"{bad}:3: split 'dev' is not one of train, validation, test")


def test_bench_with_an_unknown_router_names_the_known_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _small(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--routers", "knn,nosuch", "--bootstrap", "0", str(data)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.split("error:", 1)[1]  # after the "loaded ..." note
    assert "Traceback" not in err
    assert _says(err, "unknown routers ['nosuch']")
    known = router_names()
    assert {"random", "knn", "linear"} <= set(known)
    listed = " ".join(err.split("known:", 1)[1].split())
    assert [r.strip() for r in listed.split(",")] == list(known)


def test_bench_with_an_unknown_router_as_a_subprocess(tmp_path: Path) -> None:
    proc = _run("bench", "--routers", "nosuch", str(_small(tmp_path)))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert _says(proc.stderr, "unknown routers ['nosuch']")
