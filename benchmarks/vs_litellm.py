"""routecast against the LiteLLM proxy, in one run, on the same stub, load and core.

Four targets get the same chat requests (RouterBench test prompts), plain and streamed:

* **direct**: straight to the stub OpenAI-compatible server of ``proxy_overhead.py`` (raw
  asyncio, answers at once), the floor every proxy adds to;
* **routecast plain**: ``routecast serve``, one model endpoint, forwarding to the stub;
* **routecast routed**: the same server, a routed endpoint (TF-IDF linear router fitted on the
  RouterBench subset's train split, policy calibrated on validation), every model on the stub;
* **litellm**: the LiteLLM proxy (``litellm --config``) with two deployments of one model name,
  both pointing at the same stub, load-balanced by LiteLLM's router.

LiteLLM is installed by this script into its own virtual environment (``--litellm-venv``,
created once with ``python -m venv`` and ``pip install 'litellm[proxy]'``), so routecast's
environment never sees it. Each proxy runs alone, pinned to core 1 (``taskset -c 1``); the stub
and ``wrk`` share core 0. At concurrency 1 wrk's percentiles give the latency each proxy adds;
at ``--concurrency`` its requests/s give the maximum throughput. Because the machine may be
shared, the proxy's CPU time per request (``/proc``, all processes of the proxy) is reported
too: ``1000 / cpu ms`` is the rate one whole core would sustain, whatever else runs.

    python -m benchmarks.vs_litellm [--duration 5] [--concurrency 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import proxy_overhead as po

DEFAULT_VENV = po.ROOT / "out" / "litellm-venv"
#: LiteLLM otherwise fetches its model price map from GitHub at start-up, and phones home.
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
               "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION"}
STUB_MODEL = "stub-model"
#: wrk's default (2 s) would drop LiteLLM's slowest streamed answers at high concurrency as
#: errors, flattering its percentiles; wait long enough to count them.
WRK_TIMEOUT_S = 10


# -- LiteLLM's environment and config ---------------------------------------------------------


def litellm_venv(venv: Path) -> Path:
    """The ``litellm`` executable in ``venv``, creating the venv and installing it if needed."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing litellm[proxy] into {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "litellm[proxy]"], check=True)
    if not exe.exists():
        raise SystemExit(f"error: pip installed litellm but {exe} is missing")
    return exe


def litellm_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def litellm_config(path: Path, stub_port: int) -> None:
    """Two deployments of one model name on the stub: LiteLLM's router picks one per request."""
    import yaml

    stub = f"http://127.0.0.1:{stub_port}/v1"
    deployments = [{"model_name": STUB_MODEL,
                    "litellm_params": {"model": f"openai/stub-{d}", "api_base": stub,
                                       "api_key": "sk-stub", "max_retries": 0}}
                   for d in ("a", "b")]
    config = {"model_list": deployments,
              # No client auth, as routecast runs here: LiteLLM refuses to start without a
              # master key unless told this is deliberate.
              "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
              "router_settings": {"routing_strategy": "simple-shuffle"},
              "litellm_settings": {"drop_params": True, "set_verbose": False,
                                   "telemetry": False}}
    path.write_text(yaml.safe_dump(config))


# -- processes ----------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a proxy may run workers in child processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += po.cpu_s(p)
    return total


