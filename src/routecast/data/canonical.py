"""routecast's own outcomes format: JSON Lines, optionally gzip-compressed.

The first line is a header, every following line one prompt::

    {"format": "routecast-outcomes", "version": 1, "name": "routerbench-subset",
     "models": ["gpt-4-1106-preview", "mistralai/mistral-7b-chat"], "meta": {...}}
    {"id": "mbpp.dev.325", "prompt": "...", "split": "train", "task": "mbpp",
     "outcomes": {"gpt-4-1106-preview": {"quality": 1.0, "cost_usd": 0.005984,
                                         "latency_s": 1.2, "tokens_in": 310, "tokens_out": 88,
                                         "confidence": 0.93, "response": "..."},
                  "mistralai/mistral-7b-chat": {"quality": 0.0, "cost_usd": 3.66e-05}}}

``quality`` (in [0, 1]) and ``cost_usd`` (>= 0) are required for every model of every prompt;
``latency_s``, ``tokens_in``, ``tokens_out``, ``confidence`` and ``response`` are optional, but
a field must be given for all (prompt, model) pairs or for none. ``task`` is optional likewise.

Sparse outcomes (labels gathered from traffic, for training): a header with ``"sparse": true``
lets a prompt's ``outcomes`` leave out models nobody labelled on it (at least one model per
prompt); loading gives a ``Dataset`` with ``sparse=True`` and NaN for the missing pairs.
The full description lives in the README ("Outcomes format").
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from routecast.data.dataset import OPTIONAL_ARRAYS, SPLITS, Dataset
from routecast.errors import DataError, DataFormatError

FORMAT = "routecast-outcomes"
VERSION = 1


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return open(path, mode, encoding="utf-8")


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def is_canonical(path: Path) -> bool:
    """True when ``path`` is a file whose first line is a routecast-outcomes header."""
    if not path.is_file():
        return False
    try:
        with _open_text(path, "r") as f:
            head = json.loads(f.readline())
    except (OSError, ValueError, UnicodeDecodeError, EOFError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def save(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` to ``path`` (``.jsonl`` or ``.jsonl.gz``), atomically.

    The file is written beside the target and renamed into place, so an existing file is never
    left half-written.
    """
    path = Path(path)
    tmp = path.with_name(f".partial-{path.name}")  # keeps the suffix, so .gz stays gzip
    header = {"format": FORMAT, "version": VERSION, "name": dataset.name,
              "models": list(dataset.models), "meta": dataset.meta}
    if dataset.sparse:
        header["sparse"] = True
    arrays = {k: getattr(dataset, k) for k in OPTIONAL_ARRAYS if getattr(dataset, k) is not None}
    try:
        _write(dataset, tmp, header, arrays)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written file behind
        raise
    tmp.replace(path)
    return path


