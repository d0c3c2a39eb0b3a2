"""What the routecast server adds on top of the model server it forwards to.

Six targets, each sent the same requests (RouterBench test prompts), plain and streamed:

* **direct**: straight to a stub OpenAI-compatible server (a few lines of raw asyncio that
  answer at once with a canned completion, so the stub costs as little as possible);
* **plain**: through ``routecast serve`` to that stub, a plain endpoint (one model);
* **routed**: through ``routecast serve``, a routed endpoint with the TF-IDF linear router
  fitted on the RouterBench subset's train split (policy: 95 % of the best single model's
  quality, calibrated on validation), every model served by the stub;
* **messages** and **responses**: the plain endpoint again, asked through routecast's
  Anthropic Messages API (``/v1/messages``) and OpenAI Responses API (``/v1/responses``), which
  routecast translates to chat and back (a Responses answer is also stored, for
  ``previous_response_id``), next to the chat request of the **plain** row;
* **learning**: the same routed endpoint with a ``learning:`` block (the saved router as its
  prior, the active explorer paced to 20 % of the strongest model's cost, a stub model as the
  judge): the background loop shadows and judges while the load runs, on the same core. The
  verdict compares its added p50 with the routed endpoint's (learning off): within 0.1 ms.

The proxy runs pinned to one core (``taskset -c 1``); the stub and the load generator share the
other (``taskset -c 0``). Load comes from ``wrk`` (Debian: ``apt-get install wrk``): at
concurrency 1 its latency percentiles give the added p50/p99; at higher concurrency its
requests/s give the maximum throughput. The proxy's CPU time per request comes from
``/proc/PID/stat``, the part spent routing from its ``/metrics``
(``routecast_routing_seconds_total``), and its memory from ``/proc/PID/status``.

Latency on a shared machine is noisy, so the concurrency-1 runs are repeated (``--repeats``,
the targets interleaved in each round) and every figure of the table is the median over
the rounds; the added p50 of a round is measured against the direct run of the same round. The
last lines give the verdict against the targets: added p50 at concurrency 1 at most 1 ms,
proxy RSS under 150 MB.

    python benchmarks/proxy_overhead.py [--duration 5] [--repeats 3] [--concurrency 64]
                                        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routerbench-subset"
STREAM_CHUNKS = 20
#: The issue's targets: added p50 latency at concurrency 1, and the proxy's resident memory.
TARGET_ADDED_P50_MS = 1.0
TARGET_RSS_MIB = 150.0
#: Learning on vs off (issue 11): the routed endpoint's added p50 may grow by at most this.
TARGET_LEARNING_P50_MS = 0.1

# -- the stub upstream (runs in its own process: `proxy_overhead.py --stub PORT`) ------------


def _canned() -> tuple[bytes, bytes]:
    """A plain chat completion and an SSE stream (20 content chunks, usage, [DONE])."""
    usage = {"prompt_tokens": 50, "completion_tokens": STREAM_CHUNKS, "total_tokens": 70,
             "prompt_tokens_details": {"cached_tokens": 10}}
    text = " ".join(["word"] * STREAM_CHUNKS)
    body = json.dumps({"id": "chatcmpl-stub", "object": "chat.completion", "created": 0,
                       "model": "stub", "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant",
                                                                 "content": text}}],
                       "usage": usage}).encode()
    plain = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(body)).encode() + b"\r\n\r\n" + body)
    events = []
    for i in range(STREAM_CHUNKS):
        chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0,
                 "model": "stub", "choices": [{"index": 0, "delta": {"content": "word "},
                                               "finish_reason": None if i < STREAM_CHUNKS - 1
                                               else "stop"}]}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: " + json.dumps({"id": "chatcmpl-stub", "object":
                                          "chat.completion.chunk", "created": 0, "model":
                                          "stub", "choices": [], "usage": usage}).encode()
                  + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    chunked = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events) + b"0\r\n\r\n"
    stream = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    return plain, stream


class _StubProtocol(asyncio.Protocol):
    plain, stream = _canned()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            streamed = b'"stream":true' in body or b'"stream": true' in body
            self.transport.write(self.stream if streamed else self.plain)


def stub_main(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(
            _StubProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# -- set-up ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def prepare(data: str, workdir: Path, stub_port: int, *, ui: bool = True) -> dict[str, Any]:
    """Fit and save the router, write the config (``ui``: the dashboard's routes served);
    returns facts about routing in-process."""
    import yaml

    from routecast import Policy, load_dataset, make_router
    from routecast.routers.persist import save_router

    ds = load_dataset(data)
    router = make_router("linear").fit(ds.subset("train"))
    policy = Policy.for_quality(router, ds.subset("validation"), 0.95)
    save_router(router, workdir / "router", policy=policy)
    prompts = list(ds.subset("test").prompts)

    # Routing cost in this process, in CPU time (the machine may be busy), over the 200
    # prompts the load generator cycles through, for comparison with the proxy's CPU.
    sent = prompts[:200]
    for p in sent[:20]:
        router.route([p], policy)
    single = []
    for p in sent:
        t = time.thread_time()
        router.route([p], policy)
        single.append((time.thread_time() - t) * 1000)
    single_mean = sum(single) / len(single)
    single.sort()
    t = time.thread_time()
    for i in range(0, 200, 50):
        router.route(sent[i:i + 50], policy)
    batched_ms = (time.thread_time() - t) * 1000 / 200

    stub = f"http://127.0.0.1:{stub_port}/v1"
    mean_cost = ds.mean_cost_usd()
    # Declared capabilities, so every request pays the capability check as it would in a
    # real deployment (windows known, some models text-only): these text prompts take its
    # fast path.
    models = {m: {"base_url": stub, "input_usd_per_mtok": round(float(c) * 1e6 / 500, 4),
                  "output_usd_per_mtok": round(float(c) * 1e6 / 100, 4), "max_retries": 0,
                  "capabilities": {"input": ["text", "image"] if i % 2 else ["text"],
                                   "tools": bool(i % 2), "context_window": 8192 << (i % 3)}}
              for i, (m, c) in enumerate(zip(router.models_, mean_cost, strict=True))}
    config = {"models": models,
              "endpoints": {"auto": {"type": "routed", "router": "router"},
                            "auto-learning": {"type": "routed", "router": "router",
                                              "learning": {"judge": {
                                                  "model": router.models_[0]}}}},
              "storage": {"db": "requests.db"}, "ui": {"enabled": ui}}
    (workdir / "routecast.yaml").write_text(yaml.safe_dump(config))
    picks = router.route(prompts[:200], policy)
    return {"plain_model": router.models_[0], "prompts": prompts[:200],
            "route_single_p50_ms": single[len(single) // 2],
            "route_single_mean_ms": single_mean,
            "route_single_p99_ms": single[int(len(single) * 0.99)],
            "route_batched_ms_per_prompt": batched_ms,
            "distinct_models_routed": len(set(picks)),
            "cost_weight": policy.cost_weight}


def lua_script(path: Path, bodies: list[bytes]) -> None:
    """A wrk script cycling through ``bodies``."""
    parts = []
    for b in bodies:
        text = b.decode()
        assert "]==]" not in text
        parts.append(f"[==[{text}]==]")
    path.write_text(
        "local bodies = {" + ",\n".join(parts) + "}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n")


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- measuring -------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def routing_totals(base: str) -> tuple[float, float, float]:
    """(CPU seconds inside router.route(), prompts routed, route() calls) so far."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        text = r.read().decode()

    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{"))

    return (total("routecast_routing_cpu_seconds_total"),
            total("routecast_routed_prompts_total"), total("routecast_routing_batches_total"))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration_s: int, pin: bool,
            timeout_s: int = 2) -> dict[str, Any]:
    """One wrk run; responses slower than ``timeout_s`` (wrk's default: 2) count as errors."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s",
           "--latency", "-s", str(script), url]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}  # type: ignore[index]
    for pct in ("50", "90", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(found[1]) if found else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["non_2xx"] = int(errors[1]) if errors else 0
    result["socket_errors"] = socket_errors[1] if socket_errors else ""
    result["requests"] = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return result


# -- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the concurrency-1 runs (figures are medians)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="connections for the throughput runs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--targets", default=None,
                        help="comma-separated subset of plain,routed,messages,responses,learning "
                             "(default: all)")
    parser.add_argument("--no-ui", action="store_true",
                        help="serve without the dashboard (ui.enabled: false), to compare")
    parser.add_argument("--stub", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub is not None:
        stub_main(args.stub)
        return 0
    if shutil.which("wrk") is None:
        print("error: this benchmark needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    cpu0 = ["taskset", "-c", "0"] if pin else []
    cpu1 = ["taskset", "-c", "1"] if pin else []

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="routecast-bench-") as tmp:
        work = Path(tmp)
        stub_port, proxy_port = free_port(), free_port()
        print("fitting the linear router and writing the config ...", file=sys.stderr)
        facts = prepare(args.data, work, stub_port, ui=not args.no_ui)
        procs = []
        try:
            procs.append(subprocess.Popen([*cpu0, sys.executable, __file__, "--stub",
                                           str(stub_port)]))
            proxy = subprocess.Popen(
                [*cpu1, sys.executable, "-m", "routecast.cli", "serve", "--config",
                 str(work / "routecast.yaml"), "--port", str(proxy_port),
                 "--log-level", "warning"], cwd=work)
            procs.append(proxy)
            base = f"http://127.0.0.1:{proxy_port}"
            wait_http(f"{base}/health")
            results = measure(args, work, facts, stub_port, base, proxy.pid, pin)
            results["memory_mib"] = memory_mib(proxy.pid)
        finally:
            for p in reversed(procs):  # the proxy first: it must not see its upstream vanish
                p.terminate()
                p.wait(10)
    results["routing_in_process"] = {k: facts[k] for k in (
        "route_single_p50_ms", "route_single_mean_ms", "route_single_p99_ms",
        "route_batched_ms_per_prompt",
        "distinct_models_routed", "cost_weight")}
    results["pinned"] = pin
    results["load_before"], results["load_after"] = load_before, os.getloadavg()[0]
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def measure(args: argparse.Namespace, work: Path, facts: dict[str, Any], stub_port: int,
            base: str, pid: int, pin: bool) -> dict[str, Any]:
    """Every wrk run: ``--repeats`` rounds at concurrency 1 (targets interleaved, so a burst of
    load elsewhere on the machine hits all alike), then one throughput run each."""
    plain = facts["plain_model"]
    targets = {"direct": (f"http://127.0.0.1:{stub_port}", plain, "chat/completions"),
               "plain": (base, plain, "chat/completions"),
               "routed": (base, "auto", "chat/completions"),
               "messages": (base, plain, "messages"), "responses": (base, plain, "responses"),
               "learning": (base, "auto-learning", "chat/completions")}
    if args.targets:
        # The learning endpoint's background work (shadows, judging) runs on after its own
        # runs; leave it out to compare the other targets undisturbed.
        keep = {"direct", *args.targets.split(",")}
        targets = {name: t for name, t in targets.items() if name in keep}
    scripts: dict[tuple[str, bool], tuple[str, Path]] = {}
    for stream in (False, True):
        for target, (url, model, path) in targets.items():
            bodies = [json.dumps(request_body(path, model, p, stream)).encode()
                      for p in facts["prompts"]]
            script = work / f"{target}-{stream}.lua"
            lua_script(script, bodies)
            endpoint = f"{url}/v1/{path}"
            run_wrk(endpoint, script, 4, 1, pin)  # warm up connections, caches, JIT-free paths
            scripts[target, stream] = (endpoint, script)
    plan = [(r, stream, target, 1) for r in range(args.repeats) for stream in (False, True)
            for target in targets]
    plan += [(0, stream, target, args.concurrency) for stream in (False, True)
             for target in targets]
    runs: list[dict[str, Any]] = []
    for round_, stream, target, connections in plan:
        print(f"round {round_ + 1}: {target:7s} stream={stream!s:5s} c={connections:<3d} ...",
              file=sys.stderr)
        endpoint, script = scripts[target, stream]
        cpu0 = cpu_s(pid) if target != "direct" else 0.0
        routed = target in ("routed", "learning")
        route0 = routing_totals(base) if routed else (0.0, 0.0, 0.0)
        result = run_wrk(endpoint, script, connections, args.duration, pin)
        if target != "direct":
            result["proxy_cpu_ms_per_request"] = (
                (cpu_s(pid) - cpu0) * 1000 / max(1, result["requests"]))
        if routed:
            cpu, prompts, batches = (a - b for a, b in zip(
                routing_totals(base), route0, strict=True))
            result["routing_ms_per_request"] = cpu * 1000 / max(1, prompts)
            result["mean_batch"] = prompts / max(1, batches)
        runs.append({"round": round_, "target": target, "stream": stream,
                     "connections": connections, "load_1min": os.getloadavg()[0], **result})
    return {"runs": runs, "summary": summarise(runs)}


def request_body(path: str, model: str, prompt: str, stream: bool) -> dict[str, Any]:
    """One request in the API of ``path``: the same prompt and token limit in each."""
    if path == "responses":
        return {"model": model, "stream": stream, "max_output_tokens": 20, "input": prompt}
    return {"model": model, "stream": stream, "max_tokens": 20,
            "messages": [{"role": "user", "content": prompt}]}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, stream, connections): the median of each figure over the rounds; the added
    latency of a round is taken against the direct run of the same round."""
    direct = {(r["round"], r["stream"], r["connections"]): r for r in runs
              if r["target"] == "direct"}
    groups: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["target"], r["stream"], r["connections"]), []).append(r)
    summary = []
    for (target, stream, connections), group in groups.items():
        row: dict[str, Any] = {"target": target, "stream": stream, "connections": connections,
                               "rounds": len(group)}
        for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "proxy_cpu_ms_per_request",
                    "routing_ms_per_request", "mean_batch"):
            values = [r[key] for r in group if key in r]
            row[key] = statistics.median(values) if values else None
        if target != "direct":
            for pct in ("p50", "p99"):
                row[f"added_{pct}_ms"] = statistics.median(
                    r[f"{pct}_ms"] - direct[r["round"], stream, connections][f"{pct}_ms"]
                    for r in group)
        row["errors"] = sum(r["non_2xx"] + (1 if r["socket_errors"] else 0) for r in group)
        summary.append(row)
    return summary


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    summary = results["summary"]
    print(f"routecast proxy overhead (wrk, {args.duration} s per run, concurrency-1 figures "
          f"are medians of {args.repeats} rounds; proxy "
          f"{'pinned to core 1, stub + wrk to core 0' if results['pinned'] else 'unpinned'})")
    loads = [r["load_1min"] for r in results["runs"]]
    print(f"load average (1 min) at start {results['load_before']:.2f}, during the runs "
          f"{min(loads):.2f}-{max(loads):.2f}, at end {results['load_after']:.2f} "
          f"on {os.cpu_count()} CPUs")
    columns = ["target", "stream", "conns", "req/s", "p50 ms", "p90 ms", "p99 ms", "+p50 ms",
               "+p99 ms", "cpu ms/req", "route ms/req", "batch", "cap req/s", "errors"]
    print("  ".join(f"{c:>{max(len(c), 6)}s}" for c in columns))

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in summary:
        cpu = r["proxy_cpu_ms_per_request"]
        row = [r["target"], str(r["stream"]), str(r["connections"]), cell(r["rps"], ".0f"),
               cell(r["p50_ms"], ".3f"), cell(r["p90_ms"], ".3f"), cell(r["p99_ms"], ".3f"),
               cell(r.get("added_p50_ms"), ".3f"), cell(r.get("added_p99_ms"), ".3f"),
               cell(cpu, ".3f"), cell(r["routing_ms_per_request"], ".3f"),
               cell(r["mean_batch"], ".1f"), cell(1000 / cpu if cpu else None, ".0f"),
               str(r["errors"])]
        print("  ".join(f"{v:>{max(len(c), 6)}s}" for v, c in zip(row, columns, strict=True)))
    mem = results["memory_mib"]
    rip = results["routing_in_process"]
    print(f"proxy memory after the runs: RSS {mem.get('VmRSS', float('nan')):.1f} MiB, "
          f"peak {mem.get('VmHWM', float('nan')):.1f} MiB")
    print(f"routing in-process (linear TF-IDF, {rip['distinct_models_routed']} models chosen "
          f"over the 200 test prompts sent), CPU time: one prompt at a time p50 "
          f"{rip['route_single_p50_ms']:.3f} ms, mean {rip['route_single_mean_ms']:.3f} ms, "
          f"p99 {rip['route_single_p99_ms']:.3f} ms; batches of 50: "
          f"{rip['route_batched_ms_per_prompt']:.3f} ms per prompt")
    print("+p50/+p99: minus the direct run at the same concurrency and mode. cpu ms/req: the "
          "proxy process's CPU time (all threads) over requests served; route ms/req: the "
          "loop thread's CPU time inside router.route() per prompt routed; batch: prompts per "
          "route() call (the server batches concurrent prompts); cap req/s: "
          "1000 / cpu ms per request, the rate one whole core would sustain (robust to other "
          "load on the machine, unlike req/s).")
    for line in verdict(results):
        print(line)


