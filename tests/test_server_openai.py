"""The official ``openai`` client against a running routecast server over a stub upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.routecast_live import PRICES, make_config, serve
from tests.stub_upstream import StubUpstream

CACHED = 2
REASONING = 1


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream(cached_tokens=CACHED, reasoning_tokens=REASONING) as s:
        yield s


@pytest.fixture(scope="module")
def base_url(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("log") / "requests.db"
    with serve(make_config(stub.url, db)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def expected_cost(model: str, prompt: int, completion: int, cached: int) -> float:
    price_in, price_out, price_cached = PRICES[model]
    return ((prompt - cached) * price_in + cached * price_cached + completion * price_out) / 1e6


MESSAGES: list[Any] = [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "name three colours"}]


def test_sync_chat_reports_answering_model_cost_and_route(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="medium", messages=MESSAGES)
    reply = raw.parse()
    assert reply.choices[0].message.content == "medium says: name three colours"
    assert reply.model == "medium"  # routecast's name, not the upstream's "upstream-medium"
    assert raw.headers["x-routecast-model"] == "medium"
    assert raw.headers["x-routecast-route"] == "medium"
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == CACHED
    cost = expected_cost("medium", usage.prompt_tokens, usage.completion_tokens, CACHED)
    assert float(raw.headers["x-routecast-cost-usd"]) == pytest.approx(cost, rel=1e-9)
    assert float(raw.headers["x-routecast-latency-ms"]) > 0


def test_async_client(base_url: str) -> None:
    async def ask() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
        try:
            replies = await asyncio.gather(*(
                client.chat.completions.create(
                    model="small", messages=[{"role": "user", "content": f"question {i}"}])
                for i in range(8)))
        finally:
            await client.close()
        return [r.choices[0].message.content or "" for r in replies]

    assert asyncio.run(ask()) == [f"small says: question {i}" for i in range(8)]


def test_stream_matches_the_plain_answer_and_its_cost(client: openai.OpenAI,
                                                     stub: StubUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="large", messages=MESSAGES)
    plain = raw.parse()
    plain_cost = float(raw.headers["x-routecast-cost-usd"])

    stream = client.chat.completions.create(model="large", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert all(c.model == "large" for c in chunks)
    # The upstream was asked for the usage chunk although the client was not.
    assert stub.received[-1].body["stream_options"] == {"include_usage": True}
    final = chunks[-1]
    # No usage chunk unless asked (OpenAI's contract): the last chunk is the finishing one,
    # and it carries the summary.
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices for c in chunks)
    assert final.usage is None  # the client did not ask for usage, so it gets none
    summary = (final.model_extra or {})["routecast"]
    assert summary["model"] == "large"
    assert summary["route"] == ["large"]
    assert summary["cost_usd"] == pytest.approx(plain_cost, rel=1e-9)
    assert summary["usage"]["cached_tokens"] == CACHED
    assert summary["usage"]["reasoning_tokens"] == REASONING
    assert summary["latency_ms"] > 0


def test_stream_with_usage_requested(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="small", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    final = chunks[-1]
    assert final.usage is not None and final.choices == []
    assert [c for c in chunks if not c.choices] == [final]  # exactly one usage chunk
    assert all(c.usage is None for c in chunks[:-1])
    words = len(["small", "says:", "name", "three", "colours"])
    assert final.usage.completion_tokens == words
    summary = (chunks[-2].model_extra or {})["routecast"]  # on the finishing chunk
    assert chunks[-2].choices[0].finish_reason == "stop"
    cost = expected_cost("small", final.usage.prompt_tokens, words, CACHED)
    assert summary["cost_usd"] == pytest.approx(cost, rel=1e-9)


def test_stream_headers_name_the_model(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="medium", messages=MESSAGES, stream=True) as response:
        assert response.headers["x-routecast-model"] == "medium"
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def test_tools_and_unknown_fields_reach_the_upstream_unchanged(client: openai.OpenAI,
                                                               stub: StubUpstream) -> None:
    reply = client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS, tool_choice="auto", response_format={"type": "text"},
        extra_body={"top_k": 5, "vendor_option": {"nested": [1, 2]}})
    sent = stub.received[-1].body
    assert sent["tools"] == TOOLS
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "text"}
    assert sent["top_k"] == 5
    assert sent["vendor_option"] == {"nested": [1, 2]}
    assert sent["model"] == "small"
    calls = reply.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS,
        stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"


def test_logprobs_pass_through(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="small", messages=MESSAGES, logprobs=True)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [t.token for t in logprobs.content] == ["small", "says:", "name", "three", "colours"]


def test_text_completions(client: openai.OpenAI, stub: StubUpstream) -> None:
    raw = client.completions.with_raw_response.create(model="medium", prompt="once upon",
                                                      max_tokens=5)
    reply = raw.parse()
    assert stub.received[-1].path == "/v1/completions"
    assert stub.received[-1].body["max_tokens"] == 5
    assert reply.choices[0].text == "medium says: once upon"
    assert reply.model == "medium"
    assert raw.headers["x-routecast-model"] == "medium"
    streamed = list(client.completions.create(model="medium", prompt="once upon", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text
    assert (streamed[-1].model_extra or {})["routecast"]["model"] == "medium"


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"small", "medium", "large"} <= ids


def test_base_model_serves_chat_through_completions(stub: StubUpstream, tmp_path: Path) -> None:
    config = make_config(stub.url, None, models={"base": {
        "base_url": stub.url, "kind": "base", "prompt_format": "plain"}})
    with serve(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="base", messages=[{"role": "system", "content": "be kind"},
                                    {"role": "user", "content": "hi there"}])
        sent = stub.received[-1]
        chunks = list(client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi there"}], stream=True))
    assert sent.path == "/v1/completions"
    assert sent.body["prompt"] == "be kind\n\nUser: hi there\nAssistant:"
    assert "\nUser:" in sent.body["stop"]
    assert "messages" not in sent.body
    assert reply.object == "chat.completion"
    # The stub's completion answers with the prompt's last line.
    assert reply.choices[0].message.content == "base says: Assistant:"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "base says: Assistant:"
