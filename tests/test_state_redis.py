"""Shared state in a real Redis, replica by replica: each :class:`RedisState` here stands for
one server process (its own connections and its own copy of the key), as in production.

Key admission is atomic across replicas (a burst over three admits exactly what one process
would), the budget bound of :mod:`routecast.state.redis_state` holds, reservations of a dead
replica expire, settles survive an outage, pins are first-writer-wins with an idle expiry,
breaker hints reach the other replicas, and an unreachable Redis fails closed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis

from routecast.backends.health import CircuitBreaker
from routecast.errors import ConfigError, RequestError
from routecast.server.app import create_app
from routecast.server.config import Config
from routecast.server.endpoints import EndpointTable
from routecast.server.keys import ClientKey, RateLimitedError
from routecast.state import (
    LocalState,
    RedisState,
    StateUnavailableError,
    check_shared_state,
    make_state,
)
from tests.routecast_live import make_config
from tests.services import redis_prefix, redis_url
from tests.stub_upstream import closed_port
from tests.tcp_proxy import TcpProxy

__all__ = ["redis_prefix", "redis_url"]  # fixtures, used by name

T = TypeVar("T")


def key(budget: float | None = None, rpm: int | None = None, key_id: str = "0badc0de",
        spent: float = 0.0) -> ClientKey:
    """One replica's copy of a client key (each server process loads its own)."""
    return ClientKey(key_id, "team", b"salt", b"hash", budget, spent, rpm)


def replicas(url: str, prefix: str, n: int = 3, **kw: Any) -> list[RedisState]:
    """``n`` replicas' states (a timeout for a busy test machine, not the 0.25 s default)."""
    return [RedisState(url, prefix=prefix, **{"timeout_s": 1.0, **kw}) for _ in range(n)]


def run(states: list[RedisState], body: Callable[[], Awaitable[T]]) -> T:
    """Start ``states``, run ``body``, close them, in one event loop."""
    async def go() -> T:
        for state in states:
            await state.start()
        try:
            return await body()
        finally:
            for state in states:
                await state.aclose()
    return asyncio.run(go())


def hget(url: str, prefix: str, key_id: str, field: str) -> str | None:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        value = client.hget(f"{prefix}key:{{{key_id}}}", field)
        return value if isinstance(value, str) else None
    finally:
        client.close()


async def admitted(state: RedisState, k: ClientKey) -> str | None:
    """The reservation, or ``None`` when refused for the budget."""
    try:
        return await state.admit_key(k)
    except RequestError as e:
        if e.code != "budget_exceeded":
            raise
        return None


def test_a_burst_over_three_replicas_admits_exactly_what_one_process_would(
        redis_url: str, redis_prefix: str) -> None:
    """Cost 1 a request, budget 10.5: admission holds spend plus what is in flight (at the
    typical cost, 1) below the budget, so exactly 11 requests are admitted however 60
    concurrent clients on three replicas interleave. A read-modify-write race would admit
    more."""
    states = replicas(redis_url, redis_prefix)
    copies = [key(budget=10.5) for _ in states]
    count = 0

    async def body() -> int:
        nonlocal count
        first = await states[0].admit_key(copies[0])  # the key's cost becomes known
        assert first is not None
        states[0].settle_key(copies[0], first, 1.0)
        await states[0].flush_settles()
        count = 1

        async def client(state: RedisState, k: ClientKey, rng: random.Random) -> None:
            nonlocal count
            while (reservation := await admitted(state, k)) is not None:
                count += 1
                await asyncio.sleep(rng.uniform(0, 0.005))  # the upstream call
                state.settle_key(k, reservation, 1.0)
        rng = random.Random(7)
        await asyncio.gather(*(client(states[i % 3], copies[i % 3], random.Random(rng.random()))
                               for i in range(60)))
        for state in states:
            await state.flush_settles()
        return count

    assert run(states, body) == 11
    assert float(hget(redis_url, redis_prefix, "0badc0de", "spent") or "nan") == 11.0


