"""Importer for the cascade outcomes of Zellinger & Thomson (arXiv:2501.09345, 2025).

Layout: a folder holding ``chain_results/`` (or that folder itself) with one gzip-compressed
JSON file per (dataset, chain, split)::

    chain_results/<dataset>_full_<chain>_chain_results_<split>.json.gz

Each file holds, for its chain's models and query ``i`` (``<split>`` is ``train`` or ``test``):
``user_prompts[i]``, ``system_prompts[i]``, ``model_answers[model][i]``,
``model_correctness[model][i]`` (true/false), ``model_costs[model][i]`` (USD),
``model_latencies[model][i]`` (milliseconds), ``model_tokens[model][i]`` (``{"in", "out"}``),
``raw_confidences[model][i]`` (a log-probability, may be ``-Infinity``) and a ``chain`` text
naming the confidence signal. Every model of a chain was run on every query, and the chains
(``llama``: 5 models, ``qwen_oai``: 4) were run on the same prompts in the same order, so the
chains of one (dataset, split) are joined on the query index into one table of all models; the
join checks that the user and system prompts are equal and raises otherwise.

Transforms:

* ``quality`` = correctness as 1.0 / 0.0; ``cost_usd`` as recorded;
  ``latency_s`` = latency in ms / 1000; ``tokens_in`` / ``tokens_out`` as recorded;
  ``responses`` = the answer texts; ``task`` = the dataset name; ids ``<dataset>.<split>.<i>``.
* ``prompts`` = ``user_prompts[i]``, the text a router sees. The system prompt is one fixed
  instruction per dataset (e.g. "Output only A, B, C or D"), so it is kept once per dataset in
  ``meta["system_prompts"]``. Should a dataset's system prompt vary between queries, it is
  prefixed to the user prompt instead (``system + "\\n\\n" + user``) and its ``meta`` entry is
  ``None``.
* ``confidence`` = ``exp(raw_confidence)``. The raw values are log-probabilities (of the answer
  token for ``ModelIntrinsicLogProb``, of "yes, my answer is correct" for
  ``AskModelConfidence``), all ``<= 0``, so ``exp`` maps them monotonically onto ``[0, 1]``;
  ``-inf`` becomes 0. The raw value is ``log(confidence)`` (``-inf`` for 0), so nothing is lost.
  A raw value above 0 (beyond rounding, 1e-6) is not a log-probability and is rejected.

Splits: with both ``_train`` and ``_test`` files present, train stays train, test stays test,
and validation is carved out of train (:func:`~routecast.data.splits.carve_validation`); a
dataset without test files (upstream GSM8K) then lies in train and validation only. With
one split only (the shared copy has ``_train`` only), a seeded
:func:`~routecast.data.splits.random_split` is drawn over all queries and ``meta["split"]`` says
why. Ids keep the source split name either way.

Drop rule: none. Every query is kept; any missing key, array of the wrong length, non-boolean
correctness, non-numeric cost / latency / token count or unreadable file raises a
:class:`~routecast.errors.DataFormatError` naming the file and the key and index.

The derived ``flat_outcomes*.csv.gz`` beside the chain files is ignored, also by
:func:`detect`: it has no prompt text (only a query index), so importing it would lose the
prompts routers are trained on.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.data.splits import DEFAULT_SEED, carve_validation, random_split
from routecast.errors import DataError, DataFormatError

_FILE_RE = re.compile(
    r"^(?P<dataset>.+?)_full_(?P<chain>.+)_chain_results_(?P<split>train|test)\.json\.gz$")
_SIGNAL_RE = re.compile(r"conf_signal=(\w+)")
#: Per-model keys every chain file must hold, each ``{model: [value per query]}``.
PER_MODEL = ("model_answers", "model_correctness", "model_costs", "model_latencies",
             "model_tokens", "raw_confidences")
#: Rounding slack above 0 tolerated in a log-probability before it is rejected.
LOGPROB_SLACK = 1e-6
PAPER = ("Zellinger & Thomson, Rational Tuning of LLM Cascades via Probabilistic Modeling, "
         "arXiv:2501.09345 (2025)")


def detect(path: Path) -> bool:
    """A folder with ``chain_results/*_chain_results_*.json.gz`` (or that folder itself)."""
    return path.is_dir() and bool(_chain_files(_results_dir(path)))


def _results_dir(path: Path) -> Path:
    sub = path / "chain_results"
    return sub if sub.is_dir() else path


def _chain_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _FILE_RE.match(p.name) and p.is_file())


def load(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None) -> Dataset:
    """Import the chain results under ``path`` as one table of all the chains' models."""
    path = Path(path)
    if not path.is_dir():
        raise DataError("is not a folder of cascade chain results", where=path,
                        fix="point at the folder holding chain_results/")
    folder = _results_dir(path)
    files = _chain_files(folder)
    if not files:
        raise DataError(
            "holds no chain_results/<dataset>_full_<chain>_chain_results_<split>.json.gz files",
            where=path, fix="point at the folder of the converted chain results")
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for file in files:
        m = _FILE_RE.match(file.name)
        assert m is not None
        groups.setdefault((m["dataset"], m["split"]), {})[m["chain"]] = file
    chains = sorted({c for g in groups.values() for c in g})
    for (ds, sp), group in sorted(groups.items()):
        missing = [c for c in chains if c not in group]
        if missing:
            want = [f"{ds}_full_{c}_chain_results_{sp}.json.gz" for c in missing]
            raise DataFormatError(
                f"lacks the file(s) {want} that the other datasets have", where=folder,
                fix="add the missing chain files, or remove that dataset's other chain files")

    split_names = sorted({s for _, s in groups}, key=["train", "test"].index)
    order = sorted(groups, key=lambda k: (k[0], split_names.index(k[1])))
    tables = [(ds, sp, _join_chains([groups[ds, sp][c] for c in chains])) for ds, sp in order]
    models = tables[0][2].models
    system_prompts: dict[str, str | None] = {}
    for dataset, _, table in tables:
        if table.models != models:
            raise DataFormatError(
                f"has models {table.models}, but other datasets have {models}",
                where=table.files[0], fix="import chain files that share one model list")
        distinct = {s for d, _, t in tables if d == dataset for s in t.system_prompts}
        system_prompts[dataset] = distinct.pop() if len(distinct) == 1 else None
    rows = _Rows()
    for ds, sp, table in tables:
        if system_prompts[ds] is None:  # varies per query: keep it with each prompt
            table.prompts = [f"{s}\n\n{u}" for s, u in
                             zip(table.system_prompts, table.prompts, strict=True)]
        rows.extend(table, ds, sp)
    signals = {d: t.signal for d, _, t in tables if t.signal}

    n = len(rows.ids)
    source_split = np.asarray(rows.splits, dtype="<U10")
    if len(split_names) > 1:
        split = carve_validation(source_split, seed=seed)
        split_note = {"rule": "source train/test kept; validation carved out of train",
                      "seed": seed}
    else:
        split = random_split(n, seed=seed)
        split_note = {"rule": f"drawn at random (seed {seed}): only '_{split_names[0]}' chain "
                              "files are present, so the source has no split to keep",
                      "seed": seed}
    resp = np.empty((n, len(models)), dtype=object)
    resp[:] = rows.answers
    neg_inf = int(np.isneginf(rows.raw_conf).sum())
    return Dataset(
        name=name or (folder.parent if folder.name == "chain_results" else folder).name,
        models=tuple(models), ids=tuple(rows.ids),
        prompts=tuple(rows.prompts), quality=rows.array(rows.quality),
        cost_usd=rows.array(rows.cost), split=split, task=tuple(rows.tasks),
        latency_s=rows.array(rows.latency_s), tokens_in=rows.array(rows.tokens_in),
        tokens_out=rows.array(rows.tokens_out),
        confidence=np.exp(rows.array(rows.raw_conf)), responses=resp,
        meta={
            "source": "llm-cascades-zellinger", "paper": PAPER,
            "files": [str(f) for f in files], "chains": rows.chains, "split": split_note,
            "system_prompts": system_prompts,
            "confidence": {
                "transform": "confidence = exp(raw_confidence); raw = log(confidence), "
                             "-inf <-> 0",
                "signal": signals, "raw_neg_inf": neg_inf},
            "latency": "latency_s = recorded milliseconds / 1000",
            "dropped": {"prompts": 0, "rule": "none: malformed input raises"},
        },
    )


class _Table:
    """One (dataset, split): the chains joined on the query index."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.models: list[str] = []
        self.chain_models: dict[str, list[str]] = {}
        self.prompts: list[str] = []
        self.system_prompts: list[str] = []
        self.signal = ""
        self.columns: dict[str, dict[str, list[Any]]] = {k: {} for k in PER_MODEL}


class _Rows:
    """Accumulates the joined tables row by row."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.prompts: list[str] = []
        self.tasks: list[str] = []
        self.splits: list[str] = []
        self.chains: dict[str, list[str]] = {}
        self.quality: list[list[float]] = []
        self.cost: list[list[float]] = []
        self.latency_s: list[list[float]] = []
        self.tokens_in: list[list[float]] = []
        self.tokens_out: list[list[float]] = []
        self.raw_conf: list[list[float]] = []
        self.answers: list[list[str | None]] = []

    def extend(self, t: _Table, dataset: str, split: str) -> None:
        self.chains.update(t.chain_models)
        cols = t.columns
        for i, prompt in enumerate(t.prompts):
            self.ids.append(f"{dataset}.{split}.{i}")
            self.prompts.append(prompt)
            self.tasks.append(dataset)
            self.splits.append(split)
            self.quality.append([cols["model_correctness"][m][i] for m in t.models])
            self.cost.append([cols["model_costs"][m][i] for m in t.models])
            self.latency_s.append([cols["model_latencies"][m][i] for m in t.models])
            self.tokens_in.append([cols["model_tokens"][m][i][0] for m in t.models])
            self.tokens_out.append([cols["model_tokens"][m][i][1] for m in t.models])
            self.raw_conf.append([cols["raw_confidences"][m][i] for m in t.models])
            self.answers.append([cols["model_answers"][m][i] for m in t.models])

    def array(self, rows: list[list[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
        width = len(rows[0]) if rows else 0
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def _read_json_gz(file: Path) -> dict[str, Any]:
    try:
        with gzip.open(file, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; truncation is EOFError
        raise DataFormatError(f"cannot be read as gzip ({e})", where=file,
                              fix="re-download or re-convert this chain file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFormatError(f"is not valid JSON ({e})", where=file,
                              fix="re-download or re-convert this chain file") from None
    if not isinstance(data, dict):
        raise DataFormatError("does not hold a JSON object", where=file,
                              fix="each chain file is one object with user_prompts, "
                                  "model_answers, ...")
    return data


def _join_chains(files: list[Path]) -> _Table:
    table = _Table(files)
    first: Path | None = None
    for file in files:
        m = _FILE_RE.match(file.name)
        assert m is not None
        data = _read_json_gz(file)
        user = _str_list(data, "user_prompts", file)
        system = _str_list(data, "system_prompts", file)
        if len(system) != len(user):
            raise DataFormatError(
                f"'system_prompts' has {len(system)} entries, 'user_prompts' {len(user)}",
                where=file, fix="give one system and one user prompt per query")
        if first is None:
            first, table.prompts, table.system_prompts = file, user, system
        else:
            for key, mine, theirs in (("user_prompts", user, table.prompts),
                                      ("system_prompts", system, table.system_prompts)):
                if mine != theirs:
                    pairs = enumerate(zip(mine, theirs, strict=False))
                    i = next((k for k, (a, b) in pairs if a != b), min(len(mine), len(theirs)))
                    raise DataFormatError(
                        f"'{key}' differs from {first.name} at query {i} (of {len(mine)} vs "
                        f"{len(theirs)}); the chains cannot be joined on the query index",
                        where=file,
                        fix="use chain files recorded on the same prompts in the same order")
        chain_models = _read_models(data, file, len(user), table)
        clash = sorted(set(chain_models) & set(table.models))
        if clash:
            raise DataFormatError(f"models {clash} also appear in another chain", where=file,
                                  fix="give each model in one chain only")
        table.models += chain_models
        table.chain_models[m["chain"]] = chain_models
        sig = _SIGNAL_RE.search(str(data.get("chain", "")))
        if sig and not table.signal:
            table.signal = sig[1]
    return table


def _str_list(data: dict[str, Any], key: str, file: Path) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataFormatError(f"lacks the key {key!r} (a list of one string per query)",
                              where=file, fix="re-convert the chain file with all its keys")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataFormatError(f"{key}[{i}] is {type(v).__name__}, not a string", where=file)
    return value


def _read_models(data: dict[str, Any], file: Path, n: int, table: _Table) -> list[str]:
    """Validate and convert every per-model column; returns the chain's models in order."""
    answers = data.get("model_answers")
    if not isinstance(answers, dict) or not answers:
        raise DataFormatError("lacks the key 'model_answers' ({model: [answer, ...]})",
                              where=file, fix="re-convert the chain file with all its keys")
    models = [str(m) for m in answers]
    for key in PER_MODEL:
        col = data.get(key)
        if not isinstance(col, dict):
            raise DataFormatError(f"lacks the key {key!r} ({{model: [value per query]}})",
                                  where=file, fix="re-convert the chain file with all its keys")
        if list(col) != models:
            raise DataFormatError(
                f"{key!r} lists models {list(col)}, 'model_answers' lists {models}",
                where=file, fix="give every per-model key the same models")
        for model in models:
            values = col[model]
            if not isinstance(values, list) or len(values) != n:
                size = len(values) if isinstance(values, list) else type(values).__name__
                raise DataFormatError(
                    f"{key}[{model!r}] has {size} entries, but 'user_prompts' has {n}",
                    where=file, fix="give one value per query for every model")
            table.columns[key][model] = [_convert(key, v, f"{key}[{model!r}][{i}]", file)
                                         for i, v in enumerate(values)]
    return models


def _convert(key: str, v: Any, what: str, file: Path) -> Any:
    if key == "model_answers":
        if v is not None and not isinstance(v, str):
            raise DataFormatError(f"{what} is {type(v).__name__}, not text", where=file)
        return v
    if key == "model_correctness":
        if not isinstance(v, bool):
            raise DataFormatError(f"{what} is {v!r}, not true/false", where=file,
                                  fix="correctness must be a JSON boolean")
        return 1.0 if v else 0.0
    if key == "model_tokens":
        if not isinstance(v, dict):
            raise DataFormatError(f"{what} is {v!r}, not {{'in': n, 'out': n}}", where=file)
        return (_number(v.get("in"), f"{what}['in']", file),
                _number(v.get("out"), f"{what}['out']", file))
    if key == "raw_confidences":
        x = _number(v, what, file, allow_neg_inf=True)
        if x > LOGPROB_SLACK:
            raise DataFormatError(f"{what} is {x}, above 0: not a log-probability", where=file,
                                  fix="raw_confidences must be log-probabilities (<= 0)")
        return min(x, 0.0)
    x = _number(v, what, file)
    return x / 1000.0 if key == "model_latencies" else x


def _number(v: Any, what: str, file: Path, *, allow_neg_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise DataFormatError(f"{what} is {v!r}, not a number", where=file,
                              fix="costs, latencies, token counts and confidences are numbers")
    x = float(v)
    if math.isnan(x) or (math.isinf(x) and not (allow_neg_inf and x < 0)):
        raise DataFormatError(f"{what} is {x}", where=file, fix="give a finite number")
    if not allow_neg_inf and x < 0:
        raise DataFormatError(f"{what} is {x}, below 0", where=file)
    return x

