"""The server's own cost per request, with the network left out.

The ASGI app (`tests/fuzz_app.py`: the real routecast app over in-process echo backends) is
called directly, one chat request at a time, plain and streamed. For each mode it prints:

* the Python and C function calls one request makes, after a warm-up. This count is
  deterministic, so two versions of the code can be compared on a busy machine;
* the thread CPU time per request, as the minimum and the median of ``--rounds`` rounds of
  ``--requests`` requests.

What it leaves out: uvicorn, the sockets, and the upstream client (`proxy_overhead.py`
measures those, with the noise a shared machine adds).

    python benchmarks/app_cpu.py [--rounds 5] [--requests 2000]

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


async def _one(app: Any, body: bytes) -> None:
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

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    asyncio.run(_measure(args.rounds, args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
