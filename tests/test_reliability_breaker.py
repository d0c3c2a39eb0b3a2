"""Circuit breakers, health-aware composites, per-request deadlines and streams that die."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from routecast.backends.base import Backend, Chunk, Completion, Request, Usage
from routecast.backends.cascade import CascadeBackend
from routecast.backends.fallback import FallbackBackend
from routecast.backends.health import CircuitBreaker
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.retry import RetryPolicy
from routecast.backends.routed import RoutedBackend
from routecast.cascades.cascade import Cascade
from routecast.errors import UpstreamError
from routecast.policy import Policy
from tests.http_calls import call, post
from tests.routecast_live import make_config, model_entry, serve
from tests.stub_upstream import Step, StubUpstream, iter_sse

USER = [{"role": "user", "content": "hello there"}]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the breaker alone -------------------------------------------------------------------------

def state(b: CircuitBreaker) -> str:
    return b.state  # a plain str, so that checks after a call are not narrowed away


def test_breaker_opens_after_threshold_then_half_opens_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, open_s=5.0, clock=clock)
    for _ in range(2):
        assert b.acquire()
        b.failure()
    assert state(b) == "closed"
    b.success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert b.acquire()
        b.failure()
    assert state(b) == "open" and not b.available and not b.acquire()
    assert b.retry_in_s() == pytest.approx(5.0)
    clock.now += 5.0
    assert state(b) == "half_open" and b.available
    assert b.acquire()          # the one probe
    assert not b.acquire()      # no second probe while it runs
    b.failure()                 # probe failed: open for another period
    assert state(b) == "open"
    clock.now += 5.0
    assert b.acquire()
    b.success(0.2)
    assert state(b) == "closed" and b.latency_s == pytest.approx(0.2)
    assert b.opened_total == 2


def test_cancelled_probe_gives_its_slot_back() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, open_s=1.0, clock=clock)
    b.acquire()
    b.failure()
    clock.now += 1.0
    assert b.acquire()
    b.release()
    assert b.acquire()


# -- composites skip unusable backends ---------------------------------------------------------

class Fake(Backend):
    """One model answering in-process; ``up=False`` makes it unusable (an open breaker)."""

    def __init__(self, model: str, up: bool = True) -> None:
        self.name = model
        self.models = (model,)
        self.up = up
        self.calls = 0

    def usable(self, request: Request) -> bool:
        return self.up and request.allows(self.name)

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        if not self.up:
            raise UpstreamError("down", model=self.name, status=503,
                                code="upstream_circuit_open")
        body = {"choices": [{"message": {"role": "assistant", "content": self.name},
                             "logprobs": None}]}
        return Completion(body, self.name, Usage(1, 1), 0.0, 0.0, [self.name])

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        done = await self.complete(request)
        yield Chunk({"choices": []}, self.name, done.route)
        yield Chunk(None, self.name, done.route, done)


class FixedRouter:
    """Predicts fixed qualities; the policy picks ``a`` (best) unless it is masked."""

    models_ = ("a", "b", "c")

    def predict(self, prompts: list[str]) -> np.ndarray:
        return np.tile([0.9, 0.5, 0.7], (len(prompts), 1))

    def predict_cost(self, prompts: list[str]) -> np.ndarray:
        return np.tile([1.0, 0.1, 0.2], (len(prompts), 1))

    def route(self, prompts: list[str], policy: Policy) -> list[str]:
        picks = policy.choose(self.predict(prompts), self.predict_cost(prompts))
        return [self.models_[i] for i in picks]


def test_routed_endpoint_picks_the_best_healthy_model_by_its_policy() -> None:
    fakes = {m: Fake(m) for m in "abc"}
    routed = RoutedBackend(FixedRouter(), Policy(0.0), fakes)  # type: ignore[arg-type]
    request = Request({"model": "auto", "messages": USER})
    assert asyncio.run(routed.complete(request)).model == "a"
    fakes["a"].up = False
    # Quality 0.7 (c) beats 0.5 (b) at cost weight 0: the next best, not the first listed.
    assert asyncio.run(routed.complete(request)).model == "c"
    assert fakes["a"].calls == 1  # the open backend was not asked again
    fakes["c"].up = False
    assert asyncio.run(routed.complete(request)).model == "b"
    # And with a heavy cost weight the cheapest healthy one wins.
    fakes["c"].up = True
    cheap = RoutedBackend(FixedRouter(), Policy(10.0), fakes)  # type: ignore[arg-type]
    assert asyncio.run(cheap.complete(request)).model == "b"


def test_fallback_and_cascade_skip_an_open_backend() -> None:
    down, up = Fake("down", up=False), Fake("up")
    chain = FallbackBackend([down, up])
    done = asyncio.run(chain.complete(Request({"messages": USER})))
    assert done.model == "up" and done.route == ["up"] and down.calls == 0
    cascade = CascadeBackend(Cascade(("down", "up"), (0.5,), "confidence"),
                             {"down": down, "up": up})
    assert asyncio.run(cascade.complete(Request({"messages": USER}))).model == "up"
    assert down.calls == 0


def test_an_http_backend_stops_calling_a_failing_upstream() -> None:
    async def run(stub: StubUpstream) -> tuple[list[str], int]:
        breaker = CircuitBreaker(failure_threshold=2, open_s=60)
        backend = OpenAIHTTPBackend("m", stub.url, retry=RetryPolicy(max_retries=0),
                                    breaker=breaker)
        codes = []
        stub.then(Step(500), Step(500))
        before = len(stub.received)
        for _ in range(4):
            try:
                await backend.complete(Request({"model": "m", "messages": USER}))
                codes.append("ok")
            except UpstreamError as e:
                codes.append(e.code)
        await backend.aclose()
        return codes, len(stub.received) - before

    with StubUpstream() as stub:
        codes, sent = asyncio.run(run(stub))
    assert codes == ["upstream_error", "upstream_error", "upstream_circuit_open",
                     "upstream_circuit_open"]
    assert sent == 2


# -- through the server: deadlines and streams that die ----------------------------------------

@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def server(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("log") / "r.db"
    config = make_config(
        stub.url, db,
        models={"flaky": model_entry(stub.url, "flaky", max_retries=0,
                                     breaker={"failure_threshold": 2, "open_s": 60})},
        endpoints={"safe": {"type": "plain", "model": "flaky", "fallbacks": ["small"]}},
        limits={"deadline_s": 0.6})
    with serve(config) as url:
        yield url


def test_deadline_bounds_a_slow_upstream(server: str, stub: StubUpstream) -> None:
    stub.then(Step(delay_s=2.0))
    t0 = time.perf_counter()
    status, body = post(server, {"model": "small", "messages": USER})
    elapsed = time.perf_counter() - t0
    assert status == 504 and body["error"]["code"] == "deadline_exceeded"
    assert elapsed < 1.2


def test_deadline_cuts_a_trickling_stream_with_an_error_event(server: str,
                                                             stub: StubUpstream) -> None:
    stub.then(Step(chunk_delay_s=0.25))  # ~4 words at 0.25 s each: longer than 0.6 s
    t0 = time.perf_counter()
    status, _, raw = call(server, "POST", "/v1/chat/completions", json.dumps(
        {"model": "small", "stream": True,
         "messages": [{"role": "user", "content": "one two three four five"}]}).encode())
    elapsed = time.perf_counter() - t0
    assert status == 200 and elapsed < 1.2
    events = list(iter_sse(raw))
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert b"[DONE]" not in raw


def test_stream_that_dies_midway_ends_with_one_error_event(server: str,
                                                           stub: StubUpstream) -> None:
    stub.then(Step(cut_after=2))
    status, _, raw = call(server, "POST", "/v1/chat/completions", json.dumps(
        {"model": "small", "stream": True, "messages": USER}).encode())
    events = list(iter_sse(raw))
    assert status == 200
    assert [e for e in events if "error" in e] == events[-1:]  # one, and last
    assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
    assert len(events) == 3  # the two chunks sent, then the error


def test_fallback_skips_the_open_breaker_without_calling_it(server: str,
                                                            stub: StubUpstream) -> None:
    for _ in range(2):  # two failures of `flaky` in a row: its breaker opens
        stub.then(Step(500))
        status, body = post(server, {"model": "safe", "messages": USER})
        assert status == 200 and body["model"] == "small"
    asked = len(stub.received)
    status, body = post(server, {"model": "safe", "messages": USER})
    assert status == 200 and body["model"] == "small"
    assert len(stub.received) == asked + 1  # only `small` was asked
    assert stub.received[-1].body["model"] == "small"
    _, _, metrics = call(server, "GET", "/metrics")
    assert 'routecast_breaker_state{model="flaky"} 1' in metrics.decode()


def test_metrics_and_openapi_are_served(server: str) -> None:
    status, _, raw = call(server, "GET", "/openapi.json")
    schema = json.loads(raw)
    assert status == 200 and "/v1/chat/completions" in schema["paths"]





# -- a hung model with a fallback waiting ------------------------------------------------------

def _hung_then_fallback(stub: StubUpstream, *, fallback: bool
                        ) -> tuple[Completion | UpstreamError, float, int]:
    """The first call to the stub hangs (2 s) past the read timeout (0.3 s); with retries
    allowed (2), what a fallback chain (or the model alone) answers, how long it took and
    how many calls the stub received."""
    def model(name: str) -> OpenAIHTTPBackend:
        return OpenAIHTTPBackend(name, stub.url, read_timeout_s=0.3,
                                 retry=RetryPolicy(max_retries=2, backoff_s=0.01))

    primary = model("primary")
    backend: Backend = FallbackBackend([primary, model("secondary")]) if fallback else primary
    stub.then(Step(delay_s=2.0))
    before = len(stub.received)

    async def run() -> tuple[Completion | UpstreamError, float]:
        await backend.start()
        t0 = time.perf_counter()
        try:
            return await backend.complete(Request(
                {"model": "x", "messages": USER}, "chat")), time.perf_counter() - t0
        except UpstreamError as e:
            return e, time.perf_counter() - t0
        finally:
            await backend.aclose()

    answer, elapsed = asyncio.run(run())
    return answer, elapsed, len(stub.received) - before


def test_a_hung_model_is_not_retried_while_a_fallback_waits(stub: StubUpstream) -> None:
    answer, elapsed, calls = _hung_then_fallback(stub, fallback=True)
    assert isinstance(answer, Completion), answer
    assert answer.route == ["primary", "secondary"] and answer.model == "secondary"
    assert calls == 2  # one timed-out call to the primary, one answer from the fallback
    assert elapsed < 1.0  # one read timeout (0.3 s), not three, before the fallback answers


def test_a_hung_model_alone_is_retried(stub: StubUpstream) -> None:
    answer, _, calls = _hung_then_fallback(stub, fallback=False)
    assert isinstance(answer, Completion), answer  # the retry got the normal answer
    assert answer.model == "primary" and calls == 2  # timed out once, retried once
