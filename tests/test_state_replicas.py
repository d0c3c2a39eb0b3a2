"""Three routecast servers sharing one Redis (and one key database), as replicas behind a load
balancer would: each test spreads its requests over the three, round robin.

A key's budget and rate limit hold for the three together, a conversation stays on the model
its first turn was routed to whichever replica answers, a model whose breaker opens on one
replica is skipped by the others, and when Redis goes away requests on keys with a budget get
a 503 (fail closed) while every other request is served.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from routecast import Policy, make_router
from routecast.routers.base import Router
from routecast.server.keys import add_key, list_keys
from tests.http_calls import call
from tests.routecast_live import make_config, model_entry, serve, stub_fixture
from tests.services import redis_prefix, redis_url
from tests.stub_upstream import Step, StubUpstream, closed_port
from tests.tcp_proxy import TcpProxy
from tests.toy import toy_dataset

__all__ = ["redis_prefix", "redis_url"]  # fixtures, used by name

USER = [{"role": "user", "content": "one two three"}]
#: What one `small` answer to USER costs (see tests/test_key_budgets.py).
ANSWER_USD = 2.6e-6

stub = stub_fixture()


@pytest.fixture(scope="module")
def fitted() -> tuple[Router, Policy]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    return router, Policy.for_quality(router, data.subset("validation"), 0.95)


@contextmanager
def replicas(stub: StubUpstream, db: Path, url: str, prefix: str, n: int = 3,
             routers: dict[str, tuple[Router, Policy]] | None = None,
             **extra: Any) -> Iterator[list[str]]:
    """``n`` servers of one config sharing ``db`` and the Redis at ``url``; their URLs."""
    config = make_config(stub.url, db, state={"redis_url": url, "key_prefix": prefix,
                                              "replicas": n, "timeout_s": 1.0}, **extra)
    with ExitStack() as stack:
        yield [stack.enter_context(serve(config, routers=routers)) for _ in range(n)]


def chat(base: str, token: str | None = None, **body: Any) -> tuple[int, dict[str, str],
                                                                    dict[str, Any]]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    headers.update(body.pop("headers", {}))
    payload = {"model": "small", "messages": USER, **body}
    status, h, raw = call(base, "POST", "/v1/chat/completions", json.dumps(payload).encode(),
                          headers)
    return status, h, json.loads(raw)


def spent_in_db(db: Path, name: str, at_least: float, timeout_s: float = 4.0) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        spent = next(float(str(k["spent_usd"])) for k in list_keys(db) if k["name"] == name)
        if spent >= at_least or time.monotonic() > deadline:
            return spent
        time.sleep(0.1)


def test_a_burst_over_three_replicas_stays_within_the_budget_bound(
        stub: StubUpstream, tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """Spent 1 answer of a 2.5-answer budget: two more fit in flight (1 + 2 < 2.5 + 1), so of
    twelve concurrent requests spread over three replicas exactly two are answered, as on one
    server. Three replicas each admitting on its own would answer six. The spend (3 answers)
    is within the documented bound: the budget plus what was in flight when it was crossed."""
    db = tmp_path / "rc.db"
    token = add_key(db, "team", budget_usd=ANSWER_USD * 2.5)
    with replicas(stub, db, redis_url, redis_prefix, auth={"required": True}) as urls:
        assert chat(urls[0], token)[0] == 200  # the key's cost becomes known
        time.sleep(0.2)  # its settle reaches Redis (written in the background)
        stub.then(Step(delay_s=1.2), Step(delay_s=1.2))  # the admitted ones overlap the rest

        async def burst() -> list[int]:
            headers = {"authorization": f"Bearer {token}"}
            payload = {"model": "small", "messages": USER}
            async with aiohttp.ClientSession() as session:
                async def one(base: str) -> int:
                    async with session.post(f"{base}/v1/chat/completions", json=payload,
                                            headers=headers) as r:
                        await r.read()
                        return r.status
                return list(await asyncio.gather(*(one(urls[i % 3]) for i in range(12))))

        statuses = asyncio.run(burst())
        assert sorted(statuses) == [200] * 2 + [429] * 10, statuses
        refused = [chat(u, token) for u in urls]  # 3 answers spent of 2.5: all refuse
        assert [s for s, _, _ in refused] == [429] * 3
        assert all(b["error"]["code"] == "budget_exceeded" for _, _, b in refused)
        spent = spent_in_db(db, "team", ANSWER_USD * 2.99)  # the replicas' deltas add up
    assert spent == pytest.approx(3 * ANSWER_USD, rel=1e-6)
    assert spent <= ANSWER_USD * 2.5 + 2 * ANSWER_USD  # budget + the two in flight
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        key_id = token.split("-")[1]
        in_redis = client.hget(f"{redis_prefix}key:{{{key_id}}}", "spent")
    finally:
        client.close()
    assert float(str(in_redis)) == pytest.approx(spent, rel=1e-9)


def test_a_rate_limit_holds_across_replicas(stub: StubUpstream, tmp_path: Path,
                                            redis_url: str, redis_prefix: str) -> None:
    db = tmp_path / "rc.db"
    token = add_key(db, "slow", rpm=5)
    with replicas(stub, db, redis_url, redis_prefix, auth={"required": True}) as urls:
        answers = [chat(urls[i % 3], token) for i in range(12)]
    statuses = [s for s, _, _ in answers]
    assert statuses.count(200) == 5, statuses  # five a minute for the three, not each
    assert statuses[:5] == [200] * 5
    late = answers[5:]
    assert all(b["error"]["code"] == "rate_limited" for _, _, b in late)
    assert all(1 <= int(h["retry-after"]) <= 12 for _, h, _ in late)  # a token every 12 s


def test_a_conversation_stays_on_its_model_whatever_replica_answers(
        stub: StubUpstream, tmp_path: Path, redis_url: str, redis_prefix: str,
        fitted: tuple[Router, Policy]) -> None:
    router, policy = fitted
    prompts = list(toy_dataset().subset("test").prompts)
    picks = router.route(prompts, policy)
    hard = next(p for p, m in zip(prompts, picks, strict=True) if m == "large")
    easy = next(p for p, m in zip(prompts, picks, strict=True) if m == "small")

    def ask(base: str, text: str, **body: Any) -> str:
        status, _, answer = chat(base, model="auto",
                                 messages=[{"role": "user", "content": text}], **body)
        assert status == 200, answer
        return str(answer["model"])

    session = {"x-routecast-session": "conversation-7"}
    with replicas(stub, tmp_path / "rc.db", redis_url, redis_prefix,
                  routers={"auto": fitted},
                  endpoints={"auto": {"type": "routed", "router": "unused"}, "smart": {
                      "type": "cascade", "models": ["small", "large"],
                      "thresholds": [0.8]}}) as urls:
        turns = [ask(urls[0], hard, headers=session), ask(urls[1], easy, headers=session),
                 ask(urls[2], easy, headers=session)]
        by_user = [ask(urls[1], hard, user="alice"), ask(urls[2], easy, user="alice"),
                   ask(urls[0], easy, user="alice")]
        unpinned = ask(urls[2], easy)
        # Agents' conversations (Messages API): keyed by their opening, pinned the same way.
        def agent_turns(endpoint: str, opening: str, then: str) -> list[tuple[str, str, str]]:
            """One conversation's turns, the k-th on replica k: (model, route, reason)."""
            out = []
            for k, base in enumerate(urls):
                history: list[dict[str, Any]] = [{"role": "user", "content": opening}]
                for _ in range(k):
                    history += [{"role": "assistant", "content": "ok"},
                                {"role": "user", "content": then}]
                status, headers, raw = call(base, "POST", "/v1/messages", json.dumps(
                    {"model": endpoint, "max_tokens": 20, "system": "agent",
                     "messages": history}).encode())
                assert status == 200, raw
                out.append((json.loads(raw)["model"], headers["x-routecast-route"],
                            headers["x-routecast-route-reason"]))
                stub.logprob.pop("small", None)
            return out

        messages_turns = agent_turns("auto", hard, easy)
        stub.logprob["small"] = -3.0  # the first turn's small answer is not confident
        cascade_turns = agent_turns("smart", "plan the refactor", "now do it")
    assert turns == ["large"] * 3
    assert by_user == ["large"] * 3
    assert unpinned == "small"
    assert messages_turns == [("large", "large", "conversation-first-turn"),
                              ("large", "large", "conversation-pinned"),
                              ("large", "large", "conversation-pinned")]
    # A cascade conversation that escalated stays escalated on every replica.
    assert cascade_turns == [("large", "small,large", "conversation-first-step"),
                             ("large", "large", "conversation-escalated"),
                             ("large", "large", "conversation-escalated")]
    client = redis.Redis.from_url(redis_url)
    try:
        ttl = client.pttl(f"{redis_prefix}pin:auto:conversation-7")
    finally:
        client.close()
    assert isinstance(ttl, int) and 86_000_000 < ttl <= 86_400_000  # state.pin_ttl_s, 1 day


