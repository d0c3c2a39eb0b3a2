"""The server's own cost per request, with the network left out.

The ASGI app (`tests/fuzz_app.py`: the real routecast app over in-process echo backends) is
called directly, one chat request at a time, plain and streamed. For each mode it prints:

* the Python and C function calls one request makes, after a warm-up. This count is
  deterministic, so two versions of the code can be compared on a busy machine;
* the thread CPU time per request, as the minimum and the median of ``--rounds`` rounds of
  ``--requests`` requests.

What it leaves out: uvicorn, the sockets, and the upstream client (`proxy_overhead.py`
measures those, with the noise a shared machine adds).

``--learning`` measures a routed endpoint (a router saved from the toy data) instead, with
learning off and on (the same endpoint plus a ``learning:`` block, its judge an echo model
that gives no verdict, so the background intake and explorer run but nothing is refitted);
the app's lifespan runs, so the learning service's tasks are live. It adds the process CPU
(every thread: the explorer plans in a worker thread) and prints the ratios on vs off, for
plain and for streamed requests (a stream to a learning endpoint keeps its chunks and hands the
whole answer to the learning service at its end); ``--chunks N`` makes each streamed answer
N content chunks (default 1), to show the cost per chunk.

    python benchmarks/app_cpu.py [--rounds 5] [--requests 2000] [--learning [--chunks N]]

To compare two versions, run it with each tree first on PYTHONPATH (``src`` and the tree's
root, for ``tests.fuzz_app``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def _one(app: Any, body: bytes, path: str = "/v1/chat/completions") -> None:
    """One request through the ASGI app; returns once the last body part is sent."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {"type": "http", "method": "POST", "path": path,
             "root_path": "", "query_string": b"", "http_version": "1.1", "scheme": "http",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2)}
    await app(scope, receive, send)


async def _measure(rounds: int, requests: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz_app import fuzz_app

    app = fuzz_app()
    for stream in (False, True):
        body = json.dumps({"model": "small", "stream": stream,
                           "messages": [{"role": "user", "content": "hello there"}]}).encode()
        for _ in range(50):
            await _one(app, body)
        counts = {"call": 0, "c_call": 0}

        def profile(frame: FrameType, event: str, arg: Any,
                    counts: dict[str, int] = counts) -> None:
            if event in counts:
                counts[event] += 1

        sys.setprofile(profile)
        await _one(app, body)
        sys.setprofile(None)
        per_request = []
        for _ in range(rounds):
            t0 = time.thread_time()
            for _ in range(requests):
                await _one(app, body)
            per_request.append((time.thread_time() - t0) / requests * 1e6)
        print(f"{'streamed' if stream else 'plain   '}: {counts['call']} Python calls, "
              f"{counts['c_call']} C calls per request; CPU per request "
              f"min {min(per_request):.1f} us, median {statistics.median(per_request):.1f} us")


def _learning_app(workdir: Path, chunks: int = 1) -> Any:
    """The fuzz app with a routed endpoint ``auto`` and the same endpoint learning, ``learn``."""
    from tests.fuzz_app import Echo

    from routecast import Policy, make_router
    from routecast.backends.routed import RoutedBackend
    from routecast.routers.persist import save_router
    from routecast.server.app import create_app
    from routecast.server.config import parse_config
    from routecast.server.endpoints import build_endpoints
    from routecast.testing import toy_dataset

    toy = toy_dataset()
    save_router(make_router("linear").fit(toy.subset("train")), workdir / "router",
                policy=Policy(20.0))
    routed = {"type": "routed", "router": str(workdir / "router")}
    config = parse_config({
        "models": {m: {"base_url": "http://127.0.0.1:9/v1"} for m in toy.models},
        "endpoints": {"auto": routed,
                      "learn": {**routed, "learning": {"judge": {"model": "small"}}}},
        "storage": {"db": None}})
    table = build_endpoints(config)
    echo = {m: Echo(m, chunks) for m in config.models}
    for backend in table.backends.values():
        if isinstance(backend, RoutedBackend):
            backend.backends.update({m: echo[m] for m in backend.backends})
    table.backends.update(echo)
    table.members = list(echo.values())
    return create_app(config, table=table)


async def _lifespan(app: Any) -> Any:
    """Start ``app``'s lifespan (the learning service's tasks); returns the shutdown."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    message = await outbox.get()
    assert message["type"] == "lifespan.startup.complete", message

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


async def _measure_learning(rounds: int, requests: int, chunks: int) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        app = _learning_app(Path(tmp), chunks)
        stop = await _lifespan(app)
        results: dict[tuple[bool, str], tuple[int, float, float]] = {}
        bodies = {(stream, name): json.dumps({"model": name, "stream": stream, "messages": [
            {"role": "user", "content": "an easy question about the weather"}]}).encode()
            for stream in (False, True) for name in ("auto", "learn")}
        for body in bodies.values():
            for _ in range(50):
                await _one(app, body)
        for key, body in bodies.items():
            await asyncio.sleep(0.5)  # the background idle again before each count
            calls = {"call": 0}

            def profile(frame: FrameType, event: str, arg: Any,
                        calls: dict[str, int] = calls) -> None:
                if event == "call":
                    calls["call"] += 1

            sys.setprofile(profile)
            await _one(app, body)
            await asyncio.sleep(0)  # the intake's turn for this request
            sys.setprofile(None)
            thread, process = [], []
            for _ in range(rounds):
                t0, p0 = time.thread_time(), time.process_time()
                for _ in range(requests):
                    await _one(app, body)
                await asyncio.sleep(0.05)  # let the background catch up inside the round
                thread.append((time.thread_time() - t0) / requests * 1e6)
                process.append((time.process_time() - p0) / requests * 1e6)
            results[key] = (calls["call"], statistics.median(thread),
                            statistics.median(process))
        await stop()
    for (stream, name), (calls_n, thread_us, process_us) in results.items():
        label = ("streamed " if stream else "plain    ") + (
            "learning on " if name == "learn" else "learning off")
        print(f"{label}: {calls_n} Python calls per request; CPU per request median "
              f"{thread_us:.1f} us (event-loop thread), {process_us:.1f} us (process)")
    for stream in (False, True):
        on, off = results[stream, "learn"], results[stream, "auto"]
        print(f"{'streamed' if stream else 'plain   '} ratio on/off: calls "
              f"{on[0] / off[0]:.2f}, thread CPU {on[1] / off[1]:.2f} "
              f"(+{on[1] - off[1]:.1f} us), process CPU {on[2] / off[2]:.2f} "
              f"(+{on[2] - off[2]:.1f} us)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--learning", action="store_true",
                        help="a routed endpoint with learning off vs on (see above)")
    parser.add_argument("--chunks", type=int, default=1,
                        help="content chunks per streamed answer, with --learning (default 1)")
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error(f"--chunks must be at least 1, not {args.chunks}")
    asyncio.run(_measure_learning(args.rounds, args.requests, args.chunks) if args.learning
                else _measure(args.rounds, args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
