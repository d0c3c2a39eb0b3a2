"""Routed endpoints, session pinning, retries and fallbacks, through a running server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from routecast import Policy, make_router
from routecast.routers.base import Router
from tests.routecast_live import db_fixture, log_rows, make_config, model_entry, serve, stub_fixture
from tests.stub_upstream import Step, StubUpstream, closed_port
from tests.toy import toy_dataset


@pytest.fixture(scope="module")
def fitted() -> tuple[Router, Policy]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    return router, Policy.for_quality(router, data.subset("validation"), 0.95)


stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def client(stub: StubUpstream, db: Path, fitted: tuple[Router, Policy]
           ) -> Iterator[openai.OpenAI]:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    config = make_config(
        stub.url, db,
        models={"dead": model_entry(dead, "dead", max_retries=1)},
        endpoints={
            "auto": {"type": "routed", "router": "unused-when-given", "fallbacks": ["small"]},
            "auto-whole": {"type": "routed", "router": "unused", "route_on": "conversation"},
            "safe": {"type": "plain", "model": "dead", "fallbacks": ["medium"]},
            "guarded": {"type": "plain", "model": "large", "fallbacks": ["small"]},
        })
    with serve(config, routers={"auto": fitted, "auto-whole": fitted}) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def ask(client: openai.OpenAI, endpoint: str, text: str, **kw: object) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=endpoint, messages=[{"role": "user", "content": text}], **kw)  # type: ignore[call-overload]
    return raw.parse().model, raw.headers["x-routecast-route"]


def test_routed_endpoint_picks_the_routers_model_per_prompt(
        client: openai.OpenAI, fitted: tuple[Router, Policy], stub: StubUpstream) -> None:
    router, policy = fitted
    prompts = list(toy_dataset().subset("test").prompts[:12])
    expected = router.route(prompts, policy)
    assert len(set(expected)) > 1, "the toy router should use more than one model"
    answered = [ask(client, "auto", p)[0] for p in prompts]
    assert answered == expected
    # The upstream really was asked for that model.
    assert [r.body["model"] for r in stub.received[-len(prompts):]] == expected


def test_route_on_whole_conversation(client: openai.OpenAI, fitted: tuple[Router, Policy]
                                     ) -> None:
    router, policy = fitted
    data = toy_dataset().subset("test")
    picks = router.route(list(data.prompts), policy)
    easy = next(p for p, m in zip(data.prompts, picks, strict=True) if m == "small")
    hard = next(p for p, m in zip(data.prompts, picks, strict=True) if m == "large")
    messages: list[dict[str, str]] = [{"role": "user", "content": hard},
                                      {"role": "assistant", "content": "ok"},
                                      {"role": "user", "content": easy}]
    whole = router.route([f"{hard}\nok\n{easy}"], policy)[0]
    last = client.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
    conversation = client.chat.completions.create(model="auto-whole", messages=messages)  # type: ignore[arg-type]
    assert last.model == "small"
    assert conversation.model == whole


def test_session_pins_the_conversation_to_its_first_model(
        client: openai.OpenAI, fitted: tuple[Router, Policy]) -> None:
    router, policy = fitted
    data = toy_dataset().subset("test")
    picks = router.route(list(data.prompts), policy)
    easy = next(p for p, m in zip(data.prompts, picks, strict=True) if m == "small")
    hard = next(p for p, m in zip(data.prompts, picks, strict=True) if m == "large")
    header = {"x-routecast-session": "conversation-42"}
    first, _ = ask(client, "auto", hard, extra_headers=header)
    second, _ = ask(client, "auto", easy, extra_headers=header)
    unpinned, _ = ask(client, "auto", easy)
    assert (first, second, unpinned) == ("large", "large", "small")
    # The OpenAI `user` field pins too.
    assert ask(client, "auto", easy, user="alice")[0] == "small"
    assert ask(client, "auto", hard, user="alice")[0] == "small"


def test_retries_429_honouring_retry_after(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.then(Step(429, {"Retry-After": "1"}))
    t0 = time.perf_counter()
    model, route = ask(client, "small", "hello")
    waited = time.perf_counter() - t0
    assert (model, route) == ("small", "small")
    assert waited >= 0.95, "Retry-After: 1 must be honoured"
    stub.then(Step(429, {"retry-after-ms": "150"}), Step(503))
    t0 = time.perf_counter()
    assert ask(client, "small", "hello")[0] == "small"
    assert time.perf_counter() - t0 >= 0.15


def test_rate_limit_that_persists_is_a_429(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.then(*[Step(429, {"retry-after-ms": "1"})] * 3)  # first try + 2 retries
    with pytest.raises(openai.RateLimitError) as e:
        ask(client, "small", "hello")
    assert "HTTP 429" in str(e.value)


def test_fallback_on_500(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.then(*[Step(500)] * 3)  # large fails every attempt
    model, route = ask(client, "guarded", "hello")
    assert (model, route) == ("small", "large,small")


def test_fallback_on_connection_refused(client: openai.OpenAI) -> None:
    model, route = ask(client, "safe", "hello")
    assert (model, route) == ("medium", "dead,medium")
    chunks = list(client.chat.completions.create(
        model="safe", messages=[{"role": "user", "content": "hi"}], stream=True))
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert summary["route"] == ["dead", "medium"]
    assert all(c.model == "medium" for c in chunks)


def test_no_fallback_for_a_request_the_upstream_rejects(client: openai.OpenAI,
                                                        stub: StubUpstream) -> None:
    stub.then(Step(400))
    n = len(stub.received)
    with pytest.raises(openai.BadRequestError):
        ask(client, "guarded", "hello")
    assert len(stub.received) == n + 1  # neither retried nor sent to the fallback


def test_unreachable_without_fallback_is_a_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        ask(client, "dead", "hello")
    assert e.value.status_code == 502
    body = e.value.body
    assert isinstance(body, dict)
    assert body["code"] == "upstream_unreachable"
    assert "could not be reached" in body["message"]


def test_escalations_are_logged(client: openai.OpenAI, db: Path) -> None:
    ask(client, "safe", "logged fallback")
    rows = log_rows(db, 1, lambda r: r["endpoint"] == "safe" and r["status"] == 200)
    assert all(r["route"] == "dead,medium" and r["model"] == "medium" for r in rows)