def verdict(results: dict[str, Any]) -> list[str]:
    """One line per target of the issue: the figure, the limit, PASS or FAIL."""
    lines = []
    for r in results["summary"]:
        if r["target"] != "direct" and r["connections"] == 1:
            added = r["added_p50_ms"]
            ok = added <= TARGET_ADDED_P50_MS
            lines.append(f"verdict: {r['target']:6s} stream={r['stream']!s:5s} added p50 "
                         f"{added:.3f} ms (limit {TARGET_ADDED_P50_MS:g} ms, margin "
                         f"{TARGET_ADDED_P50_MS - added:+.3f} ms): {'PASS' if ok else 'FAIL'}")
    by = {(r["target"], r["stream"]): r for r in results["summary"] if r["connections"] == 1}
    for stream in (False, True):
        on, off = by.get(("learning", stream)), by.get(("routed", stream))
        if on and off:
            delta = on["added_p50_ms"] - off["added_p50_ms"]
            lines.append(f"verdict: learning on vs off stream={stream!s:5s} added p50 "
                         f"{delta:+.3f} ms (limit {TARGET_LEARNING_P50_MS:g} ms): "
                         f"{'PASS' if delta <= TARGET_LEARNING_P50_MS else 'FAIL'}")
    rss = results["memory_mib"].get("VmHWM", float("nan"))
    lines.append(f"verdict: proxy peak RSS {rss:.1f} MiB (limit {TARGET_RSS_MIB:g} MiB): "
                 f"{'PASS' if rss < TARGET_RSS_MIB else 'FAIL'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
