"""The RouterBench importer, on the RouterDC CSV export and on small broken copies of it.

Expected figures are recomputed here from the CSV files with the csv module alone, so a wrong
column, a shifted row or a wrong drop rule shows up as a mismatch.
"""

from __future__ import annotations

import ast
import csv
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from routecast.data import detect_format, routerbench
from routecast.data.dataset import Dataset
from routecast.errors import DataError, DataFormatError

FOLDER = "routerbench-subset"
#: from the folder's PROVENANCE.md
MODELS = frozenset({
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2",
    "gpt-3.5-turbo-1106", "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat",
    "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
})
COST = "|total_cost"
RESPONSE = "|model_response"

Rows = list[dict[str, str]]


def _read(file: Path) -> tuple[list[str], Rows]:
    csv.field_size_limit(sys.maxsize)
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _complete(row: dict[str, str]) -> bool:
    return all(row[m].strip() and row[m + COST].strip() for m in MODELS)


def _joined(literal: str) -> str:
    parts = ast.literal_eval(literal)
    assert isinstance(parts, list)
    return "\n\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / FOLDER


@pytest.fixture(scope="module")
def raw(folder: Path) -> dict[str, Rows]:
    """File name -> every CSV row, read with the csv module."""
    return {f.name: _read(f)[1] for f in sorted(folder.glob("*.csv"))}


@pytest.fixture(scope="module")
def kept(raw: dict[str, Rows]) -> dict[str, tuple[str, dict[str, str]]]:
    """sample_id -> (file name, row) for the rows the drop rule keeps."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for name, rows in raw.items():
        for row in rows:
            if _complete(row):
                assert row["sample_id"] not in out, "kept rows must have unique ids"
                out[row["sample_id"]] = (name, row)
    return out


@pytest.fixture(scope="module")
def ds(folder: Path) -> Dataset:
    return routerbench.load(folder)


# -- the real data ---------------------------------------------------------------------------

def test_detects_the_folder(folder: Path) -> None:
    assert routerbench.detect(folder)
    assert detect_format(folder) == "routerbench"
    assert not routerbench.detect(folder / "PROVENANCE.md")


def test_unrelated_folder_is_not_detected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    (tmp_path / "scores_train.csv").write_text("id,score\n1,0.5\n")
    assert not routerbench.detect(tmp_path)
    with pytest.raises(DataError, match="not in a format routecast recognises") as err:
        detect_format(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "Fix:" in str(err.value)
    assert "--format" in str(err.value)


def test_models_are_the_eleven_cost_columns(ds: Dataset, raw: dict[str, Rows]) -> None:
    assert len(ds.models) == 11
    assert set(ds.models) == MODELS
    for rows in raw.values():
        assert {h[: -len(COST)] for h in rows[0] if h.endswith(COST)} == MODELS


def test_rows_with_an_empty_cell_are_dropped_and_counted(
        ds: Dataset, raw: dict[str, Rows], kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    total = sum(len(rows) for rows in raw.values())
    dropped = total - len(kept)
    assert total == 3178  # PROVENANCE.md: 3,178 rows, 28 with missing outcomes
    assert dropped == 28
    assert ds.n_prompts == len(kept)
    assert ds.meta["dropped"]["prompts"] == dropped
    assert set(ds.ids) == set(kept)
    assert np.isfinite(ds.quality).all()
    assert np.isfinite(ds.cost_usd).all()


def test_every_cell_matches_the_csv(ds: Dataset,
                                    kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    q = np.array([[float(kept[i][1][m]) for m in ds.models] for i in ds.ids])
    c = np.array([[float(kept[i][1][m + COST]) for m in ds.models] for i in ds.ids])
    np.testing.assert_array_equal(ds.quality, q)
    np.testing.assert_array_equal(ds.cost_usd, c)


@pytest.mark.parametrize(("kind", "splits"), [("test", ("test",)),
                                               ("train", ("train", "validation"))])
def test_per_model_means_match_the_csv(ds: Dataset, raw: dict[str, Rows], kind: str,
                                       splits: tuple[str, ...]) -> None:
    rows = [r for name, rs in raw.items() if name.endswith(f"_{kind}.csv") for r in rs
            if _complete(r)]
    mask = np.isin(ds.split, splits)
    assert mask.sum() == len(rows)
    for j, model in enumerate(ds.models):
        mean_q = sum(float(r[model]) for r in rows) / len(rows)
        mean_c = sum(float(r[model + COST]) for r in rows) / len(rows)
        assert abs(ds.quality[mask, j].mean() - mean_q) < 1e-12, model
        assert abs(ds.cost_usd[mask, j].mean() - mean_c) < 1e-12, model
    # the provenance notes figures by hand, as a sanity check of the source itself
    gpt4 = ds.models.index("gpt-4-1106-preview")
    mistral = ds.models.index("mistralai/mistral-7b-chat")
    assert ds.cost_usd[mask, gpt4].mean() > 10 * ds.cost_usd[mask, mistral].mean()


def test_test_rows_come_only_from_test_files(
        ds: Dataset, kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    from_test = {i for i, (name, _) in kept.items() if name.endswith("_test.csv")}
    assert {i for i, s in zip(ds.ids, ds.split, strict=True) if s == "test"} == from_test
    assert {i for i, s in zip(ds.ids, ds.split, strict=True) if s != "test"} == (
        set(kept) - from_test)


def test_validation_is_a_seeded_fifth_of_the_train_files(folder: Path, ds: Dataset) -> None:
    counts = Counter(ds.split.tolist())
    n_train_files = counts["train"] + counts["validation"]
    assert abs(counts["validation"] - 0.2 * n_train_files) <= 1
    # drawn at random, so every task contributes some validation prompts
    assert ds.task is not None
    val_tasks = {t for t, s in zip(ds.task, ds.split, strict=True) if s == "validation"}
    assert val_tasks == {"arc-challenge", "mbpp", "winogrande"}
    again = routerbench.load(folder)
    assert again.split.tolist() == ds.split.tolist()
    other = routerbench.load(folder, seed=1)
    assert other.split.tolist() != ds.split.tolist()
    assert Counter(other.split.tolist()) == counts
    np.testing.assert_array_equal(other.split == "test", ds.split == "test")


def test_prompts_are_the_joined_list_text(
        ds: Dataset, kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    i = ds.ids.index("mbpp.dev.1")
    assert ds.prompts[i] == "Write a python function to identify non-prime numbers."
    assert not any(p.startswith(("['", '["')) for p in ds.prompts)
    for pid, prompt in zip(ds.ids, ds.prompts, strict=True):
        assert prompt == _joined(kept[pid][1]["prompt"]), pid


def test_responses_are_present_and_joined(
        ds: Dataset, kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    assert ds.responses is not None
    assert ds.responses.shape == (ds.n_prompts, 11)
    assert all(isinstance(r, str) for r in ds.responses.ravel())
    i = ds.ids.index("mbpp.dev.1")
    j = ds.models.index("gpt-4-1106-preview")
    assert ds.responses[i, j].startswith("Here's a Python function that identifies non-prime")
    for i in range(0, ds.n_prompts, 97):
        row = kept[ds.ids[i]][1]
        for j, m in enumerate(ds.models):
            assert ds.responses[i, j] == _joined(row[m + RESPONSE])


def test_tasks_are_the_eval_names(ds: Dataset,
                                  kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    assert ds.task is not None
    assert list(ds.task) == [kept[i][1]["eval_name"] for i in ds.ids]
    assert set(ds.task) == {"arc-challenge", "mbpp", "winogrande"}


# -- small broken copies ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(folder: Path) -> tuple[list[str], Rows, Rows]:
    """The header and a few real rows of MBPP's test and train files."""
    header, test_rows = _read(folder / "mbpp_test.csv")
    header_train, train_rows = _read(folder / "mbpp_train.csv")
    assert header_train == header
    return header, test_rows[:6], train_rows[:6]