def tree_rss_mib(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += po.memory_mib(p).get("VmRSS", 0.0)
    return total


@contextmanager
def running(name: str, cmd: list[str], health: str, *, cwd: Path,
            env: dict[str, str] | None = None, timeout_s: float = 120.0
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, wait until ``health`` answers, stop it (SIGTERM, then SIGKILL) after.
    Its output goes to ``cwd/NAME.log``, named in the error if it does not come up."""
    path = cwd / f"{name}.log"
    log = path.open("wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT)

    def tail() -> str:
        return path.read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}; its "
                                 f"output ends with:\n{tail()}")
            try:
                po.wait_http(health, timeout_s=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: {health} did not answer within {timeout_s:g}s; "
                                     f"{name}'s output ends with:\n{tail()}") from None
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- measuring ----------------------------------------------------------------------------------


def measure_target(name: str, url: str, model: str, prompts: list[str], work: Path,
                   args: argparse.Namespace, pin: bool, pid: int | None) -> list[dict[str, Any]]:
    """Both modes x both concurrencies for one target; CPU and RSS of ``pid``'s tree."""
    runs = []
    for stream in (False, True):
        bodies = [json.dumps({"model": model, "stream": stream, "max_tokens": 20,
                              "messages": [{"role": "user", "content": p}]}).encode()
                  for p in prompts]
        script = work / f"{name}-{stream}.lua"
        po.lua_script(script, bodies)
        endpoint = f"{url}/v1/chat/completions"
        po.run_wrk(endpoint, script, 4, 2, pin)  # warm up: connections, caches, lazy imports
        for connections in (1, args.concurrency):
            print(f"{name:17s} stream={stream!s:5s} c={connections:<3d} ...", file=sys.stderr)
            repeats = []
            for _ in range(args.repeat):
                cpu0 = tree_cpu_s(pid) if pid else 0.0
                result = po.run_wrk(endpoint, script, connections, args.duration, pin,
                                    timeout_s=WRK_TIMEOUT_S)
                if pid:
                    result["cpu_ms_per_request"] = ((tree_cpu_s(pid) - cpu0) * 1000
                                                    / max(1, result["requests"]))
                    result["rss_mib"] = tree_rss_mib(pid)
                repeats.append(result)
            runs.append({"target": name, "stream": stream, "connections": connections,
                         **median_of(repeats)})
    return runs


def median_of(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over repeated runs (a noisy neighbour hits one run, not all);
    errors are summed, and the last run's memory is kept (it only grows)."""
    out = dict(repeats[-1])
    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_ms_per_request"):
        if key in out:
            out[key] = statistics.median(r[key] for r in repeats)
    out["non_2xx"] = sum(r["non_2xx"] for r in repeats)
    out["socket_errors"] = "; ".join(r["socket_errors"] for r in repeats if r["socket_errors"])
    out["requests"] = sum(r["requests"] for r in repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", default=str(po.DEFAULT_DATA))
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="connections for the throughput runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="wrk runs per cell; the table shows their medians")
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: this benchmark needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    core0 = ["taskset", "-c", "0"] if pin else []
    core1 = ["taskset", "-c", "1"] if pin else []
    litellm = litellm_venv(args.litellm_venv)

    load_before = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="routecast-vs-litellm-") as tmp:
        work = Path(tmp)
        stub_port, proxy_port = po.free_port(), po.free_port()
        print("fitting the linear router and writing the configs ...", file=sys.stderr)
        facts = po.prepare(args.data, work, stub_port)
        litellm_config(work / "litellm.yaml", stub_port)
        prompts = facts["prompts"]
        stub_cmd = [*core0, sys.executable, po.__file__, "--stub", str(stub_port)]
        stub_health = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        with running("stub", stub_cmd, stub_health, cwd=work):
            runs += measure_target("direct", f"http://127.0.0.1:{stub_port}",
                                   facts["plain_model"], prompts, work, args, pin, None)
            proxy = f"http://127.0.0.1:{proxy_port}"
            serve = [*core1, sys.executable, "-m", "routecast.cli", "serve", "--config",
                     str(work / "routecast.yaml"), "--port", str(proxy_port),
                     "--log-level", "warning"]
            with running("routecast", serve, f"{proxy}/health", cwd=work) as rc:
                runs += measure_target("routecast plain", proxy, facts["plain_model"], prompts,
                                       work, args, pin, rc.pid)
                runs += measure_target("routecast routed", proxy, "auto", prompts, work, args,
                                       pin, rc.pid)
            lite = [*core1, str(litellm), "--config", str(work / "litellm.yaml"), "--host",
                    "127.0.0.1", "--port", str(proxy_port), "--num_workers", "1"]
            with running("litellm", lite, f"{proxy}/health/liveliness", cwd=work, env=LITELLM_ENV,
                         timeout_s=300) as lp:
                runs += measure_target("litellm", proxy, STUB_MODEL, prompts, work, args, pin,
                                       lp.pid)
    results = {"runs": runs, "pinned": pin, "load_before": load_before,
               "load_after": os.getloadavg()[0],
               "litellm_version": litellm_version(args.litellm_venv),
               "duration_s": args.duration, "concurrency": args.concurrency,
               "repeat": args.repeat}
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(results: dict[str, Any]) -> None:
    runs = results["runs"]

    def find(target: str, stream: bool, c: int) -> dict[str, Any]:
        return next(r for r in runs if (r["target"], r["stream"], r["connections"])
                    == (target, stream, c))

    print(f"routecast vs LiteLLM {results['litellm_version']} (wrk, {results['duration_s']} s "
          f"per run, median of {results['repeat']}; each proxy alone, "
          f"{'pinned to core 1, stub + wrk on core 0' if results['pinned'] else 'unpinned'})")
    print(f"load average (1 min) {results['load_before']:.2f} at start, "
          f"{results['load_after']:.2f} at end, on {os.cpu_count()} CPUs")
    cols = ["target", "stream", "conns", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
            "cpu ms/req", "cap req/s", "RSS MiB", "errors"]
    widths = [17, 6, 5, 8, 8, 8, 8, 8, 10, 9, 7, 6]
    print("  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths, strict=True)))
    for r in runs:
        direct = find("direct", r["stream"], r["connections"])
        proxied = r["target"] != "direct"
        cpu = r.get("cpu_ms_per_request")
        cells = [r["target"], str(r["stream"]), str(r["connections"]), f"{r['rps']:.0f}",
                 f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                 f"{r['p50_ms'] - direct['p50_ms']:.3f}" if proxied else "-",
                 f"{r['p99_ms'] - direct['p99_ms']:.3f}" if proxied else "-",
                 f"{cpu:.3f}" if cpu else "-", f"{1000 / cpu:.0f}" if cpu else "-",
                 f"{r['rss_mib']:.1f}" if "rss_mib" in r else "-",
                 str(r["non_2xx"] + (1 if r["socket_errors"] else 0))]
        print("  ".join(f"{v:>{w}s}" for v, w in zip(cells, widths, strict=True)))
    c = results["concurrency"]
    for stream in (False, True):
        lite = find("litellm", stream, c)
        for target in ("routecast plain", "routecast routed"):
            ours = find(target, stream, c)
            cpu_ratio = (lite["cpu_ms_per_request"] / ours["cpu_ms_per_request"]
                         if ours.get("cpu_ms_per_request") else float("nan"))
            floor = find("direct", stream, 1)["p50_ms"]
            print(f"{target} / litellm, stream={stream}: throughput "
                  f"{ours['rps'] / max(lite['rps'], 1e-9):.1f}x, CPU per request "
                  f"{cpu_ratio:.1f}x less; added p50 at c=1: "
                  f"{find(target, stream, 1)['p50_ms'] - floor:.3f} ms vs "
                  f"{find('litellm', stream, 1)['p50_ms'] - floor:.3f} ms")
    print("+p50/+p99: minus the direct run at the same concurrency and mode; cpu ms/req: the "
          "proxy's CPU time (every process of it) over requests served; cap req/s = 1000 / cpu "
          "ms/req; RSS: resident memory of the proxy's processes after the run.")


if __name__ == "__main__":
    sys.exit(main())
