"""Importer for RouteLLM's evaluation outcomes (Ong et al., 2024, ``routellm/evals``).

RouteLLM ships, for its pair ``gpt-4-1106-preview`` / ``mistralai/Mixtral-8x7B-Instruct-v0.1``,
what each model achieved on three benchmarks. The layout, kept from the repository::

    <root>/mmlu/responses/mmlu_<subject>.csv   prompt, one True/False column per model
    <root>/gsm8k/gsm8k_responses.csv           prompt, <model> (True/False), <model>_response
    <root>/mt_bench/question.jsonl             question_id, category, turns
    <root>/mt_bench/judgements.jsonl           GPT-4 judge: question_id, model, turn, score, ...
    <root>/<benchmark>/contaminated_prompts.jsonl   prompts overlapping RouteLLM's training data

Point :func:`load` at the root to import every benchmark present into one dataset, or at one
benchmark's folder to import only that one; :func:`load_mmlu`, :func:`load_gsm8k` and
:func:`load_mt_bench` pick one benchmark out of either. Models are read from the column names
and the judgements; a file naming other models than the rest is an error. Ids and tasks:
``mmlu/<subject>/<row>`` (task ``mmlu/<subject>``), ``gsm8k/<row>`` (``gsm8k``) and
``mt_bench/<question_id>/turn<t>`` (``mt_bench/<category>``); rows count data records from 0, as
RouteLLM's pandas code does, so ``gsm8k/<row>`` is the GSM8K test-set index.

Quality: True/False -> 1.0/0.0. MT-Bench has one prompt per (question, turn); turn ``t``'s
prompt is the first ``t`` user turns joined by a blank line, and its quality is the GPT-4
judge's 1-10 score divided by 10 (so the scale's floor is 0.1: the judge never gives 0).

Drop rule (MT-Bench only; the CSVs must be complete): a (question, turn) is dropped when any
model has no judgement for it or more than one, since neither can be read as one outcome.
FastChat's ``score == -1`` ("the judge gave no rating") counts as no judgement. Judgements of a
question or turn that ``question.jsonl`` lacks are ignored. All counts go to ``meta``.

Cost rule: the files record no cost, so ``cost_usd = price.cost_usd(tokens_in, tokens_out)``
with the price table (:data:`routecast.data.pricing.DEFAULT_PRICES` unless ``prices`` is given;
a model without a price is an error). ``tokens_in`` is :func:`estimate_tokens` of the prompt;
``tokens_out`` of the response where one is recorded: GSM8K's ``<model>_response`` columns, and
the answer the MT-Bench judge prompt quotes (between FastChat's template markers; if they are
not found, :data:`MT_BENCH_TOKENS_OUT`). MMLU records only correctness of a one-letter answer,
so ``tokens_out`` is :data:`MMLU_TOKENS_OUT`. All of this is an estimate, flagged in ``meta``.

Contamination: prompts listed in ``contaminated_prompts.jsonl`` (matched on the exact
``eval_prompt`` text, as RouteLLM does; an MT-Bench question is flagged when any of its turns
is) are kept unless ``exclude_contaminated=True``; the count and ids go to ``meta``. The source
has no split, so a seeded 60/20/20 random split is drawn over the imported prompts.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.data.pricing import DEFAULT_PRICES, Price, estimate_tokens, price_of
from routecast.data.splits import DEFAULT_SEED, random_split
from routecast.errors import DataError, DataFormatError

BENCHMARKS = ("mmlu", "gsm8k", "mt_bench")

#: Output tokens of an MMLU answer: RouteLLM's prompts end in "Answer:" and the reply that is
#: graded is one letter. The real replies were not recorded, so we count the minimum.
MMLU_TOKENS_OUT = 1
#: Output tokens assumed for an MT-Bench answer the judge prompt does not let us extract; about
#: the median of the answers that can be extracted (250-380 tokens per model and turn).
MT_BENCH_TOKENS_OUT = 300

RESPONSE_SUFFIX = "_response"
CONTAMINATED = "contaminated_prompts.jsonl"
_BOOL = {"true": 1.0, "false": 0.0}
# FastChat's judge templates: single-v1 / single-math-v1 (turn 1) quote the answer between the
# first pair; the *-multi-turn templates quote the conversation, the last answer after the last
# "### Assistant A:" (the math variant's reference conversation uses "### Reference answer:").
_T1_START, _T1_END = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"
_TN_START = "\n\n### Assistant A:\n"
_TN_END = "\n\n<|The End of Assistant A's Conversation with User|>"


@dataclass
class _Part:
    """One benchmark's prompts, with models in the order its files name them."""

    benchmark: str
    source: str  # the file that fixed the model list, for error messages
    models: list[str]
    files: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    quality: list[list[float]] = field(default_factory=list)
    tokens_out: list[list[float]] = field(default_factory=list)
    responses: list[list[str | None]] = field(default_factory=list)
    contaminated: list[bool] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


