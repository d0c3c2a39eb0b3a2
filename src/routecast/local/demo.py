"""The demo: ``routecast serve`` with no config, asked real questions through the OpenAI client.

It starts the embedded default (:mod:`routecast.local.default`) as a subprocess on a free port,
picks held-out questions of the built-in task set (the first test-split question of each
category, so nothing is hand-picked), and asks each of them of three endpoints -- ``cascade``,
``auto`` and ``gemma3`` (always the larger model) -- with the official ``openai`` client,
exactly as ``routecast collect`` asked them (one user turn, greedy, 32 tokens at most). For
every answer it shows which model answered (the response's ``model``; the cascade's path from
the ``x-routecast-route`` header), the answer and whether it is right.

What each answer cost is measured, not estimated:

* **time**: wall-clock seconds seen by the client;
* **energy**: the CPU seconds the two llama.cpp server processes spent during the request
  (read from ``/proc``; requests go one at a time, so the difference is the request's), times
  the local profile's ``WATTS_PER_THREAD``. CPU time rather than wall time, because wall time
  on a shared machine also measures its other jobs.

Before each request both model servers are handed an unrelated prompt (not measured), because
llama.cpp keeps the last prompt's tokens: without that, an endpoint asked a question right after
another endpoint asked the same model the same question would find it already read, and look
cheaper than it is.

The summary compares each endpoint with always using Gemma 3 270M on the same questions, and
recalls the replayed figures over every held-out question of the shipped outcomes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routecast.errors import OptionalDependencyError, UpstreamError
from routecast.local.models import WATTS_PER_THREAD
from routecast.local.outcomes import LARGE, SMALL
from routecast.local.tasks import Task
from routecast.processes import stop_process

ENDPOINTS = ("cascade", "auto", "gemma3")
BASELINE = "gemma3"
MAX_TOKENS = 32  # as the shipped outcomes were collected
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Answered:
    """One question asked of one endpoint."""

    endpoint: str
    model: str
    route: tuple[str, ...]
    text: str
    right: bool
    wall_s: float
    cpu_s: float  # of both model servers

    @property
    def energy_j(self) -> float:
        return WATTS_PER_THREAD * self.cpu_s


@dataclass
class DemoResult:
    questions: list[Task]
    answers: dict[str, list[Answered]] = field(default_factory=dict)

    def totals(self, endpoint: str) -> tuple[float, float, float]:
        """(accuracy, total seconds, total joules) of ``endpoint``."""
        rows = self.answers[endpoint]
        return (sum(a.right for a in rows) / len(rows), sum(a.wall_s for a in rows),
                sum(a.energy_j for a in rows))


def pick_questions(n: int | None = None) -> list[Task]:
    """The first test-split question of each category (then the second, ...), ``n`` at most."""
    from routecast.local import outcomes
    from routecast.local.tasks import builtin_tasks

    data = outcomes.load().plain
    by_id = {t.id: t for t in builtin_tasks(seed=0, per_level=30)}
    test = [by_id[i] for i, s in zip(data.ids, data.split, strict=True) if s == "test"]
    columns: dict[str, list[Task]] = {}
    for task in test:
        columns.setdefault(task.category, []).append(task)
    picked: list[Task] = []
    depth = 0
    while len(picked) < len(test) and (n is None or len(picked) < n):
        for tasks in columns.values():
            if depth < len(tasks) and (n is None or len(picked) < n):
                picked.append(tasks[depth])
        depth += 1
    return picked


# -- the server under demonstration --------------------------------------------------------------


class Server:
    """``routecast serve`` (no config) as a subprocess on 127.0.0.1:``port``."""

    def __init__(self, port: int, timeout_s: float = 300.0) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.timeout_s = timeout_s
        # Closed in stop(); a with-block cannot span the server's life.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "routecast.cli", "serve", "--port", str(port),
             "--log-level", "warning"], stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UpstreamError(f"routecast serve exited with status "
                                    f"{self.process.returncode} before it was ready:\n"
                                    f"{self.log()[-2000:]}", model="routecast")
            try:
                with _LOOPBACK.open(f"{self.url}/health", timeout=1.0) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        log = self.log()
        self.stop()
        raise UpstreamError(f"routecast serve was not ready within {self.timeout_s:g}s. Its "
                            f"output ends with:\n{log[-2000:]}", model="routecast")

    def model_pids(self) -> dict[str, int]:
        """The llama.cpp server process of each model (children of the serve process)."""
        return {alias: pid for alias, (pid, _) in self._model_servers().items()}

    def model_urls(self) -> dict[str, str]:
        """The root URL of each model's llama.cpp server."""
        return {alias: f"http://127.0.0.1:{port}"
                for alias, (_, port) in self._model_servers().items()}

    def _model_servers(self) -> dict[str, tuple[int, int]]:
        """Model alias -> (pid, port), read from the model servers' command lines."""
        found: dict[str, tuple[int, int]] = {}
        for child in _children(self.process.pid):
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--model_alias" in argv and b"--port" in argv:
                found[argv[argv.index(b"--model_alias") + 1].decode()] = (
                    child, int(argv[argv.index(b"--port") + 1]))
        return found

    def stop(self) -> None:
        stop_process(self.process, 30)
        self._log.close()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` together."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# -- the demo ------------------------------------------------------------------------------------


def reset_prompt_caches(urls: dict[str, str]) -> None:
    """Leave each model server with an unrelated prompt in its cache (see module docstring):
    Gemma with its few-shot template (as after any other question), SmolLM2 with a greeting."""
    from routecast.local.models import GEMMA_TEMPLATE

    bodies = {LARGE: ("/v1/completions", {"prompt": GEMMA_TEMPLATE.partition("{prompt}")[0],
                                          "max_tokens": 1, "temperature": 0}),
              SMALL: ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                               "max_tokens": 1, "temperature": 0})}
    for model, (path, body) in bodies.items():
        request = urllib.request.Request(f"{urls[model]}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with _LOOPBACK.open(request, timeout=60) as r:
            r.read()


def ask(client: Any, endpoint: str, task: Task, pids: Sequence[int]) -> Answered:
    """Ask ``endpoint`` one question through the OpenAI client; grade and cost the answer."""
    from routecast.local.graders import grade

    cpu0, t0 = cpu_s(pids), time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=endpoint, messages=[{"role": "user", "content": task.prompt}],
        max_tokens=MAX_TOKENS, temperature=0)
    wall = time.perf_counter() - t0
    used = cpu_s(pids) - cpu0
    completion = raw.parse()
    text = completion.choices[0].message.content or ""
    route = tuple(r for r in raw.headers.get("x-routecast-route", "").split(",") if r)
    return Answered(endpoint, completion.model, route or (completion.model,), text.strip(),
                    grade(task, text) > 0.5, wall, used)


def run(n_questions: int | None = 9, *, port: int | None = None,
        say: Callable[[str], None] = print) -> DemoResult:
    """Start the server, ask the questions, stop the server; ``say`` gets progress lines."""
    try:
        import openai
    except ImportError:
        raise OptionalDependencyError("openai", "local", "the demo's client",
                                      hint="pip install 'routecast[local]'") from None
    from routecast.local.llamacpp import free_port

    questions = pick_questions(n_questions)
    result = DemoResult(questions, {e: [] for e in ENDPOINTS})
    say("starting `routecast serve` (no config: SmolLM2-135M and Gemma 3 270M under llama.cpp)")
    t0 = time.perf_counter()
    server = Server(port or free_port())
    try:
        server.wait_ready()
        pids = server.model_pids()
        urls = server.model_urls()
        if set(pids) != {SMALL, LARGE}:
            raise UpstreamError(f"expected the two model servers under routecast serve, found "
                                f"{sorted(pids)}", model="routecast")
        say(f"ready on {server.url}/v1 in {time.perf_counter() - t0:.1f}s")
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                               timeout=120.0)
        for i, task in enumerate(questions, 1):
            say(f"\n[{i}/{len(questions)}] {_short(task.prompt)}   (gold: {task.gold})")
            for endpoint in ENDPOINTS:
                reset_prompt_caches(urls)
                a = ask(client, endpoint, task, list(pids.values()))
                result.answers[endpoint].append(a)
                say(f"  {endpoint:8s} {' -> '.join(a.route):29s} {'right' if a.right else 'wrong'}"
                    f"  {a.wall_s:5.2f} s {a.energy_j:6.1f} J  {_short(a.text, 40)!r}")
    finally:
        server.stop()
    return result


def summary(result: DemoResult) -> list[str]:
    """The closing lines: each endpoint against always Gemma, here and over the test split."""
    from routecast.local import outcomes
    from routecast.local.default import tuned

    n = len(result.questions)
    _, base_s, base_j = result.totals(BASELINE)
    lines = [f"\nOn these {n} questions (measured: wall time, and CPU time of the model servers "
             f"x {WATTS_PER_THREAD:g} W):"]
    for endpoint in ENDPOINTS:
        acc, secs, joules = result.totals(endpoint)
        line = (f"  {endpoint:8s} accuracy {acc:5.0%}  time {secs:6.2f} s  energy "
                f"{joules:7.1f} J")
        if endpoint != BASELINE:
            escalated = sum(len(a.route) > 1 for a in result.answers[endpoint])
            line += (f"  vs always {LARGE}: time {_saved(secs, base_s)}, energy "
                     f"{_saved(joules, base_j)}")
            if endpoint == "cascade":
                line += f"; escalated {escalated}/{n}"
        lines.append(line)
    tuned_cascade, router, policy = tuned()
    lines.append(f"  (the cascade asks {tuned_cascade.cascade.models[0]} first and keeps its "
                 "answer when a learned scorer of the question and answer rates it highly "
                 "enough; no log-probs, which llama-cpp-python computes in Python at 3-14x the "
                 "CPU of the answer)")
    data = outcomes.load()
    rows = outcomes.held_out_report(data, tuned_cascade, router, policy)
    n_test = int((data.plain.split == "test").sum())
    lines.append(f"Replayed over all {n_test} held-out questions of the shipped outcomes "
                 "(energy from the local profile, latency as recorded):")
    base = next(r for r in rows if r.name == f"always {LARGE}")
    width = max(len(r.name) for r in rows)
    for r in rows:
        line = (f"  {r.name:{width}s}  accuracy {r.accuracy:5.1%}  latency {r.latency_s:5.2f} s"
                f"  energy {r.energy_j:5.2f} J")
        if r is not base:
            line += (f"  vs always {LARGE}: accuracy {100 * (r.accuracy - base.accuracy):+.1f} "
                     f"pts, energy {_saved(r.energy_j, base.energy_j)}")
        lines.append(line)
    return lines


def _saved(cost: float, baseline: float) -> str:
    if baseline <= 0:
        return "-"
    change = 1 - cost / baseline
    return f"{change:.0%} saved" if change >= 0 else f"{-change:.0%} more"


def _short(text: str, width: int = 70) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[:width - 3] + "..."
