"""Throughput of ``routecast serve --workers N`` on this machine, against one process.

The same stub upstream as ``benchmarks/proxy_overhead.py`` (raw asyncio, a canned answer) in
its own process; ``routecast serve --config ... --workers N`` in front of it (a plain endpoint,
the request log on SQLite, ``state.redis_url`` set for N > 1 as the shared-state check
demands); ``wrk`` (one thread, ``--connections`` connections) sends chat requests for
``--duration`` seconds. Each worker count is run ``--repeats`` times, interleaved, and the
medians are printed: requests a second, the ratio to one worker, p50/p99 latency, and the
server's CPU per request (all its workers' user + system time from ``/proc``, over the run).

Nothing is pinned: the server's workers, the stub and wrk share the machine's cores, as they
would on a small host, so the gain from a second worker is bounded by what the stub and the
load generator leave free. The per-request CPU says what a worker costs wherever it runs.

    python benchmarks/workers_throughput.py [--workers 1 2] [--duration 5] [--repeats 3]
                                            [--connections 64] [--durable]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.proxy_overhead import (  # noqa: E402
    cpu_s,
    free_port,
    lua_script,
    run_wrk,
    wait_http,
)

REDIS_URL = os.environ.get("ROUTECAST_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def server_pids(parent: int) -> list[int]:
    """The serving processes: the workers under a supervisor, else the process itself."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
                children.append(int(entry.name))
    return children or [parent]


def run_server(work: Path, stub_port: int, workers: int,
               durable: bool) -> tuple[subprocess.Popen[bytes], str]:
    config: dict[str, Any] = {
        "models": {"m": {"base_url": f"http://127.0.0.1:{stub_port}/v1", "max_retries": 0,
                         "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        "storage": {"db": str(work / f"requests-{workers}.db"), "durable": durable}}
    if workers > 1:
        config["state"] = {"redis_url": REDIS_URL, "key_prefix": "routecast-bench:"}
    path = work / f"routecast-{workers}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-m", "routecast.cli", "serve", "--config",
                             str(path), "--port", str(port), "--log-level", "warning",
                             "--workers", str(workers)], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health")
    time.sleep(1.0)  # every worker up (the first to answer /health is not the last)
    return proc, url


def measure(url: str, proc: subprocess.Popen[bytes], script: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    pids = server_pids(proc.pid)
    cpu0 = sum(cpu_s(p) for p in pids)
    result = run_wrk(f"{url}/v1/chat/completions", script, args.connections, args.duration,
                     pin=False)
    result["cpu_us_per_request"] = ((sum(cpu_s(p) for p in pids) - cpu0) * 1e6
                                    / max(result["requests"], 1))
    result["processes"] = len(pids)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--durable", action="store_true",
                        help="storage.durable: each worker commits every row before answering "
                             "(the workers' writers contend for the SQLite file)")
    parser.add_argument("--json", dest="json_out", help="write the runs here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="routecast-workers-bench-"))
    stub_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stub = subprocess.Popen([sys.executable, "-c", "import sys; from benchmarks.proxy_overhead "
                             f"import stub_main; stub_main({stub_port})"], env=env, cwd=ROOT)
    script = work / "chat.lua"
    lua_script(script, [json.dumps({"model": "m", "messages": [
        {"role": "user", "content": f"question {i}: what is {i} plus {i}?"}]}).encode()
        for i in range(50)])
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.workers}
    servers = {}
    try:
        for n in args.workers:
            servers[n] = run_server(work, stub_port, n, args.durable)
        for _ in range(args.repeats):
            for n in args.workers:
                proc, url = servers[n]
                runs[n].append(measure(url, proc, script, args))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            proc.wait(30)
        stub.kill()
        stub.wait()

    def logged(n: int) -> int:
        import sqlite3

        con = sqlite3.connect(work / f"requests-{n}.db")
        try:
            return int(con.execute("SELECT count(*) FROM requests").fetchone()[0])
        finally:
            con.close()

    def med(n: int, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[n]))

    base = med(args.workers[0], "rps")
    print(f"routecast serve --workers N on {os.cpu_count()} cores, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, median of {args.repeats} runs"
          + (", storage.durable" if args.durable else ""))
    print(f"  {'workers':>7}  {'req/s':>8}  {'ratio':>5}  {'p50 ms':>7}  {'p99 ms':>7}  "
          f"{'server CPU us/req':>17}  {'errors':>6}  {'answered':>8}  {'logged':>8}")
    for n in args.workers:
        errors = sum(r["non_2xx"] for r in runs[n])
        print(f"  {n:>7}  {med(n, 'rps'):8.0f}  {med(n, 'rps') / base:5.2f}  "
              f"{med(n, 'p50_ms'):7.2f}  {med(n, 'p99_ms'):7.2f}  "
              f"{med(n, 'cpu_us_per_request'):17.0f}  {errors:>6}  "
              f"{sum(r['requests'] for r in runs[n]):>8}  {logged(n):>8}")
    print("  (logged counts every row the workers' SQLite writers committed, /health excluded; "
          "it can exceed answered by the requests wrk stopped waiting for)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
