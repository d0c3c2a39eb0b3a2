"""Collect outcomes: ask every model every task, grade the answers, write routecast outcomes.

``collect_async`` runs the (task, model) pairs concurrently -- at most ``concurrency`` requests
in flight overall and ``max_parallel`` per model (1 for a llama.cpp server, which answers one
request at a time: a second one would only queue there and inflate the measured latency).
Every graded answer goes to the journal at once (:mod:`routecast.local.journal`), so a killed
run resumes where it stopped; the outcomes file is written, atomically, once every pair is done.

What each outcome holds:

* ``quality``: the task's grader on the response (0 or 1);
* ``latency_s``: wall time of the request, seen by the client;
* ``tokens_in`` / ``tokens_out``: the server's usage counts;
* ``confidence``: the **mean token probability** of the generated tokens,
  ``(1/T) * sum_t exp(logprob_t)``, from the log-probs the server returns (``null`` when it
  returns none, or generated nothing). Unlike ``exp(mean logprob)`` it is not dragged to zero
  by one unlikely token, and it lies in [0, 1] as routecast's signals do;
* ``cost_usd``: for a priced model, ``tokens_in * input price + tokens_out * output price``;
  for a local model, its energy ``power_w * latency_s`` (joules) at ``usd_per_kwh`` -- an
  estimate of the electricity the answer cost, so local and remote models share one scale.

Costs are computed when the outcomes are written, from the measured tokens and seconds in the
journal, so changing a price never needs a rerun.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.canonical import save
from routecast.data.dataset import Dataset
from routecast.data.pricing import Price
from routecast.data.splits import random_split
from routecast.errors import ConfigError, UpstreamError
from routecast.local.client import Answer, Client, Endpoint
from routecast.local.graders import AskFn, Judge, grade
from routecast.local.journal import Journal, Key, check_resumable, fingerprint
from routecast.local.models import WATTS_PER_THREAD, LocalModel
from routecast.local.tasks import Task

#: Default electricity price for local models, USD per kWh (a rough average retail price).
USD_PER_KWH = 0.15

Progress = Callable[[int, int, str], None]  # (done, total, description)


@dataclass(frozen=True)
class ModelSpec:
    """A model to collect from: how to ask it, and how its answers are priced.

    Give ``price`` (USD per million tokens) for a paid API, ``power_w`` (watts drawn while it
    answers) for a local model.
    """

    endpoint: Endpoint
    price: Price | None = None
    power_w: float | None = None
    max_parallel: int = 1

    def __post_init__(self) -> None:
        if (self.price is None) == (self.power_w is None):
            raise ConfigError(f"model {self.name!r} needs exactly one of a price (USD per token, "
                              "for a paid API) or a power draw (watts, for a local model)")
        if self.max_parallel < 1:
            raise ConfigError(f"model {self.name!r}: max_parallel must be at least 1")

    @property
    def name(self) -> str:
        return self.endpoint.model

    def settings(self) -> dict[str, Any]:
        """What decides this model's answers (and so whether a journal can be resumed)."""
        e = self.endpoint
        return {"api": e.api, "api_model": e.api_model or e.model, "template": e.template,
                "stop": list(e.stop), "max_tokens": e.max_tokens, "temperature": e.temperature,
                "logprobs": e.logprobs}

    def energy_j(self, latency_s: float) -> float | None:
        return None if self.power_w is None else self.power_w * latency_s

    def cost_usd(self, tokens_in: float, tokens_out: float, latency_s: float,
                 usd_per_kwh: float) -> float:
        if self.price is not None:
            return self.price.cost_usd(tokens_in, tokens_out)
        return float(self.energy_j(latency_s) or 0.0) / 3.6e6 * usd_per_kwh


def local_spec(model: LocalModel, base_url: str, n_threads: int, *,
               max_tokens: int = 32, logprobs: bool = True) -> ModelSpec:
    """A built-in local model served at ``base_url`` with ``n_threads`` threads, priced by
    energy: ``WATTS_PER_THREAD`` watts per thread."""
    return ModelSpec(model.endpoint(base_url, max_tokens=max_tokens, logprobs=logprobs),
                     power_w=WATTS_PER_THREAD * n_threads)


