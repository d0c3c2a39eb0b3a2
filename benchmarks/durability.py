"""What ``storage.durable`` costs: latency with each row committed before its response is
sent, against the default batched log, through a real server on loopback::

    .venv/bin/python -m benchmarks.durability [--requests 2000]

Prints p50 / p99 latency and throughput at concurrency 1 and 16 for both settings.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from tests.stub_upstream import LiveServer, StubUpstream

from routecast.server.app import create_app
from routecast.server.config import parse_config


async def run(url: str, n: int, concurrency: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def worker(k: int) -> None:
            for _ in range(k):
                t0 = time.perf_counter()
                async with session.post(f"{url}/v1/chat/completions", json={
                        "model": "small", "messages": [{"role": "user", "content": "hi"}]}) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return (latencies[len(latencies) // 2] * 1000, latencies[int(0.99 * len(latencies))] * 1000,
            len(latencies) / wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with StubUpstream() as stub, tempfile.TemporaryDirectory() as tmp:
        for durable in (False, True):
            config = parse_config({
                "models": {"small": {"base_url": stub.url}},
                "storage": {"db": str(Path(tmp) / f"d{durable}.db"), "durable": durable}})
            with LiveServer(create_app(config, env={})) as live:
                asyncio.run(run(live.url, 100, 4))  # warm up
                for concurrency in (1, 16):
                    p50, p99, rps = asyncio.run(run(live.url, args.requests, concurrency))
                    print(f"durable={durable!s:<5} concurrency {concurrency:>2}: "
                          f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rps:7.1f} req/s")


if __name__ == "__main__":
    main()
