"""Importer for LLMRouter's routing data (U Lab @ UIUC, github.com/ulab-uiuc/LLMRouter).

Layout (the files of LLMRouter's RouterDC baseline, plus its query and model tables)::

    dcrouter_preprocessed/train.json      [{"question": str, "scores": {model: score}}, ...]
    dcrouter_preprocessed/test.json       same, 5,608 + 500 items in the shared copy
    query_data/default_query_train.jsonl  {"query", "task_name", "metric", ...} per line
    query_data/default_query_test.jsonl
    llm_candidates/default_llm.json       {model: {"input_price", "output_price", ...}}

Transforms:

* ``quality`` = the score of each model (0/1, fractional for CommonGen's coverage), which must
  lie in [0, 1]; the models are those of the first item's ``scores``, sorted by name, and every
  item must score exactly those.
* ``task`` (and the metric, used for the cost) come from joining each question to the query
  file of the *same split* on the exact text. A question that matches several query lines
  (LLMRouter averaged their scores into one item) takes the first line's task and metric; such
  items are counted in ``meta["join"]["ambiguous"]``. A question that matches none is kept with
  task ``"unknown"`` and the default output length, and counted in ``meta["join"]["unmatched"]``
  (a missing query file is an error, a missing line is not: the scores are still valid).
* ids are ``<split>.<i>`` (``i`` = position in that split's file): some questions occur in both
  train and test, so the text is no id. ``meta["test_questions_also_in_train"]`` counts them.
* prompts are the question text; there are no responses, latencies or confidences.

Cost rule: LLMRouter records no per-call cost, so it is *estimated*:
``cost_usd = (tokens_in * input_price + tokens_out * output_price) / 1e6`` with the prices of
``default_llm.json`` in USD per 1M tokens (a price key names the model; a key that differs is
matched through the entry's API id ``model``, e.g. ``qwen/qwen2.5-7b-instruct``; a scored
model without a price is an error unless ``prices=`` supplies one).
``tokens_in = estimate_tokens(question)`` (no chat template counted) and ``tokens_out`` is an
assumed answer length per metric, :data:`TOKENS_OUT`, overridable per task
(:data:`TOKENS_OUT_BY_TASK`) or by the ``tokens_out=`` argument. The figures used, the prices
and a note that costs are estimated go into ``meta["cost"]``.

Splits: the source's train/test split is kept; validation is carved out of train.
Drop rule: none; malformed input raises a :class:`~routecast.errors.DataFormatError` naming
the file, the item and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from routecast.data.dataset import Dataset
from routecast.data.pricing import Price, estimate_tokens
from routecast.data.splits import DEFAULT_SEED, carve_validation
from routecast.errors import DataError, DataFormatError

SOURCE_SPLITS = ("train", "test")
SCORES = "dcrouter_preprocessed/{split}.json"
QUERIES = "query_data/default_query_{split}.jsonl"
PRICES = "llm_candidates/default_llm.json"

#: Assumed answer length in tokens per LLMRouter metric; why each figure (lengths measured with
#: ``estimate_tokens`` on the shared data, output counts from the Zellinger cascade records):
TOKENS_OUT: dict[str, int] = {
    # multiple choice, exact match: the letter plus a short phrase ("The answer is (C)."). Under a
    # strict "output only the letter" prompt the cascade records show 1-2 tokens; LLMRouter's
    # prompts are not that strict.
    "em_mc": 8,
    # short factoid answers (Natural Questions, TriviaQA): gold answers are ~4 tokens; TriviaQA
    # answers in the cascade records are 3-5 tokens. Twice the gold length.
    "f1_score": 8,
    # GSM8K with chain of thought: the nine models of the cascade records average 220 output
    # tokens on GSM8K (175-265 per model).
    "GSM8K": 220,
    # competition math with chain of thought: MATH reference solutions here are twice as long
    # as GSM8K's (151 vs 73 tokens on average), so twice the GSM8K figure.
    "MATH": 440,
    # a Python function in a markdown block with a line of explanation; HumanEval's reference
    # test code alone is ~130 tokens.
    "code_eval": 200,
    # CommonGen: one or two sentences using the given concepts (the concept lists are ~46
    # tokens).
    "commongen_coverage": 48,
}
#: Tasks whose answers differ in length from their metric's default.
TOKENS_OUT_BY_TASK: dict[str, int] = {
    # multilingual grade-school math, graded with the MATH metric but GSM8K-sized.
    "agentverse-mgsm": 220,
}
#: Output length assumed for an unknown metric (or an unmatched question), in tokens.
DEFAULT_TOKENS_OUT = 100
UNKNOWN = "unknown"


def detect(path: Path) -> bool:
    """A folder with ``dcrouter_preprocessed/train.json`` or ``test.json``."""
    return path.is_dir() and any((path / SCORES.format(split=s)).is_file()
                                 for s in SOURCE_SPLITS)


def load(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None,
         prices: Mapping[str, Price] | None = None,
         tokens_out: Mapping[str, int] | None = None) -> Dataset:
    """Import LLMRouter's scores, with task labels and estimated costs.

    ``prices`` adds to or overrides the prices of ``default_llm.json`` (USD per 1M tokens);
    ``tokens_out`` maps a metric (a key of :data:`TOKENS_OUT` or a metric in the data) or else
    a task name to an assumed output length, overriding :data:`TOKENS_OUT` /
    :data:`TOKENS_OUT_BY_TASK`.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError("is not a folder of LLMRouter data", where=path,
                        fix="point at the folder holding dcrouter_preprocessed/")
    models: list[str] | None = None
    ids: list[str] = []
    prompts: list[str] = []
    tasks: list[str] = []
    splits: list[str] = []
    metrics: list[str] = []
    quality: list[list[float]] = []
    join = {"unmatched": 0, "ambiguous": 0, "ambiguous_with_conflicting_task": 0}
    texts: dict[str, set[str]] = {}
    for split in SOURCE_SPLITS:
        file = path / SCORES.format(split=split)
        items = _read_items(file)
        lookup, conflicts = _read_queries(path / QUERIES.format(split=split))
        if models is None:
            models = _models_of(items[0], file)
        texts[split] = set()
        for i, item in enumerate(items):
            where = f"{file}: item {i}"
            question, row = _read_item(item, models, where)
            labels = lookup.get(question)
            if labels is None:
                join["unmatched"] += 1
                task, metric = UNKNOWN, UNKNOWN
            else:
                (task, metric), n_lines = labels
                if n_lines > 1:
                    join["ambiguous"] += 1
                    join["ambiguous_with_conflicting_task"] += question in conflicts
            ids.append(f"{split}.{i}")
            prompts.append(question)
            tasks.append(task)
            metrics.append(metric)
            splits.append(split)
            quality.append(row)
            texts[split].add(question)
    assert models is not None

    table = _read_prices(path / PRICES, models, prices)
    per_metric, per_task = _lengths(tokens_out, set(metrics))
    t_in = np.array([estimate_tokens(p) for p in prompts], dtype=np.float64)
    used: dict[str, int] = {}
    defaulted = 0
    t_out_list: list[float] = []
    for task, metric in zip(tasks, metrics, strict=True):
        n_out = per_task.get(task, per_metric.get(metric))
        if n_out is None:
            defaulted += 1
            n_out = DEFAULT_TOKENS_OUT
        used[task] = n_out
        t_out_list.append(float(n_out))
    t_out = np.asarray(t_out_list, dtype=np.float64)
    price_in = np.array([table[m].input_usd_per_mtok for m in models], dtype=np.float64)
    price_out = np.array([table[m].output_usd_per_mtok for m in models], dtype=np.float64)
    cost = (t_in[:, None] * price_in[None, :] + t_out[:, None] * price_out[None, :]) / 1e6
    n, m = len(ids), len(models)

    split_arr = carve_validation(np.asarray(splits, dtype="<U10"), seed=seed)
    return Dataset(
        name=name or path.name, models=tuple(models), ids=tuple(ids), prompts=tuple(prompts),
        quality=np.asarray(quality, dtype=np.float64).reshape(n, m), cost_usd=cost,
        split=split_arr, task=tuple(tasks),
        tokens_in=np.repeat(t_in[:, None], m, axis=1),
        tokens_out=np.repeat(t_out[:, None], m, axis=1),
        meta={
            "source": "llmrouter",
            "files": [str(path / f.format(split=s)) for s in SOURCE_SPLITS
                      for f in (SCORES, QUERIES)] + [str(path / PRICES)],
            "split": {"rule": "source train/test kept; validation carved out of train",
                      "seed": seed},
            "join": {**join, "rule": "task and metric from the same split's query file, "
                                     "on the exact question text; first match wins; "
                                     f"no match -> task {UNKNOWN!r}"},
            "test_questions_also_in_train": len(texts["test"] & texts["train"]),
            "cost": {
                "estimated": True,
                "note": "LLMRouter records no per-call cost: cost_usd = (tokens_in * "
                        "input_price + tokens_out * output_price) / 1e6, tokens_in = "
                        "estimate_tokens(question), tokens_out = an assumed length per "
                        "metric (or task)",
                "prices_usd_per_mtok": {
                    k: {"input": table[k].input_usd_per_mtok,
                        "output": table[k].output_usd_per_mtok, "source": table[k].source}
                    for k in models},
                "tokens_out_per_metric": per_metric, "tokens_out_per_task": per_task,
                "tokens_out_used_per_task": dict(sorted(used.items())),
                "tokens_out_default": DEFAULT_TOKENS_OUT, "tokens_out_defaulted": defaulted,
            },
            "dropped": {"prompts": 0, "rule": "none: malformed input raises"},
        },
    )


