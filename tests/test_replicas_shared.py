"""Issue 16's "must show": three ``routecast serve`` replicas behind a real HAProxy on this
machine, sharing one PostgreSQL database (request log, keys, labels, published routers) and one
Redis (budgets, rate limits, session pins), keep the guarantees one server gives:

- a key's budget is not overspent beyond the bound docs/state.md states, under a concurrent
  burst that HAProxy spreads over all three;
- a key's rate limit holds for the three together;
- a conversation stays on the model its first turn was routed to, whichever replica answers;
- ``routecast stats --config FILE`` counts every replica's requests;
- a router refitted on one replica is served by all within the poll interval docs/storage.md
  states.

The replicas start once for the module (about 10 s); each test uses keys and endpoints of its
own, so the tests do not see each other's spend, limits or pins.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest

from routecast import Policy, make_router
from routecast.routers.persist import save_router
from routecast.server.keys import add_key
from routecast.server.stats import ALL
from tests.replicas import Replicas
from tests.routecast_live import model_entry
from tests.services import REDIS_URL, haproxy_bin, module_pg_url, module_redis_prefix
from tests.stub_upstream import LiveServer, Step, StubUpstream
from tests.test_learning_server import Grader
from tests.toy import toy_dataset

__all__ = ["haproxy_bin", "module_pg_url", "module_redis_prefix"]  # fixtures, found by name

N = 3
USER = [{"role": "user", "content": "one two three"}]
#: storage.artifact_poll_s of the replicas: how often each looks for a router another published.
POLL_S = 1.0


@dataclass
class Fleet:
    replicas: Replicas
    pg_url: str
    stub: StubUpstream
    grader: Grader
    #: A key without budget or rate limit, for the tests that need neither.
    open_key: str
    #: Prompts the saved router sends to `large` and to `small`.
    hard: str
    easy: str


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def request_id(self) -> str:
        return self.headers["x-routecast-request-id"]


@pytest.fixture(scope="module")
def fleet(module_pg_url: str, module_redis_prefix: str, haproxy_bin: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("shared")
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    save_router(router, folder / "router", policy=policy)
    prompts = list(data.subset("test").prompts)
    picks = router.route(prompts, policy)
    hard = next(p for p, m in zip(prompts, picks, strict=True) if m == "large")
    easy = next(p for p, m in zip(prompts, picks, strict=True) if m == "small")
    open_key = add_key(module_pg_url, "open")  # also creates the schema before the replicas
    grader = Grader()
    learning = {"models": ["small", "large"], "judge": {"model": "grader"}, "first_refit": 6,
                "refit_every": 1000, "spend_fraction": None, "timeout_s": 2.0,
                "max_learned_per_s": 0}
    with StubUpstream() as stub, LiveServer(grader.app, lifespan="off") as judge:
        config = {
            "models": {name: model_entry(stub.url, name) for name in ("small", "medium", "large")}
            | {"grader": model_entry(f"{judge.url}/v1", "grader", max_retries=0)},
            "endpoints": {
                "auto": {"type": "routed", "router": str(folder / "router")},
                "learn": {"type": "routed", "learning": learning},
                "tally": {"type": "plain", "model": "small"},
            },
            "storage": {"url": module_pg_url, "batch_ms": 20, "artifact_poll_s": POLL_S},
            "state": {"redis_url": REDIS_URL, "key_prefix": module_redis_prefix,
                      "replicas": N, "timeout_s": 1.0},
            "auth": {"required": True},
        }
        with Replicas(config, N, haproxy_bin) as replicas:
            replicas.learn_id_prefixes()
            yield Fleet(replicas, module_pg_url, stub, grader, open_key, hard, easy)


def ask(url: str, token: str, *, model: str = "small", text: str | None = None,
        headers: dict[str, str] | None = None) -> Answer:
    """One chat completion on a new connection (so HAProxy balances each one)."""
    messages = USER if text is None else [{"role": "user", "content": text}]
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", method="POST",
        data=json.dumps({"model": model, "messages": messages}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}",
                 **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()},
                          json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read()))


async def burst(url: str, token: str, n: int, *, model: str = "small",
                concurrency: int | None = None) -> list[Answer]:
    """``n`` requests, ``concurrency`` at a time (default: all at once), each on a connection
    of its own."""
    gate = asyncio.Semaphore(concurrency or n)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> Answer:
            async with gate, session.post(
                    f"{url}/v1/chat/completions",
                    json={"model": model, "messages": USER},
                    headers={"authorization": f"Bearer {token}"}) as r:
                return Answer(r.status, {k.lower(): v for k, v in r.headers.items()},
                              await r.json())
        return list(await asyncio.gather(*(one() for _ in range(n))))


def replicas_of(fleet: Fleet, answers: list[Answer]) -> Counter[str | None]:
    return Counter(fleet.replicas.replica_of(a.request_id) for a in answers)


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as pg:
        return list(pg.execute(sql, args))


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def test_a_budget_holds_under_a_concurrent_burst_over_three_replicas(fleet: Fleet) -> None:
    """The documented bound (docs/state.md): a key never spends more than its budget plus the
    cost of the requests in flight when the budget was crossed. With ``C`` clients, at most
    ``C`` are in flight, so spend <= budget + C x (cost of one answer).

    Why this catches a broken share: three replicas each admitting on their own spend would
    each let the key spend its whole budget (each sees only its own third of the spend), so
    the key would spend about 3 x 10.5 answers = 31.5 > 10.5 + 6 = 16.5, the bound."""
    url = fleet.replicas.url
    cost = float(ask(url, fleet.open_key).headers["x-routecast-cost-usd"])  # one answer's cost
    assert cost > 0
    budget, clients = 10.5 * cost, 6
    token = add_key(fleet.pg_url, "burst", budget_usd=budget)
    # Every admitted answer takes 0.2 s upstream, so several are in flight at once.
    fleet.stub.then(*[Step(delay_s=0.2) for _ in range(60)])
    try:
        answers = asyncio.run(burst(url, token, 60, concurrency=clients))
    finally:
        fleet.stub._steps.clear()  # the steps refused requests did not use
    statuses = Counter(a.status for a in answers)
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert set(statuses) == {200, 429}, statuses
    assert {a.body["error"]["code"] for a in refused} == {"budget_exceeded"}
    # HAProxy spread the burst over the three: each admitted and refused requests.
    assert set(replicas_of(fleet, ok)) == {"r0", "r1", "r2"}, replicas_of(fleet, ok)
    assert set(replicas_of(fleet, refused)) == {"r0", "r1", "r2"}
    spent_by_answers = sum(float(a.headers["x-routecast-cost-usd"]) for a in ok)
    assert spent_by_answers == pytest.approx(len(ok) * cost, rel=1e-6)
    assert len(ok) >= 10  # the budget was used, not refused early: 10 answers fit under it
    print(f"\nbudget: {len(ok)} answered of {len(answers)} ({dict(replicas_of(fleet, ok))}), "
          f"spent {spent_by_answers / cost:.2f} answers of a {budget / cost:.1f}-answer budget, "
          f"bound {(budget + clients * cost) / cost:.1f}")
    assert spent_by_answers <= budget + clients * cost + 1e-12, (len(ok), statuses)

    # PostgreSQL agrees: the key's spend (every replica's flushed deltas) equals the request
    # log's costs for the key, and what the clients were told.
    def flushed() -> tuple[float, float] | None:
        (spent,), = query(fleet.pg_url, "SELECT spent_usd FROM api_keys WHERE name = 'burst'")
        (logged, rows), = query(fleet.pg_url, "SELECT coalesce(sum(cost_usd), 0), count(*) "
                                "FROM requests WHERE key_name = 'burst'")
        done = rows == len(answers) and spent == pytest.approx(spent_by_answers, rel=1e-9)
        return (float(spent), float(logged)) if done else None

    spent, logged = wait_for(flushed, 10, "the key's spend and the log rows in PostgreSQL")
    assert logged == pytest.approx(spent, rel=1e-9)
    after = ask(url, token)
    assert after.status == 429 and after.body["error"]["code"] == "budget_exceeded"


def test_a_rate_limit_holds_across_replicas(fleet: Fleet) -> None:
    """rpm 5: of a quick burst of 15 spread over the three, exactly 5 are answered. Replicas
    counting on their own would each admit 5 (all 15)."""
    rpm = 5
    token = add_key(fleet.pg_url, "rpm", rpm=rpm)
    started = time.monotonic()
    answers = asyncio.run(burst(fleet.replicas.url, token, 3 * rpm))
    took = time.monotonic() - started
    assert took < 6  # a token comes back every 12 s: none did during the burst
    ok = [a for a in answers if a.status == 200]
    limited = [a for a in answers if a.status != 200]
    assert len(ok) == rpm, Counter(a.status for a in answers)
    assert {a.status for a in limited} == {429}
    assert {a.body["error"]["code"] for a in limited} == {"rate_limited"}
    assert all(1 <= int(a.headers["retry-after"]) <= 60 // rpm for a in limited)
    assert set(replicas_of(fleet, answers)) == {"r0", "r1", "r2"}, replicas_of(fleet, answers)


def test_a_conversation_stays_on_its_model_whatever_replica_answers(fleet: Fleet) -> None:
    """Nine turns of one session, landing on all three replicas: every turn on the model the
    first turn was routed to (`large`), although the router sends the easy turns, asked
    without the session, to `small`. Without a pin shared in Redis, each replica would route
    the turns it answers afresh (and one that answered no earlier turn has no pin of its own)."""
    url = fleet.replicas.url
    assert ask(url, fleet.open_key, model="auto", text=fleet.easy).body["model"] == "small"
    assert ask(url, fleet.open_key, model="auto", text=fleet.hard).body["model"] == "large"
    session = {"x-routecast-session": "conversation-shared-9"}
    texts = [fleet.hard] + [fleet.easy, fleet.easy, fleet.hard] * 2 + [fleet.easy, fleet.easy]
    turns = [ask(url, fleet.open_key, model="auto", text=t, headers=session) for t in texts]
    assert [t.status for t in turns] == [200] * 9
    assert [t.headers["x-routecast-model"] for t in turns] == ["large"] * 9
    assert set(replicas_of(fleet, turns)) == {"r0", "r1", "r2"}, replicas_of(fleet, turns)


def test_stats_counts_every_replicas_requests(fleet: Fleet) -> None:
    """`routecast stats --config FILE` reads the storage the replicas' config names: it counts
    all 30 requests, not the third one replica answered."""
    sent = 30
    answers = asyncio.run(burst(fleet.replicas.url, fleet.open_key, sent, model="tally",
                                concurrency=6))
    assert [a.status for a in answers] == [200] * sent
    assert set(replicas_of(fleet, answers)) == {"r0", "r1", "r2"}
    wait_for(lambda: query(fleet.pg_url, "SELECT count(*) FROM requests WHERE endpoint = "
                           "'tally'") == [(sent,)], 10, "the tally rows")
    out = subprocess.run(
        [sys.executable, "-m", "routecast.cli", "stats", "--config",
         str(fleet.replicas.config_path), "--json"],
        capture_output=True, text=True, timeout=60, env=fleet.replicas.env)
    assert out.returncode == 0, out.stderr
    rows = {(r["endpoint"], r["model"]): r for r in json.loads(out.stdout)}
    assert rows[("tally", ALL)]["requests"] == sent
    assert rows[("tally", "small")]["requests"] == sent


def router_versions(fleet: Fleet) -> list[int]:
    """Each replica's ``routecast_router_version{endpoint="learn"}``, asked directly."""
    versions = []
    for replica in fleet.replicas.replicas:
        with urllib.request.urlopen(f"{replica.url}/metrics", timeout=5) as r:
            found = re.search(r'routecast_router_version\{endpoint="learn"\} (\d+)',
                              r.read().decode())
        versions.append(int(found.group(1)) if found else -1)
    return versions


