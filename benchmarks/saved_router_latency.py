"""What a server or CLI pays to use a saved router: import, load, and route one prompt.

Measured in fresh processes (``subprocess``, one per measurement, never reused):

* **import time of routecast**: wall time of ``python -c "import routecast"`` minus that of
  ``python -c "pass"``, median over ``--runs`` alternating pairs; plus the self-reported
  cumulative time of the ``routecast`` package from ``python -X importtime`` (median), and the
  same for ``routecast.cli`` (what every ``routecast`` command pays before its own imports);
* for a saved **TF-IDF linear** router and a saved **MiniLM kNN** router (both fitted on the
  train split, calibrated for 95 % of the best single model's quality on validation, saved with
  ``save_router``): in a fresh process, the time to import ``routecast.routers.persist``, the
  time of ``load_router``, the **first** ``route([prompt], policy)`` call on its own (MiniLM
  imports torch and loads its weights then), then single-prompt p50/p99/mean over ``--single``
  other test prompts, and whether ``torch`` / ``sklearn`` were imported after loading and at the
  end. The MiniLM router runs twice: with the embedding cache off (every prompt goes through
  the model: the honest cold figure) and with the test prompts already in the cache.

``--threads N`` sets ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
timed processes. On a busy machine it matters a lot: multi-threaded BLAS and torch spin and
wait on each other for work as small as one prompt, so one thread is often faster.

Fitting the MiniLM router embeds the train and validation prompts once; they land in the
embedding cache (``--cache``, default: routecast's usual cache folder), so a second run of
this benchmark skips that work. Run from the project root::

    .venv/bin/python benchmarks/saved_router_latency.py [--data DIR] [--runs 15] [--single 300]
        [--single-cold 50] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QUALITY_FRACTION = 0.95
ROUTERS = {"tfidf-linear": ("linear", "tfidf"), "minilm-knn": ("knn", "minilm")}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "routerbench-subset"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile, ``q`` in [0, 100]."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# -- import time -------------------------------------------------------------------------------


def _wall(code: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t


def _importtime_us(module: str, env: dict[str, str]) -> int:
    """Cumulative microseconds ``-X importtime`` reports for ``module`` itself."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, check=True, env=env).stderr
    pattern = re.compile(rf"^import time:\s+\d+ \|\s+(\d+) \|\s*{re.escape(module)}$",
                         re.MULTILINE)
    found = pattern.findall(err)
    if not found:
        raise RuntimeError(f"-X importtime printed no line for {module}")
    return int(found[-1])


