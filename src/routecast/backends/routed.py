"""A routed endpoint: a fitted router and a policy pick the model for each request.

The router reads the conversation's text (the last user turn, or the whole conversation) and the
policy turns its predicted quality and cost into one model. A conversation stays on the model
its first turn was routed to when the client names it, by the ``x-routecast-session`` header or
the OpenAI ``user`` field: switching models mid-conversation changes tone and loses the upstream's
prompt cache. Pins live in a bounded LRU, so memory stays flat however many sessions come;
replicas sharing Redis keep them there instead, with an idle expiry (:mod:`routecast.state`),
so each turn stays on the model whatever replica it lands on.

Routing is batched. Routers are "batch in, batch out", and a call may have a large fixed cost
(a scikit-learn pipeline's checks, numpy's per-call overheads), so every prompt that reaches
routing in the same turn of the event loop is routed in one call. A lone request pays one extra
loop turn (microseconds: routing a prompt alone at once measured no different in CPU or p50 at
concurrency 1, benchmarks/proxy_overhead.py); under load the batches grow by themselves and the
fixed cost is shared.

Routing sees live health: when the chosen model's backend is not usable (its circuit breaker
is open, or the privacy rule forbids it for this request), the endpoint picks the best usable
model by the same policy, from the router's predictions with the unusable models masked out.
That path calls the router for one prompt (a few ms), but only while a backend is down, or for
a request that some models cannot serve (an image, tools, a long prompt: the capability check
narrows ``request.allowed``). When the chosen model's upstream says the prompt does not fit its
context window, the endpoint asks the policy's next pick among the models left, before a
stream's first byte.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

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
from routecast.backends.prompt_format import message_text
from routecast.backends.trace import Trace
from routecast.capabilities import feature_tags, is_context_overflow, needs_of
from routecast.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.state.base import SharedState

    FloatRow = npt.NDArray[np.float64]

RouteOn = Literal["last_user", "conversation"]

#: The header that pins a conversation to one model.
SESSION_HEADER = "x-routecast-session"


def routing_text(request: Request, route_on: RouteOn = "last_user") -> str:
    """The text a router reads: the last user turn or every turn (chat), or the prompt."""
    body = request.body
    if request.api == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            return "\n".join(p for p in prompt if isinstance(p, str))
        return prompt if isinstance(prompt, str) else ""
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    if route_on == "last_user":
        for message in reversed(messages):
            if message.get("role") == "user":
                return message_text(message)
    return "\n".join(message_text(m) for m in messages)


class SessionPins:
    """A bounded least-recently-used map from a session key to its model."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self.max_sessions = max_sessions
        self._pins: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        model = self._pins.get(key)
        if model is not None:
            self._pins.move_to_end(key)
        return model

    def set(self, key: str, model: str) -> None:
        self._pins[key] = model
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_sessions:
            self._pins.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pins)


