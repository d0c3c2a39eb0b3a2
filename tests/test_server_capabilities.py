"""Capability-aware routing through a running server, with the official openai client.

The stub upstream refuses what each toy model cannot do, as a real upstream would (400 for an
image to a text-only model, tools to a model without them, json_schema, a prompt over the
window): a request routed to the wrong model fails, so each test shows the check at work.

Models (all on the stub): ``small`` text only, window 256; ``medium`` text + image, tools,
json_object, window 1,024; ``large`` everything, window 100,000; ``tiny`` text only with no
declared window (the stub's is 100), ``counted`` text only, window 600, with a tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from routecast import Policy, make_router
from routecast.routers.base import Router
from tests.routecast_live import db_fixture, log_rows, make_config, model_entry, serve, stub_fixture
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

stub = stub_fixture()
db = db_fixture()

TEXT: dict[str, Any] = {"input": ["text"]}
CAPS: dict[str, dict[str, Any]] = {
    "small": {**TEXT, "context_window": 256},
    "medium": {"input": ["text", "image"], "tools": True, "structured_output": ["json_object"],
               "context_window": 1024},
    "large": {"input": ["text", "image"], "tools": True,
              "structured_output": ["json_object", "json_schema"], "context_window": 100_000},
}
#: Which models may serve each kind of request.
CAPABLE = {"image": {"medium", "large"}, "tool": {"medium", "large"},
           "json_schema": {"large"}, "long": {"large"}}
IMAGE = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
SCHEMA = {"type": "json_schema", "json_schema": {
    "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def fitted() -> tuple[Router, Policy]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    return router, Policy.for_quality(router, data.subset("validation"), 0.95)


@pytest.fixture(scope="module")
def easy(fitted: tuple[Router, Policy]) -> str:
    """A prompt the router sends to ``small`` (which can serve none of the special
    requests): a routed answer from another model is the capability check's doing."""
    router, policy = fitted
    prompts = list(toy_dataset().subset("test").prompts)
    return next(p for p, m in zip(prompts, router.route(prompts, policy), strict=True)
                if m == "small")


