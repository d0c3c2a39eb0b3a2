"""What one answer costs on each built-in local model, asked each way, measured live.

Starts llama.cpp servers (one thread each, one request at a time) and asks the built-in tasks:

* **smollm2 chat**: SmolLM2-135M-Instruct through its chat template (how ``routecast serve``
  and the shipped outcomes ask it): it explains, ~18 tokens an answer;
* **smollm2 terse**: SmolLM2 asked completion-style with Gemma's few-shot template and a stop
  at the end of the line, so it answers in a few tokens like Gemma;
* **gemma3**: Gemma 3 270M completion-style (the only way this base model answers);
* optionally (``--logprobs``) each again with token log-probs, on a server that keeps every
  token's logits (llama-cpp-python's ``logits_all``), which a log-prob confidence needs.

For each: accuracy (the task graders), mean output tokens, and the server process's CPU
seconds per answer (from ``/proc``; not wall time, which on a shared machine also measures the
neighbours) with the median wall time. This is the evidence behind the local cascade's
limits: a cascade pays for every step it visits, so it can only be cheaper than always using
one model if its first step is clearly cheaper than that model.

    python -m benchmarks.local_costs [--limit 242] [--logprobs] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from routecast.local import llamacpp
from routecast.local.client import Endpoint, parse_answer
from routecast.local.graders import grade
from routecast.local.models import BUILTIN, GEMMA_TEMPLATE
from routecast.local.tasks import Task, builtin_tasks

SMALL, LARGE = "smollm2-135m", "gemma3-270m"
MAX_TOKENS = 32  # as the shipped outcomes were collected
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ways(base_url: str, model: str, logprobs: bool) -> dict[str, Endpoint]:
    """The ways of asking ``model`` at ``base_url``, by label."""
    if model == LARGE:
        return {"gemma3": BUILTIN[LARGE].endpoint(base_url, max_tokens=MAX_TOKENS,
                                                  logprobs=logprobs)}
    return {"smollm2 chat": BUILTIN[SMALL].endpoint(base_url, max_tokens=MAX_TOKENS,
                                                    logprobs=logprobs),
            "smollm2 terse": Endpoint(model=SMALL, base_url=base_url, api="completion",
                                      template=GEMMA_TEMPLATE, stop=("\n",),
                                      max_tokens=MAX_TOKENS, logprobs=logprobs)}


def _ask(endpoint: Endpoint, prompt: str) -> tuple[str, int, float]:
    """(answer text, output tokens, wall seconds) of one request."""
    request = urllib.request.Request(endpoint.url, data=json.dumps(endpoint.body(prompt)).encode(),
                                     headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with _LOOPBACK.open(request, timeout=endpoint.timeout_s) as r:
        payload = json.loads(r.read())
    answer = parse_answer(endpoint, payload, time.perf_counter() - t0)
    return answer.text, answer.tokens_out, answer.latency_s


def measure(label: str, endpoint: Endpoint, pid: int, tasks: list[Task]) -> dict[str, Any]:
    """Ask every task one at a time; accuracy, tokens, CPU and wall time per answer."""
    _ask(endpoint, "What is 2 + 2? Answer with the number only.")  # the template's prefix cache
    right, tokens, cpu, wall = [], [], [], []
    for task in tasks:
        c0 = _cpu_s(pid)
        text, n_out, w = _ask(endpoint, task.prompt)
        cpu.append(_cpu_s(pid) - c0)
        right.append(grade(task, text))
        tokens.append(n_out)
        wall.append(w)
    n = len(tasks)
    return {"way": label, "logprobs": endpoint.logprobs, "n": n, "accuracy": sum(right) / n,
            "tokens_out": sum(tokens) / n, "cpu_ms": 1000 * sum(cpu) / n,
            "wall_ms_p50": 1000 * statistics.median(wall)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="ask the first N tasks only")
    parser.add_argument("--logprobs", action="store_true",
                        help="also measure each way with token log-probs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    tasks = builtin_tasks(seed=0, per_level=30)[:args.limit]
    rows = []
    for logprobs in ((False, True) if args.logprobs else (False,)):
        for model in (SMALL, LARGE):
            servers = llamacpp.start([BUILTIN[model]], n_threads=1, logprobs=logprobs)
            server = servers[model]
            try:
                for label, endpoint in _ways(server.base_url, model, logprobs).items():
                    row = measure(label, endpoint, server.process.pid, tasks)
                    rows.append(row)
                    print(f"{label:14s} log-probs {'on ' if logprobs else 'off'}  "
                          f"accuracy {row['accuracy']:.3f}  tokens {row['tokens_out']:5.1f}  "
                          f"CPU {row['cpu_ms']:6.0f} ms/answer  wall p50 "
                          f"{row['wall_ms_p50']:5.0f} ms", flush=True)
            finally:
                server.stop()
    gemma = next(r for r in rows if r["way"] == "gemma3" and not r["logprobs"])
    print(f"\n{len(tasks)} tasks, one at a time, one thread per server. CPU per answer "
          "relative to always Gemma (no log-probs):")
    for r in rows:
        print(f"  {r['way']:14s} log-probs {'on ' if r['logprobs'] else 'off'}  "
              f"{r['cpu_ms'] / gemma['cpu_ms']:5.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"tasks": len(tasks), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
