"""Soak: a steady request rate through a routed endpoint while one backend fails a third of
its requests.

Three processes on loopback: an upstream (aiohttp, answers at once; model ``medium`` fails one
request in three with a 500), ``routecast serve`` with a routed endpoint (a linear router on the
toy dataset choosing among small / medium / large, each with fallbacks), and this load
generator sending requests at a fixed rate (open loop: a slow server does not slow the
arrivals). It prints errors by kind, p50 / p99 latency, and the server's resident memory at
start and end with its trend (least-squares slope over the run)::

    .venv/bin/python -m benchmarks.soak [--duration-s 600] [--rate 200]

Errors a fallback could have avoided are every error: each model has a healthy fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from tests.stub_upstream import closed_port


def upstream_main(port: int, failing: str) -> None:
    """The upstream process: answers at once; ``failing`` fails one request in three."""
    from aiohttp import web

    count = Counter[str]()

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        model = body["model"]
        count[model] += 1
        if model == failing and count[model] % 3 == 0:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"{model} says hi"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def write_setup(folder: Path, upstream: str) -> Path:
    from tests.toy import toy_dataset

    from routecast import Policy, make_router
    from routecast.routers.persist import save_router

    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    save_router(router, folder / "router", policy=policy)
    prices = {"small": (0.1, 0.4), "medium": (1.0, 4.0), "large": (10.0, 30.0)}
    config = {
        "models": {m: {"base_url": upstream, "input_usd_per_mtok": i, "output_usd_per_mtok": o,
                       "max_retries": 0, "read_timeout_s": 5,
                       "breaker": {"failure_threshold": 5, "open_s": 2}}
                   for m, (i, o) in prices.items()},
        "endpoints": {"auto": {"type": "routed", "router": "router",
                               "fallbacks": ["small", "large"]}},
        "storage": {"db": "soak.db", "batch_ms": 200},
        "limits": {"deadline_s": 10},
    }
    path = folder / "routecast.yaml"
    path.write_text(json.dumps(config))
    return path


async def load(url: str, rate: float, duration_s: float, pid: int
               ) -> tuple[list[float], Counter[str], list[tuple[float, float]], Counter[str]]:
    prompts = [f"question {i}: " + " ".join(random.choice(["easy", "hard", "maths", "poem",
                                                              "code", "sum"])
                                             for _ in range(6)) for i in range(500)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    models: Counter[str] = Counter()
    rss: list[tuple[float, float]] = []
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/chat/completions", json={
                        "model": "auto",
                        "messages": [{"role": "user", "content": prompts[i % 500]}]}) as r:
                    raw = await r.read()
                    if r.status == 200:
                        models[r.headers.get("x-routecast-route", "?")] += 1
                    else:
                        errors[f"{r.status} {json.loads(raw)['error']['code']}"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as e:
                errors[type(e).__name__] += 1
                return
            latencies.append(time.perf_counter() - t0)

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        i = 0
        next_rss = 0.0
        while (now := time.perf_counter() - start) < duration_s:
            due = int(now * rate)
            while i < due:
                task = asyncio.create_task(one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if now >= next_rss:
                rss.append((now, rss_kib(pid) / 1024))
                next_rss += 5.0
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        rss.append((time.perf_counter() - start, rss_kib(pid) / 1024))
    return latencies, errors, rss, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--upstream", nargs=2, metavar=("PORT", "FAILING"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        upstream_main(int(args.upstream[0]), args.upstream[1])
        return
    up_port, port = closed_port(), closed_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.soak",
                                           "--upstream", str(up_port), "medium"]))
            config = write_setup(Path(tmp), f"http://127.0.0.1:{up_port}/v1")
            server = subprocess.Popen([sys.executable, "-m", "routecast.cli", "serve",
                                       "--config", str(config), "--port", str(port),
                                       "--log-level", "error"])
            procs.append(server)
            url = f"http://127.0.0.1:{port}"
            _wait(url)
            latencies, errors, rss, routes = asyncio.run(
                load(url, args.rate, args.duration_s, server.pid))
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)
    n = len(latencies) + sum(errors.values())
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(f"soak: {args.duration_s:g} s at {args.rate:g} req/s through routed endpoint 'auto' "
          "(medium fails 1 in 3; fallbacks small, large)")
    print(f"requests {n}, answered {len(latencies)} ({len(latencies) / args.duration_s:.1f}/s), "
          f"errors {sum(errors.values())}: {dict(errors) or 'none'}")
    print(f"latency p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    print("routes: " + ", ".join(f"{k} {v}" for k, v in routes.most_common()))
    half = [p for p in rss if p[0] >= args.duration_s / 2]
    print(f"server RSS: start {rss[0][1]:.1f} MiB, end {rss[-1][1]:.1f} MiB, "
          f"trend {slope(rss) * 60:+.3f} MiB/min over the run, "
          f"{slope(half) * 60:+.3f} MiB/min over its second half")


def _wait(url: str, timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("routecast serve did not come up")



if __name__ == "__main__":
    main()