class RouteBatcher:
    """Routes the prompts that arrive in one event-loop turn with one router call.

    Each prompt gets its model and the router's quality and cost estimates for every model
    (what ``router.route`` computes anyway), which the routing debugger records.

    The call runs on the loop thread: a worker thread would not make it faster (scikit-learn
    holds the GIL for most of it, and the proxy is meant to run on one core) but would add a
    hand-off per batch. ``max_batch`` bounds how long one call can hold the loop.
    """

    def __init__(self, router: Router, policy: Policy, max_batch: int = 64) -> None:
        self.router = router
        self.policy = policy
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Decision]]] = []
        self._scheduled = False
        #: Totals for /metrics: seconds inside router.route (wall clock, and CPU of the loop
        #: thread, which is what routing costs the server however busy the machine is),
        #: prompts routed, calls made.
        self.seconds_total = 0.0
        self.cpu_seconds_total = 0.0
        self.prompts_total = 0
        self.batches_total = 0

    async def route(self, text: str) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((text, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch = self._pending[:self.max_batch]
        del self._pending[:self.max_batch]
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._scheduled = False
        batch = [(text, f) for text, f in batch if not f.done()]  # drop cancelled requests
        if not batch:
            return
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            texts = [text for text, _ in batch]
            quality = self.router.predict(texts)
            cost = self.router.predict_cost(texts)
            picks = self.policy.choose(quality, cost, models=self.router.models_,
                                       prompts=texts)
        except Exception as e:  # handed to every waiting request, none left hanging
            for _, future in batch:
                future.set_exception(e)
            return
        finally:
            self.seconds_total += time.perf_counter() - t0
            self.cpu_seconds_total += time.thread_time() - cpu0
            self.prompts_total += len(batch)
            self.batches_total += 1
        names = self.router.models_
        for k, (_, future) in enumerate(batch):
            future.set_result(Decision(names[int(picks[k])], quality[k], cost[k]))


class Decision:
    """The router's pick for one prompt, with its estimates for every model (row vectors in
    the order of ``router.models_``)."""

    __slots__ = ("cost", "model", "quality")

    def __init__(self, model: str, quality: FloatRow, cost: FloatRow) -> None:
        self.model = model
        self.quality = quality
        self.cost = cost


class RoutedBackend(Backend):
    """Answers each request with the backend of the model the router and policy choose.

    ``backends`` maps every model the router knows (``router.models_``) to the backend that
    serves it (often a :class:`~routecast.backends.fallback.FallbackBackend`).
    """

    def __init__(self, router: Router, policy: Policy, backends: Mapping[str, Backend], *,
                 name: str = "routed", route_on: RouteOn = "last_user",
                 max_sessions: int = 10_000, max_batch: int = 64,
                 features: bool = False) -> None:
        models = tuple(getattr(router, "models_", ()))
        if not models:
            raise ConfigError(f"endpoint {name!r}: the router is not fitted; fit it (or load a "
                              "saved one) before serving it")
        missing = [m for m in models if m not in backends]
        if missing:
            raise ConfigError(
                f"endpoint {name!r}: the router chooses among {list(models)} but no backend "
                f"serves {missing}; configure those models or map them with model_map")
        if route_on not in ("last_user", "conversation"):
            raise ConfigError(f"endpoint {name!r}: route_on must be 'last_user' or "
                              f"'conversation', got {route_on!r}")
        self.name = name
        self.router = router
        self.policy = policy
        self.backends = {m: backends[m] for m in models}
        self.router_models: tuple[str, ...] = tuple(str(m) for m in models)
        self.models = tuple(dict.fromkeys(x for b in self.backends.values() for x in b.models))
        self.route_on: RouteOn = route_on
        #: Prefix the routing text with the request's modality and size words.
        self.features = features
        self.pins = SessionPins(max_sessions)
        #: Pins shared by replicas (:mod:`routecast.state`, set by the server with Redis);
        #: ``None``: :attr:`pins` alone decide.
        self.shared_pins: SharedState | None = None
        self.batcher = RouteBatcher(router, policy, max_batch)
        # What the routing debugger says of every routed answer (computed once, not per
        # request): a do-no-harm mix decides before the estimates do, and says so.
        mixed = not policy.uses_router or policy.mix_share > 0
        self._reason = "policy mix" if mixed else "router"
        self._policy_text = policy.describe() if mixed else None

    async def start(self) -> None:
        # The first route() call pays lazy imports and caches; pay it before the first client.
        self.router.route(["warm up"], self.policy)
        await start_all(_unique(self.backends.values()))

    async def aclose(self) -> None:
        await close_all(_unique(self.backends.values()))

    async def choose(self, request: Request) -> str:
        """The model for ``request``: its session's pinned model, else the router's pick."""
        return (await self.decide(request)).chosen or ""

    async def decide(self, request: Request) -> Trace:
        """:meth:`choose` with the reasons: the pinned model, or the router's estimates."""
        key = request.session or _user(request.body)
        shared = self.shared_pins
        if key is not None:
            pinned = (self.pins.get(key) if shared is None
                      else await shared.get_pin(self.name, key))
            if pinned is not None and pinned in self.backends:
                if shared is not None:
                    self.pins.set(key, pinned)  # this replica's view (gauges, route reasons)
                return Trace("routed", pinned, "pinned session",
                             cost_weight=self._weight())
        decision = await self.batcher.route(self._text(request))
        model = decision.model
        if key is not None:
            if shared is not None:  # another replica may have pinned it meanwhile: theirs
                model = await shared.pin(self.name, key, model)
                if model not in self.backends:
                    model = decision.model
            self.pins.set(key, model)
        if model != decision.model:
            return Trace("routed", model, "pinned session", cost_weight=self._weight())
        names = self.router_models
        return Trace("routed", decision.model, self._reason,
                     estimates=dict(zip(names, decision.quality.tolist(), strict=True)),
                     costs=dict(zip(names, decision.cost.tolist(), strict=True)),
                     cost_weight=self._weight(), policy=self._policy_text)

    def _weight(self) -> float | None:
        w = float(self.policy.cost_weight)
        return None if w == float("inf") else w

    def _text(self, request: Request) -> str:
        """What the router reads: :func:`routing_text`, after the request's modality and size
        words (:func:`~routecast.capabilities.feature_tags`) when ``features`` is on."""
        text = routing_text(request, self.route_on)
        if self.features:
            return f"{feature_tags(needs_of(request.body, request.api))} {text}"
        return text

    def usable(self, request: Request) -> bool:
        return any(b.usable(request) for b in _unique(self.backends.values()))

    def _usable(self, request: Request, model: str) -> bool:
        """Whether the router's ``model`` may answer: its backend is usable, and the model it
        maps to (the first of its fallback chain) is one the request allows. A model the
        request rules out (a capability it lacks, the privacy rule) is re-chosen by the
        policy among the others, not handed to its fallbacks."""
        backend = self.backends[model]
        return backend.usable(request) and (not backend.models
                                            or request.allows(backend.models[0]))

    def best_usable(self, request: Request, chosen: str) -> str:
        """``chosen`` if it is usable (:meth:`_usable`), else the policy's pick among usable
        models (``chosen`` again when none is: its backend then says why it cannot answer)."""
        if self._usable(request, chosen):
            return chosen
        usable = [m for m in self.router_models if self._usable(request, m)]
        if not usable:
            usable = [m for m in self.router_models if self.backends[m].usable(request)]
        if not usable:
            return chosen
        if len(usable) == 1:
            return usable[0]
        import numpy as np

        text = [self._text(request)]
        quality = np.array(self.router.predict(text), dtype=np.float64)
        cost = np.array(self.router.predict_cost(text), dtype=np.float64)
        mask = np.array([m not in usable for m in self.router_models])
        # A huge finite cost, not inf: 0 * inf is NaN, which would poison the argmax.
        quality[:, mask] = -np.inf
        cost[:, mask] = 1e300
        pick = int(self.policy.choose(quality, cost, models=self.router_models,
                                      prompts=text)[0])
        model = self.router_models[pick]
        return model if model in usable else usable[0]

    async def _pick(self, request: Request) -> Trace:
        trace = await self.decide(request)
        chosen = trace.chosen or ""
        model = self.best_usable(request, chosen)
        if model != chosen:
            trace.chosen, trace.reason = model, f"{chosen} unusable ({trace.reason})"
        return trace

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        trace = await self._pick(request)
        routing_s = time.perf_counter() - t0
        model = trace.chosen or ""
        overflowed: list[str] = []
        while True:
            try:
                completion = await self.backends[model].complete(request)
                break
            except UpstreamError as e:
                retry = self._after_overflow(request, model, e, overflowed)
                if retry is None:
                    raise
                request, model = retry
        completion.route[:0] = overflowed
        completion.routing_s += routing_s
        completion.latency_s = time.perf_counter() - t0
        completion.trace = _after_retries(trace, model, overflowed)
        return completion

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        t0 = time.perf_counter()
        trace = await self._pick(request)
        routing_s = time.perf_counter() - t0
        model = trace.chosen or ""
        overflowed: list[str] = []
        while True:  # a context overflow before the first chunk moves on to the next model
            chunks = self.backends[model].stream(request)
            try:
                first = await anext(chunks)
                break
            except UpstreamError as e:
                await close_stream(chunks)
                retry = self._after_overflow(request, model, e, overflowed)
                if retry is None:
                    raise
                request, model = retry
        prefix = RoutePrefix(overflowed)
        try:
            chunk: Chunk | None = first
            while chunk is not None:
                if chunk.final is not None:
                    chunk.final.routing_s += routing_s
                    chunk.final.latency_s = time.perf_counter() - t0
                    chunk.final.trace = _after_retries(trace, model, overflowed)
                yield prefix(chunk)
                chunk = await anext(chunks, None)
        finally:
            await close_stream(chunks)

    def _after_overflow(self, request: Request, model: str, error: UpstreamError,
                        overflowed: list[str]) -> tuple[Request, str] | None:
        """After ``model``'s backend said the request does not fit its context window: the
        request without that backend's models, and the policy's pick among the router's
        models still usable for it; ``None`` when none is (the error then stands)."""
        if not is_context_overflow(error):
            return None
        gone = set(self.backends[model].models)
        allowed = frozenset(request.allowed if request.allowed is not None else self.models)
        request = Request(request.body, request.api, request.session, allowed - gone)
        if not any(self._usable(request, m) for m in self.router_models):
            return None
        overflowed.append(error.model)
        return request, self.best_usable(request, model)

def _after_retries(trace: Trace, model: str, overflowed: list[str]) -> Trace:
    """The trace of an answer that came from ``model`` after the models in ``overflowed``
    said the request does not fit their context windows."""
    if overflowed:
        trace.chosen = model
        trace.reason = f"{trace.reason}; {', '.join(overflowed)} context overflow"
    return trace


def _user(body: Mapping[str, Any]) -> str | None:
    user = body.get("user")
    return user if isinstance(user, str) and user else None


def _unique(backends: Any) -> list[Backend]:
    seen: dict[int, Backend] = {}
    for backend in backends:
        seen.setdefault(id(backend), backend)
    return list(seen.values())
