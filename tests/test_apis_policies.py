"""The server's policies hold whatever API the client speaks: the privacy rule, key budgets
and the request log apply to Messages and Responses requests as to chat; conversation
pinning can be switched off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from routecast import Policy, make_router
from routecast.server.keys import add_key
from tests.apis_live import hard_and_easy
from tests.routecast_live import log_rows, make_config, model_entry, serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

SECRET = "mail me at ada@example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Path, StubUpstream, dict[str, str]]]:
    db = tmp_path_factory.mktemp("policies") / "requests.db"
    # One small answer costs (5 + 4 tokens) at the small model's prices: ~2.1e-6 USD.
    keys = {"rich": add_key(db, "rich"), "poor": add_key(db, "poor", budget_usd=1e-6)}
    with StubUpstream() as stub:
        config = make_config(
            stub.url, db, auth={"required": True}, privacy={"patterns": ["email"]},
            storage={"db": str(db), "batch_ms": 20, "log_prompts": True},
            models={"onprem": model_entry(stub.url, "onprem", local=True)},
            endpoints={"guarded": {"type": "plain", "model": "small", "fallbacks": ["onprem"]}})
        with serve(config) as url:
            yield url, db, stub, keys


def test_sensitive_prompts_stay_local_in_every_api(
        server: tuple[str, Path, StubUpstream, dict[str, str]]) -> None:
    url, db, stub, keys = server
    claude = anthropic.Anthropic(base_url=url, api_key=keys["rich"], max_retries=0)
    message = claude.messages.create(model="guarded", max_tokens=20,
                                     messages=[{"role": "user", "content": SECRET}])
    assert message.model == "onprem" and stub.received[-1].body["model"] == "onprem"
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude.messages.create(model="small", max_tokens=20,
                               messages=[{"role": "user", "content": SECRET}])
    assert refused.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["rich"], max_retries=0)
    response = client.responses.create(model="guarded", input=SECRET)
    assert response.model == "onprem"
    rows = log_rows(db, 2, lambda r: r["model"] == "onprem")
    assert all("ada@example.com" not in (r["prompt"] or "") for r in rows)
    assert all("[REDACTED:email]" in r["prompt"] for r in rows)


def test_key_budgets_hold_in_every_api(
        server: tuple[str, Path, StubUpstream, dict[str, str]]) -> None:
    url, _, _, keys = server
    claude = anthropic.Anthropic(base_url=url, api_key=keys["poor"], max_retries=0)
    claude.messages.create(model="small", max_tokens=20,
                           messages=[{"role": "user", "content": "hello there"}])
    with pytest.raises(anthropic.RateLimitError) as spent:
        claude.messages.create(model="small", max_tokens=20,
                               messages=[{"role": "user", "content": "hello again"}])
    assert spent.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "budget" in spent.value.message
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["poor"], max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="small", input="and now?")


def test_pin_conversations_false_routes_every_turn(tmp_path: Path) -> None:
    hard, easy = hard_and_easy()
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    with StubUpstream() as stub:
        config = make_config(stub.url, None, apis={"pin_conversations": False},
                             endpoints={"auto": {"type": "routed", "router": "given"}})
        with serve(config, routers={"auto": (router, policy)}) as url:
            claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
            first = claude.messages.with_raw_response.create(
                model="auto", max_tokens=20, messages=[{"role": "user", "content": hard}])
            later = claude.messages.with_raw_response.create(
                model="auto", max_tokens=20, messages=[
                    {"role": "user", "content": hard}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": easy}])
    assert first.parse().model == "large" and later.parse().model == "small"
    assert later.headers["x-routecast-route-reason"] == "per-request"
    assert "x-routecast-conversation" not in later.headers
    assert "user" not in stub.received[-1].body