def _write_csv(file: Path, header: list[str], rows: Rows) -> Path:
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return file


def _copy(rows: Rows) -> Rows:
    return [dict(r) for r in rows]


def _without(header: list[str], *columns: str) -> list[str]:
    return [h for h in header if h not in columns]


def test_a_good_copy_loads(tmp_path: Path, sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    _write_csv(tmp_path / "mbpp_train.csv", header, train_rows)
    ds = routerbench.load(tmp_path, name="tiny")
    assert ds.name == "tiny"
    assert ds.n_prompts == 12
    assert Counter(ds.split.tolist()) == {"test": 6, "train": 5, "validation": 1}
    assert ds.meta["dropped"]["prompts"] == 0


def test_an_empty_cell_drops_only_its_row(tmp_path: Path,
                                          sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    rows = _copy(train_rows)
    rows[2]["claude-v1" + COST] = ""
    rows[4]["gpt-3.5-turbo-1106"] = ""
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    _write_csv(tmp_path / "mbpp_train.csv", header, rows)
    ds = routerbench.load(tmp_path)
    assert ds.n_prompts == 10
    assert ds.meta["dropped"]["prompts"] == 2
    assert rows[2]["sample_id"] not in ds.ids
    assert rows[4]["sample_id"] not in ds.ids
    assert rows[3]["sample_id"] in ds.ids


def _load_error(folder: Path) -> str:
    with pytest.raises(DataFormatError) as err:
        routerbench.load(folder)
    assert isinstance(err.value, DataError)
    return str(err.value)


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("claude-v1", "abc", r"column 'claude-v1' holds 'abc', not a number"),
    ("gpt-4-1106-preview" + COST, "cheap", r"holds 'cheap', not a number"),
    ("gpt-4-1106-preview", "2.0", r"quality .*2\.0.* outside \[0, 1\]"),
    ("claude-v2", "-1", r"quality .*-1\.0.* outside \[0, 1\]"),
])
def test_bad_cell_names_file_row_and_fix(tmp_path: Path, sample: tuple[list[str], Rows, Rows],
                                         column: str, value: str, expected: str) -> None:
    header, test_rows, train_rows = sample
    rows = _copy(train_rows)
    rows[3][column] = value
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    bad = _write_csv(tmp_path / "mbpp_train.csv", header, rows)
    message = _load_error(tmp_path)
    assert f"{bad}:5: " in message  # data row 4 is the file's fifth row after the header
    assert re.search(expected, message), message
    assert "Fix:" in message