@dataclass(frozen=True)
class CollectResult:
    """The outcomes written, and how many pairs came from the journal vs. were asked now."""

    dataset: Dataset
    path: Path
    journal: Path
    resumed: int
    asked: int


def mean_token_probability(logprobs: Sequence[float] | None) -> float | None:
    """``(1/T) * sum_t exp(logprob_t)``; ``None`` for no tokens or no log-probs."""
    if not logprobs:
        return None
    return float(np.mean(np.exp(np.asarray(logprobs, dtype=np.float64))))


def journal_path(out: str | Path) -> Path:
    """The journal beside ``out``: ``results.jsonl`` -> ``results.jsonl.journal``."""
    out = Path(out)
    return out.with_name(out.name + ".journal")


def _validate(tasks: Sequence[Task], specs: Sequence[ModelSpec], concurrency: int,
              judge: Judge | None) -> None:
    if not tasks:
        raise ConfigError("no tasks to collect; give a task file or use the built-in set")
    if not specs:
        raise ConfigError("no models to collect from; name at least one with --model")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"models named more than once: {names}")
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ConfigError("task ids must be unique")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if judge is None and any(t.grader == "judge" for t in tasks):
        raise ConfigError("some tasks are graded by a judge; name a judge model with --judge")


async def _ask_retrying(ask: AskFn, endpoint: Endpoint, prompt: str, retries: int) -> Answer:
    for attempt in range(retries + 1):
        try:
            return await ask(endpoint, prompt)
        except UpstreamError as e:
            if not e.retryable or attempt == retries:
                raise
            await asyncio.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


async def collect_async(
        tasks: Sequence[Task], specs: Sequence[ModelSpec], out: str | Path, *,
        ask: AskFn | None = None, concurrency: int = 2, journal: str | Path | None = None,
        name: str = "collected", seed: int = 0, judge: Judge | None = None, retries: int = 2,
        usd_per_kwh: float = USD_PER_KWH, progress: Progress | None = None,
        meta: dict[str, Any] | None = None) -> CollectResult:
    """Ask every model in ``specs`` every task; write the outcomes to ``out``.

    ``ask`` defaults to a fresh :class:`Client`; tests pass their own. Requests that still fail
    after ``retries`` retries leave their pairs undone: the others are kept in the journal and
    an :class:`UpstreamError` says to rerun.
    """
    _validate(tasks, specs, concurrency, judge)
    if ask is None:
        async with Client() as client:
            return await collect_async(
                tasks, specs, out, ask=client.ask, concurrency=concurrency, journal=journal,
                name=name, seed=seed, judge=judge, retries=retries, usd_per_kwh=usd_per_kwh,
                progress=progress, meta=meta)

    jpath = Path(journal) if journal is not None else journal_path(out)
    book = Journal(jpath)
    records = book.load()
    task_fp = {t.id: fingerprint(t.prompt, t.gold, list(t.aliases), t.grader) for t in tasks}
    setup_fp = {s.name: fingerprint(s.settings()) for s in specs}
    wanted: dict[Key, tuple[str, str]] = {
        (t.id, s.name): (task_fp[t.id], setup_fp[s.name]) for t in tasks for s in specs}
    check_resumable(records, wanted, jpath)
    pending = [(t, s) for t in tasks for s in specs if (t.id, s.name) not in records]
    resumed = len(wanted) - len(pending)

    gate = asyncio.Semaphore(concurrency)
    per_model = {s.name: asyncio.Semaphore(s.max_parallel) for s in specs}
    failures: list[UpstreamError] = []
    done = resumed

    # Running mean quality per model over this run's pairs, for the progress line.
    scored = {s.name: [0.0, 0] for s in specs}
    for key in wanted:
        if key in records:
            scored[key[1]][0] += records[key]["quality"]
            scored[key[1]][1] += 1

    def accuracy() -> str:
        return "quality " + " | ".join(
            f"{m} {total / count:.2f}" if count else f"{m} -" for m, (total, count) in
            scored.items())

    if progress is not None:
        progress(done, len(wanted), accuracy())

    async def one(task: Task, spec: ModelSpec) -> None:
        nonlocal done
        # The model's own slot first: a request waiting for its busy model must not hold one
        # of the global slots that an idle model could use.
        async with per_model[spec.name], gate:
            try:
                answer = await _ask_retrying(ask, spec.endpoint, task.prompt, retries)
                reply = None
                if task.grader == "judge" and judge is not None:
                    quality, reply = await judge.verdict(task, answer.text)
                else:
                    quality = grade(task, answer.text)
            except UpstreamError as e:
                failures.append(e)
                return
        record = {"id": task.id, "model": spec.name, "task_fp": task_fp[task.id],
                  "setup_fp": setup_fp[spec.name], "quality": quality,
                  "latency_s": answer.latency_s, "tokens_in": answer.tokens_in,
                  "tokens_out": answer.tokens_out,
                  "confidence": mean_token_probability(answer.token_logprobs),
                  "response": answer.text}
        if reply is not None:
            record["judge_reply"] = reply
        book.append(record)
        records[(task.id, spec.name)] = record
        scored[spec.name][0] += quality
        scored[spec.name][1] += 1
        done += 1
        if progress is not None:
            progress(done, len(wanted), accuracy())

    await asyncio.gather(*(one(t, s) for t, s in pending))
    if failures:
        raise UpstreamError(
            f"{len(failures)} of {len(pending)} requests failed (first: {failures[0]}). The "
            f"{done} finished answers are kept in {jpath}: rerun the same command to ask only "
            "the missing ones", model=failures[0].model)

    info = {"source": "routecast collect", "n_tasks": len(tasks), "seed": seed,
            "models": {s.name: {**s.settings(), "power_w": s.power_w,
                                "price": None if s.price is None else vars(s.price)}
                       for s in specs},
            "cost": f"priced models: tokens x price; local models: power_w x latency_s at "
                    f"{usd_per_kwh} USD/kWh",
            "confidence": "mean token probability of the generated tokens",
            "judge": None if judge is None else judge.endpoint.model, **(meta or {})}
    dataset = build_dataset(tasks, specs, records, name=name, seed=seed,
                            usd_per_kwh=usd_per_kwh, meta=info)
    path = save(dataset, out)
    return CollectResult(dataset, path, jpath, resumed, len(pending))


