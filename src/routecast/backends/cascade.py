"""A live cascade: ask the cheapest model first, keep its answer if it is good enough.

The decision is :class:`routecast.cascades.cascade.Cascade`'s (the same object the replay benchmark
tunes): after step ``k`` answers, a :class:`~routecast.backends.judges.Judge` scores it and the
score is compared with ``thresholds[k]``; the last step always answers. The judge is the live
form of the cascade's signal (:mod:`routecast.backends.judges`): token log-prob ``confidence``
(every step but the last is then asked for ``logprobs``), ``agreement`` of resampled answers,
``self-verification`` by the step's own model, or a ``learned`` scorer. An answer that cannot be
judged (a tool call, an empty answer, missing log-probs, a judge call that failed) scores NaN and
escalates: a cascade escalates on doubt.

What one request costs is what every visited step cost, in sequence, judging included:
``cost_usd`` is the steps' cost plus their judges' extra calls (samples, verifications),
``latency_s`` the whole walk, ``usage`` the answering step's (the tokens of the answer the client
gets). ``route`` lists every cascade step asked, once each, in order: a judge's extra calls go to
the step's own model and are not listed again, so ``len(route) > 1`` still means "escalated"
(they show in the cost and the latency). A step that fails before answering escalates too.

Steps that are not usable for a request (an open circuit breaker, a model the privacy rule
forbids, one that cannot serve the request: images, tools, its context window) are skipped
without a call; the last usable step then answers unconditionally. A step whose upstream says
the prompt does not fit its context window escalates like any failed step.

Streaming: early steps must finish, and be judged, before they can be kept, so they are asked
without streaming and judged before the first byte goes to the client; a kept early answer is
sent as one chunk, and the last step streams live. A stream never switches models midway.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from routecast.backends.base import Backend, Chunk, Completion, Request, RoutePrefix, close_stream
from routecast.backends.fallback import CompositeBackend, attempt
from routecast.backends.judges import Judge, confidence_score, live_signals, make_judge
from routecast.backends.retry import another_model_waiting
from routecast.backends.trace import Step, Trace
from routecast.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    from routecast.cascades.cascade import Cascade
    from routecast.signals.live import LogprobSummary

__all__ = ["CascadeBackend"]


class CascadeBackend(CompositeBackend):
    """``cascade.models`` served by ``backends`` (one per model), each early answer scored by
    ``judge`` (default: the cascade's signal with default parameters, log-probs summarised by
    ``summary``; the ``learned`` signal needs a judge built with its fitted scorer).

    ``members[k]`` is the backend of step ``k`` (``cascade.models[k]``), cheapest first.
    """

    def __init__(self, cascade: Cascade, backends: Mapping[str, Backend], *,
                 name: str = "cascade", summary: LogprobSummary = "mean",
                 judge: Judge | None = None) -> None:
        if cascade.signal not in (live := live_signals()):
            raise ConfigError(
                f"endpoint {name!r}: the cascade's signal {cascade.signal!r} cannot be computed "
                f"live; live cascades use {', '.join(live)}")
        missing = [m for m in cascade.models if m not in backends]
        if missing:
            raise ConfigError(f"endpoint {name!r}: no backend serves cascade models {missing}")
        try:
            judge = judge or make_judge(cascade.signal, summary=summary)
        except ConfigError as e:
            raise ConfigError(f"endpoint {name!r}: {e}") from None
        if judge.name != cascade.signal:
            # Thresholds mean something only on the scale of the signal they were tuned for.
            raise ConfigError(
                f"endpoint {name!r}: the cascade's thresholds are for the {cascade.signal!r} "
                f"signal but it would be judged by {judge.name!r}; judge it by the signal it "
                "was tuned for")
        judge.check(cascade, name)
        super().__init__(name, [backends[m] for m in cascade.models])
        self.cascade = cascade
        #: How log-probs become a confidence (:meth:`score`): the judge's, if it reads them.
        self.summary: LogprobSummary = getattr(judge, "summary", summary)
        self.judge = judge

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, request: Request) -> tuple[list[tuple[int, Backend]], Backend]:
        """(early steps with their index, the step that answers unconditionally)."""
        steps = [(k, b) for k, b in enumerate(self.members) if b.usable(request)]
        if not steps:  # the last step is asked anyway and says why it cannot answer
            return [], self.members[-1]
        return steps[:-1], steps[-1][1]

    def _trace(self) -> Trace:
        return Trace("cascade", signal=self.cascade.signal)

    async def _early(self, request: Request, early: list[tuple[int, Backend]],
                     route: list[str], spent: list[float], trace: Trace) -> Completion | None:
        """Steps before the last: the first accepted answer, or ``None`` to go on. Each
        step asked is added to ``trace`` with its score, threshold and verdict."""
        if not early:
            return None
        probe = Request(self.judge.probe(request), request.api, request.session,
                        request.allowed)
        cascade = self.cascade  # read once: a learning endpoint swaps in new thresholds
        for k, backend in early:
            model, threshold = cascade.models[k], cascade.thresholds[k]
            done = await attempt(backend, probe)
            if isinstance(done, UpstreamError):
                route.append(done.model)
                trace.steps.append(Step(model, threshold=threshold, accepted=False,
                                        note=f"failed: {done.code or 'upstream error'}"))
                continue
            route.extend(done.route)
            spent[0] += done.cost_usd
            with another_model_waiting():  # a judge call that times out is not retried
                verdict = await self.judge.judge(backend, model, request, done)
            spent[0] += verdict.cost_usd
            accepted = cascade.accepts(k, verdict.score)
            trace.steps.append(Step(model, done.cost_usd + verdict.cost_usd, done.latency_s,
                                    verdict.score, threshold, accepted, body=done.body))
            if accepted:
                if not _wants_logprobs(request):
                    _drop_logprobs(done.body)
                trace.chosen = model
                return done
        return None

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        route: list[str] = []
        spent = [0.0]
        trace = self._trace()
        early, last = self._walk(request)
        done = await self._early(request, early, route, spent, trace)
        if done is None:
            done = await last.complete(request)
            route.extend(done.route)
            spent[0] += done.cost_usd
            trace.chosen = done.model
            trace.steps.append(Step(done.model, done.cost_usd, done.latency_s, accepted=True,
                                    note="last usable step: answers unconditionally"))
        return Completion(done.body, done.model, done.usage, spent[0],
                          time.perf_counter() - t0, route, done.routing_s, trace)

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        t0 = time.perf_counter()
        route: list[str] = []
        spent = [0.0]
        trace = self._trace()
        early, last = self._walk(request)
        done = await self._early(request, early, route, spent, trace)
        if done is not None:
            final = Completion({}, done.model, done.usage, spent[0], time.perf_counter() - t0,
                               route, trace=trace)
            yield Chunk(_as_chunk(done.body, request.api), done.model, route)
            yield Chunk(None, done.model, route, final)
            return
        prefix, paid = RoutePrefix(list(route)), spent[0]
        t_last = time.perf_counter()
        chunks = last.stream(request)
        try:
            async for chunk in chunks:
                if chunk.final is not None:
                    final = chunk.final
                    final.cost_usd += paid
                    final.latency_s = time.perf_counter() - t0
                    trace.chosen = final.model
                    trace.steps.append(Step(final.model, final.cost_usd - paid,
                                            time.perf_counter() - t_last, accepted=True,
                                            note="last usable step: answers unconditionally"))
                    final.trace = trace
                yield prefix(chunk)
        finally:
            await close_stream(chunks)

    # -- the signal ---------------------------------------------------------------------------

    def score(self, body: Mapping[str, Any], api: str) -> float:
        """The answer's log-prob confidence in [0, 1] (this endpoint's ``summary``), or NaN
        when it carries no log-probs; ``api`` is accepted for symmetry (both shapes are read)."""
        return confidence_score(body, self.summary)


def _wants_logprobs(request: Request) -> bool:
    return bool(request.body.get("logprobs"))


def _drop_logprobs(body: dict[str, Any]) -> None:
    """The client did not ask for log-probs; the cascade did, for itself."""
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            choice["logprobs"] = None


def _as_chunk(body: Mapping[str, Any], api: str) -> dict[str, Any]:
    """One stream chunk carrying a whole (kept) answer, its log-probs included (the same
    objects in a chunk as in a whole answer; ``None`` unless the client asked for them)."""
    choices = []
    for i, c in enumerate(body.get("choices") or []):
        if not isinstance(c, Mapping):
            continue
        if api == "chat":
            message = dict(c.get("message") or {})
            if isinstance(message.get("tool_calls"), list):
                message["tool_calls"] = [{**tc, "index": j}
                                         for j, tc in enumerate(message["tool_calls"])]
            choices.append({"index": c.get("index", i), "delta": message,
                            "finish_reason": c.get("finish_reason"),
                            "logprobs": c.get("logprobs")})
        else:
            choices.append({"index": c.get("index", i), "text": c.get("text", ""),
                            "finish_reason": c.get("finish_reason"),
                            "logprobs": c.get("logprobs")})
    return {"id": body.get("id", ""), "created": body.get("created", int(time.time())),
            "object": "chat.completion.chunk" if api == "chat" else "text_completion",
            "model": body.get("model", ""), "choices": choices}
