"""Fault suite: routecast in front of upstreams that misbehave, on loopback.

Each fault is a raw TCP server that breaks HTTP in one way (so the faults are exact, not what a
framework allows). For each, a client asks the faulty model directly and through an endpoint
with a healthy fallback, plain and streamed, and the table says what the client saw, how long
it took against the bound, and whether anything hung::

    .venv/bin/python -m benchmarks.fault_suite [--deadline-s 3] [--first-token-timeout-s 1]
                                               [--min-read-bytes-per-s 1024] [--only trickle]

The bound of a request is ``limits.deadline_s``; "hung" means no complete answer within the
bound plus one second (the client's own timeout is far longer). "handed over" is when the
guarded endpoint's answer came from its fallback: a trickling upstream (a byte a second) never
trips the read timeout, so only the first-token budget (streams) and the minimum read rate
(whole answers) can hand it over in time; ``--first-token-timeout-s 0`` and
``--min-read-bytes-per-s 0`` switch them off, to show what happens without them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from tests.stub_upstream import LiveServer, StubUpstream, closed_port

from routecast.server.app import create_app
from routecast.server.config import parse_config

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CHUNK = ('{"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
         '"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}')


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    body = await reader.readexactly(length)
    return dict(json.loads(body))


def _response(status: int, body: bytes, extra: str = "",
              ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode() + body


def fault(kind: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            body = await _read_request(reader)
            stream = bool(body.get("stream"))
            if kind == "timeout":
                await asyncio.sleep(3600)
            elif kind == "429 Retry-After":
                writer.write(_response(429, b'{"error":{"message":"slow down"}}',
                                       "retry-after: 1\r\n"))
            elif kind in ("500", "502", "503"):
                writer.write(_response(int(kind), b'{"error":{"message":"boom"}}'))
            elif kind == "malformed JSON":
                if stream:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"connection: close\r\n\r\ndata: {not json\n\n")
                else:
                    writer.write(_response(200, b'{"choices": [ oops'))
            elif kind == "reset mid-stream":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"connection: close\r\n\r\n")
                for _ in range(3):
                    writer.write(f"data: {CHUNK}\n\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.05)
                if not stream:
                    writer.write(b"{partial")
                writer.transport.abort()  # RST, not FIN
                return
            elif kind == "trickle 1 B/s":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"connection: close\r\n\r\n")
                for byte in f"data: {CHUNK}\n\n".encode() * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The server stopping cancels a "timeout" handler that is still hanging; ending
            # quietly here keeps asyncio from logging the cancelled connection's traceback.
            pass
        finally:
            writer.close()

    return handle


class FaultServer:
    """A raw TCP server in its own thread and loop."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = closed_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self.handler, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:  # a trickle may still be sending: stop it inside its own loop
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> FaultServer:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


FAULTS = ["timeout", "429 Retry-After", "500", "502", "503", "connection refused",
          "reset mid-stream", "trickle 1 B/s", "malformed JSON"]


async def ask(url: str, model: str, stream: bool, bound_s: float) -> tuple[str, float, bool]:
    """(what the client saw, seconds, hung)."""
    t0 = time.perf_counter()
    payload = {"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "hello world"}]}
    try:
        timeout = aiohttp.ClientTimeout(total=bound_s + 1)
        async with aiohttp.ClientSession(timeout=timeout) as s, \
                s.post(f"{url}/v1/chat/completions", json=payload) as r:
            raw = await r.read()
        elapsed = time.perf_counter() - t0
        seen = f"{r.status}"
        if r.status == 200 and stream:
            events = [json.loads(line[6:]) for line in raw.decode().splitlines()
                      if line.startswith("data: {")]
            last = events[-1] if events else {}
            if "error" in last:
                seen = f"200 stream + error event ({last['error']['code']})"
            elif raw.rstrip().endswith(b"[DONE]"):
                seen = f"200 stream, answered by {last.get('routecast', {}).get('model')}"
        elif r.status == 200:
            seen = f"200, answered by {json.loads(raw)['model']}"
        else:
            seen = f"{r.status} {json.loads(raw)['error']['code']}"
        return seen, elapsed, False
    except TimeoutError:
        return "no answer", time.perf_counter() - t0, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadline-s", type=float, default=3.0)
    parser.add_argument("--first-token-timeout-s", type=float, default=1.0,
                        help="models' first_token_timeout_s (0: the read timeout, 1.5 s)")
    parser.add_argument("--min-read-bytes-per-s", type=float, default=1024.0,
                        help="models' min_read_bytes_per_s (0: no minimum)")
    parser.add_argument("--only", default="", help="run only faults whose name contains this")
    args = parser.parse_args()
    bound = args.deadline_s
    rows: list[tuple[str, str, str, float, bool]] = []
    with StubUpstream() as good:
        for kind in [k for k in FAULTS if args.only in k]:
            if kind == "connection refused":
                base, server = f"http://127.0.0.1:{closed_port()}/v1", None
            else:
                server = FaultServer(fault(kind)).__enter__()
                base = f"http://127.0.0.1:{server.port}/v1"
            common = {"max_retries": 2, "backoff_s": 0.05, "max_backoff_s": 0.2,
                      "connect_timeout_s": 1.0, "read_timeout_s": 1.5,
                      "first_token_timeout_s": args.first_token_timeout_s or None,
                      "min_read_bytes_per_s": args.min_read_bytes_per_s}
            config = parse_config({
                "models": {"faulty": {"base_url": base, **common},
                           "good": {"base_url": good.url, **common}},
                "endpoints": {"guarded": {"type": "plain", "model": "faulty",
                                          "fallbacks": ["good"]}},
                "storage": {"db": None}, "limits": {"deadline_s": bound}})
            with LiveServer(create_app(config, env={})) as live:
                for endpoint in ("faulty", "guarded"):
                    for stream in (False, True):
                        seen, elapsed, hung = asyncio.run(ask(live.url, endpoint, stream,
                                                              bound))
                        rows.append((kind, f"{endpoint}{' (stream)' if stream else ''}",
                                     seen, elapsed, hung))
            if server is not None:
                server.__exit__()
    print(f"deadline_s = {bound:g}; retries 2 (backoff 0.05 s), read timeout 1.5 s, first-token "
          f"budget {args.first_token_timeout_s or 1.5:g} s, minimum read rate "
          f"{args.min_read_bytes_per_s:g} B/s; 'guarded' falls back to a healthy model")
    print(f"{'fault':<20} {'asked':<18} {'client saw':<52} {'s':>6}  within bound  hung  "
          "handed over")
    for kind, asked, seen, elapsed, hung in rows:
        ok = "yes" if elapsed <= bound + 0.25 else "NO"
        handed = ("-" if not asked.startswith("guarded")
                  else "yes" if seen.endswith("answered by good") else "NO")
        print(f"{kind:<20} {asked:<18} {seen:<52} {elapsed:6.2f}  {ok:<12}  "
              f"{'YES' if hung else 'no':<4}  {handed}")
    guarded = [r for r in rows if r[1].startswith("guarded")]
    print(f"requests: {len(rows)}, hung: {sum(r[4] for r in rows)}, over the bound: "
          f"{sum(r[3] > bound + 0.25 for r in rows)}; guarded requests answered by the "
          f"fallback: {sum(r[2].endswith('answered by good') for r in guarded)} of "
          f"{len(guarded)}")


if __name__ == "__main__":
    main()
