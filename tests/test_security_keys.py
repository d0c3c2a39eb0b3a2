"""Client keys, budgets and rate limits; upstream keys never leak; injection attempts fail."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from routecast.cli import main
from routecast.errors import RequestError
from routecast.server.keys import KeyStore, add_key, list_keys
from tests.http_calls import call
from tests.routecast_live import db_fixture, log_rows, make_config, model_entry, serve, stub_fixture
from tests.stub_upstream import Step, StubUpstream

SECRET = "sk-upstream-4f3e2d1c0b0a99887766"
USER = [{"role": "user", "content": "one two three"}]


def chat(base: str, token: str | None, model: str = "small") -> tuple[int, dict[str, str],
                                                                       dict[str, object]]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    status, h, raw = call(base, "POST", "/v1/chat/completions",
                          json.dumps({"model": model, "messages": USER}).encode(), headers)
    return status, h, json.loads(raw)


stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def tokens(db: Path) -> dict[str, str]:
    # Each `small` answer here costs 6 prompt tokens * 0.1 + 5 completion * 0.4 = 2.6e-6 USD
    # (the stub counts 3 tokens per message plus its words, and answers 5 words).
    return {"free": add_key(db, "free"),
            "poor": add_key(db, "poor", budget_usd=2.6e-6 * 3.5),
            "slow": add_key(db, "slow", rpm=3)}


@pytest.fixture(scope="module")
def server(stub: StubUpstream, db: Path, tokens: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    key_file = tmp_path_factory.mktemp("secrets") / "key"
    key_file.write_text(SECRET + "\n")
    config = make_config(stub.url, db, auth={"required": True},
                         models={"keyed": model_entry(stub.url, "keyed", max_retries=0,
                                                      api_key_file=str(key_file))})
    with serve(config) as url:
        yield url


def test_tokens_are_stored_hashed(db: Path, tokens: dict[str, str]) -> None:
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes()
                             if db.with_name(db.name + "-wal").exists() else b"")
    for token in tokens.values():
        assert token.encode() not in raw and token.split("-", 2)[2].encode() not in raw
    assert {k["name"] for k in list_keys(db)} == {"free", "poor", "slow"}


def test_missing_and_wrong_keys_are_401(server: str, tokens: dict[str, str]) -> None:
    for token in (None, "nope", tokens["free"][:-1] + "x", "rc-00000000-" + "a" * 43):
        status, _, body = chat(server, token)
        assert status == 401, token
        assert body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert chat(server, tokens["free"])[0] == 200
    # Another scheme with a valid token is refused too.
    status, _, _ = call(server, "POST", "/v1/chat/completions", b"{}",
                        {"authorization": f"Basic {tokens['free']}"})
    assert status == 401


def test_budget_stops_a_key_once_spent(server: str, tokens: dict[str, str]) -> None:
    codes = [chat(server, tokens["poor"])[0] for _ in range(6)]
    # 3.5 answers' worth: the 4th is admitted (spent 3 < 3.5), then nothing more.
    assert codes == [200, 200, 200, 200, 429, 429]
    _, _, body = chat(server, tokens["poor"])
    assert body["error"]["code"] == "budget_exceeded"  # type: ignore[index]
    assert chat(server, tokens["free"])[0] == 200  # others are unaffected


def test_rate_limit_is_per_key_with_retry_after(server: str, tokens: dict[str, str]) -> None:
    results = [chat(server, tokens["slow"]) for _ in range(4)]
    assert [r[0] for r in results] == [200, 200, 200, 429]
    assert int(results[-1][1]["retry-after"]) >= 1
    assert results[-1][2]["error"]["code"] == "rate_limited"  # type: ignore[index]


def test_revoked_key_is_refused(db: Path, server: str) -> None:
    token = add_key(db, "temp")
    assert chat(server, token)[0] == 200  # a key added while serving works at once
    main(["keys", "revoke", "temp", "--db", str(db)])
    deadline = asyncio.run(asyncio.sleep(1.3, result=True))  # the server re-reads each second
    assert deadline and chat(server, token)[0] == 401


def test_budget_holds_under_concurrency(tmp_path: Path) -> None:
    """Concurrent admission never lets spend pass the budget by more than what was in flight
    when it ran out: with at most `k` requests in flight, overspend <= k * one request's cost."""
    cost, budget, k = 1.0, 10.5, 8

    async def run() -> tuple[int, float]:
        store = KeyStore(tmp_path / "k.db")
        add_key(store.path, "c", budget_usd=budget)
        store.open()
        key = next(iter(store.keys.values()))
        ok = 0

        async def one() -> None:
            nonlocal ok
            try:
                store.admit(key)
            except RequestError:
                return
            await asyncio.sleep(0.001)  # the upstream call: others are admitted meanwhile
            store.settle(key, cost)
            ok += 1

        for _ in range(5):  # waves of k concurrent requests
            await asyncio.gather(*(one() for _ in range(k)))
        store.close()
        return ok, key.spent_usd

    ok, spent = asyncio.run(run())
    assert spent == ok * cost
    assert budget <= spent <= budget + k * cost
    con = sqlite3.connect(tmp_path / "k.db")
    assert con.execute("SELECT spent_usd FROM api_keys").fetchone()[0] == spent  # flushed