def _write(dataset: Dataset, tmp: Path, header: dict[str, Any],
           arrays: dict[str, Any]) -> None:
    with _open_text(tmp, "w") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for i in range(dataset.n_prompts):
            outcomes: dict[str, dict[str, Any]] = {}
            for j, model in enumerate(dataset.models):
                if dataset.sparse and math.isnan(dataset.quality[i, j]):
                    continue  # unlabelled: left out (the header says the file is sparse)
                cost = float(dataset.cost_usd[i, j])
                o: dict[str, Any] = {"quality": float(dataset.quality[i, j]),
                                     "cost_usd": None if math.isnan(cost) else cost}
                for k, arr in arrays.items():
                    v = float(arr[i, j])
                    if math.isinf(v):
                        raise DataError(f"{k} of {model!r} for prompt {dataset.ids[i]!r} is {v}",
                                        where=f"dataset {dataset.name!r}",
                                        fix="store a finite number, or NaN for unknown")
                    # Whole token counts are written as integers; anything else exactly.
                    o[k] = None if math.isnan(v) else (int(v) if v.is_integer() else v)
                if dataset.responses is not None:
                    o["response"] = dataset.responses[i, j]
                outcomes[model] = o
            rec: dict[str, Any] = {"id": dataset.ids[i], "prompt": dataset.prompts[i],
                                   "split": str(dataset.split[i])}
            if dataset.task is not None:
                rec["task"] = dataset.task[i]
            rec["outcomes"] = outcomes
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Decoded lines with their numbers; decoding is per line so errors can name it."""
    lineno = 0
    try:
        with _open_bytes(path) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(f"is not UTF-8 text ({e.reason})",
                                          where=f"{path}:{lineno}",
                                          fix="re-save the file as UTF-8") from None
                yield lineno, text
    except (OSError, EOFError) as e:  # gzip errors are OSError / EOFError
        raise DataFormatError(f"cannot be read at line {lineno + 1}: {e}",
                              where=f"{path}:{lineno + 1}",
                              fix="the file is damaged or truncated; re-create it") from None


def load(path: str | Path) -> Dataset:
    """Read a canonical outcomes file; every problem is reported with its file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", where=path, fix="check the path")
    lines = _lines(path)
    header: dict[str, Any] | None = None
    models: list[str] = []
    ids: list[str] = []
    prompts: list[str] = []
    splits: list[str] = []
    tasks: list[str | None] = []
    quality: list[list[float]] = []
    cost: list[list[float]] = []
    extra: dict[str, list[list[float]]] = {k: [] for k in OPTIONAL_ARRAYS}
    responses: list[list[str | None]] = []
    seen_ids: dict[str, int] = {}
    present: dict[str, bool] = {}

    for lineno, raw in lines:
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as e:
            raise DataFormatError(f"invalid JSON ({e})", where=where,
                                  fix="each line must be one JSON object") from None
        if not isinstance(rec, dict):
            raise DataFormatError("line is not a JSON object", where=where)
        if header is None:
            header = _check_header(rec, where)
            models = header["models"]
            continue
        _read_record(rec, where, models, seen_ids, lineno, ids, prompts, splits, tasks,
                     quality, cost, extra, responses, present,
                     sparse=header.get("sparse") is True)

    if header is None:
        raise DataFormatError("is empty", where=path, fix="write a header line first")
    return _build(header, path, ids, prompts, splits, tasks, quality, cost, extra, responses,
                  present)


def _check_header(rec: dict[str, Any], where: str) -> dict[str, Any]:
    if rec.get("format") != FORMAT:
        raise DataFormatError(
            f"first line is not a routecast-outcomes header (format={rec.get('format')!r})",
            where=where,
            fix="convert public formats with `routecast import`; see the README's Outcomes format",
        )
    if rec.get("version") != VERSION:
        raise DataFormatError(f"unsupported version {rec.get('version')!r}", where=where,
                              fix=f"this routecast reads version {VERSION}")
    models = rec.get("models")
    if (not isinstance(models, list) or not models
            or not all(isinstance(m, str) and m for m in models)):
        raise DataFormatError("header 'models' must be a non-empty list of names", where=where)
    if len(set(models)) != len(models):
        raise DataFormatError("header lists a model twice", where=where)
    if not isinstance(rec.get("name", ""), str) or not isinstance(rec.get("meta", {}), dict):
        raise DataFormatError("header 'name' must be a string and 'meta' an object", where=where)
    return rec


def _number(value: Any, what: str, where: str, *, allow_none: bool = False) -> float:
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataFormatError(f"{what} must be a number, got {value!r}", where=where)
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and what.endswith(("quality", "cost_usd"))):
        raise DataFormatError(f"{what} is {v}", where=where,
                              fix="give a finite number, or drop the prompt")
    return v


