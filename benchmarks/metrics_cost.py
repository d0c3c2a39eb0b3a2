"""What counting a request for ``/metrics`` costs, per way of doing it across worker processes.

Each variant makes the updates the server makes per answered request (routecast_requests_total,
routecast_cost_usd_total, routecast_tokens_total twice, one routecast_request_latency_seconds
observation) over three label sets, and the CPU time per request is measured with
``time.process_time`` over ``--requests`` requests, median of ``--repeats`` runs:

* **hand-written**: today's :class:`routecast.server.prometheus.ServerMetrics` (one process);
* **hand-written + snapshots**: the same, plus what ``--workers`` adds: a JSON snapshot written
  once a second (:mod:`routecast.server.worker_metrics`), charged to the requests of that
  second at ``--rps`` requests a second;
* **prometheus_client**: the same updates with prometheus_client's labelled metrics
  (``.labels(...).inc()``), in one process;
* **prometheus_client multiprocess**: the same, with ``PROMETHEUS_MULTIPROC_DIR`` set (its
  mmap-file values, the mode made for several workers), in a fresh process;
* the two prometheus_client rows again with each label set's child looked up once and kept
  (the cheapest way to use it; the server's label values are only known per request).

Then what a scrape costs with ``--workers`` workers' worth of data: merging their snapshots
(ours) against prometheus_client's ``MultiProcessCollector`` reading their files.

    python benchmarks/metrics_cost.py [--requests 20000] [--repeats 5] [--workers 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LABELS = [("auto", "small"), ("auto", "large"), ("chat", "medium")]
Update = Callable[[int], None]


def hand_written() -> tuple[Update, Any]:
    from routecast.server.prometheus import ServerMetrics

    metrics = ServerMetrics()

    def update(i: int) -> None:
        endpoint, model = LABELS[i % 3]
        metrics.observe(endpoint, model, 200, 0.0123, cost_usd=1.5e-5, prompt_tokens=120,
                        completion_tokens=40)

    return update, metrics


def client_metrics(cached: bool) -> Update:
    """The same updates through prometheus_client (its mode is chosen by the environment at
    import: multiprocess when PROMETHEUS_MULTIPROC_DIR is set)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from routecast.server.prometheus import LATENCY_BUCKETS

    registry = CollectorRegistry()
    requests = Counter("routecast_requests", "r", ("endpoint", "model", "status"),
                       registry=registry)
    cost = Counter("routecast_cost_usd", "c", ("endpoint", "model"), registry=registry)
    tokens = Counter("routecast_tokens", "t", ("endpoint", "model", "kind"), registry=registry)
    latency = Histogram("routecast_request_latency_seconds", "l", ("endpoint",),
                        buckets=LATENCY_BUCKETS, registry=registry)
    if not cached:
        def update(i: int) -> None:
            endpoint, model = LABELS[i % 3]
            requests.labels(endpoint, model, "200").inc()
            latency.labels(endpoint).observe(0.0123)
            cost.labels(endpoint, model).inc(1.5e-5)
            tokens.labels(endpoint, model, "prompt").inc(120)
            tokens.labels(endpoint, model, "completion").inc(40)

        return update
    children = [(requests.labels(e, m, "200"), latency.labels(e), cost.labels(e, m),
                 tokens.labels(e, m, "prompt"), tokens.labels(e, m, "completion"))
                for e, m in LABELS]

    def update_cached(i: int) -> None:
        r, lat, c, tp, tc = children[i % 3]
        r.inc()
        lat.observe(0.0123)
        c.inc(1.5e-5)
        tp.inc(120)
        tc.inc(40)

    return update_cached


def per_request_us(update: Update, n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            update(i)
        runs.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(runs)


def timed_ms(fn: Callable[[], object], repeats: int = 50) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        runs.append((time.process_time() - t0) * 1e3)
    return statistics.median(runs)


def child(args: argparse.Namespace) -> None:
    """In a fresh process (the environment picks prometheus_client's mode): print the
    per-request cost of ``--variant``; with ``--scrape``, the cost of collecting the folder."""
    if args.scrape:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        print(json.dumps({"scrape_ms": timed_ms(lambda: generate_latest(registry), 20)}))
        return
    update = client_metrics(cached=args.variant == "cached")
    print(json.dumps({"us": per_request_us(update, args.requests, args.repeats)}))


def in_child(args: argparse.Namespace, env: dict[str, str], *extra: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", "--requests", str(args.requests),
                          "--repeats", str(args.repeats), *extra],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rps", type=float, default=1000.0,
                        help="requests a second one worker serves (charges the snapshot)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="labels", help=argparse.SUPPRESS)
    parser.add_argument("--scrape", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from routecast.server.worker_metrics import SharedMetrics

    update, metrics = hand_written()
    hand = per_request_us(update, args.requests, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        shares = [SharedMetrics(folder, pid=os.getpid()) for _ in range(args.workers)]
        write_ms = timed_ms(lambda: shares[0].write(metrics.families()))
        for share in shares[1:]:
            share.write(metrics.families())
        ours_scrape_ms = timed_ms(lambda: shares[0].render(metrics.families()))
    snapshot = hand + write_ms * 1e3 / args.rps

    rows = [("hand-written (today, one process)", hand),
            (f"hand-written + snapshot every second (at {args.rps:g} req/s)", snapshot)]
    plain = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for variant, label in (("labels", ""), ("cached", ", children kept")):
        rows.append((f"prometheus_client, one process{label}",
                     in_child(args, plain, "--variant", variant)["us"]))
        with tempfile.TemporaryDirectory() as folder:
            rows.append((f"prometheus_client multiprocess (mmap){label}",
                         in_child(args, {"PROMETHEUS_MULTIPROC_DIR": folder},
                                  "--variant", variant)["us"]))
    with tempfile.TemporaryDirectory() as folder:
        env = {"PROMETHEUS_MULTIPROC_DIR": folder}
        for _ in range(args.workers):  # one process's files each
            in_child(args, env, "--requests", "300", "--repeats", "1")
        theirs_scrape_ms = in_child(args, env, "--scrape")["scrape_ms"]

    print(f"CPU per request for the metric updates of one answered request "
          f"(median of {args.repeats} runs of {args.requests} requests, "
          f"python {sys.version.split()[0]})")
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"  {name:<{width}}  {us:7.2f} us  {us / hand:5.1f}x")
    print(f"  snapshot write: {write_ms:.3f} ms once a second "
          f"({write_ms * 1e3 / args.rps:.4f} us a request at {args.rps:g} req/s)")
    print(f"scrape with {args.workers} workers' data: merged snapshots {ours_scrape_ms:.2f} ms, "
          f"prometheus_client MultiProcessCollector {theirs_scrape_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
