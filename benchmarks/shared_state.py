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

Then the same through the whole server app (the real routecast ASGI app over in-process echo
backends, called directly, no sockets: ``tests/fuzz_app.py``'s backends), one chat request at a
time: without auth (the baseline), with a key that has a budget and an ``rpm`` on the local
state, and on Redis; per request, the median latency and this thread's CPU over ``--rounds``
rounds, and what each adds to the baseline.

    python benchmarks/shared_state.py [--redis redis://127.0.0.1:6379/0] [--ops 2000]
        [--rounds 5] [--concurrency 32]

Requests whose key has no budget and no rate limit (and servers without ``auth.required``)
never call the state: they pay nothing here.

Every Redis figure is measured for several clients in the same run: redis-py's pure-Python
reply parser with settles written as soon as they come (``py``: the client before the settle
linger), then with the settle writer's linger of
:data:`~routecast.state.redis_state.SETTLE_LINGER_S` (``py+linger``, what the server runs),
and where ``hiredis`` is installed (redis-py then parses replies in C) the same two with it
(``hi``, ``hi+linger``); the script prints each one's saving against ``py``.
(``benchmarks/redis_client.py`` measures the same choices as interleaved A/B rounds, the
steadier figure on a busy machine.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from routecast.server.keys import ClientKey
from routecast.state import LocalState, RedisState, SharedState, redis_state

ROOT = Path(__file__).resolve().parents[1]


def _key() -> ClientKey:
    key = ClientKey(secrets.token_hex(4), "bench", b"", b"", 1e12, 0.0, 10**9)
    key._tokens, key._refilled = 1e9, time.monotonic()
    return key


Client = tuple[str, Any, float]  # label, redis-py parser class, settle linger (s)


def _clients() -> list[Client]:
    """The Redis clients to compare (see the module docstring)."""
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
    from redis.utils import HIREDIS_AVAILABLE

    linger = redis_state.SETTLE_LINGER_S
    out: list[Client] = [("py", _AsyncRESP2Parser, 0.0), ("py+linger", _AsyncRESP2Parser, linger)]
    if HIREDIS_AVAILABLE:
        out += [("hi", _AsyncHiredisParser, 0.0), ("hi+linger", _AsyncHiredisParser, linger)]
    return out


@contextlib.contextmanager
def _client(parser_class: Any, linger_s: float) -> Iterator[None]:
    """Every RedisState made (and used) inside uses ``parser_class`` for its connections and
    lingers ``linger_s`` before writing settles."""
    real, real_linger = redis_state._client, redis_state.SETTLE_LINGER_S

    def client(url: str, timeout_s: float, max_connections: int) -> Any:
        made = real(url, timeout_s, max_connections)
        made.connection_pool.connection_kwargs["parser_class"] = parser_class
        return made

    redis_state._client, redis_state.SETTLE_LINGER_S = client, linger_s
    try:
        yield
    finally:
        redis_state._client, redis_state.SETTLE_LINGER_S = real, real_linger


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


async def _app_request(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One chat request through the ASGI app; its status."""
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return sent.pop() if sent else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "root_path": "", "query_string": b"", "http_version": "1.1", "scheme": "http",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()), *headers],
             "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2)}
    await app(scope, receive, send)
    return status


async def _serve_app(app: Any, requests: int, rounds: int, headers: list[tuple[bytes, bytes]]
                     ) -> tuple[float, float]:
    """(median latency, median CPU) per request, in microseconds, with the app's lifespan."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message"))
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await queue.put({"type": "lifespan.startup"})
    life = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send))
    await started.wait()
    body = json.dumps({"model": "small",
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    try:
        for _ in range(200):  # warm-up
            assert await _app_request(app, body, headers) == 200
        lat, cpu = [], []
        for _ in range(rounds):
            c0 = time.thread_time()
            for _ in range(requests):
                t0 = time.perf_counter()
                await _app_request(app, body, headers)
                lat.append(time.perf_counter() - t0)
            cpu.append((time.thread_time() - c0) / requests)
        return statistics.median(lat) * 1e6, statistics.median(cpu) * 1e6
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await life


def _through_the_app(args: argparse.Namespace, prefix: str,
                     clients: list[Client]) -> dict[str, tuple[float, float]]:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz_app import Echo

    from routecast.backends.base import Price
    from routecast.server.app import create_app
    from routecast.server.config import parse_config
    from routecast.server.endpoints import EndpointTable
    from routecast.server.keys import add_key

    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "rc.db"
        token = add_key(db, "bench", budget_usd=1e9, rpm=10**9)
        auth = [(b"authorization", f"Bearer {token}".encode())]
        redis = {"auth": {"required": True},
                 "state": {"redis_url": args.redis, "key_prefix": prefix}}
        variants: list[tuple[str, dict[str, Any], list[tuple[bytes, bytes]], Client | None]] = [
            ("no auth (baseline)", {}, [], None),
            ("budget key, local", {"auth": {"required": True}}, auth, None),
            *((f"budget key, {c[0]}", redis, auth, c) for c in clients),
        ]
        for name, extra, headers, variant in variants:
            doc = {"models": {m: {"base_url": "http://127.0.0.1:9/v1"}
                              for m in ("small", "large")},
                   "storage": {"db": str(db), "batch_ms": 50}, **extra}
            cfg = parse_config(doc)
            backends: dict[str, Any] = {m: Echo(m) for m in cfg.models}
            table = EndpointTable(backends, {m: Price() for m in backends},
                                  {m: m for m in backends}, list(backends.values()))
            with (_client(*variant[1:]) if variant else contextlib.nullcontext()):
                app = create_app(cfg, table=table)
                out[name] = asyncio.run(_serve_app(app, args.ops, args.rounds, headers))
    return out


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
    clients = _clients()
    try:
        local = asyncio.run(_measure(LocalState(), args))
        shared: dict[str, dict[str, dict[str, float]]] = {}
        for label, parser_class, linger_s in clients:
            with _client(parser_class, linger_s):
                shared[label] = asyncio.run(_measure(RedisState(args.redis, prefix=prefix),
                                                     args))
        app = _through_the_app(args, prefix, clients)
    finally:
        _cleanup(args.redis, prefix)
    print(f"{'operation':<16}{'state':<11}{'p50 us':>9}{'p99 us':>9}{'CPU us':>9}"
          f"{'Redis CPU us':>14}{'ops/s (' + str(args.concurrency) + ' clients)':>22}")
    for name in local:
        rows = [("local", local[name]), *((label, shared[label][name]) for label in shared)]
        for label, row in rows:
            per_s = f"{row['per_s']:,.0f}" if "per_s" in row else ""
            print(f"{name:<16}{label:<11}{row['p50_us']:>9.1f}{row['p99_us']:>9.1f}"
                  f"{row['cpu_us']:>9.1f}{row['redis_cpu_us']:>14.1f}{per_s:>22}")
        a, py = local[name], shared["py"][name]
        print(f"{'':<16}{'py/local':<11}{py['p50_us'] / a['p50_us']:>8.0f}x{'':>9}"
              f"{py['cpu_us'] / a['cpu_us']:>8.0f}x   (+{py['p50_us'] - a['p50_us']:.0f} us "
              f"latency, +{py['cpu_us'] - a['cpu_us']:.0f} us CPU per operation)")
        for label in list(shared)[1:]:
            b = shared[label][name]
            print(f"{'':<16}{label + '/py':<11}{b['p50_us'] / py['p50_us']:>8.2f}x{'':>9}"
                  f"{b['cpu_us'] / py['cpu_us']:>8.2f}x   ({b['cpu_us'] - py['cpu_us']:+.0f} us "
                  f"CPU per operation)")
    print(f"\nthrough the app, one request at a time ({args.ops} x {args.rounds}):")
    print(f"{'variant':<22}{'p50 us':>9}{'CPU us':>9}{'+ latency':>11}{'+ CPU':>9}")
    base_lat, base_cpu = app["no auth (baseline)"]
    for name, (lat, cpu) in app.items():
        print(f"{name:<22}{lat:>9.1f}{cpu:>9.1f}{lat - base_lat:>+11.1f}{cpu - base_cpu:>+9.1f}")


if __name__ == "__main__":
    main()
