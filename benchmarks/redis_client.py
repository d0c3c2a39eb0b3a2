"""What the Redis client's choices cost a replica, measured as interleaved A/B runs (the
steadier figure on a busy machine than one pass each): redis-py's reply parser in Python
against ``hiredis`` (C), and the settle writer's linger
(:data:`~routecast.state.redis_state.SETTLE_LINGER_S`) against writing each settle at once.

Each round runs every variant once, in turn, on a fresh :class:`RedisState`; the script prints
the median over ``--rounds`` rounds of this thread's CPU per operation (background settle
writes included) and the ratio to the first variant:

* admission: one EVALSHA (``admit_key``);
* pin read: one GETEX (``get_pin``);
* admission + settle, one request at a time: what a request on a key with a budget costs a
  replica (the settle queued, written by the background task), and how many settles shared
  each pipeline.

    python benchmarks/redis_client.py [--redis redis://127.0.0.1:6379/0] [--ops 1500]
        [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from typing import Any

from routecast.server.keys import ClientKey
from routecast.state import RedisState, redis_state

Variant = tuple[str, Any, float]  # label, redis-py parser class, settle linger (s)


def variants() -> list[Variant]:
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
    from redis.utils import HIREDIS_AVAILABLE

    out: list[Variant] = [("python parser, no linger", _AsyncRESP2Parser, 0.0)]
    if HIREDIS_AVAILABLE:
        out += [("hiredis, no linger", _AsyncHiredisParser, 0.0),
                ("hiredis, linger", _AsyncHiredisParser, redis_state.SETTLE_LINGER_S)]
    else:
        print("(hiredis is not installed: `pip install hiredis` to compare it)")
        out.append(("python parser, linger", _AsyncRESP2Parser, redis_state.SETTLE_LINGER_S))
    return out


async def measure(url: str, variant: Variant, ops: int) -> dict[str, float]:
    _, parser_class, linger_s = variant
    real = redis_state.SETTLE_LINGER_S
    redis_state.SETTLE_LINGER_S = linger_s
    state = RedisState(url, prefix=f"routecast-bench-{secrets.token_hex(4)}:")
    state.client.connection_pool.connection_kwargs["parser_class"] = parser_class
    pipelines = 0
    real_pipeline = state.client.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return real_pipeline(*args, **kwargs)

    state.client.pipeline = counted  # type: ignore[method-assign]
    key = ClientKey(secrets.token_hex(4), "bench", b"", b"", 1e12, 0.0, None)
    try:
        await state.start()
        for _ in range(200):  # warm-up: connections, script cache
            await state.admit_key(key)
        await state.pin("bench", "s", "large")
        out: dict[str, float] = {}
        c0 = time.thread_time()
        for _ in range(ops):
            await state.admit_key(key)
        out["admission"] = (time.thread_time() - c0) / ops
        c0 = time.thread_time()
        for _ in range(ops):
            await state.get_pin("bench", "s")
        out["pin read"] = (time.thread_time() - c0) / ops
        await state.flush_settles()
        pipelines = 0
        c0 = time.thread_time()
        for _ in range(ops):
            reservation = await state.admit_key(key)
            assert reservation is not None
            state.settle_key(key, reservation, 1e-6)
        await state.flush_settles()
        out["admission + settle"] = (time.thread_time() - c0) / ops
        out["settles per pipeline"] = ops / max(pipelines, 1)
        await state.client.delete(*state._keys(key.id), state._pin_key("bench", "s"))
        return out
    finally:
        await state.aclose()
        redis_state.SETTLE_LINGER_S = real


async def run(args: argparse.Namespace) -> None:
    chosen = variants()
    results: dict[str, list[dict[str, float]]] = {v[0]: [] for v in chosen}
    for _ in range(args.rounds):
        for variant in chosen:
            results[variant[0]].append(await measure(args.redis, variant, args.ops))
    first = chosen[0][0]
    metrics = ("admission", "pin read", "admission + settle")
    print(f"median of {args.rounds} interleaved rounds x {args.ops} operations; "
          "CPU of this thread per operation, us (ratio to the first line)")
    print(f"{'variant':<28}" + "".join(f"{m:>24}" for m in metrics)
          + f"{'settles/pipeline':>18}")
    base = {m: statistics.median(r[m] for r in results[first]) for m in metrics}
    for label, rows in results.items():
        cells = ""
        for m in metrics:
            value = statistics.median(r[m] for r in rows)
            cells += f"{value * 1e6:>15.1f} ({value / base[m]:.2f}x)"
        per = statistics.median(r["settles per pipeline"] for r in rows)
        print(f"{label:<28}{cells}{per:>18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
