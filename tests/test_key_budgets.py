"""Client key budgets hold for slow requests, concurrent bursts and streams.

The server reloads its key table every second; a request that outlives a reload must still
settle its cost where the next admission reads it (and where the flush writes it to SQLite).
Admission counts requests in flight at the key's typical cost, so a burst stops where the
budget runs out. Each test has its own key on one server over a stub upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from routecast.server.keys import add_key, list_keys
from tests.http_calls import call
from tests.routecast_live import db_fixture, make_config, serve, stub_fixture
from tests.stub_upstream import Step, StubUpstream

USER = [{"role": "user", "content": "one two three"}]
#: What one `small` answer to USER costs: 6 prompt tokens at 0.1 and 5 completion tokens at 0.4
#: USD per million (the stub counts 3 tokens per message plus its words, and answers 5 words).
ANSWER_USD = 2.6e-6

stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def tokens(db: Path) -> dict[str, str]:
    return {"slow": add_key(db, "slow", budget_usd=ANSWER_USD / 2),
            "burst": add_key(db, "burst", budget_usd=ANSWER_USD * 2.5),
            "stream": add_key(db, "stream", budget_usd=ANSWER_USD / 2)}


@pytest.fixture(scope="module")
def server(stub: StubUpstream, db: Path, tokens: dict[str, str]) -> Iterator[str]:
    with serve(make_config(stub.url, db, auth={"required": True})) as url:
        yield url


def chat(base: str, token: str, stream: bool = False) -> tuple[int, bytes]:
    body = json.dumps({"model": "small", "messages": USER, "stream": stream}).encode()
    status, _, raw = call(base, "POST", "/v1/chat/completions", body,
                          {"authorization": f"Bearer {token}"})
    return status, raw


def spent_in_db(db: Path, name: str, at_least: float, timeout_s: float = 4.0) -> float:
    """The key's spend as flushed to SQLite, once it reaches ``at_least``."""
    deadline = time.monotonic() + timeout_s
    while True:
        spent = next(float(str(k["spent_usd"])) for k in list_keys(db) if k["name"] == name)
        if spent >= at_least or time.monotonic() > deadline:
            return spent
        time.sleep(0.1)


def test_slow_request_is_charged_and_the_next_refused(server: str, stub: StubUpstream,
                                                      tokens: dict[str, str], db: Path) -> None:
    stub.then(Step(delay_s=1.6))  # outlives at least one reload of the key table
    status, _ = chat(server, tokens["slow"])
    assert status == 200
    status, raw = chat(server, tokens["slow"])
    assert status == 429, raw
    assert json.loads(raw)["error"]["code"] == "budget_exceeded"
    assert spent_in_db(db, "slow", ANSWER_USD * 0.99) == pytest.approx(ANSWER_USD, rel=1e-6)


def test_concurrent_burst_stops_where_the_budget_runs_out(server: str, stub: StubUpstream,
                                                          tokens: dict[str, str]) -> None:
    assert chat(server, tokens["burst"])[0] == 200  # one answer: the key's cost is known
    stub.then(Step(delay_s=1.2), Step(delay_s=1.2))  # the admitted ones overlap the rest

    async def burst() -> list[int]:
        headers = {"authorization": f"Bearer {tokens['burst']}"}
        payload = {"model": "small", "messages": USER}
        async with aiohttp.ClientSession() as session:
            async def one() -> int:
                async with session.post(f"{server}/v1/chat/completions", json=payload,
                                        headers=headers) as r:
                    await r.read()
                    return r.status
            return list(await asyncio.gather(*(one() for _ in range(6))))

    statuses = asyncio.run(burst())
    # Spent 1 answer of 2.5: two more fit in flight (1 + 2 < 2.5 + 1), the other four wait.
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429], statuses
    assert chat(server, tokens["burst"])[0] == 429  # 3 answers spent of 2.5


def test_streamed_request_is_charged_when_it_ends(server: str, stub: StubUpstream,
                                                  tokens: dict[str, str], db: Path) -> None:
    stub.then(Step(chunk_delay_s=0.35))  # 5 chunks: ~1.75 s, across a reload
    status, raw = chat(server, tokens["stream"], stream=True)
    assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
    status, raw = chat(server, tokens["stream"], stream=True)
    assert status == 429, raw
    assert spent_in_db(db, "stream", ANSWER_USD * 0.99) == pytest.approx(ANSWER_USD, rel=1e-6)