def import_times(runs: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    _wall("import routecast, routecast.cli", env)  # warm the bytecode and file caches
    bare, full = [], []
    for _ in range(runs):  # alternate, so drifting machine load hits both alike
        bare.append(_wall("pass", env))
        full.append(_wall("import routecast", env))
    diffs = [f - b for f, b in zip(full, bare, strict=True)]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, routecast; print(sorted(m for m in ('numpy', "
         "'scipy', 'sklearn', 'torch', 'rich', 'click') if m in sys.modules))"],
        capture_output=True, text=True, check=True, env=env).stdout.strip()
    return {
        "runs": runs,
        "python_bare_s": statistics.median(bare),
        "python_import_routecast_s": statistics.median(full),
        "routecast_import_s": statistics.median(diffs),
        "importtime_routecast_s": statistics.median(
            _importtime_us("routecast", env) for _ in range(runs)) / 1e6,
        "importtime_routecast_cli_s": statistics.median(
            _importtime_us("routecast.cli", env) for _ in range(runs)) / 1e6,
        "heavy_modules_after_import": loaded,
    }


# -- saved routers -----------------------------------------------------------------------------


def prepare(data: str, folder: Path, n_single: int) -> dict[str, Any]:
    """Fit, calibrate and save both routers; write the prompts to time. Runs in this process."""
    from routecast.data import load_dataset
    from routecast.errors import CalibrationError
    from routecast.policy import Policy
    from routecast.routers import make_router
    from routecast.routers.persist import save_router

    ds = load_dataset(data)
    train, validation, test = ds.subset("train"), ds.subset("validation"), ds.subset("test")
    info: dict[str, Any] = {"dataset": ds.name, "n_train": train.n_prompts,
                            "n_validation": validation.n_prompts, "fit_s": {}}
    for label, (name, encoder) in ROUTERS.items():
        t = time.perf_counter()
        router = make_router(name, encoder=encoder).fit(train)
        try:
            policy = Policy.for_quality(router, validation, QUALITY_FRACTION)
        except CalibrationError:
            policy = Policy(0.0)
        info["fit_s"][label] = time.perf_counter() - t
        save_router(router, folder / label, policy=policy)
    (folder / "prompts.json").write_text(json.dumps(list(test.prompts)[: n_single + 1]))
    return info


def child(directory: str, prompts_file: str, limit: str) -> dict[str, Any]:
    """In a fresh process: import, load, first route, then single-prompt routes."""
    t0 = time.perf_counter()
    from routecast.routers.persist import load_router

    t1 = time.perf_counter()
    router, policy = load_router(directory)
    t2 = time.perf_counter()
    assert policy is not None
    after_load = {m: m in sys.modules for m in ("torch", "sklearn", "scipy")}
    prompts = json.loads(Path(prompts_file).read_text())[: int(limit) + 1]
    t = time.perf_counter()
    router.route([prompts[0]], policy)
    first_s = time.perf_counter() - t
    times = []
    for p in prompts[1:]:
        t = time.perf_counter()
        router.route([p], policy)
        times.append(time.perf_counter() - t)
    return {
        "import_persist_s": t1 - t0, "load_router_s": t2 - t1, "first_route_s": first_s,
        "p50_ms": 1e3 * percentile(times, 50), "p99_ms": 1e3 * percentile(times, 99),
        "mean_ms": 1e3 * statistics.fmean(times), "n": len(times),
        "loaded_after_load": after_load,
        "loaded_at_end": {m: m in sys.modules for m in ("torch", "sklearn", "scipy")},
    }


def run_child(directory: Path, prompts: Path, cache: str, threads: int | None,
              limit: int) -> dict[str, Any]:
    env = {**os.environ, "ROUTECAST_CACHE": cache}
    if threads is not None:  # BLAS (numpy) and OpenMP (torch) read these at start-up
        env.update({k: str(threads) for k in THREAD_VARS})
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(directory), str(prompts),
                          str(limit)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    result["threads"] = threads
    return result


def warm_cache(folder: Path, prompts: Path, cache: str) -> None:
    """Embed the timed prompts into ``cache`` so that the warm run reads them back."""
    os.environ["ROUTECAST_CACHE"] = cache
    from routecast.encoders import make_encoder

    make_encoder("minilm").transform(json.loads(prompts.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saved_router_latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(default_data()))
    parser.add_argument("--runs", type=int, default=15, help="import-time repeats")
    parser.add_argument("--single", type=int, default=300, help="prompts timed one by one")
    parser.add_argument("--single-cold", type=int, default=50,
                        help="prompts timed one by one through the MiniLM model (cache off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads in the timed processes (default: libraries' "
                             "own choice)")
    parser.add_argument("--cache", default=None,
                        help="embedding cache folder for fitting (default: routecast's own)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "PROMPTS", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0

    if args.cache:
        os.environ["ROUTECAST_CACHE"] = args.cache
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; data {args.data}")
    imports = import_times(args.runs)
    print(f"import routecast: {1e3 * imports['routecast_import_s']:.0f} ms (wall, median of "
          f"{args.runs}, minus bare python {1e3 * imports['python_bare_s']:.0f} ms); "
          f"-X importtime: routecast {1e3 * imports['importtime_routecast_s']:.0f} ms, "
          f"routecast.cli {1e3 * imports['importtime_routecast_cli_s']:.0f} ms; heavy modules "
          f"loaded by it: {imports['heavy_modules_after_import']}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        info = prepare(args.data, folder, max(args.single, args.single_cold))
        print(f"prepared in {time.perf_counter() - t:.1f} s (fit + calibrate: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in info["fit_s"].items()) + ")",
              flush=True)
        prompts = folder / "prompts.json"
        th, n = args.threads, args.single
        runs = {
            "tfidf-linear": run_child(folder / "tfidf-linear", prompts, "off", th, n),
            "minilm-knn (cache off)": run_child(folder / "minilm-knn", prompts, "off", th,
                                                args.single_cold),
        }
        warm = str(folder / "warm-cache")
        warm_cache(folder, prompts, warm)
        runs["minilm-knn (warm cache)"] = run_child(folder / "minilm-knn", prompts, warm, th, n)

    head = (f"{'router':<26}{'import':>9}{'load':>9}{'1st route':>11}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'mean ms':>9}{'process':>9}  torch after load / at end")
    print(head)
    for label, r in runs.items():
        print(f"{label:<26}{1e3 * r['import_persist_s']:>7.0f}ms{1e3 * r['load_router_s']:>7.0f}ms"
              f"{1e3 * r['first_route_s']:>9.0f}ms{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{r['mean_ms']:>9.3f}{r['process_s']:>8.1f}s  "
              f"{r['loaded_after_load']['torch']} / {r['loaded_at_end']['torch']}"
              f" (sklearn at end: {r['loaded_at_end']['sklearn']})")
    threads = "libraries' default" if args.threads is None else str(args.threads)
    print(f"- timed one by one after the first call: the first n test prompts of "
          f"{info['dataset']} (n = {', '.join(str(r['n']) for r in runs.values())}); import = "
          "importing routecast.routers.persist in the fresh process; process = the whole "
          f"child, interpreter start included; BLAS/OpenMP threads: {threads}.")
    print(f"- load average at end: {os.getloadavg()[0]:.1f} (the machine is shared: figures "
          "are wall-clock)")
    if args.json:
        args.json.write_text(json.dumps({"imports": imports, "prepare": info, "runs": runs},
                                        indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