def test_a_refit_on_one_replica_is_served_by_all_within_the_poll_interval(
        fleet: Fleet) -> None:
    """Requests to the learning endpoint on one replica (asked directly) are judged (the
    grader) and labelled in PostgreSQL; that replica refits and publishes its router; the
    other two, which saw none of those requests, load it at their next poll
    (``storage.artifact_poll_s``). Each replica's /metrics says which published version it
    serves, and only one version exists: the others loaded it, they did not refit on their
    own. Without publication (or with a poll far longer than the bound) they would stay at 0."""
    assert router_versions(fleet) == [0, 0, 0]
    publisher = fleet.replicas.replicas[0]
    for i in range(12):
        answer = ask(publisher.url, fleet.open_key, model="learn",
                     text=f"question {i} about {i % 4}")
        assert answer.status == 200, answer.body
    wait_for(lambda: router_versions(fleet)[0] >= 1, 30, "r0 to publish its refit")
    wait_for(lambda: router_versions(fleet) == [1, 1, 1], POLL_S + 4.0,
             f"all replicas to serve version 1 (they serve {router_versions(fleet)})")
    everywhere = time.time()
    published = query(fleet.pg_url, "SELECT version, created FROM artifacts "
                      "WHERE endpoint = 'learn'")
    assert [v for v, _ in published] == [1], published  # nobody else refitted
    # From the publisher's commit (its `created` stamp, this machine's clock) to all three
    # serving it: one poll interval plus the time to load it (docs/storage.md). Loading (the
    # labels read since the last poll, the payload, the router) took 0.5-1.3 s here on a
    # loaded 2-core machine; 3 s of slack keeps the test about the poll, not the machine.
    took = everywhere - published[0][1]
    print(f"\nrefit: version 1, published by r0, served by all three {took:.2f} s after it "
          f"was published (poll {POLL_S} s)")
    assert 0 < took < POLL_S + 3.0