def _lengths(overrides: Mapping[str, int] | None, metrics: set[str]
             ) -> tuple[dict[str, int], dict[str, int]]:
    """The output lengths per metric and per task, with ``overrides`` applied."""
    per_metric = dict(TOKENS_OUT)
    per_task = dict(TOKENS_OUT_BY_TASK)
    for key, value in (overrides or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"tokens_out[{key!r}] must be a non-negative integer, got {value!r}",
                            fix="give an assumed answer length in tokens")
        (per_metric if key in TOKENS_OUT or key in metrics else per_task)[key] = value
    return per_metric, per_task


def _read_json(file: Path) -> Any:
    if not file.is_file():
        raise DataFormatError("is missing", where=file,
                              fix="LLMRouter data needs dcrouter_preprocessed/, query_data/ "
                                  "and llm_candidates/ side by side")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise DataFormatError(f"cannot be read as JSON ({e})", where=file,
                              fix="re-download the file") from None


def _read_items(file: Path) -> list[Any]:
    items = _read_json(file)
    if not isinstance(items, list) or not items:
        raise DataFormatError("must be a non-empty JSON array of {question, scores} items",
                              where=file)
    return items


def _models_of(item: Any, file: Path) -> list[str]:
    scores = item.get("scores") if isinstance(item, dict) else None
    if not isinstance(scores, dict) or not scores:
        raise DataFormatError("item 0 has no 'scores' object ({model: score})", where=file,
                              fix="every item needs 'question' and 'scores'")
    return sorted(str(m) for m in scores)


