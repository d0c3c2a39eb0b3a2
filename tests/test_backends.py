"""Backends in isolation: retries with a swapped-in transport, costs, fallbacks, routing."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from routecast.backends import (
    Backend,
    Chunk,
    Completion,
    FallbackBackend,
    OpenAIHTTPBackend,
    Price,
    Request,
    RetryPolicy,
    RoutedBackend,
    Usage,
    routing_text,
)
from routecast.backends.prompt_format import FORMATS, chat_to_completion_body
from routecast.backends.retry import retry_after_s
from routecast.backends.routed import RouteBatcher, SessionPins
from routecast.errors import ConfigError, RequestError, UpstreamError, UpstreamTimeoutError
from routecast.policy import Policy
from routecast.routers.base import Router

# -- a transport that replays scripted answers ----------------------------------------------


class FakeResponse:
    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None,
                 lines: Sequence[bytes] = ()) -> None:
        self.status = status
        self.headers = dict(headers or {})
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._lines = list(lines)
        self.released = False

    async def read(self) -> bytes:
        return self._body

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line

    def release(self) -> None:
        self.released = True


class FakeTransport:
    def __init__(self, *answers: FakeResponse | type[Exception]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> FakeResponse:
        self.sent.append((url, json.loads(body), dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, type):
            raise answer("scripted failure")
        return answer

    async def aclose(self) -> None:
        pass


OK = {"id": "x", "object": "chat.completion", "model": "upstream-name",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                   "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1000, "completion_tokens": 200,
                "prompt_tokens_details": {"cached_tokens": 600},
                "completion_tokens_details": {"reasoning_tokens": 150}}}
PRICE = Price(input_usd_per_mtok=2.0, output_usd_per_mtok=8.0, cached_usd_per_mtok=0.5)
CHAT = Request({"model": "endpoint", "messages": [{"role": "user", "content": "hello"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]})


def backend(transport: FakeTransport, sleeps: list[float], **kw: Any) -> OpenAIHTTPBackend:
    async def sleep(s: float) -> None:
        sleeps.append(s)

    return OpenAIHTTPBackend("m", "http://upstream/v1/", upstream_model="up", price=PRICE,
                             transport=transport, sleep=sleep,
                             retry=RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=3.0,
                                               rng=random.Random(0)), **kw)


def test_cost_counts_cached_and_reasoning_tokens() -> None:
    usage = Usage.from_openai(OK["usage"])
    assert usage == Usage(1000, 200, cached_tokens=600, reasoning_tokens=150)
    # 400 uncached at $2/M, 600 cached at $0.5/M, 200 out (reasoning included) at $8/M.
    assert PRICE.cost_usd(usage) == pytest.approx((400 * 2 + 600 * 0.5 + 200 * 8) / 1e6)
    assert Price(1.0, 1.0).cost_usd(Usage(10, 0, cached_tokens=10)) == pytest.approx(10 / 1e6)


def test_forwards_body_untouched_but_the_model() -> None:
    transport = FakeTransport(FakeResponse(200, OK))
    done = asyncio.run(backend(transport, []).complete(CHAT))
    url, sent, _ = transport.sent[0]
    assert url == "http://upstream/v1/chat/completions"
    assert sent == {**CHAT.body, "model": "up"}
    assert CHAT.body["model"] == "endpoint"  # the client's dict is not changed
    assert (done.model, done.body["model"], done.route) == ("m", "m", ["m"])
    assert done.cost_usd == pytest.approx(PRICE.cost_usd(Usage.from_openai(OK["usage"])
                                                         or Usage()))


def test_retries_429_and_5xx_with_backoff_and_retry_after() -> None:
    sleeps: list[float] = []
    transport = FakeTransport(FakeResponse(429, {}, {"Retry-After": "7"}),
                              FakeResponse(503, {}), ConnectionError,
                              FakeResponse(200, OK))
    asyncio.run(backend(transport, sleeps).complete(CHAT))
    assert len(transport.sent) == 4
    assert sleeps[0] == 7.0  # the upstream's Retry-After wins
    assert 0.75 * 2.0 <= sleeps[1] <= 2.0  # retry 1: 1 s * 2**1, less up to 25 % jitter
    assert 0.75 * 3.0 <= sleeps[2] <= 3.0  # retry 2: capped at max_backoff_s


def test_gives_up_after_max_retries_with_the_right_error() -> None:
    sleeps: list[float] = []
    transport = FakeTransport(*[FakeResponse(500, {"error": {"message": "boom"}})] * 4)
    with pytest.raises(UpstreamError) as e:
        asyncio.run(backend(transport, sleeps).complete(CHAT))
    assert (e.value.status, e.value.upstream_status, len(sleeps)) == (502, 500, 3)
    assert "boom" in str(e.value) and "4 attempts" in str(e.value)
    transport = FakeTransport(TimeoutError, TimeoutError, TimeoutError, TimeoutError)
    with pytest.raises(UpstreamTimeoutError) as t:
        asyncio.run(backend(transport, []).complete(CHAT))
    assert t.value.status == 504


def test_a_rejected_request_is_not_retried() -> None:
    transport = FakeTransport(FakeResponse(400, {"error": {"message": "bad tools"}}))
    with pytest.raises(UpstreamError) as e:
        asyncio.run(backend(transport, []).complete(CHAT))
    assert (e.value.status, e.value.retryable, len(transport.sent)) == (400, False, 1)


def test_a_long_retry_after_fails_fast() -> None:
    transport = FakeTransport(FakeResponse(429, {}, {"retry-after": "3600"}))
    with pytest.raises(UpstreamError) as e:
        asyncio.run(backend(transport, []).complete(CHAT))
    assert e.value.status == 429 and len(transport.sent) == 1


def test_retry_after_formats() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                         now=1445412480.0) == 10.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def sse(*events: Any) -> list[bytes]:
    return [f"data: {json.dumps(e)}\n".encode() for e in events] + [b"data: [DONE]\n"]


def test_stream_accounts_the_usage_chunk() -> None:
    lines = [b": keep-alive\n", *sse(
        {"id": "s", "choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"id": "s", "choices": [{"index": 0, "delta": {"content": "b"}}]},
        {"id": "s", "choices": [], "usage": OK["usage"]})]
    response = FakeResponse(200, b"", lines=lines)
    transport = FakeTransport(response)

    async def collect() -> list[Chunk]:
        return [c async for c in backend(transport, []).stream(CHAT)]

    chunks = asyncio.run(collect())
    assert transport.sent[0][1]["stream_options"] == {"include_usage": True}
    assert [c.data["choices"][0]["delta"]["content"] for c in chunks[:-1]  # type: ignore[index]
            ] == ["a", "b"]
    final = chunks[-1].final
    assert final is not None and chunks[-1].data is not None
    assert chunks[-1].data["usage"] == OK["usage"]
    assert final.usage.cached_tokens == 600
    assert final.cost_usd == pytest.approx(asyncio.run(backend(
        FakeTransport(FakeResponse(200, OK)), []).complete(CHAT)).cost_usd)
    assert response.released


def test_stream_without_usage_is_estimated() -> None:
    lines = sse(*({"choices": [{"index": 0, "delta": {"content": w}}]} for w in "abc"))
    transport = FakeTransport(FakeResponse(200, b"", lines=lines))

    async def collect() -> list[Chunk]:
        return [c async for c in backend(transport, [], stream_usage=False).stream(CHAT)]

    final = asyncio.run(collect())[-1].final
    assert "stream_options" not in transport.sent[0][1]
    assert final is not None
    assert final.usage.estimated and final.usage.completion_tokens == 3


def test_base_model_prompt_format() -> None:
    body = {"model": "e", "max_completion_tokens": 9, "stop": "###", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]}
    out = chat_to_completion_body(body, FORMATS["chatml"], "base-up")
    assert out["prompt"] == ("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                             "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye"
                             "<|im_end|>\n<|im_start|>assistant\n")
    assert out["stop"] == ["###", "<|im_end|>", "<|im_start|>"]
    assert out["max_tokens"] == 9 and "messages" not in out and out["model"] == "base-up"
    with pytest.raises(RequestError, match="tools need a chat model"):
        chat_to_completion_body({**body, "tools": [{}]}, FORMATS["plain"], "x")


# -- composites ---------------------------------------------------------------------------


class Scripted(Backend):
    """Answers as ``model``, or raises ``error``; counts its calls."""

    def __init__(self, model: str, error: UpstreamError | None = None) -> None:
        self.name = model
        self.models = (model,)
        self.error = error
        self.calls = 0

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        if self.error:
            raise self.error
        return Completion({"model": self.name}, self.name, Usage(1, 1), 0.0, 0.0, [self.name])

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        self.calls += 1
        if self.error:
            raise self.error
        route = [self.name]
        yield Chunk({"x": 1}, self.name, route)
        yield Chunk(None, self.name, route, await self.complete(request))


def down(model: str, code: str = "upstream_unreachable") -> Scripted:
    return Scripted(model, UpstreamError(f"{model} down", model=model, code=code))


def test_fallback_tries_the_next_model_and_records_the_route() -> None:
    chain = FallbackBackend([down("a"), down("b"), Scripted("c")])
    done = asyncio.run(chain.complete(CHAT))
    assert (done.model, done.route) == ("c", ["a", "b", "c"])

    async def collect() -> list[Chunk]:
        return [c async for c in chain.stream(CHAT)]

    chunks = asyncio.run(collect())
    assert chunks[-1].final is not None and chunks[-1].final.route == ["a", "b", "c"]
    assert chunks[0].route == ["a", "b", "c"]


def test_fallback_stops_on_a_rejected_request_and_reports_every_failure() -> None:
    last = Scripted("c")
    chain = FallbackBackend([down("a", "upstream_rejected_request"), last])
    with pytest.raises(UpstreamError, match="a down"):
        asyncio.run(chain.complete(CHAT))
    assert last.calls == 0
    with pytest.raises(UpstreamError, match="all 2 models failed: a down; b down"):
        asyncio.run(FallbackBackend([down("a"), down("b")]).complete(CHAT))


class WordRouter(Router):
    """Predicts that only ``large`` answers prompts containing "hard" (and only ``small`` the
    rest); counts predict() calls and batch sizes."""

    name = "word-test"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def _fit(self, dataset: Any) -> None:
        pass

    def predict(self, prompts: Sequence[str]) -> Any:
        self.batches.append(len(prompts))
        return np.array([[0.0, 1.0] if "hard" in p else [1.0, 0.0] for p in prompts])

    def predict_cost(self, prompts: Sequence[str]) -> Any:
        return np.tile([0.1, 1.0], (len(prompts), 1))


def routed(router: WordRouter, **kw: Any) -> RoutedBackend:
    router.models_ = ("small", "large")
    return RoutedBackend(router, Policy(), {"small": Scripted("small"),
                                            "large": Scripted("large")}, **kw)


def test_concurrent_requests_are_routed_in_one_batch() -> None:
    router = WordRouter()
    endpoint = routed(router)

    async def many() -> list[str]:
        texts = ["easy", "hard", "easy hard", "plain"] * 5
        done = await asyncio.gather(*(endpoint.complete(
            Request({"messages": [{"role": "user", "content": t}]})) for t in texts))
        return [d.model for d in done]

    models = asyncio.run(many())
    assert models == ["small", "large", "large", "small"] * 5
    assert router.batches == [20]


def test_routed_answers_carry_the_decision() -> None:
    endpoint = routed(WordRouter())

    async def ask(text: str, session: str | None = None) -> Any:
        return await endpoint.complete(
            Request({"messages": [{"role": "user", "content": text}]}, session=session))

    done = asyncio.run(ask("a hard one", session="s1"))
    trace = done.trace
    assert trace is not None and (trace.kind, trace.chosen, trace.reason) == (
        "routed", "large", "router")
    assert trace.estimates == {"small": 0.0, "large": 1.0}
    assert trace.costs == {"small": 0.1, "large": 1.0}
    assert trace.cost_weight == 0.0
    again = asyncio.run(ask("easy now", session="s1")).trace  # the session stays on large
    assert again is not None and (again.chosen, again.reason, again.estimates) == (
        "large", "pinned session", None)


def test_batches_are_bounded() -> None:
    router = WordRouter()
    router.models_ = ("small", "large")
    endpoint = RouteBatcher(router, Policy(), max_batch=8)

    async def many() -> list[str]:
        done = await asyncio.gather(*(endpoint.route("x") for _ in range(20)))
        return [d.model for d in done]

    assert asyncio.run(many()) == ["small"] * 20
    assert router.batches == [8, 8, 4]
    assert (endpoint.prompts_total, endpoint.batches_total) == (20, 3)


def test_session_pins_are_a_bounded_lru() -> None:
    pins = SessionPins(max_sessions=2)
    pins.set("a", "m1")
    pins.set("b", "m2")
    assert pins.get("a") == "m1"  # a is now the most recent
    pins.set("c", "m3")  # evicts b, the least recent
    assert (pins.get("a"), pins.get("b"), pins.get("c"), len(pins)) == ("m1", None, "m3", 2)


def test_routing_text() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "u2"},
                                             {"type": "image_url", "image_url": {}}]}]
    request = Request({"messages": messages})
    assert routing_text(request) == "u2"
    assert routing_text(request, "conversation") == "s\nu1\na\nu2"
    assert routing_text(Request({"prompt": ["p", "q"]}, api="completions")) == "p\nq"


def test_routed_endpoint_needs_a_backend_for_every_model() -> None:
    router = WordRouter()
    router.models_ = ("small", "huge")
    with pytest.raises(ConfigError, match=r"no backend serves \['huge'\]"):
        RoutedBackend(router, Policy(), {"small": Scripted("small")})


def test_stream_lines_are_split_across_reads() -> None:
    from routecast.backends.transport import _AiohttpResponse

    reads = [b"data: {\"a\"", b": 1}\n\ndata: {\"b\": 2}\n", b"\ndata: [DONE]\n\n", b"tail"]

    class Content:
        async def iter_any(self) -> AsyncIterator[bytes]:
            for r in reads:
                yield r

    class Resp:
        content = Content()

    async def collect() -> list[bytes]:
        return [line async for line in _AiohttpResponse(Resp(), 1.0).lines()]  # type: ignore[arg-type]

    assert asyncio.run(collect()) == [b'data: {"a": 1}', b'data: {"b": 2}', b"data: [DONE]",
                                      b"tail"]


def test_cascade_scores_chat_and_completion_logprobs() -> None:
    import math

    from routecast.backends.cascade import CascadeBackend
    from routecast.cascades.cascade import Cascade

    steps = {"small": Scripted("small"), "large": Scripted("large")}
    cascade = CascadeBackend(Cascade(("small", "large"), (0.5,)), steps, summary="min")
    chat = {"choices": [{"logprobs": {"content": [{"logprob": -0.1}, {"logprob": -2.0}]}}]}
    assert cascade.score(chat, "chat") == pytest.approx(math.exp(-2.0))
    text = {"choices": [{"logprobs": {"token_logprobs": [None, -0.5, -0.2]}}]}
    assert cascade.score(text, "completions") == pytest.approx(math.exp(-0.5))
    assert math.isnan(cascade.score({"choices": [{"logprobs": None}]}, "chat"))
    assert math.isnan(cascade.score({"choices": []}, "chat"))
