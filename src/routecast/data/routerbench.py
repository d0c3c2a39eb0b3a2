"""Importer for RouterBench outcomes (Hu et al., 2024).

Two layouts share one column scheme: ``sample_id``, ``prompt``, ``eval_name``, one quality
column per model, ``<model>|model_response``, ``<model>|total_cost`` and
``oracle_model_to_route_to``.

* the CSV export of RouterDC (``<task>_train.csv`` / ``<task>_test.csv`` in one folder), whose
  train/test split is kept (validation is carved out of train);
* RouterBench's original ``routerbench_0shot.pkl`` / ``routerbench_5shot.pkl`` (a pandas
  DataFrame), downloadable from the ``withmartian/routerbench`` dataset on Hugging Face. It has
  no split, so a seeded random one is drawn. Reading it needs pandas, and unpickling runs code:
  only load a file from a source you trust.

Drop rule: a row whose quality or cost is empty for any model is dropped (RouterBench leaves a
few calls unrecorded); the number dropped is reported in ``meta["dropped"]``. Prompts and
responses stored as Python-list literals (``"['...']"``) are parsed and joined with blank lines.
"""

from __future__ import annotations

import ast
import csv
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.data.splits import DEFAULT_SEED, carve_validation, random_split
from routecast.errors import DataError, DataFormatError, OptionalDependencyError

COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIX = "|model_response"
_FILE_RE = re.compile(r"^(?P<task>.+)_(?P<split>train|test)\.csv$")
REQUIRED = ("sample_id", "prompt")
#: Columns that are neither a model's quality nor one of its ``<model>|...`` columns.
NON_MODEL = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


def detect(path: Path) -> bool:
    """A folder of ``*_train.csv``/``*_test.csv`` with RouterBench columns, or a .pkl file."""
    if path.is_file():
        return path.suffix == ".pkl" and "routerbench" in path.name
    files = _csv_files(path) if path.is_dir() else []
    if not files:
        return False
    with open(files[0], newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return "sample_id" in header and any(h.endswith(COST_SUFFIX) for h in header)


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _FILE_RE.match(p.name))


def load(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None) -> Dataset:
    """Import a RouterDC-style CSV folder or an original RouterBench pickle."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pkl":
        return _load_pickle(path, seed=seed, name=name)
    if not path.is_dir():
        raise DataError("is neither a folder of RouterBench CSVs nor a .pkl file", where=path)
    files = _csv_files(path)
    if not files:
        raise DataError("holds no <task>_train.csv / <task>_test.csv files", where=path,
                        fix="point at the folder of RouterBench CSV exports")
    csv.field_size_limit(sys.maxsize)
    tables: list[tuple[str, str, list[dict[str, str]]]] = []
    for file in files:
        m = _FILE_RE.match(file.name)
        assert m is not None
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        tables.append((str(file), m["split"], rows))
    ds = _from_tables(tables, name=name or path.name)
    return ds.with_splits(carve_validation(ds.split, seed=seed))


def _load_pickle(path: Path, *, seed: int, name: str | None) -> Dataset:
    try:
        import pandas as pd
    except ImportError:
        raise OptionalDependencyError("pandas", "pandas", "Reading RouterBench's .pkl file",
                                      hint="pip install pandas") from None
    frame = pd.read_pickle(path)
    rows = [{str(k): ("" if _is_missing(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]
    ds = _from_tables([(str(path), "train", rows)], name=name or path.stem)
    return ds.with_splits(random_split(ds.n_prompts, seed=seed))


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def models_of(header: Iterable[str]) -> list[str]:
    """Model names, from the ``<model>|total_cost`` columns, in header order."""
    return [h[: -len(COST_SUFFIX)] for h in header if h.endswith(COST_SUFFIX)]


def _join_literal(value: Any) -> str:
    """RouterBench stores prompts/responses as a list (or its repr); join the parts."""
    if isinstance(value, list | tuple):
        return "\n\n".join(str(v) for v in value)
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        if isinstance(parsed, list):
            return "\n\n".join(str(v) for v in parsed)
    return text


def _float(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text in ("", "nan", "NaN"):
        return math.nan
    if text in ("True", "False"):
        return 1.0 if text == "True" else 0.0
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"column {column!r} holds {text[:40]!r}, not a number",
                              where=where, fix="quality and cost columns must be numeric") from None


def _from_tables(tables: list[tuple[str, str, list[dict[str, Any]]]], *, name: str) -> Dataset:
    models: list[str] | None = None
    ids: list[str] = []
    prompts: list[str] = []
    tasks: list[str] = []
    splits: list[str] = []
    quality: list[list[float]] = []
    cost: list[list[float]] = []
    responses: list[list[str | None]] = []
    first_seen: dict[str, str] = {}
    dropped = 0
    for file, split, rows in tables:
        if not rows:
            raise DataFormatError("has no rows", where=file)
        header = list(rows[0].keys())
        file_models = models_of(header)
        quality_cols = [h for h in header
                        if h not in NON_MODEL and "|" not in h and not h.startswith("Unnamed")]
        missing = ([c for c in REQUIRED if c not in header]
                   + [m for m in file_models if m not in header]
                   + [m + COST_SUFFIX for m in quality_cols if m not in file_models])
        if missing or not file_models:
            raise DataFormatError(
                f"is missing RouterBench columns {missing or ['<model>|total_cost']}", where=file,
                fix="export every model's quality and '<model>|total_cost' column")
        if models is None:
            models = file_models
        elif set(file_models) != set(models):
            raise DataFormatError(
                f"lists models {sorted(set(file_models) ^ set(models))} that the other files "
                "do not", where=file, fix="import files that share one model list")
        has_resp = all(m + RESPONSE_SUFFIX in header for m in models)
        for rowno, row in enumerate(rows, start=2):  # row 1 is the header
            where = f"{file}:{rowno}"
            q = [_float(row[m], where, m) for m in models]
            c = [_float(row[m + COST_SUFFIX], where, m + COST_SUFFIX) for m in models]
            if any(math.isnan(x) for x in q + c):
                dropped += 1
                continue
            if any(not 0 <= x <= 1 for x in q):
                raise DataFormatError(f"quality {q} outside [0, 1]", where=where,
                                      fix="RouterBench quality columns hold scores in [0, 1]")
            sid = str(row["sample_id"])
            if sid in first_seen:
                raise DataFormatError(f"duplicate sample_id {sid!r} (also at {first_seen[sid]})",
                                      where=where, fix="remove the repeated row")
            first_seen[sid] = where
            ids.append(sid)
            prompts.append(_join_literal(row["prompt"]))
            tasks.append(str(row.get("eval_name") or sid.split(".")[0]))
            splits.append(split)
            quality.append(q)
            cost.append(c)
            responses.append([_join_literal(row[m + RESPONSE_SUFFIX]) if has_resp else None
                              for m in models])
    assert models is not None
    resp = None
    if any(r is not None for row in responses for r in row):
        resp = np.empty((len(ids), len(models)), dtype=object)
        resp[:] = responses
    return Dataset(
        name=name, models=tuple(models), ids=tuple(ids), prompts=tuple(prompts),
        quality=np.asarray(quality, dtype=np.float64).reshape(len(ids), len(models)),
        cost_usd=np.asarray(cost, dtype=np.float64).reshape(len(ids), len(models)),
        split=np.asarray(splits, dtype="<U10"), task=tuple(tasks), responses=resp,
        meta={"source": "routerbench", "files": [t[0] for t in tables],
              "dropped": {"prompts": dropped,
                          "rule": "rows with an empty quality or cost for any model"}},
    )