def _read_record(rec: dict[str, Any], where: str, models: list[str],
                 seen_ids: dict[str, int], lineno: int, ids: list[str], prompts: list[str],
                 splits: list[str], tasks: list[str | None], quality: list[list[float]],
                 cost: list[list[float]], extra: dict[str, list[list[float]]],
                 responses: list[list[str | None]], present: dict[str, bool], *,
                 sparse: bool = False) -> None:
    for key, typ in (("id", str), ("prompt", str), ("split", str), ("outcomes", dict)):
        if not isinstance(rec.get(key), typ):
            raise DataFormatError(f"field {key!r} is missing or not a {typ.__name__}", where=where)
    pid = rec["id"]
    if pid in seen_ids:
        raise DataFormatError(f"duplicate id {pid!r} (first on line {seen_ids[pid]})",
                              where=where, fix="make every prompt id unique")
    seen_ids[pid] = lineno
    if rec["split"] not in SPLITS:
        raise DataFormatError(f"split {rec['split']!r} is not one of {', '.join(SPLITS)}",
                              where=where)
    outcomes = rec["outcomes"]
    if sparse and outcomes and set(outcomes) <= set(models):
        pass  # a sparse file may leave out unlabelled models
    elif set(outcomes) != set(models):
        missing = sorted(set(models) - set(outcomes))
        unknown = sorted(set(outcomes) - set(models))
        raise DataFormatError(
            f"outcomes do not match the header's models (missing {missing}, unknown {unknown})",
            where=where, fix="give one outcome per header model, or drop the prompt (or mark "
                             "the header \"sparse\": true for partial training labels)")
    task = rec.get("task")
    if task is not None and not isinstance(task, str):
        raise DataFormatError("field 'task' must be a string", where=where)
    _track(present, "task", task is not None, where)
    row_q: list[float] = []
    row_c: list[float] = []
    row_r: list[str | None] = []
    row_x: dict[str, list[float]] = {k: [] for k in OPTIONAL_ARRAYS}
    for m in models:
        if m not in outcomes:  # sparse file: an unlabelled pair
            row_q.append(math.nan)
            row_c.append(math.nan)
            for k in OPTIONAL_ARRAYS:
                row_x[k].append(math.nan)
            row_r.append(None)
            continue
        o = outcomes[m]
        if not isinstance(o, dict):
            raise DataFormatError(f"outcome of {m!r} is not an object", where=where)
        q = _number(o.get("quality"), f"{m!r} quality", where)
        if not 0 <= q <= 1:
            raise DataFormatError(f"{m!r} quality {q} is outside [0, 1]", where=where,
                                  fix="rescale quality to [0, 1]")
        # A sparse file may know a label's quality but not what the answer cost (feedback).
        c = _number(o.get("cost_usd"), f"{m!r} cost_usd", where, allow_none=sparse)
        if c < 0:
            raise DataFormatError(f"{m!r} cost_usd {c} is negative", where=where)
        row_q.append(q)
        row_c.append(c)
        for k in OPTIONAL_ARRAYS:
            _track(present, k, k in o, where)
            row_x[k].append(_number(o.get(k), f"{m!r} {k}", where, allow_none=True))
        resp = o.get("response")
        if resp is not None and not isinstance(resp, str):
            raise DataFormatError(f"{m!r} response must be a string", where=where)
        _track(present, "response", "response" in o, where)
        row_r.append(resp)
    ids.append(pid)
    prompts.append(rec["prompt"])
    splits.append(rec["split"])
    tasks.append(task)
    quality.append(row_q)
    cost.append(row_c)
    for k in OPTIONAL_ARRAYS:
        extra[k].append(row_x[k])
    responses.append(row_r)


def _track(present: dict[str, bool], key: str, has: bool, where: str) -> None:
    """Optional fields are all-or-nothing; the first record decides which."""
    if key not in present:
        present[key] = has
    elif present[key] != has:
        raise DataFormatError(
            f"field {key!r} is {'present' if has else 'missing'} here but "
            f"{'present' if present[key] else 'missing'} in earlier records",
            where=where, fix=f"give {key!r} for every prompt and model (null if unknown), or none")


def _build(header: dict[str, Any], path: Path, ids: list[str], prompts: list[str],
           splits: list[str], tasks: list[str | None], quality: list[list[float]],
           cost: list[list[float]], extra: dict[str, list[list[float]]],
           responses: list[list[str | None]], present: dict[str, bool]) -> Dataset:
    m = len(header["models"])
    if not ids:
        raise DataFormatError("has a header but no prompts", where=path)

    def arr(rows: list[list[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(rows, dtype=np.float64).reshape(len(ids), m)

    optional = {k: arr(extra[k]) if present.get(k) else None for k in OPTIONAL_ARRAYS}
    resp = None
    if present.get("response"):
        resp = np.empty((len(ids), m), dtype=object)
        resp[:] = responses
    return Dataset(
        name=header.get("name") or path.name.split(".")[0],
        models=tuple(header["models"]), ids=tuple(ids), prompts=tuple(prompts),
        quality=arr(quality), cost_usd=arr(cost), split=np.asarray(splits, dtype="<U10"),
        task=tuple(t or "" for t in tasks) if present.get("task") else None,
        responses=resp, meta=dict(header.get("meta", {})), **optional,
        sparse=header.get("sparse") is True,
    )