def test_the_budget_bound_holds_where_the_estimate_fails(redis_url: str,
                                                         redis_prefix: str) -> None:
    """A key with no known cost yet admits a whole burst (12 requests over three replicas,
    budget 2.5); the third settle crosses the budget with 10 requests in flight (that one
    included). The documented bound: spend <= budget + the cost of those, and nothing is
    admitted from the crossing on."""
    states = replicas(redis_url, redis_prefix)
    copies = [key(budget=2.5) for _ in states]

    async def body() -> tuple[float, list[bool]]:
        held = [(s, k, await s.admit_key(k)) for _ in range(4) for s, k in zip(states, copies,
                                                                               strict=True)]
        assert all(r is not None for _, _, r in held)  # nothing known: all admitted
        refused_before: list[bool] = []
        in_flight_at_crossing = 0.0
        spent = 0.0
        for n, (state, k, reservation) in enumerate(held):
            assert reservation is not None
            if spent < 2.5 <= spent + 1.0:  # this settle crosses the budget
                in_flight_at_crossing = float(len(held) - n)
            state.settle_key(k, reservation, 1.0)
            await state.flush_settles()
            spent += 1.0
            probe = states[n % 3]
            refused_before.append(await admitted(probe, copies[n % 3]) is None)
        assert in_flight_at_crossing == 10.0
        final = float(hget(redis_url, redis_prefix, "0badc0de", "spent") or "nan")
        assert final == spent == 12.0
        assert final <= 2.5 + in_flight_at_crossing * 1.0
        return final, refused_before

    _, refused = run(states, body)
    assert all(refused), refused  # spent + in flight at the typical cost >= budget each time


def test_reservations_of_a_dead_replica_expire(redis_url: str, redis_prefix: str) -> None:
    """A replica that dies with a request in flight never settles it; its reservation stops
    counting when it expires (``limits.deadline_s`` + grace in the server; 0.4 s here)."""
    dead, alive = replicas(redis_url, redis_prefix, 2, hold_s=0.4)
    k_dead, k_alive = key(budget=1.5), key(budget=1.5)

    async def body() -> tuple[bool, bool]:
        learned = await alive.admit_key(k_alive)
        assert learned is not None
        alive.settle_key(k_alive, learned, 1.0)  # spent 1, typical 1
        await alive.flush_settles()
        assert await dead.admit_key(k_dead) is not None  # then the replica dies
        blocked = await admitted(alive, k_alive) is None  # 1 + 1 in flight >= 1.5
        await asyncio.sleep(0.5)
        return blocked, await admitted(alive, k_alive) is not None

    blocked, later = run([dead, alive], body)
    assert blocked and later


def test_spend_is_seeded_from_the_database_once(redis_url: str, redis_prefix: str) -> None:
    """Redis starts from the key's spend in the database (what KeyStore loaded), and from
    then on counts settles: a replica with an older database view cannot reset it."""
    a, b = replicas(redis_url, redis_prefix, 2)

    async def body() -> None:
        reservation = await a.admit_key(key(budget=10.0, spent=4.0))
        assert reservation is not None
        a.settle_key(key(budget=10.0, spent=4.0), reservation, 0.5)
        await a.flush_settles()
        stale = key(budget=10.0, spent=0.0)  # loaded before anything was spent
        assert await b.admit_key(stale) is not None

    run([a, b], body)
    assert float(hget(redis_url, redis_prefix, "0badc0de", "spent") or "nan") == 4.5


def test_rate_limit_holds_across_replicas(redis_url: str, redis_prefix: str) -> None:
    states = replicas(redis_url, redis_prefix)
    copies = [key(rpm=6) for _ in states]

    async def body() -> tuple[int, list[float]]:
        ok, waits = 0, []
        for i in range(12):
            try:
                reservation = await states[i % 3].admit_key(copies[i % 3])
            except RateLimitedError as e:
                waits.append(e.retry_after_s)
                continue
            assert reservation is not None
            states[i % 3].settle_key(copies[i % 3], reservation, 0.0)
            ok += 1
        return ok, waits

    ok, waits = run(states, body)
    assert ok == 6  # the bucket holds 6 (one minute's worth), shared by the three
    assert len(waits) == 6 and all(0 < w <= 10.0 for w in waits)  # a token every 10 s


