"""The Responses API (``/v1/responses``) and embeddings through a running routecast, with the
``openai`` SDK.

Every answer and streamed event is checked against the API reference's shapes twice: with the
SDK's typed models (pydantic validation of ``Response`` and of the ``ResponseStreamEvent``
union) and with explicit checks written here from the reference (event names, sequence
numbers, the item lifecycle).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from routecast.server.keys import add_key
from tests.apis_live import ENDPOINTS, Live, hard_and_easy, http, live_fixture, sse_events
from tests.routecast_live import log_rows
from tests.stub_upstream import Step

live = live_fixture()

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "The weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.key, max_retries=0) as c:
        yield c


def check_response(raw: dict[str, Any]) -> Response:
    """A response object as the reference defines it."""
    assert raw["object"] == "response" and raw["id"].startswith("resp_")
    assert raw["status"] in ("completed", "incomplete", "in_progress", "failed")
    for item in raw["output"]:
        if item["type"] == "message":
            assert item["role"] == "assistant" and item["status"] == "completed"
            assert all(p["type"] == "output_text" and p["annotations"] == []
                       for p in item["content"])
        else:
            assert item["type"] == "function_call"
            assert set(item) >= {"id", "call_id", "name", "arguments", "status"}
            json.loads(item["arguments"])
    if raw["status"] == "completed":
        usage = raw["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    return Response.model_validate(raw)


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A Responses stream as the reference defines it; returns the completed response."""
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    for _, data in events:
        EVENTS.validate_python(data)
    added = [d["output_index"] for n, d in events if n == "response.output_item.added"]
    done = [d["output_index"] for n, d in events if n == "response.output_item.done"]
    assert added == done == list(range(len(added)))
    final: dict[str, Any] = events[-1][1]["response"]
    check_response(final)
    assert [d["item"] for n, d in events if n == "response.output_item.done"] == final["output"]
    return final


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_create(client: openai.OpenAI, live: Live, endpoint: str) -> None:
    raw = client.responses.with_raw_response.create(model=endpoint, instructions="be brief",
                                                    input="hello there")
    response = raw.parse()
    check_response(json.loads(raw.http_response.text))
    assert response.output_text == f"{response.model} says: hello there"
    assert raw.headers["x-routecast-model"] == response.model
    assert response.instructions == "be brief"
    sent = live.stub.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello there"}]
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3 + 2 + 3 + 2, 4)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stream(client: openai.OpenAI, live: Live, endpoint: str) -> None:
    with client.responses.stream(model=endpoint, input="stream me") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == f"{final.model} says: stream me"
    raw = http("POST", f"{live.url}/v1/responses", {"model": endpoint, "input": "stream me",
                                                    "stream": True},
               {"authorization": f"Bearer {live.key}"})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = check_stream(sse_events(raw))
    assert events["output"][0]["content"][0]["text"] == final.output_text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_function_call_round_trip(client: openai.OpenAI, live: Live, endpoint: str) -> None:
    first = client.responses.create(model=endpoint, input="weather in Paris?", tools=[WEATHER])
    check_response(first.model_dump())
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert live.stub.received[-1].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather",
        "parameters": WEATHER["parameters"]}}]
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}

    # The whole conversation sent back, as a stateless client does ...
    whole = client.responses.create(model=endpoint, tools=[WEATHER], input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments}, output])
    assert whole.output_text == f"{whole.model} says: sunny"
    sent = live.stub.received[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.call_id, "type": "function",
         "function": {"name": "get_weather", "arguments": call.arguments}}]}
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}

    # ... or only the tool's output, continuing the stored response.
    chained = client.responses.create(model=endpoint, tools=[WEATHER], input=[output],
                                      previous_response_id=first.id)
    assert chained.output_text == f"{chained.model} says: sunny"
    assert live.stub.received[-1].body["messages"] == sent

    # Streamed: the function_call item's arguments arrive as deltas.
    raw = http("POST", f"{live.url}/v1/responses", {
        "model": endpoint, "input": "weather in Paris?", "tools": [WEATHER], "stream": True},
        {"authorization": f"Bearer {live.key}"})
    events = sse_events(raw)
    final = check_stream(events)
    assert [n for n, _ in events if "function_call_arguments" in n][-1] == (
        "response.function_call_arguments.done")
    assert json.loads(final["output"][0]["arguments"]) == {"city": "Paris"}