# -- layout ----------------------------------------------------------------------------------


def _kind(folder: Path) -> str | None:
    """Which benchmark folder ``folder`` is, by the files RouteLLM puts in it."""
    if not folder.is_dir():
        return None
    if (folder / "responses").is_dir() and any((folder / "responses").glob("mmlu_*.csv")):
        return "mmlu"
    if (folder / "gsm8k_responses.csv").is_file():
        return "gsm8k"
    if (folder / "judgements.jsonl").is_file() and (folder / "question.jsonl").is_file():
        return "mt_bench"
    return None


def detect(path: Path) -> bool:
    """The RouteLLM ``evals`` folder, or one of its ``mmlu``/``gsm8k``/``mt_bench`` folders."""
    return _kind(path) is not None or any(_kind(path / b) == b for b in BENCHMARKS)


def _locate(path: Path, benchmark: str) -> Path:
    if _kind(path) == benchmark:
        return path
    if _kind(path / benchmark) == benchmark:
        return path / benchmark
    raise DataError(f"holds no RouteLLM {benchmark} results", where=path,
                    fix=f"point at RouteLLM's evals folder or its {benchmark}/ folder")


_LAYOUT = "mmlu/responses/mmlu_<subject>.csv, gsm8k/gsm8k_responses.csv, mt_bench/"


def load(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None,
         prices: dict[str, Price] | None = None, exclude_contaminated: bool = False) -> Dataset:
    """Import every benchmark under RouteLLM's evals folder, or the one folder given."""
    path = Path(path)
    kind = _kind(path)
    found = [kind] if kind else [b for b in BENCHMARKS if _kind(path / b) == b]
    if not found:
        raise DataError("is not a RouteLLM evals folder", where=path,
                        fix=f"point at a folder holding {_LAYOUT} (or one of them)")
    parts = [_READ[b](path if kind else path / b) for b in found]
    default = f"routellm-{kind}" if kind else "routellm"
    return _assemble(parts, name=name or default, seed=seed, prices=prices,
                     exclude_contaminated=exclude_contaminated)


def _load_one(benchmark: str, path: str | Path, seed: int, name: str | None,
              prices: dict[str, Price] | None, exclude_contaminated: bool) -> Dataset:
    part = _READ[benchmark](_locate(Path(path), benchmark))
    return _assemble([part], name=name or f"routellm-{benchmark}", seed=seed, prices=prices,
                     exclude_contaminated=exclude_contaminated)


def load_mmlu(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None,
              prices: dict[str, Price] | None = None,
              exclude_contaminated: bool = False) -> Dataset:
    """Only the MMLU results, from the evals folder or its ``mmlu/`` folder."""
    return _load_one("mmlu", path, seed, name, prices, exclude_contaminated)


def load_gsm8k(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None,
               prices: dict[str, Price] | None = None,
               exclude_contaminated: bool = False) -> Dataset:
    """Only the GSM8K results, from the evals folder or its ``gsm8k/`` folder."""
    return _load_one("gsm8k", path, seed, name, prices, exclude_contaminated)


def load_mt_bench(path: str | Path, *, seed: int = DEFAULT_SEED, name: str | None = None,
                  prices: dict[str, Price] | None = None,
                  exclude_contaminated: bool = False) -> Dataset:
    """Only the MT-Bench results, from the evals folder or its ``mt_bench/`` folder."""
    return _load_one("mt_bench", path, seed, name, prices, exclude_contaminated)


# -- reading files ---------------------------------------------------------------------------


