"""A cascade endpoint that learns its thresholds: the server side of
:mod:`routecast.learning.cascade`.

After a cascade endpoint with a ``learning:`` block has answered, the learning service (the
same queue, rate limit, meter, timeouts and outcome store as routed endpoints:
:mod:`routecast.server.learning`) hands the request here, off the request's path. The request's
trace says which steps were asked, each one's signal score, cost and answer. The
:class:`~routecast.learning.cascade.RowSampler` decides, by what completing the row would cost
against the meter's pace, whether to complete it; if so:

* every step the request did not reach (or that failed) is asked now, a **shadow**, as the
  cascade would have asked it: an early step with the signal's probe (e.g. log-probs) and
  scored by the endpoint's own judge of the signal, the last step plainly;
* the **judge** model grades every step's answer;
* each step's label (quality, cost, signal score, the row's weight) goes to the learner and
  the outcome store, and a refit runs when due; its thresholds are swapped into the endpoint's
  :class:`~routecast.backends.cascade.CascadeBackend` in one assignment.

A request the privacy rule restricted is learned from only if every step and the judge are
allowed to see it (a row needs every step's answer). A slow or failing shadow or judge call
costs the row (it stays incomplete and is not tuned on), never a client's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from routecast.backends.base import Completion, Request
from routecast.backends.cascade import CascadeBackend
from routecast.backends.judges import answer_text
from routecast.errors import DataFormatError
from routecast.learning.cascade import CascadeLearner, RowSampler
from routecast.learning.store import LabelRow
from routecast.server.learning_state import NOMINAL_USAGE, LearningState

if TYPE_CHECKING:
    from routecast.server.learning import LearningService, _Served

log = logging.getLogger("routecast.server")

#: The artifact kind of a learning cascade's thresholds (shared with other replicas).
KIND = "cascade-thresholds"
FORMAT = "routecast-cascade-thresholds"


@dataclass(kw_only=True)
class CascadeLearning(LearningState):
    """A cascade endpoint that learns: its learner, the backend it swaps thresholds into, and
    the sampler that picks the requests to complete into rows."""

    learner: CascadeLearner
    backend: CascadeBackend
    sampler: RowSampler


@dataclass
class _StepAnswer:
    text: str | None
    cost_usd: float
    score: float | None


def visited_answers(e: CascadeLearning, item: _Served) -> dict[str, _StepAnswer]:
    """The steps the request asked that left an answer: early steps from the trace (their
    answers, scores, costs with their judges' extra calls), and the step that answered."""
    out: dict[str, _StepAnswer] = {}
    for step in item.steps or ():
        if step.body is not None:
            out[step.model] = _StepAnswer(answer_text(step.body, item.api), step.cost_usd,
                                          step.score)
        elif step.model == item.model and step.accepted:  # the answering (last usable) step
            out[step.model] = _StepAnswer(item.answer, step.cost_usd, step.score)
    return out


async def learn_cascade(service: LearningService, e: CascadeLearning, item: _Served) -> None:
    """Complete ``item`` into a labelled row if the sampler draws it; see the module
    docstring."""
    e.meter.watch(item.baseline_usd)
    e.count("observed")
    models = e.learner.models
    last = len(models) - 1
    if (e.judge is None or item.prompt == "" or e.learner.has_row(item.prompt)
            or (item.allowed is not None
                and any(m not in item.allowed for m in (*models, e.judge)))):
        return
    have = visited_answers(e, item)
    # What each step still needs: an answer (a shadow), and a score if it is an early step
    # (one that answered unconditionally, the later steps being unusable, has none).
    missing = [j for j, m in enumerate(models)
               if m not in have or have[m].text is None
               or (j < last and have[m].score is None)]
    judge_usd = service.judge_usd(e, item)
    known = e.learner.mean_costs()
    cost = judge_usd * len(models) + sum(
        known[j] if math.isfinite(known[j])
        else service.table.prices[models[j]].cost_usd(NOMINAL_USAGE) for j in missing)
    p = e.sampler.probability(cost, e.meter.pace_per_request())
    if cost > e.meter.allowance() or not e.sampler.draw(p):
        return
    e.count("rows_sampled")
    # Steps whose own answer is graded (``judge`` labels); the others' are shadows.
    asked = {m for j, m in enumerate(models) if j not in missing}
    shadows = await asyncio.gather(*(_shadow(service, e, item, j) for j in missing))
    for j, answer in zip(missing, shadows, strict=True):
        if answer is not None:
            have[models[j]] = answer
    steps = [(j, m, have[m]) for j, m in enumerate(models) if m in have and have[m].text]
    grades = await asyncio.gather(*(service.grade(e, item, a.text or "") for _, _, a in steps))
    weight = 1.0 / p
    for (j, m, answer), quality in zip(steps, grades, strict=True):
        if quality is None:
            continue
        score = None if j == last else (answer.score if answer.score is not None
                                        else math.nan)
        e.learner.record(item.prompt, m, quality, answer.cost_usd, score=score,
                         scored=j < last, weight=weight)
        e.count("labels")
        if service.store is not None:
            await service.add_label(e, LabelRow(
                e.name, item.prompt, m, quality, answer.cost_usd,
                "judge" if m in asked else "shadow", item.response_id,
                item.client, score=(None if j == last else _stored_score(score)),
                weight=weight))
    if e.learner.due() and not e.refitting:
        await service.refit(e)


async def _shadow(service: LearningService, e: CascadeLearning, item: _Served, j: int
                  ) -> _StepAnswer | None:
    """Ask step ``j`` as the cascade would have, and score its answer (early steps)."""
    models = e.learner.models
    member = e.backend.members[j]
    request = Request(dict(item.body, stream=False), item.api, None, item.allowed)
    early = j < len(models) - 1
    body = e.backend.judge.probe(request) if early else dict(request.body)
    done: Completion | None = await service.call(e, member, body, item, "shadow", models[j])
    if done is None:
        return None
    score, extra = None, 0.0
    if early:
        try:
            async with asyncio.timeout(e.timeout_s):
                verdict = await e.backend.judge.judge(member, models[j], request, done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the signal's extra calls failed: the score is unknown
            e.count("shadow_failed")
            log.info("learning shadow score of %s failed: %s", models[j], exc)
            return None
        score, extra = verdict.score, verdict.cost_usd
        if extra:
            e.meter.charge(extra, "shadow")
    return _StepAnswer(answer_text(done.body, item.api), done.cost_usd + extra, score)


def _stored_score(score: float | None) -> float | None:
    """A failed signal (NaN) is stored as -inf, which no threshold accepts (NaN is no number
    to SQL databases)."""
    return -math.inf if score is None or math.isnan(score) else score


def thresholds_payload(thresholds: Sequence[float], rows: int) -> bytes:
    """Thresholds to publish for the other replicas (JSON; "never accept" as null)."""
    return json.dumps({"format": FORMAT, "version": 1, "rows": rows,
                       "thresholds": [t if math.isfinite(t) else None for t in thresholds]
                       }).encode()


def thresholds_from_payload(payload: bytes, n_steps: int) -> tuple[tuple[float, ...], int]:
    """(thresholds, rows) from :func:`thresholds_payload`'s bytes."""
    try:
        data = json.loads(payload)
        if data.get("format") != FORMAT or data.get("version") != 1:
            raise ValueError(f"not format {FORMAT} version 1")
        thresholds = tuple(math.inf if t is None else float(t) for t in data["thresholds"])
        rows = int(data["rows"])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise DataFormatError(f"cannot read published cascade thresholds: {e}") from None
    if len(thresholds) != n_steps - 1:
        raise DataFormatError(f"published thresholds are for {len(thresholds) + 1} steps, "
                              f"this cascade has {n_steps}")
    return thresholds, rows
