"""Fallbacks: when a model fails, ask the next one.

Only failures before the first byte of an answer count: once a stream has started, the client
has seen part of one model's answer, and splicing in another model's would be worse than an
error. Requests the upstream rejected as invalid (HTTP 400/413/422) are not passed on: the next
model would reject them too, and the client needs to see why; except a prompt that did not fit
the model's context window (:func:`routecast.capabilities.is_context_overflow`), which the next
model may serve.

Backends that are not usable (an open circuit breaker, or a model the privacy rule forbids for
this request) are skipped without a call; when none is usable the first is asked anyway, and
answers with the reason (503 circuit open, 403 privacy rule) at once.

A cascade walks its steps the same way, so :mod:`routecast.backends.cascade` builds on the
:class:`CompositeBackend` and :func:`attempt` defined here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from routecast.backends.base import (
    Backend,
    Chunk,
    Completion,
    Request,
    RoutePrefix,
    close_all,
    close_stream,
    start_all,
)
from routecast.backends.retry import another_model_waiting
from routecast.capabilities import is_context_overflow
from routecast.errors import ConfigError, UpstreamError, UpstreamTimeoutError


def worth_another_model(error: UpstreamError) -> bool:
    """Whether another model could succeed where this one failed: any failure but a request
    the upstream rejected as invalid, unless it was rejected for not fitting the model's
    context window (another model's may be larger)."""
    return error.code != "upstream_rejected_request" or is_context_overflow(error)


class CompositeBackend(Backend):
    """A backend that answers through ``members``, tried in order (a fallback chain, a
    cascade's steps): it starts and closes them, answers with any of their models, and is
    usable while one of them is."""

    def __init__(self, name: str, members: Sequence[Backend]) -> None:
        self.name = name
        self.members = list(members)
        self.models = tuple(dict.fromkeys(m for b in self.members for m in b.models))

    async def start(self) -> None:
        await start_all(self.members)

    async def aclose(self) -> None:
        await close_all(self.members)

    def usable(self, request: Request) -> bool:
        return any(b.usable(request) for b in self.members)


async def attempt(backend: Backend, request: Request, *, last: bool = False
                  ) -> Completion | UpstreamError:
    """``backend``'s answer to ``request``, or its failure when another model could still
    succeed (:func:`worth_another_model`), for the caller to record before it tries the next
    one; any other failure raises. Unless this is the ``last`` model to try, a call that times
    out is not retried on the same model (:func:`~routecast.backends.retry.another_model_waiting`).
    """
    try:
        if last:
            return await backend.complete(request)
        with another_model_waiting():
            return await backend.complete(request)
    except UpstreamError as e:
        if not worth_another_model(e):
            raise
        return e


class FallbackBackend(CompositeBackend):
    """``backends`` in order of preference; the completion's ``route`` lists every model tried.
    """

    def __init__(self, backends: Sequence[Backend], name: str = "") -> None:
        if not backends:
            raise ConfigError("a fallback chain needs at least one backend")
        super().__init__(name or backends[0].name, backends)

    def _candidates(self, request: Request) -> list[Backend]:
        return [b for b in self.members if b.usable(request)] or self.members[:1]

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        failed: list[UpstreamError] = []
        candidates = self._candidates(request)
        for k, backend in enumerate(candidates):
            completion = await attempt(backend, request, last=k == len(candidates) - 1)
            if isinstance(completion, UpstreamError):
                failed.append(completion)
                continue
            if failed:
                completion.route[:0] = [e.model for e in failed]
                completion.latency_s = time.perf_counter() - t0  # the failures took time too
            return completion
        raise _all_failed(failed)

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        t0 = time.perf_counter()
        failed: list[UpstreamError] = []
        candidates = self._candidates(request)
        for k, backend in enumerate(candidates):
            chunks = backend.stream(request)
            try:
                if k == len(candidates) - 1:
                    first = await anext(chunks)
                else:  # the generator runs in this task's context: it sees the flag
                    with another_model_waiting():
                        first = await anext(chunks)
            except StopAsyncIteration:
                failed.append(UpstreamError(f"{backend.name!r} ended its stream without an "
                                            "answer", model=backend.name))
                continue
            except UpstreamError as e:
                await close_stream(chunks)
                if not worth_another_model(e):
                    raise
                failed.append(e)
                continue
            prefix = RoutePrefix([e.model for e in failed])
            try:
                chunk = first
                while True:
                    if failed and chunk.final is not None:  # the failures took time too
                        chunk.final.latency_s = time.perf_counter() - t0
                    yield prefix(chunk)
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
            finally:
                await close_stream(chunks)
            return
        raise _all_failed(failed)


def _all_failed(failed: list[UpstreamError]) -> UpstreamError:
    """One error for a chain that failed throughout: the last one's status, every reason."""
    last = failed[-1]
    if len(failed) == 1:
        return last
    reasons = "; ".join(str(e) for e in failed)
    cls = UpstreamTimeoutError if isinstance(last, UpstreamTimeoutError) else UpstreamError
    return cls(f"all {len(failed)} models failed: {reasons}", model=last.model,
               status=last.status, upstream_status=last.upstream_status,
               retryable=last.retryable, code=last.code, param=last.param,
               upstream_code=last.upstream_code, retry_after_s=last.retry_after_s)