def test_pins_first_writer_wins_and_expire_when_idle(redis_url: str, redis_prefix: str
                                                     ) -> None:
    a, b = replicas(redis_url, redis_prefix, 2, pin_ttl_s=0.3)

    async def body() -> list[str | None]:
        seen = [await a.get_pin("auto", "conv-1")]
        # Two replicas route the first turn at once and disagree: the first writer wins.
        seen.append(await a.pin("auto", "conv-1", "large"))
        seen.append(await b.pin("auto", "conv-1", "small"))
        seen.append(await b.get_pin("auto", "conv-1"))
        long = "x" * 500  # a long session key (an end-user id) is hashed, still shared
        await a.pin("auto", long, "medium")
        seen.append(await b.get_pin("auto", long))
        seen.append(await b.get_pin("other-endpoint", "conv-1"))  # pins are per endpoint
        await asyncio.sleep(0.2)
        seen.append(await a.get_pin("auto", "conv-1"))  # a turn: the idle expiry restarts
        await asyncio.sleep(0.2)
        seen.append(await b.get_pin("auto", "conv-1"))  # 0.4 s after the pin, 0.2 idle
        await asyncio.sleep(0.4)
        seen.append(await b.get_pin("auto", "conv-1"))  # idle past the TTL: gone
        return seen

    assert run([a, b], body) == [None, "large", "large", "large", "medium", None, "large",
                                 "large", None]


def test_a_cascade_step_only_grows(redis_url: str, redis_prefix: str) -> None:
    a, b = replicas(redis_url, redis_prefix, 2)
    local = LocalState()

    async def body() -> list[str | None]:
        seen = []
        for state in (a, local):
            await state.raise_step("cascade:smart", "c", 1)
            await (b if state is a else local).raise_step("cascade:smart", "c", 0)
            seen.append(await (b if state is a else local).get_pin("cascade:smart", "c"))
            await state.raise_step("cascade:smart", "c", 2)
            seen.append(await state.get_pin("cascade:smart", "c"))
        return seen

    assert run([a, b], body) == ["1", "2", "1", "2"]


class _Leaf:
    """What attach() reads of an HTTP backend: its model and breaker."""

    def __init__(self, model: str, breaker: CircuitBreaker) -> None:
        self.model, self.breaker, self.models = model, breaker, (model,)


def test_a_breaker_that_opens_on_one_replica_is_open_on_all(redis_url: str,
                                                           redis_prefix: str) -> None:
    a, b = replicas(redis_url, redis_prefix, 2, poll_s=0.05)
    breaker_a = CircuitBreaker(failure_threshold=2, open_s=0.6)
    breaker_b = CircuitBreaker(failure_threshold=2, open_s=0.6)
    for state, breaker in ((a, breaker_a), (b, breaker_b)):
        leaf: Any = _Leaf("flaky", breaker)
        state.attach(EndpointTable({"flaky": leaf}, {}, {}, [leaf]))

    async def body() -> list[str]:
        states: list[str] = [breaker_b.state]
        breaker_a.failure()
        breaker_a.failure()  # opens on replica a, which publishes the hint
        await asyncio.sleep(0.25)
        states += [breaker_a.state, breaker_b.state, str(breaker_b.acquire())]
        await asyncio.sleep(0.6)  # past open_s: the hint is gone
        states.append(breaker_b.state)
        return states

    assert run([a, b], body) == ["closed", "open", "open", "False", "closed"]
    assert breaker_b.opened_total == 0  # a hint is not this replica's own opening


def test_a_hint_never_closes_a_breaker_and_ends_by_itself() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, open_s=5.0, clock=lambda: now[0])
    seen: list[object] = []
    breaker.hint_open(2.0)
    seen += [breaker.state, breaker.available, breaker.retry_in_s()]
    now[0] = 2.5
    seen += [breaker.state, breaker.acquire()]
    breaker.failure()  # opens by itself for 5 s; a shorter hint changes nothing
    breaker.hint_open(1.0)
    now[0] = 6.0
    seen.append(breaker.state)
    now[0] = 7.6
    seen.append(breaker.state)
    assert seen == ["open", False, 2.0, "closed", True, "open", "half_open"]


