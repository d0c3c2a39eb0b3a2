"""routecast as a drop-in for the official ``openai`` SDK, checked against OpenAI's schemas.

Every endpoint kind (plain, plain with a fallback, routed, a cascade that keeps its first
answer, a cascade that escalates), both routes (chat, legacy completions), streamed and not,
through the SDK's usual loop, ``for chunk in stream: chunk.choices[0].delta.content`` (``.text``
for completions), and ``client.models.retrieve``. Every response and every streamed chunk is
checked against the schemas in :mod:`tests.openai_schemas` twice: as the SDK parsed it
(``to_dict()``: the fields the server sent) and as raw server-sent events off the wire.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from routecast import Policy, make_router
from routecast.routers.base import Router
from tests import openai_schemas as schemas
from tests.routecast_live import make_config, serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

#: endpoint -> the model expected to answer "hello world" (None: whichever the router picks).
ENDPOINTS: dict[str, str | None] = {"small": "small", "guarded": "medium", "auto": None,
                                    "keeps": "small", "escalates": "large"}
TEXT = "hello world"


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def base_url(stub: StubUpstream) -> Iterator[str]:
    data = toy_dataset()
    router: Router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    config = make_config(stub.url, None, endpoints={
        "guarded": {"type": "plain", "model": "medium", "fallbacks": ["small"]},
        "auto": {"type": "routed", "router": "unused-when-given", "fallbacks": ["small"]},
        # The stub's log-probs are -0.1 a token (confidence ~0.905): kept at 0.8, not at 0.99.
        "keeps": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.8]},
        "escalates": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.99]},
    })
    with serve(config, routers={"auto": (router, policy)}) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)


def raw_events(base_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON events of a streamed answer, straight off the wire (``[DONE]`` checked)."""
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as r:
        text = r.read().decode()
    lines = [line for line in text.split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    return [json.loads(line[6:]) for line in lines[:-1]]


def expect_model(endpoint: str, got: str) -> None:
    expected = ENDPOINTS[endpoint]
    assert got == expected if expected else got in ("small", "medium", "large")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_chat(client: openai.OpenAI, base_url: str, endpoint: str) -> None:
    messages: Any = [{"role": "user", "content": TEXT}]
    reply = client.chat.completions.create(model=endpoint, messages=messages)
    schemas.check(schemas.CHAT_COMPLETION, reply.to_dict())
    expect_model(endpoint, reply.model)
    whole = reply.choices[0].message.content

    stream = client.chat.completions.create(model=endpoint, messages=messages, stream=True)
    text = ""
    chunks = []
    for chunk in stream:  # the SDK's usual loop: an empty `choices` would raise IndexError
        text += chunk.choices[0].delta.content or ""
        chunks.append(chunk)
    assert text == whole
    for chunk in chunks:
        schemas.check(schemas.CHAT_CHUNK, chunk.to_dict())
    assert chunks[-1].choices[0].finish_reason == "stop"
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert summary["model"] == reply.model
    assert summary["cost_usd"] > 0

    events = raw_events(base_url, "/v1/chat/completions",
                        {"model": endpoint, "messages": messages, "stream": True})
    for event in events:
        schemas.check(schemas.CHAT_CHUNK, event)
        assert event["choices"], "a chunk without choices was sent unasked"
        assert "usage" not in event
    assert [e for e in events if "routecast" in e] == [events[-1]]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_completions(client: openai.OpenAI, base_url: str, endpoint: str) -> None:
    reply = client.completions.create(model=endpoint, prompt=TEXT)
    schemas.check(schemas.COMPLETION, reply.to_dict())
    expect_model(endpoint, reply.model)

    text = ""
    chunks = []
    for chunk in client.completions.create(model=endpoint, prompt=TEXT, stream=True):
        text += chunk.choices[0].text
        chunks.append(chunk)
    assert text == reply.choices[0].text
    for chunk in chunks:
        schemas.check(schemas.COMPLETION_CHUNK, chunk.to_dict())
        assert "usage" not in chunk.to_dict()  # not `null` either: it was not asked for
    assert (chunks[-1].model_extra or {})["routecast"]["model"] == reply.model

    for event in raw_events(base_url, "/v1/completions",
                            {"model": endpoint, "prompt": TEXT, "stream": True}):
        schemas.check(schemas.COMPLETION_CHUNK, event)
        assert event["choices"] and "usage" not in event


@pytest.mark.parametrize(("endpoint", "path", "body"), [
    ("small", "/v1/chat/completions", {"messages": [{"role": "user", "content": TEXT}]}),
    ("escalates", "/v1/chat/completions", {"messages": [{"role": "user", "content": TEXT}]}),
    ("keeps", "/v1/completions", {"prompt": TEXT}),
    ("auto", "/v1/completions", {"prompt": TEXT}),
])
def test_usage_chunk_only_when_asked_and_exactly_once(base_url: str, endpoint: str, path: str,
                                                      body: dict[str, Any]) -> None:
    events = raw_events(base_url, path, {"model": endpoint, **body, "stream": True,
                                         "stream_options": {"include_usage": True}})
    schema = schemas.CHAT_CHUNK if path.endswith("chat/completions") else schemas.COMPLETION_CHUNK
    for event in events:
        schema_check = dict(event)
        schemas.check(schema, schema_check)
    empty = [e for e in events if not e["choices"]]
    assert empty == [events[-1]]
    assert empty[0]["usage"]["completion_tokens"] > 0
    assert all("usage" not in e for e in events[:-1])
    assert "routecast" in events[-2] and events[-2]["choices"][0]["finish_reason"] == "stop"


def test_models_list_and_retrieve(client: openai.OpenAI, base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/v1/models", timeout=10) as r:
        listed = json.loads(r.read())
    schemas.check(schemas.MODEL_LIST, listed)
    assert {"small", "guarded", "auto", "keeps"} <= {m["id"] for m in listed["data"]}
    for name in ("auto", "keeps", "small"):
        model = client.models.retrieve(name)
        schemas.check(schemas.MODEL, model.to_dict())
        assert model.id == name
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-endpoint")
    body = caught.value.response.json()
    schemas.check(schemas.ERROR, body)
    assert body["error"]["code"] == "model_not_found"
    assert "no-such-endpoint" in body["error"]["message"]


def test_model_ids_with_slashes_are_served(stub: StubUpstream) -> None:
    config = make_config(stub.url, None, endpoints={
        "org/model-v1": {"type": "plain", "model": "small"}})
    with serve(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert client.models.retrieve("org/model-v1").id == "org/model-v1"


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
     404),
    ("/v1/completions", {"model": "small", "prompt": "x", "max_tokens": 2.5}, 400),
    ("/v1/chat/completions", {"model": "small"}, 400),
])
def test_errors_have_openais_shape(base_url: str, path: str, body: dict[str, Any],
                                   status: int) -> None:
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == status
    schemas.check(schemas.ERROR, json.loads(caught.value.read()))


def test_the_schemas_catch_what_they_should() -> None:
    """The checks above can fail: the old ending chunk, `usage: null`, a missing field."""
    with pytest.raises(AssertionError, match="usage"):
        schemas.check(schemas.COMPLETION_CHUNK, {
            "id": "x", "object": "text_completion", "created": 1, "model": "m", "usage": None,
            "choices": [{"index": 0, "text": "a", "finish_reason": None, "logprobs": None}]})
    with pytest.raises(AssertionError, match="logprobs"):
        schemas.check(schemas.COMPLETION, {
            "id": "x", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "a", "finish_reason": "stop"}]})
    with pytest.raises(AssertionError, match="finish_reason"):
        schemas.check(schemas.CHAT_CHUNK, {
            "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}}]})
    with pytest.raises(AssertionError):
        schemas.check(schemas.MODEL, {"id": "x", "object": "model", "created": 0})
