"""The :class:`Fleet`: recorded outcomes answering as models, with no I/O.

A request's prompt is looked up by its *key*: the text with every run of white space made one
space and the ends stripped (:func:`prompt_key`), so a client that re-wraps lines still finds
it; anything else (case, punctuation, a system prompt) must be as recorded. Chat requests are
matched on their last user message, completions on their prompt. When the data holds one
prompt text more than once among the served rows, the first row wins (RouterBench's subset
has two prompts in both train and test: serve one split with ``split=`` to get its row).

Rows whose every response is missing are not served (RouteLLM's MMLU records none); a missing
response of one model on a served row answers 404 like an unknown prompt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.dataset import SPLITS, Dataset
from routecast.data.pricing import estimate_tokens
from routecast.errors import ConfigError, DataError, RequestError
from routecast.fleet.judge import JudgeAsk, flipped
from routecast.fleet.pricing import FleetPrice, token_table

DEFAULT_JUDGE = "judge"


def prompt_key(text: str) -> str:
    """``text`` with white space normalised: how the fleet matches prompts and answers."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Answer:
    """One recorded answer as the fleet serves it."""

    model: str
    row: int
    prompt_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    #: The recorded confidence, ``None`` when the data has none for this answer.
    confidence: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's score of an answer: the recorded ``quality`` of the model whose answer it
    is, flipped when ``flipped``; ``matched`` says how the answer was recognised."""

    score: float
    quality: float
    models: tuple[str, ...]
    prompt_id: str
    matched: str  # "exact" (white space normalised) or "normalized" (normalize_answer)
    flipped: bool


class Fleet:
    """Every model of ``data`` (with response text) served from its recorded outcomes.

    ``rows`` limits the prompts served (default: all); prices are derived from all of
    ``data`` either way, so fleets over different splits of one data set bill alike.
    ``speed`` scales the recorded latency (0: answer at once; 1: as recorded); data without
    latencies answers at once. ``judge_noise`` is the fraction of judge verdicts flipped,
    seeded by ``seed`` (:mod:`routecast.fleet.judge`). The judge is served as ``judge_model``
    and bills ``judge_price`` (default: the price of the data's dearest model, as a strong
    model usually judges) on estimated tokens of what it reads and writes.
    """

    def __init__(self, data: Dataset, *, rows: Sequence[int] | None = None,
                 speed: float = 0.0, judge_noise: float = 0.0,
                 seed: int = 0, judge_model: str = DEFAULT_JUDGE,
                 judge_price: FleetPrice | None = None) -> None:
        if not speed >= 0:
            raise ConfigError(f"speed must be >= 0 (0 answers at once, 1 as recorded), got "
                              f"{speed}")
        if not 0 <= judge_noise <= 1:
            raise ConfigError(f"judge noise is a fraction in [0, 1], got {judge_noise}")
        if judge_model in data.models:
            raise ConfigError(f"the judge's name {judge_model!r} is also a model of the data; "
                              "give the judge another name")
        if data.responses is None:
            raise DataError("records no response text, so the fleet has nothing to answer "
                            "with", where=f"dataset {data.name!r}",
                            fix="serve a data set with responses (RouterBench, the cascade "
                                "set, RouteLLM's GSM8K and MT-Bench)")
        self.data = data
        self.speed = float(speed)
        self.judge_noise = float(judge_noise)
        self.seed = seed
        self.judge_model = judge_model
        tokens = token_table(data)
        self.prices: dict[str, FleetPrice] = tokens.prices
        self._prompt_tokens = tokens.prompt_tokens
        self._completion_tokens = tokens.completion_tokens
        self.judge_price = judge_price or max(
            self.prices.values(),
            key=lambda p: (p.output_usd_per_mtok, p.input_usd_per_mtok))
        self._rows: dict[str, int] = {}
        for i in range(data.n_prompts) if rows is None else rows:
            if any(isinstance(r, str) for r in data.responses[i]):
                self._rows.setdefault(prompt_key(data.prompts[i]), int(i))
        if not self._rows:
            raise DataError("has no prompt with a recorded response", where=f"dataset "
                            f"{data.name!r}", fix="choose another split or task")
        self._columns = {m: j for j, m in enumerate(data.models)}
        self._answer_keys: dict[int, list[str | None]] = {}

    def __repr__(self) -> str:
        return (f"Fleet({self.data.name!r}, {len(self.models)} models, {self.n_prompts} "
                f"prompts, speed={self.speed:g}, judge_noise={self.judge_noise:g})")

    @property
    def models(self) -> tuple[str, ...]:
        """The replayed models (the judge not included)."""
        return self.data.models

    @property
    def n_prompts(self) -> int:
        """How many distinct prompts the fleet answers."""
        return len(self._rows)

    def served_rows(self) -> list[int]:
        """The data rows the fleet answers, in data order (one per distinct prompt)."""
        return sorted(self._rows.values())

    # -- answers -----------------------------------------------------------------------------

    def row_of(self, text: str) -> int | None:
        """The data row of a prompt text, ``None`` when the fleet does not know it."""
        return self._rows.get(prompt_key(text))

    def answer(self, model: str, text: str) -> Answer:
        """``model``'s recorded answer to the prompt ``text``; :class:`RequestError` (404) for
        an unknown model or prompt."""
        j = self._column(model)
        row = self._row(text)
        response = self.data.responses[row, j]  # type: ignore[index]
        if not isinstance(response, str):
            raise RequestError(f"the data records no response of {model!r} to this prompt "
                               f"(id {self.data.ids[row]!r})", status=404, param="messages",
                               code="response_not_recorded")
        latency = 0.0
        if self.data.latency_s is not None and math.isfinite(self.data.latency_s[row, j]):
            latency = max(0.0, float(self.data.latency_s[row, j])) * self.speed
        confidence = None
        if self.data.confidence is not None and math.isfinite(self.data.confidence[row, j]):
            confidence = float(self.data.confidence[row, j])
        p, c = int(self._prompt_tokens[row, j]), int(self._completion_tokens[row, j])
        return Answer(model, row, self.data.ids[row], response, p, c,
                      self.prices[model].cost_usd(p, c), latency, confidence)

    def _column(self, model: str) -> int:
        try:
            return self._columns[model]
        except KeyError:
            raise RequestError(
                f"the fleet serves no model {model!r}; it serves {', '.join(self.models)} and "
                f"the judge {self.judge_model!r} (GET /v1/models)", status=404, param="model",
                code="model_not_found") from None

    def _row(self, text: str) -> int:
        row = self._rows.get(prompt_key(text))
        if row is None:
            shown = prompt_key(text)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise RequestError(
                f"prompt not found in the recorded data {self.data.name!r} ({self.n_prompts} "
                f"prompts served): {shown!r}. The fleet answers only prompts it has "
                "recorded, matched on the last user message (or the completion prompt) with "
                "white space normalised", status=404, param="messages",
                code="prompt_not_found")
        return row

    # -- the judge ---------------------------------------------------------------------------

    def judge(self, ask: JudgeAsk) -> Verdict:
        """Score ``ask.answer`` with the recorded quality of the model that gave it.

        The answer is matched to the prompt's recorded responses with white space normalised;
        failing that, by :func:`~routecast.signals.live.normalize_answer` (the final
        ``#### x`` of a GSM8K answer, an option letter), when every model with that
        normalised answer has the same quality. Identical answers of several models score
        their mean quality (they agree on every data set here but one answer in the cascade
        set). An answer matched neither way is a :class:`RequestError` (422,
        ``answer_not_recorded``): the fleet cannot know how good it is.
        """
        from routecast.signals.live import normalize_answer

        row = self._row(ask.question)
        keys = self._keys(row)
        wanted = prompt_key(ask.answer)
        cols = [j for j, k in enumerate(keys) if k is not None and k == wanted]
        matched = "exact"
        if not cols:
            norm = normalize_answer(ask.answer)
            cols = [j for j, r in enumerate(self.data.responses[row])  # type: ignore[index]
                    if isinstance(r, str) and norm and normalize_answer(r) == norm]
            if len({float(self.data.quality[row, j]) for j in cols}) != 1:
                cols = []
            matched = "normalized"
        if not cols:
            raise RequestError(
                f"the judge has no recorded verdict for this answer to prompt id "
                f"{self.data.ids[row]!r}: it matches none of the {len(self.models)} recorded "
                "responses (white space normalised, nor by its final answer)", status=422,
                param="messages", code="answer_not_recorded")
        quality = float(np.mean(self.data.quality[row, cols]))
        flip = flipped(self.seed, self.data.ids[row], wanted, self.judge_noise)
        return Verdict(1.0 - quality if flip else quality, quality,
                       tuple(self.models[j] for j in cols), self.data.ids[row], matched, flip)

    def judge_usage(self, read: str, written: str) -> tuple[int, int, float]:
        """(prompt tokens, completion tokens, cost) of one judge call, on estimated tokens."""
        p, c = estimate_tokens(read), estimate_tokens(written)
        return p, c, self.judge_price.cost_usd(p, c)

    def _keys(self, row: int) -> list[str | None]:
        keys = self._answer_keys.get(row)
        if keys is None:
            keys = [prompt_key(r) if isinstance(r, str) else None
                    for r in self.data.responses[row]]  # type: ignore[index]
            self._answer_keys[row] = keys
        return keys

    # -- describing it -----------------------------------------------------------------------

    def model_cards(self) -> list[dict[str, Any]]:
        """``GET /v1/models``' entries: each model with its price (and the judge)."""
        def card(name: str, price: FleetPrice, role: str) -> dict[str, Any]:
            return {"id": name, "object": "model", "created": 0, "owned_by": "routecast-fleet",
                    "role": role, "input_usd_per_mtok": price.input_usd_per_mtok,
                    "output_usd_per_mtok": price.output_usd_per_mtok, "price": price.how}

        return [*(card(m, self.prices[m], "replay") for m in self.models),
                card(self.judge_model, self.judge_price, "judge")]


def load_fleet(data: str | Path | Dataset, *, split: str | None = None,
               tasks: Iterable[str] | None = None, models: Sequence[str] | None = None,
               fmt: str = "auto", seed: int = 0, **options: Any) -> Fleet:
    """A :class:`Fleet` over a data set (a path in any format routecast reads, or a loaded
    :class:`Dataset`), optionally only its ``split``, ``tasks`` and ``models``. ``seed`` seeds
    the data's split (as ``routecast fit`` and ``bench`` do) and the judge's noise; the other
    ``options`` go to :class:`Fleet`."""
    if isinstance(data, Dataset):
        ds = data
    else:
        from routecast.data import load_dataset

        ds = load_dataset(data, fmt=fmt, seed=seed)
    if models is not None:
        ds = ds.select_models(list(models))
    keep = np.ones(ds.n_prompts, dtype=bool)
    if split is not None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        keep &= ds.split == split
        if not keep.any():
            raise DataError(f"has no prompts in the {split!r} split",
                            where=f"dataset {ds.name!r}")
    if tasks is not None:
        wanted = set(tasks)
        if ds.task is None:
            raise ConfigError(f"dataset {ds.name!r} records no tasks to select from")
        unknown = wanted - set(ds.task)
        if unknown:
            raise ConfigError(f"unknown tasks {sorted(unknown)}; dataset {ds.name!r} has "
                              f"{', '.join(sorted(set(ds.task)))}")
        keep &= np.array([t in wanted for t in ds.task], dtype=bool)
    return Fleet(ds, rows=np.flatnonzero(keep).tolist(), seed=seed, **options)