def test_budget_concurrency_through_the_server(server: str, tokens: dict[str, str],
                                               db: Path) -> None:
    # Room for 5.5 answers: admission stops once spend plus the requests in flight (at the
    # key's typical cost) reach the budget, so at least 5 are answered however the burst
    # interleaves with its answers (an exact 5 could round to 4 when they interleave).
    token = add_key(db, "burst", budget_usd=2.6e-6 * 5.5)

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as s:
            async def one() -> int:
                async with s.post(f"{server}/v1/chat/completions",
                                  json={"model": "small", "messages": USER},
                                  headers={"authorization": f"Bearer {token}"}) as r:
                    await r.read()
                    return r.status
            return list(await asyncio.gather(*(one() for _ in range(40))))

    codes = asyncio.run(burst())
    assert set(codes) <= {200, 429} and codes.count(200) >= 5
    assert chat(server, token)[0] == 429  # spent once the burst settled


def test_upstream_key_from_file_is_sent_and_never_leaks(server: str, stub: StubUpstream,
                                                       db: Path, tokens: dict[str, str]) -> None:
    assert chat(server, tokens["free"], "keyed")[0] == 200
    assert stub.received[-1].headers["authorization"] == f"Bearer {SECRET}"
    stub.then(Step(500, message=f"upstream broke; your key {SECRET} was rejected"))
    status, _, body = chat(server, tokens["free"], "keyed")
    assert status == 502 and SECRET not in json.dumps(body) and "***" in json.dumps(body)
    _, _, metrics = call(server, "GET", "/metrics")
    assert SECRET.encode() not in metrics
    rows = log_rows(db, 1, lambda r: r["status"] == 502 and r["endpoint"] == "keyed")
    assert all(SECRET not in json.dumps(r) for r in rows)


def test_path_and_header_injection_are_harmless(server: str, tokens: dict[str, str]) -> None:
    status, headers, raw = call(server, "GET", "/v1/%0d%0aSet-Cookie:%20x=1")
    assert status == 404 and "set-cookie" not in headers
    assert json.loads(raw)["error"]["code"] == "not_found"
    status, _, _ = call(server, "GET", "/v1/../../etc/passwd")
    assert status == 404
    # A header value with CR/LF is refused by the HTTP layer, never reflected.
    with pytest.raises(ValueError, match="header"):
        call(server, "POST", "/v1/chat/completions", b"{}",
             {"x-routecast-session": "a\r\nx-injected: 1"})
    # Header-borne text that reaches the response is the model's name, never client input.
    auth = {"authorization": f"Bearer {tokens['free']}", "x-routecast-session": "<script>"}
    status, headers, _ = call(server, "POST", "/v1/chat/completions",
                              json.dumps({"model": "small", "messages": USER}).encode(), auth)
    assert status == 200 and "<script>" not in json.dumps(headers)