def build_dataset(tasks: Sequence[Task], specs: Sequence[ModelSpec],
                  records: dict[Key, dict[str, Any]], *, name: str, seed: int,
                  usd_per_kwh: float, meta: dict[str, Any]) -> Dataset:
    """The outcomes of ``records`` as a :class:`Dataset` with a seeded 60/20/20 split."""
    n, m = len(tasks), len(specs)
    arrays = {k: np.full((n, m), np.nan) for k in
              ("quality", "cost_usd", "latency_s", "tokens_in", "tokens_out", "confidence")}
    responses = np.empty((n, m), dtype=object)
    energy: dict[str, list[float]] = {s.name: [] for s in specs}
    for i, t in enumerate(tasks):
        for j, s in enumerate(specs):
            r = records[(t.id, s.name)]
            for k in ("quality", "latency_s", "tokens_in", "tokens_out"):
                arrays[k][i, j] = float(r[k])
            conf = r.get("confidence")
            arrays["confidence"][i, j] = math.nan if conf is None else float(conf)
            arrays["cost_usd"][i, j] = s.cost_usd(r["tokens_in"], r["tokens_out"],
                                                  r["latency_s"], usd_per_kwh)
            if (e := s.energy_j(r["latency_s"])) is not None:
                energy[s.name].append(e)
            responses[i, j] = r.get("response")
    meta = {**meta, "energy_j_mean": {k: float(np.mean(v)) for k, v in energy.items() if v}}
    return Dataset(
        name=name, models=tuple(s.name for s in specs), ids=tuple(t.id for t in tasks),
        prompts=tuple(t.prompt for t in tasks), split=random_split(n, seed=seed),
        task=tuple(t.category or t.grader for t in tasks), responses=responses, meta=meta,
        quality=arrays["quality"], cost_usd=arrays["cost_usd"], latency_s=arrays["latency_s"],
        tokens_in=arrays["tokens_in"], tokens_out=arrays["tokens_out"],
        confidence=arrays["confidence"])