@pytest.fixture(scope="module")
def client(stub: StubUpstream, db: Path, fitted: tuple[Router, Policy]
           ) -> Iterator[openai.OpenAI]:
    stub.windows.update({"small": 256, "medium": 1024, "tiny": 100, "counted": 600})
    stub.text_only.update({"small", "tiny", "counted"})
    stub.no_tools.update({"small", "tiny", "counted"})
    stub.no_json_schema.update({"small", "medium", "tiny", "counted"})
    root = stub.url.removesuffix("/v1")
    models = {name: model_entry(stub.url, name, capabilities=caps) for name, caps in CAPS.items()}
    models["tiny"] = model_entry(stub.url, "tiny", capabilities=TEXT)
    models["counted"] = model_entry(stub.url, "counted", capabilities={
        **TEXT, "context_window": 600, "tokenize_url": f"{root}/tokenize"})
    config = make_config(stub.url, db, models=models, endpoints={
        "auto": {"type": "routed", "router": "given"},
        "steps": {"type": "cascade", "models": ["small", "medium", "large"],
                  "thresholds": [0.5, 0.5]},
        "chain": {"type": "plain", "model": "small", "fallbacks": ["medium", "large"]},
        # `small` served by `tiny`, whose window is not declared: only the upstream knows.
        "auto-tiny": {"type": "routed", "router": "given", "model_map": {"small": "tiny"}},
        "tiny-chain": {"type": "plain", "model": "tiny", "fallbacks": ["large"]},
        "tiny-steps": {"type": "cascade", "models": ["tiny", "large"], "thresholds": [0.5]},
    })
    with serve(config, routers={"auto": fitted, "auto-tiny": fitted}) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def request(kind: str, text: str) -> dict[str, Any]:
    """The chat arguments of one request of ``kind``."""
    if kind == "image":
        return {"messages": [{"role": "user", "content": [
            {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": IMAGE}}]}]}
    if kind == "tool":
        return {"messages": [{"role": "user", "content": text}], "tools": TOOLS}
    if kind == "json_schema":
        return {"messages": [{"role": "user", "content": text}], "response_format": SCHEMA}
    assert kind == "long"
    history = " ".join(["word"] * 1500)  # the stub counts 1,500 tokens: over medium's 1,024
    return {"messages": [{"role": "user", "content": history},
                         {"role": "assistant", "content": "noted"},
                         {"role": "user", "content": text}]}


def ask(client: openai.OpenAI, endpoint: str, **kw: Any) -> tuple[str, str, str]:
    """(answering model, route header, excluded header)."""
    raw = client.chat.completions.with_raw_response.create(model=endpoint, **kw)
    return (raw.parse().model, raw.headers["x-routecast-route"],
            raw.headers.get("x-routecast-excluded", ""))


@pytest.mark.parametrize("kind", ["image", "tool", "json_schema", "long"])
@pytest.mark.parametrize("endpoint", ["auto", "steps", "chain"])
def test_each_need_reaches_a_model_that_can_serve_it(client: openai.OpenAI, endpoint: str,
                                                     kind: str, easy: str) -> None:
    model, route, excluded = ask(client, endpoint, **request(kind, easy))
    assert model in CAPABLE[kind]
    # Models that cannot serve it were never asked (the stub would have refused them).
    assert set(route.split(",")) <= CAPABLE[kind]
    assert "small (" in excluded
    if kind == "json_schema":
        assert "medium (no json_schema)" in excluded
    if kind == "long":
        assert "medium (context" in excluded


def test_routed_choice_among_capable_models_follows_the_policy(
        client: openai.OpenAI, fitted: tuple[Router, Policy]) -> None:
    # The router's ranking restricted to the capable models, the policy unchanged: for each
    # prompt, the policy's choice with `small` masked out.
    router, policy = fitted
    prompts = [p for p, m in zip(toy_dataset().subset("test").prompts,
                                 router.route(list(toy_dataset().subset("test").prompts),
                                              policy), strict=True) if m == "small"][:6]
    quality, cost = router.predict(prompts), router.predict_cost(prompts)
    small = router.models_.index("small")
    quality[:, small], cost[:, small] = -np.inf, 1e300
    expected = [router.models_[i] for i in policy.choose(quality, cost)]
    answered = [ask(client, "auto", **request("image", p))[0] for p in prompts]
    assert answered == expected


def test_plain_text_requests_are_not_restricted(client: openai.OpenAI, easy: str) -> None:
    model, route, excluded = ask(client, "chain",
                                 messages=[{"role": "user", "content": easy}])
    assert (model, route, excluded) == ("small", "small", "")


@pytest.mark.parametrize("endpoint", ["auto", "steps", "chain"])
def test_streams_are_checked_too(client: openai.OpenAI, easy: str, endpoint: str) -> None:
    with client.chat.completions.with_streaming_response.create(
            model=endpoint, stream=True, **request("tool", easy)) as response:
        assert "small (no tools)" in response.headers["x-routecast-excluded"]
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    assert chunks[-1]["routecast"]["model"] in CAPABLE["tool"]


@pytest.mark.parametrize("kind", ["image", "tool", "json_schema", "long"])
def test_none_can_serve_is_a_400_naming_the_need_and_the_models(
        client: openai.OpenAI, kind: str, easy: str, stub: StubUpstream) -> None:
    before = len(stub.received)
    endpoint = "medium" if kind == "json_schema" else "small"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=endpoint, **request(kind, easy))
    error = caught.value.body
    assert isinstance(error, dict)
    assert caught.value.status_code == 400 and error["code"] == "no_capable_model"
    need = {"image": "image input", "tool": "tools", "json_schema": "response_format json_schema",
            "long": "prompt tokens"}[kind]
    assert need in error["message"] and f"{endpoint} (" in error["message"]
    assert error["param"] == {"tool": "tools", "json_schema": "response_format"}.get(
        kind, "messages")
    assert len(stub.received) == before  # no upstream was asked


def test_the_request_log_names_the_excluded_models(client: openai.OpenAI, db: Path,
                                                   easy: str) -> None:
    ask(client, "chain", user="log-excluded", **request("json_schema", easy))
    row = log_rows(db, 1, lambda r: r["session"] == "log-excluded")[-1]
    assert row["model"] == "large"
    assert row["excluded"] == "small (no json_schema); medium (no json_schema)"


@pytest.mark.parametrize("endpoint", ["tiny-chain", "tiny-steps"])
@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_retried_on_the_next_model(client: openai.OpenAI,
                                                       stub: StubUpstream, endpoint: str,
                                                       stream: bool) -> None:
    # tiny declares no window, so the check lets the long conversation through; its upstream
    # says the prompt is too long (400, context_length_exceeded) and the fallback chain, or
    # the cascade, moves on (before a stream's first byte).
    before = len(stub.received)
    if not stream:
        model, route, _ = ask(client, endpoint, **request("long", "hello"))
    else:
        with client.chat.completions.with_streaming_response.create(
                model=endpoint, stream=True, **request("long", "hello")) as response:
            final = [json.loads(line[6:]) for line in response.iter_lines()
                     if line.startswith("data: {")][-1]["routecast"]
        model, route = final["model"], ",".join(final["route"])
    assert (model, route) == ("large", "tiny,large")
    assert [r.body["model"] for r in stub.received[before:]] == ["tiny", "large"]


@pytest.mark.parametrize("stream", [False, True])
def test_routed_endpoint_retries_an_overflow_on_the_policys_next_pick(
        client: openai.OpenAI, easy: str, stream: bool) -> None:
    # The router picks `small` = tiny, whose upstream overflows; the policy then picks among
    # the others that the estimate says can take it: large (medium's window is too small).
    args = request("long", easy)
    if not stream:
        model, route, _ = ask(client, "auto-tiny", **args)
    else:
        with client.chat.completions.with_streaming_response.create(
                model="auto-tiny", stream=True, **args) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines()
                      if line.startswith("data: {")]
        model, route = chunks[-1]["routecast"]["model"], ",".join(chunks[-1]["routecast"]["route"])
    assert (model, route) == ("large", "tiny,large")


def test_a_tokenizer_decides_near_the_window(client: openai.OpenAI, stub: StubUpstream) -> None:
    # 200 long words: the estimate (~940 tokens with its margin) says it cannot fit counted's
    # 600-token window, its tokenizer counts 200 (+4 for the message): it fits, counted answers.
    text = " ".join(["abcdefghijklmnop"] * 200)
    model, _, excluded = ask(client, "counted", messages=[{"role": "user", "content": text}])
    assert (model, excluded) == ("counted", "")
    assert any(r.path == "/tokenize" for r in stub.received)
    # 700 short words: ~640 estimated, 704 counted: too long, and the 400 says it was counted.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="counted", messages=[{"role": "user", "content": " ".join(["ab"] * 700)}])
    assert "context 704 > its window 600 (counted)" in str(caught.value)