def _read_item(item: Any, models: list[str], where: str) -> tuple[str, list[float]]:
    if not isinstance(item, dict):
        raise DataFormatError("is not a JSON object", where=where)
    question = item.get("question")
    if not isinstance(question, str):
        raise DataFormatError("has no 'question' string", where=where,
                              fix="every item needs 'question' and 'scores'")
    scores = item.get("scores")
    if not isinstance(scores, dict):
        raise DataFormatError("has no 'scores' object ({model: score})", where=where,
                              fix="every item needs 'question' and 'scores'")
    if set(scores) != set(models):
        missing = sorted(set(models) - set(scores))
        extra = sorted(set(scores) - set(models))
        raise DataFormatError(
            f"scores models {missing} missing and {extra} unexpected (item 0 scores {models})",
            where=where, fix="score every model on every item, or drop the item")
    row: list[float] = []
    for model in models:
        s = scores[model]
        if isinstance(s, bool) or not isinstance(s, int | float):
            raise DataFormatError(f"score of {model!r} is {s!r}, not a number", where=where)
        if math.isnan(s) or not 0 <= s <= 1:
            raise DataFormatError(f"score of {model!r} is {s}, outside [0, 1]", where=where,
                                  fix="scores must lie in [0, 1]")
        row.append(float(s))
    return question, row


def _read_queries(file: Path) -> tuple[dict[str, tuple[tuple[str, str], int]], set[str]]:
    """query text -> ((task, metric) of its first line, number of lines); conflicting texts."""
    if not file.is_file():
        raise DataFormatError("is missing", where=file,
                              fix="LLMRouter data needs query_data/ beside "
                                  "dcrouter_preprocessed/ (it gives each question's task)")
    lookup: dict[str, tuple[tuple[str, str], int]] = {}
    conflicts: set[str] = set()
    try:
        with open(file, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{file}:{lineno}"
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise DataFormatError(f"invalid JSON ({e})", where=where) from None
                if not isinstance(rec, dict) or not all(
                        isinstance(rec.get(k), str) for k in ("query", "task_name", "metric")):
                    raise DataFormatError("needs string fields 'query', 'task_name', 'metric'",
                                          where=where)
                labels = (rec["task_name"], rec["metric"])
                if rec["query"] in lookup:
                    first, count = lookup[rec["query"]]
                    lookup[rec["query"]] = (first, count + 1)
                    if first != labels:
                        conflicts.add(rec["query"])
                else:
                    lookup[rec["query"]] = (labels, 1)
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"cannot be read ({e})", where=file) from None
    return lookup, conflicts


def _read_prices(file: Path, models: list[str],
                 overrides: Mapping[str, Price] | None) -> dict[str, Price]:
    raw = _read_json(file)
    if not isinstance(raw, dict):
        raise DataFormatError("must be a JSON object of model -> entry", where=file)
    by_api_id = {str(e.get("model", "")).rsplit("/", 1)[-1]: k
                 for k, e in raw.items() if isinstance(e, dict)}
    table: dict[str, Price] = {}
    for model in models:
        if overrides and model in overrides:
            table[model] = overrides[model]
            continue
        key = model if model in raw else by_api_id.get(model)
        if key is None:
            raise DataFormatError(
                f"has no price for the scored model {model!r} (it lists {sorted(raw)})",
                where=file, fix=f"add an entry {model!r} with input_price and output_price, "
                                "or pass prices={...} to load()")
        entry = raw[key] if isinstance(raw[key], dict) else {}
        p_in, p_out = entry.get("input_price"), entry.get("output_price")
        if not (_price_ok(p_in) and _price_ok(p_out)):
            raise DataFormatError(
                f"entry {key!r} needs non-negative numbers 'input_price' and 'output_price' "
                f"(got {p_in!r}, {p_out!r})", where=file, fix="give USD per 1M tokens")
        table[model] = Price(float(p_in), float(p_out), f"{file.name}[{key!r}]")
    return table


def _price_ok(p: Any) -> TypeGuard[float]:
    return isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
