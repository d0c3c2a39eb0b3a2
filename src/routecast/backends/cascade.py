"""A live cascade: ask the cheapest model first, keep its answer if it is confident enough.

The decision is :class:`routecast.cascade.Cascade`'s (the same object the replay benchmark
tunes): after step ``k`` answers, its score from the signal is compared with ``thresholds[k]``;
the last step always answers. The live signal is the answer's model-intrinsic confidence,
summarised from its token log-probabilities (:func:`routecast.signals.live.summarize_logprobs`),
so every step but the last is asked for ``logprobs``; an answer without them (a tool call, a
server that ignores the request) scores NaN and escalates: a cascade escalates on doubt.

What one request costs is what every visited step cost, in sequence: ``cost_usd`` is their sum,
``latency_s`` the whole walk, ``route`` every model asked; ``usage`` is the answering step's (the
tokens of the answer the client gets). A step that fails before answering escalates too.

Steps that are not usable for a request (an open circuit breaker, a model the privacy rule
forbids) are skipped without a call; the last usable step then answers unconditionally.

Streaming: early steps must finish before they can be judged, so they are asked without
streaming; a kept early answer is sent as one chunk, and the last step streams live.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from routecast.backends.base import (
    Backend,
    Chunk,
    Completion,
    Request,
    RoutePrefix,
    close_stream,
)
from routecast.backends.fallback import worth_another_model
from routecast.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    from routecast.cascade import Cascade
    from routecast.signals.live import LogprobSummary

#: Signals a live cascade can compute from one response.
LIVE_SIGNALS = ("confidence",)


class CascadeBackend(Backend):
    """``cascade.models`` served by ``backends`` (one per model), judged by log-probs."""

    def __init__(self, cascade: Cascade, backends: Mapping[str, Backend], *,
                 name: str = "cascade", summary: LogprobSummary = "mean") -> None:
        if cascade.signal not in LIVE_SIGNALS:
            raise ConfigError(
                f"endpoint {name!r}: the cascade's signal {cascade.signal!r} cannot be computed "
                f"live yet; live cascades use {', '.join(LIVE_SIGNALS)} (token log-probs)")
        missing = [m for m in cascade.models if m not in backends]
        if missing:
            raise ConfigError(f"endpoint {name!r}: no backend serves cascade models {missing}")
        self.name = name
        self.cascade = cascade
        self.steps = [backends[m] for m in cascade.models]
        self.models = tuple(dict.fromkeys(m for b in self.steps for m in b.models))
        self.summary: LogprobSummary = summary

    async def start(self) -> None:
        for backend in self.steps:
            await backend.start()

    async def aclose(self) -> None:
        for backend in self.steps:
            await backend.aclose()

    def usable(self, request: Request) -> bool:
        return any(b.usable(request) for b in self.steps)

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, request: Request) -> tuple[list[tuple[int, Backend]], Backend]:
        """(early steps with their index, the step that answers unconditionally)."""
        steps = [(k, b) for k, b in enumerate(self.steps) if b.usable(request)]
        if not steps:  # the last step is asked anyway and says why it cannot answer
            return [], self.steps[-1]
        return steps[:-1], steps[-1][1]

    async def _early(self, request: Request, early: list[tuple[int, Backend]],
                     route: list[str], spent: list[float]) -> Completion | None:
        """Steps before the last: the first accepted answer, or ``None`` to go on."""
        probe = Request(self._with_logprobs(request), request.api, request.session,
                        request.allowed)
        for k, backend in early:
            try:
                done = await backend.complete(probe)
            except UpstreamError as e:
                if not worth_another_model(e):
                    raise
                route.append(e.model)
                continue
            route.extend(done.route)
            spent[0] += done.cost_usd
            if self.cascade.accepts(k, self.score(done.body, request.api)):
                if not _wants_logprobs(request):
                    _drop_logprobs(done.body)
                return done
        return None

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        route: list[str] = []
        spent = [0.0]
        early, last = self._walk(request)
        done = await self._early(request, early, route, spent)
        if done is None:
            done = await last.complete(request)
            route.extend(done.route)
            spent[0] += done.cost_usd
        return Completion(done.body, done.model, done.usage, spent[0],
                          time.perf_counter() - t0, route, done.routing_s)

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        t0 = time.perf_counter()
        route: list[str] = []
        spent = [0.0]
        early, last = self._walk(request)
        done = await self._early(request, early, route, spent)
        if done is not None:
            final = Completion({}, done.model, done.usage, spent[0], time.perf_counter() - t0,
                               route)
            yield Chunk(_as_chunk(done.body, request.api), done.model, route)
            yield Chunk(None, done.model, route, final)
            return
        prefix, paid = RoutePrefix(list(route)), spent[0]
        chunks = last.stream(request)
        try:
            async for chunk in chunks:
                if chunk.final is not None:
                    chunk.final.cost_usd += paid
                    chunk.final.latency_s = time.perf_counter() - t0
                yield prefix(chunk)
        finally:
            await close_stream(chunks)

    # -- the signal ---------------------------------------------------------------------------

    def score(self, body: Mapping[str, Any], api: str) -> float:
        """The answer's confidence in [0, 1], or NaN when it carries no log-probs."""
        from routecast.signals.live import summarize_logprobs

        choices = body.get("choices") or []
        first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
        logprobs = first.get("logprobs")
        if not isinstance(logprobs, Mapping):
            return math.nan
        tokens: list[Any]
        tops: list[Any] | None
        if isinstance(logprobs.get("content"), list):  # chat: one entry per token
            entries = [t for t in logprobs["content"] if isinstance(t, Mapping)]
            tokens = [t.get("logprob") for t in entries]
            tops = [t.get("top_logprobs") or [] for t in entries]
        elif isinstance(logprobs.get("token_logprobs"), list):  # completions
            tokens = [x for x in logprobs["token_logprobs"] if x is not None]
            tops = logprobs.get("top_logprobs") or None
        else:
            return math.nan
        try:
            return summarize_logprobs(tokens, tops, self.summary)
        except ConfigError:  # empty or malformed log-probs: no confidence
            return math.nan

    def _with_logprobs(self, request: Request) -> dict[str, Any]:
        top = 2 if self.summary == "margin" else 0
        body = dict(request.body)
        body["stream"] = False
        body.pop("stream_options", None)
        if request.api == "chat":
            body["logprobs"] = True
            # Always set: llama.cpp's server sends chat log-probs only when top_logprobs is
            # given (0 asks for none of the alternatives, and OpenAI accepts it).
            body["top_logprobs"] = max(top, int(body.get("top_logprobs") or 0))
        else:
            body["logprobs"] = max(top or 1, int(body.get("logprobs") or 0))
        return body


def _wants_logprobs(request: Request) -> bool:
    return bool(request.body.get("logprobs"))


def _drop_logprobs(body: dict[str, Any]) -> None:
    """The client did not ask for log-probs; the cascade did, for itself."""
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            choice["logprobs"] = None


def _as_chunk(body: Mapping[str, Any], api: str) -> dict[str, Any]:
    """One stream chunk carrying a whole (kept) answer."""
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
                            "finish_reason": c.get("finish_reason"), "logprobs": None})
        else:
            choices.append({"index": c.get("index", i), "text": c.get("text", ""),
                            "finish_reason": c.get("finish_reason"), "logprobs": None})
    return {"id": body.get("id", ""), "created": body.get("created", int(time.time())),
            "object": "chat.completion.chunk" if api == "chat" else "text_completion",
            "model": body.get("model", ""), "choices": choices}
