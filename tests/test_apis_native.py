"""Upstreams that speak the Messages or Responses API natively (``api: messages`` /
``api: responses`` on a model).

A Messages client's request reaches such a model untranslated and its answer comes back as the
upstream gave it (a thinking block's signature, which chat has no field for, survives); chat and
Responses clients reach the same model through translation; the same holds for a Responses
model. The upstreams are :class:`tests.anthropic_stub.AnthropicStub` and
:class:`tests.responses_stub.ResponsesStub` (fakes: the real APIs are on the internet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from routecast import Policy, make_router
from tests.anthropic_stub import AnthropicStub
from tests.apis_live import hard_and_easy, http, sse_events
from tests.responses_stub import ResponsesStub
from tests.routecast_live import make_config, model_entry, serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

SECRET = "sk-ant-upstream-secret"
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
RESPONSE_EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, AnthropicStub, StubUpstream]]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    key_file = tmp_path_factory.mktemp("secret") / "key"
    key_file.write_text(SECRET)
    with AnthropicStub() as claude_stub, StubUpstream() as chat_stub:
        native_entry = model_entry(claude_stub.url, "large", api="messages",
                                   upstream_model="claude-upstream",
                                   api_key_file=str(key_file))
        config = make_config(chat_stub.url, None, models={"large": native_entry}, endpoints={
            "auto": {"type": "routed", "router": "given"}})
        with serve(config, routers={"auto": (router, policy)}) as url:
            yield url, claude_stub, chat_stub


def test_messages_pass_through_untranslated(
        native: tuple[str, AnthropicStub, StubUpstream]) -> None:
    url, upstream, _ = native
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    body: Any = {"model": "large", "max_tokens": 2000, "top_k": 5,
                 "thinking": {"type": "enabled", "budget_tokens": 1024},
                 "system": [{"type": "text", "text": "rules",
                             "cache_control": {"type": "ephemeral"}}],
                 "messages": [{"role": "user", "content": "hello"}]}
    kwargs = {k: v for k, v in body.items() if k != "top_k"}
    raw = client.messages.with_raw_response.create(**kwargs, extra_body={"top_k": 5})
    sent = upstream.received[-1]
    assert sent.body == {**body, "model": "claude-upstream"}
    assert sent.headers["x-api-key"] == SECRET and "authorization" not in sent.headers
    answer = json.loads(raw.http_response.text)
    Message.model_validate(answer)
    assert answer["content"][0] == {"type": "thinking", "thinking": "let me think",
                                    "signature": "sig-abc123"}
    assert answer["content"][1]["text"] == "claude-upstream native: hello"
    assert answer["model"] == "large" and raw.headers["x-routecast-model"] == "large"

    streamed = http("POST", f"{url}/v1/messages", {**body, "stream": True})
    events = sse_events(streamed)
    for name, data in events:
        assert name == data["type"]
        if name != "ping":
            EVENTS.validate_python(data)
    signature = [d["delta"]["signature"] for n, d in events if n == "content_block_delta"
                 and d["delta"]["type"] == "signature_delta"]
    assert signature == ["sig-abc123"]
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert upstream.received[-1].body == {**body, "model": "claude-upstream", "stream": True}


def test_chat_and_responses_clients_are_translated(
        native: tuple[str, AnthropicStub, StubUpstream]) -> None:
    url, upstream, _ = native
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="large", max_tokens=30, stop="END", messages=[
        {"role": "system", "content": "rules"}, {"role": "user", "content": "hi there"}])
    assert chat.choices[0].message.content == "claude-upstream native: hi there"
    assert chat.usage is not None and chat.usage.prompt_tokens == 25
    assert upstream.received[-1].body == {
        "model": "claude-upstream", "max_tokens": 30, "system": "rules",
        "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]}
    stream = client.chat.completions.create(model="large", stream=True, messages=[
        {"role": "user", "content": "streamed"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "claude-upstream native: streamed")

    tool: Any = {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    first = client.chat.completions.create(model="large", tools=[tool], messages=[
        {"role": "user", "content": "weather?"}])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    second = client.chat.completions.create(model="large", tools=[tool], messages=[
        {"role": "user", "content": "weather?"}, first.choices[0].message,  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"}])
    assert second.choices[0].message.content == "claude-upstream native: rainy"
    sent = upstream.received[-1].body
    assert sent["tools"][0]["input_schema"] == tool["function"]["parameters"]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "rainy"}]

    response = client.responses.create(model="large", input="via responses")
    assert response.output_text == "claude-upstream native: via responses"


def test_a_routed_endpoint_passes_through_to_its_native_model(
        native: tuple[str, AnthropicStub, StubUpstream]) -> None:
    url, upstream, chat_stub = native
    hard, easy = hard_and_easy()
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    body: Any = {"model": "auto", "max_tokens": 100, "top_k": 3,
                 "messages": [{"role": "user", "content": hard}]}
    answer = client.messages.create(model="auto", max_tokens=100, messages=body["messages"],
                                    extra_body={"top_k": 3})
    assert answer.model == "large"
    assert upstream.received[-1].body == {**body, "model": "claude-upstream"}
    cheap = client.messages.create(model="auto", max_tokens=100,
                                   messages=[{"role": "user", "content": easy}])
    assert cheap.model == "small" and chat_stub.received[-1].body["model"] == "small"


@pytest.fixture(scope="module")
def native_responses() -> Iterator[tuple[str, ResponsesStub]]:
    with ResponsesStub() as upstream, StubUpstream() as chat_stub:
        config = make_config(chat_stub.url, None, models={"gpt": model_entry(
            upstream.url, "gpt", api="responses", upstream_model="gpt-upstream")})
        with serve(config) as url:
            yield url, upstream


def test_responses_pass_through_untranslated(native_responses: tuple[str, ResponsesStub]
                                             ) -> None:
    url, upstream = native_responses
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    first = client.responses.with_raw_response.create(
        model="gpt", input="hello", reasoning={"effort": "low"}, include=[
            "reasoning.encrypted_content"])
    sent = upstream.received[-1].body
    assert sent == {"model": "gpt-upstream", "input": "hello", "reasoning": {"effort": "low"},
                    "include": ["reasoning.encrypted_content"], "store": False}
    answer = json.loads(first.http_response.text)
    Response.model_validate(answer)
    assert answer["id"].startswith("resp_") and answer["id"] != "resp_upstream"
    assert answer["output"][0]["encrypted_content"] == "enc-xyz"  # chat has no word for it
    assert first.parse().output_text == "gpt-upstream native: hello"

    # previous_response_id is routecast's: the upstream gets the conversation spelled out.
    second = client.responses.create(model="gpt", input="again",
                                     previous_response_id=answer["id"])
    assert upstream.received[-1].body["input"] == [
        {"type": "message", "role": "user", "content": "hello"},
        {"type": "message", "role": "assistant", "content": "gpt-upstream native: hello"},
        {"type": "message", "role": "user", "content": "again"}]
    assert "previous_response_id" not in upstream.received[-1].body
    assert second.previous_response_id == answer["id"]

    raw = http("POST", f"{url}/v1/responses", {"model": "gpt", "input": "streamed",
                                               "stream": True})
    events = sse_events(raw)
    for name, data in events:
        assert name == data["type"]
        RESPONSE_EVENTS.validate_python(data)
    ids = {d["response"]["id"] for _, d in events if "response" in d}
    assert len(ids) == 1 and ids != {"resp_upstream"}
    stored = client.responses.retrieve(ids.pop())
    assert stored.output_text == "gpt-upstream native: streamed"


def test_chat_clients_reach_a_responses_model_translated(
        native_responses: tuple[str, ResponsesStub]) -> None:
    url, upstream = native_responses
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="gpt", max_tokens=9, messages=[
        {"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "gpt-upstream native: hi"
    assert upstream.received[-1].body == {
        "model": "gpt-upstream", "instructions": "rules", "max_output_tokens": 9,
        "store": False, "input": [{"type": "message", "role": "user", "content": "hi"}]}
    stream = client.chat.completions.create(model="gpt", stream=True, messages=[
        {"role": "user", "content": "streamed"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "gpt-upstream native: streamed")
