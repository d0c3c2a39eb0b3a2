"""What sharing state in Redis adds to a request, against the in-process state, in one run.

For key admission (a key with a budget and a rate limit: the only requests that touch Redis)
and for session pins, each state (:class:`~routecast.state.LocalState`, then
:class:`~routecast.state.RedisState` on ``--redis``) runs the same operations, and the script
prints per operation:

* latency: the median and 99th percentile of one awaited call, one client at a time;
* CPU of this process per operation (thread CPU over a round, background settle writes
  included), the median of ``--rounds`` rounds: what a replica pays;
* Redis's own CPU per operation (``INFO cpu`` before and after), for the Redis sizing;
* throughput with ``--concurrency`` clients on one event loop (admission + settle);

and the ratios Redis / local. An admitted request costs one admission (one EVALSHA round trip)
and one settle (queued; written in pipelines by a background task).

    python benchmarks/shared_state.py [--redis redis://127.0.0.1:6379/0] [--ops 2000]
        [--rounds 5] [--concurrency 32]

Requests whose key has no budget and no rate limit (and servers without ``auth.required``)
never call the state: they pay nothing here.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from routecast.server.keys import ClientKey
from routecast.state import LocalState, RedisState, SharedState


def _key() -> ClientKey:
    key = ClientKey(secrets.token_hex(4), "bench", b"", b"", 1e12, 0.0, 10**9)
    key._tokens, key._refilled = 1e9, time.monotonic()
    return key


async def _admission(state: SharedState, key: ClientKey) -> None:
    reservation = await state.admit_key(key)
    if reservation is not None:
        state.settle_key(key, reservation, 1e-6)
    key.in_flight = 0


async def _drain(state: SharedState) -> None:
    if isinstance(state, RedisState):
        await state.flush_settles()


async def _latencies(op: Callable[[int], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await op(i)
        out.append(time.perf_counter() - t0)
    return out


async def _cpu_per_op(op: Callable[[int], Awaitable[Any]], state: SharedState, n: int,
                      rounds: int) -> float:
    per = []
    for r in range(rounds):
        c0 = time.thread_time()
        for i in range(n):
            await op(r * n + i)
        await _drain(state)
        per.append((time.thread_time() - c0) / n)
    return statistics.median(per)


async def _throughput(state: SharedState, n: int, concurrency: int) -> float:
    keys = [_key() for _ in range(concurrency)]

    async def client(key: ClientKey) -> None:
        for _ in range(n // concurrency):
            await _admission(state, key)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in keys))
    await _drain(state)
    return (n // concurrency) * concurrency / (time.perf_counter() - t0)


def _redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


async def _measure(state: SharedState, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    await state.start()
    try:
        key = _key()
        sessions = [f"s{i}" for i in range(args.ops)]
        for s in sessions:  # pins to read back
            await state.pin("bench", s, "large")
        ops: dict[str, Callable[[int], Awaitable[Any]]] = {
            "admit+settle": lambda i: _admission(state, key),
            "pin get (hit)": lambda i: state.get_pin("bench", sessions[i % len(sessions)]),
            "pin set (new)": lambda i: state.pin("bench", f"new-{i}-{secrets.token_hex(3)}",
                                                 "small"),
        }
        out: dict[str, dict[str, float]] = {}
        for name, op in ops.items():
            await _latencies(op, min(200, args.ops))  # warm-up
            lat = sorted(await _latencies(op, args.ops))
            redis_before = _redis_cpu(args.redis) if isinstance(state, RedisState) else 0.0
            cpu = await _cpu_per_op(op, state, args.ops, args.rounds)
            redis_cpu = ((_redis_cpu(args.redis) - redis_before) / (args.ops * args.rounds)
                         if isinstance(state, RedisState) else 0.0)
            out[name] = {"p50_us": lat[len(lat) // 2] * 1e6,
                         "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
                         "cpu_us": cpu * 1e6, "redis_cpu_us": redis_cpu * 1e6}
        out["admit+settle"]["per_s"] = await _throughput(state, args.ops * 2, args.concurrency)
        return out
    finally:
        await state.aclose()


def _cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    prefix = f"routecast-bench-{secrets.token_hex(4)}:"
    try:
        local = asyncio.run(_measure(LocalState(), args))
        shared = asyncio.run(_measure(RedisState(args.redis, prefix=prefix), args))
    finally:
        _cleanup(args.redis, prefix)
    print(f"{'operation':<16}{'state':<7}{'p50 us':>9}{'p99 us':>9}{'CPU us':>9}"
          f"{'Redis CPU us':>14}{'ops/s (' + str(args.concurrency) + ' clients)':>22}")
    for name in local:
        for label, row in (("local", local[name]), ("redis", shared[name])):
            per_s = f"{row['per_s']:,.0f}" if "per_s" in row else ""
            print(f"{name:<16}{label:<7}{row['p50_us']:>9.1f}{row['p99_us']:>9.1f}"
                  f"{row['cpu_us']:>9.1f}{row['redis_cpu_us']:>14.1f}{per_s:>22}")
        a, b = local[name], shared[name]
        print(f"{'':<16}{'ratio':<7}{b['p50_us'] / a['p50_us']:>8.0f}x{'':>9}"
              f"{b['cpu_us'] / a['cpu_us']:>8.0f}x   (Redis / local; "
              f"+{b['p50_us'] - a['p50_us']:.0f} us latency, "
              f"+{b['cpu_us'] - a['cpu_us']:.0f} us CPU per operation)")


if __name__ == "__main__":
    main()