def test_a_breaker_opened_on_one_replica_is_skipped_by_the_others(
        stub: StubUpstream, tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    flaky = model_entry(dead, "flaky", max_retries=0,
                        breaker={"failure_threshold": 1, "open_s": 30})
    with replicas(stub, tmp_path / "rc.db", redis_url, redis_prefix, models={"flaky": flaky},
                  endpoints={"safe": {"type": "plain", "model": "flaky",
                                      "fallbacks": ["small"]}}) as urls:
        status, first, _ = chat(urls[0], model="safe")
        assert (status, first["x-routecast-route"]) == (200, "flaky,small")  # opens there
        time.sleep(1.2)  # the others poll hints every 0.5 s
        others = [chat(u, model="safe")[1]["x-routecast-route"] for u in urls[1:]]
        _, _, metrics = call(urls[2], "GET", "/metrics")
    assert others == ["small", "small"]  # not asked at all: the hint says it is down
    assert 'routecast_breaker_state{model="flaky"} 1' in metrics.decode()


def test_without_redis_budgets_fail_closed_and_the_rest_is_served(
        stub: StubUpstream, tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    db = tmp_path / "rc.db"
    capped = add_key(db, "capped", budget_usd=1.0)
    free = add_key(db, "free")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy, replicas(stub, db, f"redis://127.0.0.1:{proxy.port}/0",
                                           redis_prefix, n=2, auth={"required": True}) as urls:
        before = chat(urls[0], capped)[0]
        status, _, raw = call(urls[1], "POST", "/v1/chat/completions", json.dumps(
            {"model": "small", "messages": USER, "stream": True}).encode(),
            {"authorization": f"Bearer {capped}"})
        assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
        time.sleep(0.2)  # the stream's settle reaches Redis
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            spent = client.hget(f"{redis_prefix}key:{{{capped.split('-')[1]}}}", "spent")
        finally:
            client.close()
        assert float(str(spent)) == pytest.approx(2 * ANSWER_USD)  # the stream settled too
        proxy.cut()
        down = [chat(u, capped) for u in urls]
        free_down = [chat(u, free)[0] for u in urls]
        proxy.restore()
        time.sleep(1.3)  # the state tries Redis again a second after a failure
        after = [chat(u, capped)[0] for u in urls]
    assert before == 200
    assert [s for s, _, _ in down] == [503, 503]
    for _, headers, body in down:
        assert body["error"]["code"] == "state_unavailable"
        assert "Redis at 127.0.0.1" in body["error"]["message"]
        assert headers["retry-after"] == "1"
    assert free_down == [200, 200]  # a key without budget or rate limit never asks Redis
    assert after == [200, 200]
