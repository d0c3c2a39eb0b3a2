"""The Messages API (``/v1/messages``) through a running routecast, with Anthropic's own SDK.

Every answer and streamed event is checked against the API reference's shapes twice: with the
SDK's typed models (pydantic validation, which fails on a missing or mistyped field) and with
explicit key and sequence checks written here from the reference.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.apis_live import (
    ENDPOINTS,
    Answer,
    Live,
    hard_and_easy,
    http,
    live_fixture,
    sse_events,
)
from tests.routecast_live import log_rows
from tests.stub_upstream import Step

live = live_fixture()

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
MESSAGE_KEYS = {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence",
                "usage"}
WEATHER: Any = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=live.url, api_key=live.key, max_retries=0) as c:
        yield c


def check_message(raw: dict[str, Any]) -> Message:
    """A Messages answer as the reference defines it."""
    assert set(raw) == MESSAGE_KEYS
    assert raw["type"] == "message" and raw["role"] == "assistant"
    assert raw["id"].startswith("msg_")
    assert raw["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence", "tool_use",
                                  "pause_turn", "refusal")
    assert set(raw["usage"]) >= {"input_tokens", "output_tokens"}
    for block in raw["content"]:
        if block["type"] == "text":
            assert set(block) == {"type", "text"}
        else:
            assert block["type"] == "tool_use" and set(block) == {"type", "id", "name", "input"}
            assert isinstance(block["input"], dict)
    return Message.model_validate(raw)


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> None:
    """A Messages stream as the reference defines it: named events whose name is the data's
    type; message_start first, message_stop last; each content block started, given deltas of
    its own type, and stopped, in index order."""
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_block: int | None = None
    next_index = 0
    for name, data in events:
        if name == "ping":
            continue
        EVENTS.validate_python(data)
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block, kind = data["index"], data["content_block"]["type"]
        elif name == "content_block_delta":
            assert data["index"] == open_block
            expected = {"text": "text_delta", "tool_use": "input_json_delta",
                        "thinking": "thinking_delta"}[kind]
            assert data["delta"]["type"] == expected
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block, next_index = None, next_index + 1
    assert open_block is None


def post(live: Live, path: str, body: dict[str, Any], **headers: str) -> Answer:
    return http("POST", f"{live.url}{path}", body, {
        "x-api-key": live.key, "anthropic-version": "2023-06-01", **headers})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_create(client: anthropic.Anthropic, live: Live, endpoint: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=endpoint, max_tokens=50, system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}])
    message = raw.parse()
    check_message(json.loads(raw.http_response.text))
    assert message.content[0].type == "text"
    assert message.content[0].text == f"{message.model} says: hello there"
    assert message.stop_reason == "end_turn"
    assert raw.headers["x-routecast-model"] == message.model
    sent = live.stub.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello there"}]
    assert sent["max_tokens"] == 50
    # The stub counts 3 tokens per message plus its words.
    assert message.usage.input_tokens == 3 + 2 + 3 + 2
    assert message.usage.output_tokens == 4


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stream(client: anthropic.Anthropic, live: Live, endpoint: str) -> None:
    with client.messages.stream(model=endpoint, max_tokens=50,
                                messages=[{"role": "user", "content": "stream me"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"{final.model} says: stream me"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    assert final.usage.input_tokens == 3 + 2
    raw = post(live, "/v1/messages", {"model": endpoint, "max_tokens": 50, "stream": True,
                                      "messages": [{"role": "user", "content": "stream me"}]})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    check_stream(events)
    deltas = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert deltas == text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tools_round_trip(client: anthropic.Anthropic, live: Live, endpoint: str) -> None:
    question: Any = {"role": "user", "content": "weather in Paris?"}
    first = client.messages.with_raw_response.create(
        model=endpoint, max_tokens=50, tools=[WEATHER], messages=[question],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    message = first.parse()
    check_message(json.loads(first.http_response.text))
    assert message.stop_reason == "tool_use"
    use = message.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    sent = live.stub.received[-1].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False

    answer = client.messages.create(model=endpoint, max_tokens=50, tools=[WEATHER], messages=[
        question, {"role": "assistant", "content": message.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "sunny and warm"}]}])
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    assert answer.content[0].text == f"{answer.model} says: sunny and warm"
    sent = live.stub.received[-1].body
    assert sent["messages"][1]["tool_calls"][0]["id"] == use.id
    assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris"}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id,
                                   "content": "sunny and warm"}

    # The same first turn streamed: a tool_use block fed by input_json_delta events.
    raw = post(live, "/v1/messages", {"model": endpoint, "max_tokens": 50, "stream": True,
                                      "tools": [WEATHER], "messages": [question]})
    events = sse_events(raw)
    check_stream(events)
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "get_weather"
    partial = "".join(d["delta"]["partial_json"] for n, d in events
                      if n == "content_block_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_errors_are_anthropic_shaped(client: anthropic.Anthropic, live: Live) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="nope", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.status_code == 404
    assert not_found.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": not_found.value.body["error"]["message"]}}  # type: ignore[index]
    assert "unknown model 'nope'" in not_found.value.message

    missing = post(live, "/v1/messages", {"model": "small",
                                          "messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]

    server_tool = post(live, "/v1/messages", {
        "model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert server_tool.status_code == 400
    assert "server tool" in server_tool.json()["error"]["message"]

    stranger = anthropic.Anthropic(base_url=live.url, api_key="wrong", max_retries=0)
    with stranger, pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.create(model="small", max_tokens=5,
                                 messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    bearer = http("POST", f"{live.url}/v1/messages", {
        "model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        {"authorization": f"Bearer {live.key}"})
    assert bearer.status_code == 200, bearer.text


def test_image_and_document_blocks_reach_the_upstream(client: anthropic.Anthropic,
                                                      live: Live) -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    pdf = base64.b64encode(b"%PDF-1.4 fake").decode()
    client.messages.create(model="small", max_tokens=20, stop_sequences=["END"], messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": png}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": pdf}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "plain notes"}},
            {"type": "text", "text": "describe them"}]}])
    sent = live.stub.received[-1].body
    assert sent["stop"] == ["END"]
    assert sent["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "file", "file": {"filename": "document.pdf",
                                  "file_data": f"data:application/pdf;base64,{pdf}"}},
        {"type": "text", "text": "plain notes"},
        {"type": "text", "text": "describe them"}]


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="small",
                                         messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model="small", system="x" * 400, tools=[WEATHER],
                                        messages=[{"role": "user", "content": "hi " * 200}])
    assert short.input_tokens >= 1 and long.input_tokens > short.input_tokens + 200
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])


def test_a_conversation_is_routed_once(client: anthropic.Anthropic, live: Live) -> None:
    """The toy router sends ``hard`` to large and ``easy`` to small. A conversation that began
    with ``hard`` stays on large when its next turn is easy; a new conversation is routed."""
    hard, easy = hard_and_easy()
    first = client.messages.with_raw_response.create(
        model="auto", max_tokens=20, system="agent", messages=[{"role": "user", "content": hard}])
    assert first.parse().model == "large"
    assert first.headers["x-routecast-route-reason"] == "conversation-first-turn"
    key = first.headers["x-routecast-conversation"]
    later = client.messages.with_raw_response.create(
        model="auto", max_tokens=20, system="agent", messages=[
            {"role": "user", "content": hard}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": easy}])
    assert later.parse().model == "large"
    assert later.headers["x-routecast-route-reason"] == "conversation-pinned"
    assert later.headers["x-routecast-conversation"] == key
    other = client.messages.create(model="auto", max_tokens=20, system="agent",
                                   messages=[{"role": "user", "content": easy}])
    assert other.model == "small"
    rows = log_rows(live.db, 2, lambda r: r["session"] == key)
    assert [r["model"] for r in rows] == ["large", "large"]


def test_a_conversation_that_escalated_in_a_cascade_stays_escalated(
        client: anthropic.Anthropic, live: Live) -> None:
    """``smart`` asks small first and keeps its answer at confidence >= 0.8. A conversation
    whose first turn escalated to large starts its next turns at large, even when small
    would now be confident; another conversation still starts at small."""
    opening: Any = {"role": "user", "content": "plan the refactor"}
    live.stub.logprob["small"] = -3.0  # confidence exp(-3) ~ 0.05: small is not kept
    try:
        first = client.messages.with_raw_response.create(
            model="smart", max_tokens=20, system="coder", messages=[opening])
    finally:
        del live.stub.logprob["small"]
    assert first.parse().model == "large"
    assert first.headers["x-routecast-route"] == "small,large"
    assert first.headers["x-routecast-route-reason"] == "conversation-first-step"
    asked = len(live.stub.received)
    later = client.messages.with_raw_response.create(
        model="smart", max_tokens=20, system="coder",
        messages=[opening, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "now do it"}])
    assert later.parse().model == "large"
    assert later.headers["x-routecast-route"] == "large"
    assert later.headers["x-routecast-route-reason"] == "conversation-escalated"
    assert [r.body["model"] for r in live.stub.received[asked:]] == ["large"]
    with client.messages.stream(model="smart", max_tokens=20, system="coder", messages=[
            opening, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "streamed turn"}]) as stream:
        assert stream.get_final_message().model == "large"
    fresh = client.messages.with_raw_response.create(
        model="smart", max_tokens=20, system="coder",
        messages=[{"role": "user", "content": "another task"}])
    assert fresh.parse().model == "small"
    assert fresh.headers["x-routecast-route-reason"] == "conversation-first-step"


def test_an_upstream_dying_midway_ends_the_stream_with_an_error_event(live: Live) -> None:
    live.stub.then(Step(cut_after=2))
    raw = post(live, "/v1/messages", {"model": "small", "max_tokens": 20, "stream": True,
                                      "messages": [{"role": "user", "content": "one two three"}]})
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "stream broke" in error["error"]["message"]
