"""What the server's capability check costs per request, against work every request already does.

For each kind of request it times, in this process, on one thread:

* **baseline**: parsing the request body from JSON (``routecast.server.wire.parse_json``), which
  every request pays before the check runs;
* **check**: ``CapabilityCheck.check`` for a routed endpoint of three models with declared
  capabilities (text-only 8k, vision 32k with tools, everything 128k): deriving the request's
  needs and ruling models out. It is a coroutine that awaits nothing unless a tokenizer must be
  asked (none is declared here), so it is driven with ``send(None)``, without an event loop.

Kinds: a plain text question (one message of ~1,500 characters, RouterBench-sized), a five-turn
text conversation, the question with an image part, with tools, with a json_schema response
format, and a conversation of ~40,000 characters (near the smallest window). The plain kinds
take the fast path; the others the full analysis. Every figure is the median over
``--repeats`` rounds of ``--n`` calls, in microseconds per request (CPU time of this thread),
with the check's ratio to the baseline. The target: under 50 us (0.05 ms) for plain text.

    python benchmarks/capability_check.py [--n 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from routecast.capabilities import Capabilities
from routecast.server.capability_check import CapabilityCheck, Verdict
from routecast.server.wire import parse_json

MODELS = ("text-8k", "vision-32k", "all-128k")
CHECK = CapabilityCheck({
    "text-8k": Capabilities(context_window=8192, max_output_tokens=4096),
    "vision-32k": Capabilities(frozenset({"text", "image"}), True, frozenset({"json_object"}),
                               32768, 8192),
    "all-128k": Capabilities(frozenset({"text", "image", "audio"}), True,
                             frozenset({"json_object", "json_schema"}), 131072, 16384),
})
QUESTION = ("Summarise the following passage in two sentences and say which claim is the "
            "weakest. " + "The committee met on a Tuesday to review the budget. " * 26)


def kinds() -> dict[str, dict[str, Any]]:
    """Request bodies, by kind."""
    user = {"role": "user", "content": QUESTION}
    turns = [{"role": "system", "content": "You are a concise assistant."},
             {"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Paris."},
             {"role": "user", "content": "And of Italy?"},
             {"role": "assistant", "content": "Rome."}, user]
    image = {"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"summary": {"type": "string"}}}}}
    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": QUESTION}
            for i in range(27)]
    base = {"model": "auto", "max_tokens": 256}
    return {
        "plain text, 1 message": {**base, "messages": [user]},
        "plain text, 6 messages": {**base, "messages": turns},
        "image part": {**base, "messages": [image]},
        "tools": {**base, "messages": [user], "tools": tools},
        "json_schema": {**base, "messages": [user], "response_format": schema},
        "long conversation (~40k chars)": {**base, "messages": long},
    }


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - t0) / n / 1000


def run_check(body: dict[str, Any]) -> Callable[[], tuple[object, Verdict | None]]:
    def call() -> tuple[object, Verdict | None]:
        coro = CHECK.check(body, "chat", MODELS, None, "auto")
        try:
            coro.send(None)
        except StopIteration as done:
            allowed, verdict = done.value
            return allowed, verdict
        raise RuntimeError("the check awaited something: a tokenizer was asked")
    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print(f"{'request':32} {'parse us':>9} {'check us':>9} {'check/parse':>11}  excluded")
    for kind, body in kinds().items():
        raw = json.dumps(body).encode()
        check = run_check(body)
        verdict = check()[1]
        parse_us: list[float] = []
        check_us: list[float] = []
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            parse_us.append(per_call_us(partial(parse_json, raw), args.n))
            check_us.append(per_call_us(check, args.n))
        p, c = statistics.median(parse_us), statistics.median(check_us)
        excluded = "-" if verdict is None else verdict.header()
        rows.append({"kind": kind, "parse_us": p, "check_us": c, "excluded": excluded})
        print(f"{kind:32} {p:9.2f} {c:9.2f} {c / p:11.2f}  {excluded}")
    plain = max(float(r["check_us"]) for r in rows if str(r["kind"]).startswith("plain"))
    print(f"\nverdict: the check of a plain text request costs {plain:.2f} us "
          f"({'under' if plain < 50 else 'OVER'} the 50 us target)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"n": args.n, "repeats": args.repeats, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