def test_previous_response_id_and_retrieve(client: openai.OpenAI, live: Live) -> None:
    first = client.responses.create(model="small", input="my name is Ada",
                                    instructions="first rules")
    second = client.responses.create(model="small", input="what is my name",
                                     previous_response_id=first.id, instructions="new rules")
    assert second.previous_response_id == first.id
    # Instructions are not inherited; the earlier turns are.
    assert live.stub.received[-1].body["messages"] == [
        {"role": "system", "content": "new rules"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "what is my name"}]
    fetched = client.responses.retrieve(second.id)
    assert fetched.model_dump() == second.model_dump()
    # A streamed turn is stored too, and chains on.
    with client.responses.stream(model="small", input="again",
                                 previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert client.responses.retrieve(third.id).output_text == third.output_text
    assert [m["role"] for m in live.stub.received[-1].body["messages"]] == [
        "user", "assistant", "user", "assistant", "user"]  # no instructions this turn


def test_store_false_is_honoured(client: openai.OpenAI, live: Live) -> None:
    kept = client.responses.create(model="small", input="forget me", store=False)
    assert kept.to_dict()["store"] is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="small", input="x", previous_response_id=kept.id)
    assert "store: false" in missing.value.message


def test_text_format_and_errors(client: openai.OpenAI, live: Live) -> None:
    schema: Any = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.responses.create(model="small", input="json please", max_output_tokens=30,
                            text={"format": {"type": "json_schema", "name": "thing",
                                             "schema": schema, "strict": True}})
    sent = live.stub.received[-1].body
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "thing", "schema": schema, "strict": True}}
    assert sent["max_tokens"] == 30
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="nope", input="x")
    assert unknown.value.code == "model_not_found"
    mystery: Any = [{"type": "mystery"}]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="small", input=mystery)
    assert "input[0].type" in bad.value.message
    stranger = openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.responses.create(model="small", input="x")


def test_conversation_is_routed_once(client: openai.OpenAI, live: Live) -> None:
    hard, easy = hard_and_easy()
    first = client.responses.with_raw_response.create(model="auto", input=hard)
    assert first.parse().model == "large"
    assert first.headers["x-routecast-route-reason"] == "conversation-first-turn"
    chained = client.responses.with_raw_response.create(
        model="auto", input=easy, previous_response_id=first.parse().id)
    assert chained.parse().model == "large"
    assert chained.headers["x-routecast-route-reason"] == "conversation-pinned"
    key = chained.headers["x-routecast-conversation"]
    assert key == first.headers["x-routecast-conversation"]
    # Codex-style: the whole input each turn, with a prompt_cache_key naming the conversation.
    a = client.responses.create(model="auto", input=easy, prompt_cache_key="c-1")
    b = client.responses.create(model="auto", input=[{"role": "user", "content": easy},
                                                     {"role": "user", "content": hard}],
                                prompt_cache_key="c-1")
    assert a.model == b.model == "small"
    assert [r["model"] for r in log_rows(live.db, 2, lambda r: r["session"] == key)] == [
        "large", "large"]


def test_embeddings_pass_through(client: openai.OpenAI, live: Live) -> None:
    out = client.embeddings.create(model="small", input=["one two", "three"])
    assert [d.embedding for d in out.data] == [[7.0, 2.0, 1.0], [5.0, 1.0, 1.0]]
    assert out.model == "small" and out.usage.prompt_tokens == 3
    assert live.stub.received[-1].path == "/v1/embeddings"
    with pytest.raises(openai.BadRequestError) as routed:
        client.embeddings.create(model="auto", input="x")
    assert "one model" in routed.value.message


def test_an_upstream_dying_midway_fails_the_response(live: Live) -> None:
    live.stub.then(Step(cut_after=2))
    raw = http("POST", f"{live.url}/v1/responses", {"model": "small", "stream": True,
                                                    "input": "one two three"},
               {"authorization": f"Bearer {live.key}"})
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-2:] == ["error", "response.failed"]
    for _, data in events:
        EVENTS.validate_python(data)
    assert "stream broke" in events[-2][1]["message"]
    assert events[-1][1]["response"]["status"] == "failed"


def test_a_key_cannot_read_or_continue_another_keys_responses(client: openai.OpenAI,
                                                             live: Live) -> None:
    mine = client.responses.create(model="small", input="private notes")
    other = openai.OpenAI(base_url=f"{live.url}/v1", api_key=add_key(live.db, "other"),
                          max_retries=0)
    with other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="small", input="and?", previous_response_id=mine.id)
    assert client.responses.retrieve(mine.id).output_text == mine.output_text