def _csv_rows(file: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(first line, fields)`` of each record; blank lines are skipped."""
    csv.field_size_limit(sys.maxsize)  # professional_law prompts are long
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            line = start = reader.line_num + 1
            for row in reader:
                if row:
                    rows.append((start, row))
                line = start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise DataFormatError(f"is not UTF-8 text ({e.reason})", where=file,
                              fix="re-save the file as UTF-8") from None
    except csv.Error as e:
        raise DataFormatError(f"is not valid CSV ({e})", where=f"{file}:{line}",
                              fix="repair the quoting of this record") from None
    if header is None:
        raise DataFormatError("is empty", where=file, fix="give a header line and rows")
    if not rows:
        raise DataFormatError("has a header but no rows", where=file)
    return header, rows


def _jsonl(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, object)`` for each non-blank line."""
    try:
        with open(file, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{file}:{lineno}"
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError as e:
                    raise DataFormatError(f"invalid JSON ({e})", where=where,
                                          fix="each line must be one JSON object; repair or "
                                              "remove this line") from None
                if not isinstance(rec, dict):
                    raise DataFormatError("line is not a JSON object", where=where)
                yield where, rec
    except UnicodeDecodeError as e:
        raise DataFormatError(f"is not UTF-8 text ({e.reason})", where=file,
                              fix="re-save the file as UTF-8") from None


def _get(rec: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, typ):
        kinds = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise DataFormatError(f"field {key!r} is missing or of the wrong type ({value!r:.40})",
                              where=where, fix=f"give {key!r} as a JSON {kinds} on this line")
    return value


def _contaminated(folder: Path, part: _Part) -> set[str]:
    """The ``eval_prompt`` texts RouteLLM flagged; an absent file flags nothing."""
    file = folder / CONTAMINATED
    if not file.is_file():
        return set()
    part.files.append(str(file))
    return {_get(rec, "eval_prompt", str, where) for where, rec in _jsonl(file)}


def _models(header: list[str], file: Path) -> list[str]:
    """Correctness columns: all but ``prompt``, ``<model>_response`` and a pandas index."""
    if len(set(header)) != len(header):
        raise DataFormatError("repeats a column name", where=f"{file}:1",
                              fix="give every column once")
    if "prompt" not in header:
        raise DataFormatError("is missing the 'prompt' column", where=f"{file}:1",
                              fix="RouteLLM result CSVs have a 'prompt' column and one "
                                  "True/False column per model")
    names = set(header)
    models = [h for h in header if h != "prompt" and h and not h.startswith("Unnamed:")
              and not (h.endswith(RESPONSE_SUFFIX) and h[: -len(RESPONSE_SUFFIX)] in names)]
    if not models:
        raise DataFormatError("has no model columns", where=f"{file}:1",
                              fix="add one True/False correctness column per model")
    return models


def _read_csv(file: Path, part: _Part, *, prefix: str, task: str, responses: bool) -> None:
    """Append one RouteLLM result CSV to ``part`` (whose model list it must match)."""
    header, rows = _csv_rows(file)
    models = _models(header, file)
    if not part.models:
        part.models, part.source = models, str(file)
    elif set(models) != set(part.models):
        raise DataFormatError(
            f"has model columns {sorted(models)}, but {part.source} has {sorted(part.models)}",
            where=f"{file}:1", fix="every file must have one True/False column for each of the "
                                   "same models")
    col = {h: i for i, h in enumerate(header)}
    missing = [m + RESPONSE_SUFFIX for m in part.models if m + RESPONSE_SUFFIX not in col]
    if responses and missing:
        raise DataFormatError(f"is missing the response columns {missing}", where=f"{file}:1",
                              fix="GSM8K results need a '<model>_response' column per model")
    part.files.append(str(file))
    qcols = [col[m] for m in part.models]
    rcols = [col[m + RESPONSE_SUFFIX] for m in part.models] if responses else []
    for k, (line, row) in enumerate(rows):
        if len(row) != len(header):
            raise DataFormatError(f"data row {k} has {len(row)} fields, the header {len(header)}",
                                  where=f"{file}:{line}", fix="repair or remove this row")
        quality = []
        for m, c in zip(part.models, qcols, strict=True):
            q = _BOOL.get(row[c].strip().lower())
            if q is None:
                raise DataFormatError(
                    f"column {m!r} holds {row[c][:40]!r} in data row {k}, not True/False",
                    where=f"{file}:{line}", fix="correctness columns must hold True or False; "
                                                "correct or remove this row")
            quality.append(q)
        texts = [row[c] for c in rcols]
        part.ids.append(f"{prefix}/{k}")
        part.prompts.append(row[col["prompt"]])
        part.tasks.append(task)
        part.quality.append(quality)
        part.tokens_out.append([float(estimate_tokens(t)) for t in texts] if responses
                               else [float(MMLU_TOKENS_OUT)] * len(qcols))
        part.responses.append(list(texts) if responses else [None] * len(qcols))


def _read_mmlu(folder: Path) -> _Part:
    part = _Part("mmlu", "", [])
    for file in sorted((folder / "responses").glob("mmlu_*.csv")):
        subject = file.stem[len("mmlu_"):]
        _read_csv(file, part, prefix=f"mmlu/{subject}", task=f"mmlu/{subject}", responses=False)
    flagged = _contaminated(folder, part)
    part.contaminated = [p in flagged for p in part.prompts]
    return part


def _read_gsm8k(folder: Path) -> _Part:
    part = _Part("gsm8k", "", [])
    _read_csv(folder / "gsm8k_responses.csv", part, prefix="gsm8k", task="gsm8k",
              responses=True)
    flagged = _contaminated(folder, part)
    part.contaminated = [p in flagged for p in part.prompts]
    return part


def _answer(user_prompt: str, turn: int) -> str | None:
    """The judged answer quoted in a FastChat judge prompt, or None if the markers are absent."""
    start, end = (_T1_START, _T1_END) if turn == 1 else (_TN_START, _TN_END)
    i, j = user_prompt.rfind(start), user_prompt.rfind(end)
    return user_prompt[i + len(start):j] if i >= 0 and i + len(start) <= j else None


def _read_mt_bench(folder: Path) -> _Part:
    qfile, jfile = folder / "question.jsonl", folder / "judgements.jsonl"
    part = _Part("mt_bench", str(jfile), [], files=[str(qfile), str(jfile)])
    questions: dict[int, tuple[str, list[str]]] = {}
    first_line: dict[int, str] = {}
    for where, rec in _jsonl(qfile):
        qid = _get(rec, "question_id", int, where)
        turns = _get(rec, "turns", list, where)
        if not turns or not all(isinstance(t, str) for t in turns):
            raise DataFormatError("'turns' must be a non-empty list of strings", where=where)
        if qid in questions:
            raise DataFormatError(f"duplicate question_id {qid} (also at {first_line[qid]})",
                                  where=where, fix="remove the repeated question")
        questions[qid] = (_get(rec, "category", str, where), turns)
        first_line[qid] = where
    # (question, turn) -> model -> [(score, answer)], models in order of first appearance
    judged: dict[tuple[int, int], dict[str, list[tuple[float, str | None]]]] = {}
    models: dict[str, None] = {}
    ignored = unrated = 0
    for where, rec in _jsonl(jfile):
        qid = _get(rec, "question_id", int, where)
        turn = _get(rec, "turn", int, where)
        model = _get(rec, "model", str, where)
        score = float(_get(rec, "score", (int, float), where))
        models.setdefault(model, None)
        if score == -1:  # FastChat's "no [[rating]] found in the judgment"
            unrated += 1
            continue
        if not 1 <= score <= 10:
            raise DataFormatError(f"score {score} is outside MT-Bench's 1-10", where=where,
                                  fix="give the judge's 1-10 rating, or -1 for none")
        if qid not in questions or not 1 <= turn <= len(questions[qid][1]):
            ignored += 1
            continue
        prompt = rec.get("user_prompt")
        answer = _answer(prompt, turn) if isinstance(prompt, str) else None
        judged.setdefault((qid, turn), {}).setdefault(model, []).append((score, answer))
    if not models:
        raise DataFormatError("holds no judgements", where=jfile)
    part.models = list(models)
    missing = duplicate = fallback = 0
    for qid, (category, turns) in questions.items():
        for t in range(1, len(turns) + 1):
            got = judged.get((qid, t), {})
            counts = [len(got.get(m, [])) for m in part.models]
            if 0 in counts:
                missing += 1
                continue
            if max(counts) > 1:
                duplicate += 1
                continue
            outcomes = [got[m][0] for m in part.models]
            fallback += sum(a is None for _, a in outcomes)
            part.ids.append(f"mt_bench/{qid}/turn{t}")
            part.prompts.append("\n\n".join(turns[:t]))
            part.tasks.append(f"mt_bench/{category}")
            part.quality.append([s / 10 for s, _ in outcomes])
            part.tokens_out.append([float(MT_BENCH_TOKENS_OUT if a is None else
                                          estimate_tokens(a)) for _, a in outcomes])
            part.responses.append([a for _, a in outcomes])
    if not part.ids:
        raise DataError("no (question, turn) has exactly one judgement per model", where=jfile,
                        fix="check that judgements.jsonl matches question.jsonl")
    part.counts = {"dropped_missing": missing, "dropped_duplicate": duplicate,
                   "ignored_judgements": ignored, "unrated_judgements": unrated,
                   "tokens_out_fallback": fallback}
    flagged = _contaminated(folder, part)
    bad = {qid for qid, (_, turns) in questions.items() if flagged.intersection(turns)}
    part.contaminated = [int(i.split("/")[1]) in bad for i in part.ids]
    return part


_READ = {"mmlu": _read_mmlu, "gsm8k": _read_gsm8k, "mt_bench": _read_mt_bench}


# -- building the dataset --------------------------------------------------------------------


def _assemble(parts: list[_Part], *, name: str, seed: int, prices: dict[str, Price] | None,
              exclude_contaminated: bool) -> Dataset:
    models = parts[0].models
    ids: list[str] = []
    prompts: list[str] = []
    tasks: list[str] = []
    quality: list[list[float]] = []
    tokens_out: list[list[float]] = []
    responses: list[list[str | None]] = []
    flagged: list[str] = []
    per_benchmark: dict[str, int] = {}
    for p in parts:
        if set(p.models) != set(models):
            raise DataFormatError(
                f"names models {sorted(p.models)}, but {parts[0].source} names {sorted(models)}",
                where=p.source, fix="import benchmarks recorded for the same models, or one "
                                    "benchmark's folder at a time")
        perm = [p.models.index(m) for m in models]  # reorder columns to the first file's order
        keep = [i for i, c in enumerate(p.contaminated) if not (c and exclude_contaminated)]
        flagged += [i for i, c in zip(p.ids, p.contaminated, strict=True) if c]
        per_benchmark[p.benchmark] = len(keep)
        for i in keep:
            ids.append(p.ids[i])
            prompts.append(p.prompts[i])
            tasks.append(p.tasks[i])
            quality.append([p.quality[i][j] for j in perm])
            tokens_out.append([p.tokens_out[i][j] for j in perm])
            responses.append([p.responses[i][j] for j in perm])
    n, m = len(ids), len(models)
    if n == 0:
        raise DataError("has no prompts left after excluding contaminated ones",
                        where=parts[0].source, fix="load without exclude_contaminated")
    table = DEFAULT_PRICES if prices is None else prices
    price = [price_of(model, table, parts[0].source) for model in models]
    t_in = [float(estimate_tokens(p)) for p in prompts]
    cost = [[price[j].cost_usd(t_in[i], tokens_out[i][j]) for j in range(m)] for i in range(n)]
    resp = None
    if any(r is not None for row in responses for r in row):
        resp = np.empty((n, m), dtype=object)
        resp[:] = responses
    counts: dict[str, int] = {}
    for p in parts:
        counts.update(p.counts)
    dropped = counts.get("dropped_missing", 0) + counts.get("dropped_duplicate", 0)
    meta: dict[str, Any] = {
        "source": "routellm",
        "origin": "github.com/lm-sys/RouteLLM, routellm/evals",
        "files": [f for p in parts for f in p.files],
        "benchmarks": per_benchmark,
        "quality": "MMLU, GSM8K: correct True/False -> 1.0/0.0; MT-Bench: GPT-4 judge score "
                   "(1-10) / 10",
        "cost_estimated": True,
        "cost_note": "estimated: the source records no cost, so cost_usd = tokens_in * "
                     "input price + tokens_out * output price (meta.prices), tokens being "
                     "ceil(characters / 4) of the prompt and of the recorded response "
                     "(GSM8K responses, MT-Bench answers quoted by the judge prompt); "
                     f"tokens_out is {MMLU_TOKENS_OUT} for an MMLU answer and "
                     f"{MT_BENCH_TOKENS_OUT} for an MT-Bench answer that cannot be extracted",
        "prices": {model: {"input_usd_per_mtok": pr.input_usd_per_mtok,
                           "output_usd_per_mtok": pr.output_usd_per_mtok, "source": pr.source}
                   for model, pr in zip(models, price, strict=True)},
        "contaminated": {"count": len(flagged), "excluded": exclude_contaminated,
                         "ids": flagged,
                         "rule": "prompt text listed as eval_prompt in contaminated_prompts.jsonl"
                                 " (MT-Bench: any turn of the question)"},
        "dropped": {"prompts": dropped,
                    "rule": "MT-Bench (question, turn) without exactly one rated judgement "
                            "per model", **counts},
    }
    return Dataset(
        name=name, models=tuple(models), ids=tuple(ids), prompts=tuple(prompts),
        quality=np.asarray(quality, dtype=np.float64).reshape(n, m),
        cost_usd=np.asarray(cost, dtype=np.float64).reshape(n, m),
        split=random_split(n, seed=seed), task=tuple(tasks),
        tokens_in=np.repeat(np.asarray(t_in, dtype=np.float64)[:, None], m, axis=1),
        tokens_out=np.asarray(tokens_out, dtype=np.float64).reshape(n, m),
        responses=resp, meta=meta,
    )
