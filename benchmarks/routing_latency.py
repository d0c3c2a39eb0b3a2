"""Routing latency, throughput and memory of each router, on recorded outcome data.

What it measures, per router (each in its own fresh ``spawn``-ed process, so imports, caches and
memory of one router never leak into the next):

* **fit**: seconds to ``fit`` on the train split, in a fresh process, so it includes first-use
  imports such as scikit-learn (what a CLI run pays);
* **policy**: ``Policy.for_quality(router, validation, 0.95)``; where no operating point reaches
  that target it falls back to ``Policy(0.0)`` and says so;
* **single-prompt latency**: ``router.route([prompt], policy)`` one test prompt at a time, after
  a few warm-up calls; p50, p99 and mean in milliseconds. Every test prompt is timed, unless
  the warm-up says that would take more than 30 s (or ``--single-sample N`` asks), in which case
  a fixed seeded sample is timed and the table says so;
* **batched throughput**: ``router.route(all_test_prompts, policy)`` ``--repeats`` times; the
  median of prompts per second;
* **peak RSS** of the process, in MiB, next to that of a *baseline* process measured in the same
  run that only imports routecast and loads the dataset: the difference and ratio are the
  router's own share;
* **peak Python heap** (tracemalloc) during a second, untimed fit + batched route in the same
  process, so imports are already done and the heap is the router's data and working memory.

Peak RSS comes from ``/proc/self/status`` (``VmHWM``) on Linux and from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` elsewhere. Both are in the JSON. The reason:
on Linux ``ru_maxrss`` of a freshly spawned child starts at the high-water mark of the parent
that forked it (the kernel carries it across ``exec``), so a big parent would hide a small
child; ``VmHWM`` belongs to the new process only.

Only the standard library measures (``time.perf_counter_ns``, ``tracemalloc``, ``resource``,
``multiprocessing``); rich prints the table. Run from the project root::

    .venv/bin/python benchmarks/routing_latency.py
    .venv/bin/python benchmarks/routing_latency.py --data ../shared/data/routerbench-subset \\
        --routers random,best-single,cheapest,knn,linear --repeats 5 --json latency.json

Errors in the data path or router names print routecast's message and exit with status 2.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, final

if TYPE_CHECKING:
    from rich.console import Console

    from routecast.data.dataset import Dataset

# Heavy imports (numpy, routecast, rich) happen inside functions: the child processes should
# carry only what routing needs, and the parent should stay small while it spawns them.

DEFAULT_ROUTERS = ("random", "best-single", "cheapest", "knn", "linear")
QUALITY_FRACTION = 0.95
WARMUP_CALLS = 5
#: If timing every test prompt one by one would take longer than this, time a sample instead.
SINGLE_BUDGET_S = 30.0
FALLBACK_SAMPLE = 300
MIB = 2**20


def default_data() -> Path:
    """The RouterBench subset in ``$ROUTECAST_SHARED_DATA`` or ``../shared/data``."""
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "routerbench-subset"


# -- results ---------------------------------------------------------------------------------


@final
class BaselineResult(TypedDict):
    dataset: str
    n_train: int
    n_validation: int
    n_test: int
    load_s: float
    peak_rss_mib: float
    ru_maxrss_mib: float


@final
class RouterResult(TypedDict):
    router: str
    repr: str
    fit_s: float
    policy: str
    cost_weight: float
    calibrated: bool
    calibration_note: str
    single_n: int
    single_sampled: bool
    single_p50_ms: float
    single_p99_ms: float
    single_mean_ms: float
    batch_n: int
    batch_repeats: int
    batch_prompts_per_s: float
    batch_prompts_per_s_all: list[float]
    peak_rss_mib: float
    ru_maxrss_mib: float
    peak_heap_mib: float


@final
class ChildError(TypedDict):
    error: str


# -- measurement helpers (run in the child) --------------------------------------------------


def _ru_maxrss_mib() -> float:
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return raw / MIB if sys.platform == "darwin" else raw / 1024


def _peak_rss_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` on Linux (see the module docstring)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return _ru_maxrss_mib()
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else _ru_maxrss_mib()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in [0, 100]) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _load_splits(data: str) -> tuple[Dataset, Dataset, Dataset, float]:
    from routecast.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(data)
    train, validation, test = ds.subset("train"), ds.subset("validation"), ds.subset("test")
    return train, validation, test, time.perf_counter() - t0


def baseline_child(data: str, routers: list[str]) -> BaselineResult | ChildError:
    """Import routecast, load the dataset, check the router names; nothing else."""
    from routecast.errors import RoutecastError
    from routecast.routers import make_router

    try:
        train, validation, test, load_s = _load_splits(data)
        for name in routers:
            make_router(name)  # raises ConfigError, listing the known names, if unknown
    except RoutecastError as e:
        return ChildError(error=str(e))
    return BaselineResult(
        dataset=train.name, n_train=train.n_prompts, n_validation=validation.n_prompts,
        n_test=test.n_prompts, load_s=load_s, peak_rss_mib=_peak_rss_mib(),
        ru_maxrss_mib=_ru_maxrss_mib(),
    )


def router_child(data: str, name: str, repeats: int, single_sample: int | None,
                 seed: int) -> RouterResult | ChildError:
    """Fit, calibrate and time one router; see the module docstring for what is measured."""
    from routecast.errors import CalibrationError, RoutecastError
    from routecast.policy import Policy
    from routecast.routers import make_router

    try:
        train, validation, test, _ = _load_splits(data)
        prompts = list(test.prompts)

        router = make_router(name)
        t0 = time.perf_counter()
        router.fit(train)
        fit_s = time.perf_counter() - t0

        note = ""
        try:
            policy = Policy.for_quality(router, validation, QUALITY_FRACTION)
            calibrated = True
        except CalibrationError as e:
            policy, calibrated, note = Policy(0.0), False, str(e)

        # Single prompts: warm up, then decide between every prompt and a seeded sample.
        warm = [time.perf_counter_ns()]
        for p in prompts[:WARMUP_CALLS]:
            router.route([p], policy)
            warm.append(time.perf_counter_ns())
        est_s = (warm[-1] - warm[0]) / 1e9 / max(1, len(warm) - 1) * len(prompts)
        size = single_sample
        if size is None and est_s > SINGLE_BUDGET_S:
            size = FALLBACK_SAMPLE
        sampled = size is not None and size < len(prompts)
        if sampled and size is not None:
            rows = sorted(random.Random(seed).sample(range(len(prompts)), size))
            single = [prompts[i] for i in rows]
        else:
            single = prompts
        gc.collect()
        times_ms: list[float] = []
        for p in single:
            t = time.perf_counter_ns()
            router.route([p], policy)
            times_ms.append((time.perf_counter_ns() - t) / 1e6)
        times_ms.sort()

        rates: list[float] = []
        for _ in range(repeats):
            gc.collect()
            t = time.perf_counter_ns()
            router.route(prompts, policy)
            rates.append(len(prompts) / ((time.perf_counter_ns() - t) / 1e9))

        # Peak RSS before tracemalloc, whose own bookkeeping would inflate it.
        peak_rss, ru_maxrss = _peak_rss_mib(), _ru_maxrss_mib()
        text = repr(router)

        # Heap: a second fit + route of a fresh router; imports are already paid for.
        del router
        gc.collect()
        tracemalloc.start()
        try:
            again = make_router(name).fit(train)
            again.route(prompts, policy)
            _, peak_heap = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    except RoutecastError as e:
        return ChildError(error=f"{name}: {e}")

    return RouterResult(
        router=name, repr=text, fit_s=fit_s,
        policy=(f"for_quality({QUALITY_FRACTION:g})" if calibrated else "Policy(0.0) fallback"),
        cost_weight=policy.cost_weight, calibrated=calibrated, calibration_note=note,
        single_n=len(single), single_sampled=sampled,
        single_p50_ms=percentile(times_ms, 50), single_p99_ms=percentile(times_ms, 99),
        single_mean_ms=statistics.fmean(times_ms),
        batch_n=len(prompts), batch_repeats=repeats,
        batch_prompts_per_s=statistics.median(rates), batch_prompts_per_s_all=rates,
        peak_rss_mib=peak_rss, ru_maxrss_mib=ru_maxrss, peak_heap_mib=peak_heap / MIB,
    )


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a new spawn-started interpreter (one per call, never reused)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


# -- parent: arguments, machine facts, table -------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="routing_latency.py",
        description="Routing latency, batched throughput, fit time and memory per router.")
    parser.add_argument("--data", default=str(default_data()),
                        help="outcome data, any format routecast reads (default: %(default)s)")
    parser.add_argument("--routers", default=",".join(DEFAULT_ROUTERS),
                        help="comma-separated router names (default: %(default)s)")
    parser.add_argument("--repeats", type=_positive, default=5,
                        help="batched route() repeats; the median is reported (default: 5)")
    parser.add_argument("--single-sample", type=_positive, default=None, metavar="N",
                        help="time a seeded sample of N test prompts one by one instead of all "
                             f"(default: all, or {FALLBACK_SAMPLE} if all would take over "
                             f"{SINGLE_BUDGET_S:g} s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of that sample (default: 0)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.router_list = [r.strip() for r in args.routers.split(",") if r.strip()]
    if not args.router_list:
        parser.error("--routers needs at least one router name")
    return args


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def machine_facts() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": version("numpy"),
        "scikit-learn": version("scikit-learn"),
        "scipy": version("scipy"),
        "routecast": version("routecast"),
        "threads_env": {k: os.environ[k] for k in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                        if k in os.environ},
    }


def print_header(console: Console, facts: dict[str, Any], data: str) -> None:
    threads = ", ".join(f"{k}={v}" for k, v in facts["threads_env"].items()) or "unset"
    console.print(
        f"[bold]routecast routing benchmark[/bold]\n"
        f"machine: {facts['cpu_count']} CPUs ({facts['cpus_usable']} usable), {facts['cpu']}, "
        f"{facts['platform']}\n"
        f"python {facts['python']} ({facts['implementation']}), numpy {facts['numpy']}, "
        f"scikit-learn {facts['scikit-learn']}, scipy {facts['scipy']}, "
        f"routecast {facts['routecast']}; BLAS thread env: {threads}\n"
        f"data: {data}", highlight=False)


def print_table(console: Console, base: BaselineResult, results: list[RouterResult],
                repeats: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{base['dataset']}: fit on {base['n_train']} train prompts, "
                        f"calibrate on {base['n_validation']}, route {base['n_test']} test "
                        f"prompts", title_justify="left")
    table.add_column("router")
    table.add_column("policy")
    table.add_column("fit s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("mean ms", justify="right")
    table.add_column("n timed", justify="right")
    table.add_column("batch prompts/s", justify="right")
    table.add_column("peak RSS MiB", justify="right")
    table.add_column("vs baseline", justify="right")
    table.add_column("peak heap MiB", justify="right")
    table.add_row("(baseline)", "import + load", "", "", "", "", "", "",
                  f"{base['peak_rss_mib']:.1f}", "", "", style="dim")
    for r in results:
        policy = (f"for_quality w={r['cost_weight']:.3g}" if r["calibrated"]
                  else "fallback w=0 *")
        n_timed = f"{r['single_n']}" + (" (sample)" if r["single_sampled"] else "")
        delta = r["peak_rss_mib"] - base["peak_rss_mib"]
        ratio = r["peak_rss_mib"] / base["peak_rss_mib"]
        table.add_row(
            r["router"], policy, f"{r['fit_s']:.2f}",
            f"{r['single_p50_ms']:.3f}", f"{r['single_p99_ms']:.3f}",
            f"{r['single_mean_ms']:.3f}", n_timed, f"{r['batch_prompts_per_s']:,.0f}",
            f"{r['peak_rss_mib']:.1f}", f"{delta:+.1f} (x{ratio:.2f})",
            f"{r['peak_heap_mib']:.1f}",
        )
    console.print(table)

    rss_source = "VmHWM" if Path("/proc/self/status").exists() else "ru_maxrss"
    notes = [
        f"p50/p99/mean: route([prompt], policy) one test prompt at a time after "
        f"{WARMUP_CALLS} warm-up calls; batch prompts/s: route(all {base['n_test']} test "
        f"prompts) x{repeats}, median.",
        f"policy: Policy.for_quality(router, validation, {QUALITY_FRACTION:g}); w is its "
        "cost weight.",
        "Each router ran in its own fresh spawned process; fit s is a cold fit there "
        "(includes first-use imports such as scikit-learn).",
        f"Peak RSS is the process's own high-water mark ({rss_source}); 'vs baseline' is "
        f"against a process that only imported routecast and loaded the data "
        f"(load {base['load_s']:.2f} s), measured in this run.",
        "Peak heap is tracemalloc's peak during a second, untimed fit + batched route in the "
        "same process (Python and numpy allocations; not native allocations of C libraries).",
    ]
    for r in results:
        if r["single_sampled"]:
            notes.append(f"{r['router']}: single-prompt latency timed on a seeded sample of "
                         f"{r['single_n']} of {r['batch_n']} test prompts.")
        if not r["calibrated"]:
            notes.append(f"* {r['router']}: {r['calibration_note']}; used Policy(0.0).")
    for n in notes:
        console.print(f"[dim]- {escape(n)}[/dim]", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or redirected: don't squeeze the table into 80 columns
        console = Console(width=160)
    err = Console(stderr=True)
    facts = machine_facts()
    print_header(console, facts, args.data)

    with err.status("baseline: import routecast + load the data"):
        base: BaselineResult | ChildError = _in_fresh_process(
            baseline_child, args.data, args.router_list)
    if "error" in base:
        err.print(f"error: {base['error']}", highlight=False, markup=False, soft_wrap=True)
        return 2

    results: list[RouterResult] = []
    for name in args.router_list:
        with err.status(f"{name}: fit, calibrate, time"):
            t0 = time.perf_counter()
            res: RouterResult | ChildError = _in_fresh_process(
                router_child, args.data, name, args.repeats, args.single_sample, args.seed)
        if "error" in res:
            err.print(f"error: {res['error']}", highlight=False, markup=False, soft_wrap=True)
            return 2
        err.print(f"{name}: done in {time.perf_counter() - t0:.1f} s", highlight=False)
        results.append(res)

    print_table(console, base, results, args.repeats)
    if args.json is not None:
        payload = {"machine": facts, "data": args.data, "repeats": args.repeats,
                   "quality_fraction": QUALITY_FRACTION, "baseline": base, "routers": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {args.json}", highlight=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
