"""The demo's second part: real recorded cloud models, replayed, where routing saves money.

The local models of the first part cost the same per answer, so no cascade can save there.
This part serves the RouterBench subset's 11 recorded models (GPT-4, Claude, Llama-2-70B,
Mixtral, ...) through the replay fleet (:mod:`routecast.fleet`) behind ``routecast serve``,
with three endpoints:

* ``auto``: a router fitted on the train split (``routecast fit --router linear``: per-model
  logistic regression on TF-IDF) and calibrated on validation to 95 % of the best single
  model's quality (``routecast calibrate --quality-fraction 0.95``);
* ``cascade``: a cascade tuned on train and validation (``routecast tune-cascade --signal
  learned``: a learned scorer of question and answer decides whether to escalate);
* the best single model on validation (GPT-4), asked directly.

Every held-out test prompt (none of them seen by the fit or the tuning) is sent to each
endpoint through the official ``openai`` client; accuracy is the recorded correctness of the
answer that came back (the fleet's judge), cost what the server billed
(``x-routecast-cost-usd``: usage tokens at each model's price).

Fitting takes a minute or so on two cores, so the fitted router and cascade are kept in the
cache (``$ROUTECAST_CACHE/demo``, see :func:`routecast.encoders.cache.cache_dir`), keyed by the
data files; later runs start in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routecast.errors import DataError, UpstreamError
from routecast.processes import stop_process

if TYPE_CHECKING:
    from routecast.fleet.replay import Fleet

DATA_FOLDER = "routerbench-subset"
QUALITY_FRACTION = 0.95
#: Bump when what :func:`prepare` writes changes, so stale cached fits are not reused.
PREPARED_VERSION = 1
ENDPOINTS = ("auto", "cascade")
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_data(shared: str | Path) -> Path:
    """The RouterBench subset under ``shared`` (the shared data folder), or a clear error."""
    folder = Path(shared) / DATA_FOLDER
    if not folder.is_dir():
        raise DataError(
            f"the recorded cloud data is not there ({DATA_FOLDER}/ is missing), so the demo's "
            "fleet part cannot run", where=Path(shared).resolve(),
            fix="put the shared data beside the checkout (../shared/data), or pass --data "
                "PATH (make demo DATA=PATH)")
    return folder


@dataclass(frozen=True)
class Prepared:
    """The fitted router folder and the tuned cascade folder, and whether they came from the
    cache."""

    router: Path
    cascade: Path
    cached: bool


def _fingerprint(data: Path, seed: int) -> str:
    """Names, sizes and modification times of the data files, the seed and the version."""
    h = hashlib.sha256(f"{PREPARED_VERSION}\0{seed}".encode())
    for f in sorted(data.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(data)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "routecast.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str], what: str) -> str:
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise UpstreamError(f"{what} failed:\n{out.strip()[-2000:]}", model="routecast")
    return out


def prepare(data: Path, *, seed: int = 0, say: Callable[[str], None] = print) -> Prepared:
    """Fit and calibrate the router and tune the cascade with the commands a user runs (the
    two in parallel), or take them from the cache."""
    from routecast.encoders.cache import cache_dir, cache_enabled

    if cache_enabled():
        home = cache_dir() / "demo" / f"{DATA_FOLDER}-{_fingerprint(data, seed)}"
    else:
        home = Path(tempfile.mkdtemp(prefix="routecast-demo-"))
    router, cascade = home / "router", home / "cascade"
    done = home / "prepared.json"
    if done.is_file():
        return Prepared(router, cascade, cached=True)
    say(f"fitting the router and tuning the cascade on the train and validation splits (once; "
        f"kept in {home})")
    t0 = time.perf_counter()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    fit = _cli("fit", str(data), "--router", "linear", "--out", str(router), "--seed", str(seed))
    tune = _cli("tune-cascade", str(data), "--out", str(cascade), "--signal", "learned",
                "--quality-fraction", str(QUALITY_FRACTION), "--seed", str(seed))
    _finish(fit, "routecast fit")
    _finish(_cli("calibrate", str(router), "--quality-fraction", str(QUALITY_FRACTION),
                 "--data", str(data), "--seed", str(seed)), "routecast calibrate")
    _finish(tune, "routecast tune-cascade")
    done.write_text(json.dumps({"data": str(data), "seed": seed,
                                "took_s": time.perf_counter() - t0}), encoding="utf-8")
    say(f"  done in {time.perf_counter() - t0:.0f} s")
    return Prepared(router, cascade, cached=False)


# -- serving and asking --------------------------------------------------------------------------


@contextlib.contextmanager
def routecast_serve(config: dict[str, Any], folder: Path, timeout_s: float = 120.0
                    ) -> Iterator[str]:
    """``routecast serve --config`` as a subprocess on a free port; yields its ``/v1`` URL."""
    from routecast.fleet.run import bind

    path = folder / "routecast.yaml"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    with bind() as probe:
        port = probe.getsockname()[1]
    log = (folder / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "routecast.cli", "serve", "--config",
                             str(path), "--port", str(port), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise UpstreamError(f"routecast serve did not start:\n{log.read()[-2000:]}",
                                    model="routecast")
            try:
                with _LOOPBACK.open(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc, 15)
        log.close()


@dataclass
class EndpointResult:
    """One endpoint's answers: per prompt the answering model, the route, the billed cost and
    the judged quality."""

    endpoint: str
    models: list[str] = field(default_factory=list)
    routes: list[list[str]] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(self.quality) / max(1, len(self.quality))

    @property
    def mean_cost_usd(self) -> float:
        return sum(self.cost_usd) / max(1, len(self.cost_usd))


@dataclass
class FleetDemoResult:
    data: str
    n_prompts: int
    best_model: str
    results: dict[str, EndpointResult]
    cascade: str
    calibration: dict[str, Any]
    seconds: float


def ask_all(url: str, fleet: Fleet, prompts: list[str], endpoint: str,
            concurrency: int = 4) -> EndpointResult:
    """Send ``prompts`` to ``endpoint`` through the openai client; judge each answer."""
    import openai

    from routecast.fleet.judge import JudgeAsk

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)

    def one(prompt: str) -> tuple[str, list[str], float, float]:
        raw = client.chat.completions.with_raw_response.create(
            model=endpoint, messages=[{"role": "user", "content": prompt}])
        answer = raw.parse().choices[0].message.content or ""
        verdict = fleet.judge(JudgeAsk(prompt, answer))
        return (raw.headers["x-routecast-model"], raw.headers["x-routecast-route"].split(","),
                float(raw.headers["x-routecast-cost-usd"]), verdict.score)

    out = EndpointResult(endpoint)
    with ThreadPoolExecutor(concurrency) as pool:
        for model, route, cost, quality in pool.map(one, prompts):
            out.models.append(model)
            out.routes.append(route)
            out.cost_usd.append(cost)
            out.quality.append(quality)
    return out


def run(shared: str | Path, *, sample: int | None = None, seed: int = 0,
        say: Callable[[str], None] = print) -> FleetDemoResult:
    """Prepare (or load) the router and cascade, serve them over the fleet, ask every test
    prompt (or a seeded ``sample``), and return what each endpoint achieved."""
    import numpy as np

    from routecast.data import load_dataset
    from routecast.fleet.replay import Fleet
    from routecast.fleet.run import serve_fleet

    data_path = find_data(shared)
    t0 = time.perf_counter()
    prepared = prepare(data_path, seed=seed, say=say)
    ds = load_dataset(data_path, seed=seed)
    test = ds.subset("test")
    val = ds.subset("validation")
    best = val.models[int(np.lexsort((val.mean_cost_usd(), -val.mean_quality()))[0])]
    rows = np.arange(test.n_prompts)
    if sample is not None and sample < test.n_prompts:
        rows = np.sort(np.random.default_rng(seed).choice(test.n_prompts, sample, replace=False))
    prompts = [test.prompts[i] for i in rows]
    fleet = Fleet(ds, rows=np.flatnonzero(ds.split == "test").tolist(), seed=seed)
    cascade = json.loads((prepared.cascade / "cascade.json").read_text(encoding="utf-8"))
    router_meta = json.loads((prepared.router / "router.json").read_text(encoding="utf-8"))
    with serve_fleet(fleet) as running, tempfile.TemporaryDirectory() as tmp:
        config = {"models": running.models_config(judge=False),
                  "endpoints": {"auto": {"type": "routed", "router": str(prepared.router)},
                                "cascade": {"type": "cascade", "file": str(prepared.cascade)}},
                  "storage": {"db": str(Path(tmp) / "routecast.db")}}
        say(f"replaying {len(fleet.models)} recorded models ({_models_line(fleet.models)}) "
            f"from {running.base_url}")
        with routecast_serve(config, Path(tmp)) as url:
            say(f"routecast serve on {url}: asking {len(prompts)} held-out test prompts of "
                f"each endpoint through the openai client")
            results = {e: ask_all(url, fleet, prompts, e) for e in (best, *ENDPOINTS)}
    from routecast.cascades.cascade import Cascade

    return FleetDemoResult(ds.name, len(prompts), best, results,
                           Cascade.from_dict(cascade).describe(),
                           dict(router_meta.get("calibration") or {}),
                           time.perf_counter() - t0)


def _models_line(models: tuple[str, ...]) -> str:
    short = [m.rsplit("/", 1)[-1] for m in models]
    return ", ".join(short[:4]) + f" and {len(short) - 4} more" if len(short) > 4 else \
        ", ".join(short)


def summary(result: FleetDemoResult) -> list[str]:
    """The fleet part's closing lines: each endpoint beside always the best model."""
    base = result.results[result.best_model]
    lines = [f"\nOn {result.n_prompts} held-out {result.data} prompts (recorded cloud models; "
             "accuracy as recorded, cost as billed by routecast serve):"]
    width = max(len(e) for e in result.results)
    for name, r in result.results.items():
        line = (f"  {name:{width}s}  accuracy {r.accuracy:6.1%}  ${r.mean_cost_usd:.5f}/query  "
                f"${sum(r.cost_usd):7.3f} in all")
        if r is not base:
            saved = 1 - r.mean_cost_usd / base.mean_cost_usd if base.mean_cost_usd else 0.0
            line += (f"  vs always {result.best_model}: {saved:.0%} saved, accuracy "
                     f"{100 * (r.accuracy - base.accuracy):+.1f} pts")
        lines.append(line)
    auto = result.results["auto"]
    shares: dict[str, int] = {}
    for m in auto.models:
        shares[m] = shares.get(m, 0) + 1
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
    lines.append("  auto routed to " + ", ".join(f"{m} {n / len(auto.models):.0%}"
                                                 for m, n in top)
                 + f" (calibrated on validation for {QUALITY_FRACTION:.0%} of the best model's "
                   "quality)")
    cascade = result.results["cascade"]
    escalated = sum(len(r) > 1 for r in cascade.routes) / max(1, len(cascade.routes))
    lines.append(f"  cascade {result.cascade}; escalated {escalated:.0%}")
    return lines