def test_repeated_sample_id_names_both_rows(tmp_path: Path,
                                            sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    rows = _copy(train_rows)
    rows[4]["sample_id"] = rows[1]["sample_id"]
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    bad = _write_csv(tmp_path / "mbpp_train.csv", header, rows)
    message = _load_error(tmp_path)
    assert f"{bad}:6: duplicate sample_id {rows[1]['sample_id']!r}" in message
    assert f"also at {bad}:3" in message
    assert "Fix: remove the repeated row" in message


def test_sample_id_repeated_across_files(tmp_path: Path,
                                         sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    rows = _copy(train_rows)
    rows[0]["sample_id"] = test_rows[2]["sample_id"]
    first = _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    bad = _write_csv(tmp_path / "mbpp_train.csv", header, rows)
    message = _load_error(tmp_path)
    assert f"{bad}:2: duplicate sample_id" in message
    assert f"also at {first}:4" in message


def test_files_with_different_models_are_refused(tmp_path: Path,
                                                 sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    fewer = _without(header, "claude-v2", "claude-v2" + COST, "claude-v2" + RESPONSE)
    bad = _write_csv(tmp_path / "mbpp_train.csv", fewer, train_rows)
    message = _load_error(tmp_path)
    assert str(bad) in message
    assert "claude-v2" in message
    assert "Fix:" in message


def test_missing_quality_column_is_named(tmp_path: Path,
                                         sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, _ = sample
    bad = _write_csv(tmp_path / "mbpp_test.csv", _without(header, "claude-v2"), test_rows)
    message = _load_error(tmp_path)
    assert f"{bad}: is missing RouterBench columns ['claude-v2']" in message
    assert "Fix:" in message


def test_missing_sample_id_column_is_named(tmp_path: Path,
                                           sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, _ = sample
    bad = _write_csv(tmp_path / "mbpp_test.csv", _without(header, "sample_id"), test_rows)
    message = _load_error(tmp_path)
    assert str(bad) in message
    assert "'sample_id'" in message


def test_missing_cost_column_in_a_later_file_is_refused(
        tmp_path: Path, sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    _write_csv(tmp_path / "mbpp_test.csv", header, test_rows)
    bad = _write_csv(tmp_path / "mbpp_train.csv", _without(header, "claude-v2" + COST),
                     train_rows)
    message = _load_error(tmp_path)
    assert str(bad) in message
    assert "claude-v2" in message
    assert "Fix:" in message


def test_missing_cost_column_in_the_only_file_is_refused(
        tmp_path: Path, sample: tuple[list[str], Rows, Rows]) -> None:
    header, _, train_rows = sample
    bad = _write_csv(tmp_path / "mbpp_train.csv", _without(header, "claude-v2" + COST),
                     train_rows)
    message = _load_error(tmp_path)
    assert str(bad) in message
    assert "claude-v2|total_cost" in message


def test_missing_cost_column_in_the_first_file_blames_that_file(
        tmp_path: Path, sample: tuple[list[str], Rows, Rows]) -> None:
    header, test_rows, train_rows = sample
    bad = _write_csv(tmp_path / "mbpp_test.csv", _without(header, "claude-v2" + COST),
                     test_rows)
    _write_csv(tmp_path / "mbpp_train.csv", header, train_rows)
    message = _load_error(tmp_path)
    assert str(bad) in message
    assert "claude-v2|total_cost" in message


def test_folder_without_csv_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"holds no <task>_train\.csv") as err:
        routerbench.load(tmp_path)
    assert "Fix:" in str(err.value)


def test_header_only_file_is_refused(tmp_path: Path,
                                     sample: tuple[list[str], Rows, Rows]) -> None:
    header, _, _ = sample
    bad = _write_csv(tmp_path / "mbpp_test.csv", header, [])
    assert f"{bad}: has no rows" in _load_error(tmp_path)