def test_redis_unreachable_fails_closed_fast(redis_prefix: str) -> None:
    """Admission answers 503 (``state_unavailable``) rather than admit unchecked; after a
    failure it does not wait on Redis again for a second. Pins fall back to this replica."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    state = RedisState(url, prefix=redis_prefix, timeout_s=0.2)

    async def body() -> tuple[list[str], float, list[str | None]]:
        statuses = []
        t0 = time.perf_counter()
        for _ in range(20):
            try:
                await state.admit_key(key(budget=1.0))
            except StateUnavailableError as e:
                statuses.append(f"{e.status} {'Redis at 127.0.0.1' in str(e)} "
                                f"{e.retry_after_s}")
        elapsed = time.perf_counter() - t0
        pins = [await state.pin("auto", "c", "large"), await state.get_pin("auto", "c")]
        await state.client.aclose()
        return statuses, elapsed, pins

    statuses, elapsed, pins = asyncio.run(body())
    assert statuses == ["503 True 1.0"] * 20
    assert elapsed < 0.5  # one connection attempt, not twenty
    assert pins == ["large", "large"]

    async def start() -> None:
        await state.start()

    with pytest.raises(ConfigError, match=r"cannot reach Redis at 127\.0\.0\.1:\d+/0.*Fix"):
        asyncio.run(start())


def test_settles_wait_out_an_outage(redis_url: str, redis_prefix: str) -> None:
    """A request that finishes while Redis is down keeps its spend: the settle is retried
    until Redis answers, and its reservation counts in flight meanwhile."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        state = RedisState(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix,
                           timeout_s=0.2, poll_s=0.1)
        k = key(budget=10.0)

        async def body() -> list[Any]:
            reservation = await state.admit_key(k)
            assert reservation is not None
            proxy.cut()
            state.settle_key(k, reservation, 2.0)
            await state.flush_settles()
            waiting = len(state._settles)
            proxy.restore()
            await asyncio.sleep(1.5)  # the back-off ends, the poller writes it
            return [waiting, len(state._settles)]

        assert run([state], body) == [1, 0]
    assert float(hget(redis_url, redis_prefix, "0badc0de", "spent") or "nan") == 2.0


def test_local_state_admits_as_the_key_store_does() -> None:
    now = [0.0]
    state = LocalState(clock=lambda: now[0])
    k = key(budget=2.0, rpm=2)
    k._tokens, k._refilled = 2.0, 0.0

    async def body() -> list[str]:
        out = []
        for _ in range(3):
            try:
                out.append(str(await state.admit_key(k)))
            except RequestError as e:
                out.append(str(e.code))
        return out

    assert asyncio.run(body()) == ["None", "None", "rate_limited"]
    assert k.in_flight == 2
    pins = asyncio.run(state.pin("auto", "c", "large")), asyncio.run(state.pin("auto", "c", "x"))
    assert pins == ("large", "large")


def test_more_than_one_replica_needs_redis() -> None:
    def config(**extra: Any) -> Config:
        return make_config("http://127.0.0.1:9/v1", None, **extra)

    with pytest.raises(ConfigError, match=r"state\.replicas is 3 but state\.redis_url is not "
                                          r"set.*Fix: set state\.redis_url"):
        check_shared_state(config(state={"replicas": 3}))
    with pytest.raises(ConfigError, match=r"state\.replicas is 3 but state\.redis_url"):
        create_app(config(state={"replicas": 3}), env={})  # refused before anything starts
    with pytest.raises(ConfigError, match="RC_REDIS is not set"):
        check_shared_state(config(state={"replicas": 3, "redis_url_env": "RC_REDIS"}), env={})
    assert check_shared_state(config(state={"replicas": 3, "redis_url_env": "RC_REDIS"}),
                              env={"RC_REDIS": "redis://r:6379/0"}) == "redis://r:6379/0"
    assert isinstance(make_state(config()), LocalState)
    shared = make_state(config(limits={"deadline_s": 60},
                               state={"redis_url": "redis://r:6379/0", "key_prefix": "p:"}))
    assert isinstance(shared, RedisState) and shared.hold_ms == 90_000
    asyncio.run(shared.client.aclose())


def test_an_unreachable_redis_is_refused_at_start_up() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    config = make_config("http://127.0.0.1:9/v1", None, state={"redis_url": url})
    with pytest.raises(ConfigError, match=r"cannot reach Redis at 127\.0\.0\.1.*Fix: start "
                                          r"Redis there, or correct state\.redis_url"):
        create_app(config, env={})
