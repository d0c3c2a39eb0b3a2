"""``routecast fit``, ``calibrate`` and ``route``: routers as artifacts on the command line.

::

    routecast fit DATA --router linear [--param C=0.5 ...] [--encoder minilm] --out DIR [--all]
    routecast calibrate DIR --quality-fraction 0.95 --data DATA [--split validation]
    routecast calibrate DIR --budget-usd 0.002 --data DATA
    routecast route DIR "prompt ..." [--json] [--cost-weight W]

A router folder is what :mod:`routecast.routers.persist` writes (``router.json`` +
``arrays.npz``, no pickle). ``fit`` adds ``fit.json``, a record of the data it was fitted on, so
that ``calibrate`` can refuse to solve the policy on those same prompts (a policy calibrated on
training prompts is over-confident). ``calibrate`` stores the policy and a calibration record
(target, data, realised quality and cost) in ``router.json``, which ``route`` uses to explain its
choice.

``route`` loads only what the router needs: a TF-IDF router imports numpy and scipy, never
scikit-learn or torch; a MiniLM router imports torch on its first embedding (not at all when
the prompt's embedding is already in the cache).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.policy import Policy
    from routecast.routers.base import Router

FIT_FILE = "fit.json"
FIT_FORMAT = "routecast-fit"


# -- fit -------------------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, Any]:
    """``"k=40"`` -> ``("k", 40)``: the value is read as JSON when it parses, else kept as text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ConfigError(f"--param takes KEY=VALUE (e.g. --param k=20), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".partial-{path.name}")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never a half-written record


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the router")
    if out.is_dir() and any(out.iterdir()) and not (out / "router.json").exists():
        raise ConfigError(f"--out {out} is a non-empty folder that holds no router; give a new "
                          "or empty folder (an existing router folder is replaced)")


@click.command("fit")
@click.argument("data")
@click.option("--router", "router_name", required=True, help="router name, e.g. knn or linear")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="router parameter (repeatable), e.g. --param k=20 --param weighted=false")
@click.option("--encoder", default=None, help="prompt encoder, e.g. tfidf or minilm")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder to write the router to")
@click.option("--all", "use_all", is_flag=True,
              help="fit on train + validation (then calibrate on other data)")
@click.option("--format", "fmt", default="auto", show_default=True, help="input format")
@click.option("--seed", default=0, show_default=True, help="seed of the data's split")
def fit_cmd(data: str, router_name: str, params: tuple[str, ...], encoder: str | None,
            out: str, use_all: bool, fmt: str, seed: int) -> None:
    """Fit a router on the train split of DATA and save it to --out."""
    from routecast.cli.common import err_console, load_data
    from routecast.routers import make_router
    from routecast.routers.persist import save_router

    kwargs = dict(parse_param(p) for p in params)
    if encoder is not None:
        if "encoder" in kwargs:
            raise ConfigError("give the encoder once: --encoder or --param encoder=..., not both")
        kwargs["encoder"] = encoder
    router = make_router(router_name, **kwargs)  # unknown names and parameters fail here
    if router.evaluation_only:
        raise ConfigError(f"router {router_name!r} only knows the prompts it was fitted on: it "
                          "is for evaluation (routecast bench), not for routing new prompts")
    out_dir = Path(out)
    _check_out(out_dir)
    ds = load_data(data, fmt, seed)
    splits = ["train", "validation"] if use_all else ["train"]
    train = ds.take(_in_splits(ds, splits))
    if train.n_prompts == 0:
        raise ConfigError(f"{data} has no prompts in the {' or '.join(splits)} split")
    with err_console.status(f"fitting {router_name} on {train.n_prompts} prompts"):
        t0 = time.perf_counter()
        router.fit(train)
        fit_s = time.perf_counter() - t0
    save_router(router, out_dir)
    _write_json(out_dir / FIT_FILE, {
        "format": FIT_FORMAT, "version": 1, "data": str(Path(data).resolve()),
        "dataset": ds.name, "data_format": fmt, "seed": seed, "splits": splits,
        "n_prompts": train.n_prompts, "models": list(ds.models), "router": router_name,
        "params": {k: v if isinstance(v, str | int | float | bool | None) else repr(v)
                   for k, v in kwargs.items()},
        "fit_s": fit_s,
    })
    click.echo(f"fitted {router!r} on {train.n_prompts} {'+'.join(splits)} prompts of "
               f"{ds.name} ({ds.n_models} models) in {fit_s:.1f} s; wrote {out_dir}")
    hint = "--data OTHER_DATA" if use_all else f"--data {data}"
    click.echo(f"next: routecast calibrate {out_dir} --quality-fraction 0.95 {hint}")


def _in_splits(ds: Dataset, splits: list[str]) -> Any:
    """Boolean mask of the prompts whose split is one of ``splits``."""
    import numpy as np

    return np.isin(ds.split, splits)


# -- calibrate -------------------------------------------------------------------------------


def _read_fit(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / FIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a router saved by the library has no record; nothing to check against
    return record if isinstance(record, dict) and record.get("format") == FIT_FORMAT else None


def _check_not_fitted_on(fit: dict[str, Any] | None, ds: Dataset, seed: int,
                         splits: list[str]) -> None:
    """Refuse a calibration set that shares the split the router was fitted on."""
    if fit is None or fit.get("dataset") != ds.name:
        return
    if fit.get("seed") != seed:
        raise ConfigError(
            f"the router was fitted on {ds.name} split with --seed {fit.get('seed')}; another "
            "seed re-draws the split, so the calibration prompts would include training "
            f"prompts; pass --seed {fit.get('seed')}")
    shared = sorted(set(splits) & set(fit.get("splits") or []))
    if shared:
        raise ConfigError(
            f"the router was fitted on the {'+'.join(fit['splits'])} split of {ds.name}, so "
            f"calibrating on its {'+'.join(shared)} prompts would be over-confident; calibrate "
            "on the validation split (refit without --all) or on other data")


def align_models(router: Router, ds: Dataset) -> Dataset:
    """``ds`` with its model columns in the router's order; raises if the models differ."""
    if tuple(ds.models) == tuple(router.models_):
        return ds
    if set(ds.models) != set(router.models_):
        only_router = sorted(set(router.models_) - set(ds.models))
        only_data = sorted(set(ds.models) - set(router.models_))
        raise ConfigError(
            f"the router predicts models the data lacks ({only_router}) or the data has models "
            f"the router does not know ({only_data}); use data with the router's models")
    return ds.select_models(router.models_)


@click.command("calibrate")
@click.argument("directory", metavar="DIR")
@click.option("--budget-usd", type=float, default=None,
              help="best quality at a mean cost per query of at most this many USD")
@click.option("--quality-fraction", type=float, default=None,
              help="cheapest policy reaching this fraction of the best single model's quality")
@click.option("--data", "data", required=True, help="calibration data (outcomes)")
@click.option("--split", default="validation", show_default=True,
              type=click.Choice(["validation", "test", "all"]),
              help="which prompts of --data to calibrate on")
@click.option("--format", "fmt", default="auto", show_default=True, help="input format")
@click.option("--seed", default=0, show_default=True, help="seed of the data's split")
@click.option("--confidence", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=None,
              help="with --quality-fraction: the cheapest point certified to reach the target "
                   "on new prompts with this probability (e.g. 0.9; Learn then Test)")
def calibrate_cmd(directory: str, budget_usd: float | None, quality_fraction: float | None,
                  data: str, split: str, fmt: str, seed: int,
                  confidence: float | None = None) -> None:
    """Solve the router's policy for a budget or a quality target and save it in DIR.

    A quality target searches the router's cost weights and the mixes of single models; if
    a mix is cheaper at the target, the policy falls back to it and says so."""
    from routecast.cli.common import load_data
    from routecast.policy import Policy
    from routecast.routers.persist import load_router, save_router

    if (budget_usd is None) == (quality_fraction is None):
        raise ConfigError("give exactly one target: --budget-usd X or --quality-fraction F")
    if confidence is not None and quality_fraction is None:
        raise ConfigError("--confidence goes with --quality-fraction F (a budget is met on "
                          "average by construction)")
    folder = Path(directory)
    router, _ = load_router(folder)
    ds = load_data(data, fmt, seed)
    splits = ["train", "validation", "test"] if split == "all" else [split]
    fit = _read_fit(folder)
    _check_not_fitted_on(fit, ds, seed, splits)
    cal = align_models(router, ds if split == "all" else ds.subset(split))
    # The single-model mixes are ordered by the models' means on the fit data where it is
    # this data set (never the calibration outcomes); else by the router's estimates.
    train_means = None
    if fit is not None and fit.get("dataset") == ds.name and fit.get("splits"):
        import numpy as np

        fitted_on = ds.take(np.isin(ds.split, list(fit["splits"])))
        if fitted_on.n_prompts:
            train_means = align_models(router, fitted_on).mean_quality().tolist()
    if budget_usd is not None:
        policy = Policy.for_budget(router, cal, budget_usd)
        target: dict[str, Any] = {"target": "budget_usd", "value": budget_usd}
    else:
        assert quality_fraction is not None
        policy = Policy.for_quality(router, cal, quality_fraction, confidence,
                                    mean_quality=train_means)
        target = {"target": "quality_fraction", "value": quality_fraction}
        if policy.calibration is not None:
            target["guarantee"] = policy.calibration.to_dict()
        target["policy"] = policy.describe()
        target["fallback"] = policy.fallback
    record = {**target, **realised(router, policy, cal), "data": str(Path(data).resolve()),
              "dataset": ds.name, "split": split, "seed": seed, "n_prompts": cal.n_prompts,
              **calibration_curve(router, cal)}
    save_router(router, folder, policy=policy, calibration=record)
    click.echo(describe_calibration(policy.cost_weight, record))


def realised(router: Router, policy: Policy, data: Dataset) -> dict[str, Any]:
    """What ``policy`` achieves on ``data``: mean quality and cost, share of each model, and
    the best single model (highest mean quality, ties to the cheaper) for comparison."""
    import numpy as np

    prompts = list(data.prompts)
    pick = policy.choose(router.predict(prompts), router.predict_cost(prompts),
                         models=router.models_, prompts=prompts)
    rows = np.arange(data.n_prompts)
    q, c = data.mean_quality(), data.mean_cost_usd()
    best = int(np.lexsort((c, -q))[0])
    share = np.bincount(pick, minlength=data.n_models) / max(1, data.n_prompts)
    return {
        "realised": {"quality": float(data.quality[rows, pick].mean()),
                     "cost_usd": float(data.cost_usd[rows, pick].mean()),
                     "share": {m: float(s) for m, s in zip(data.models, share, strict=True)
                               if s > 0}},
        "best_single": {"name": data.models[best], "quality": float(q[best]),
                        "cost_usd": float(c[best])},
    }


def calibration_curve(router: Router, data: Dataset) -> dict[str, Any]:
    """The router's realised cost-quality curve on the calibration data (one point per cost
    weight of the policy's grid, repeats dropped) and each single model's point on it: what
    the dashboard's router card draws next to the live operating point."""
    import numpy as np

    from routecast.policy import choose, weight_grid

    prompts = list(data.prompts)
    pred_q, pred_c = router.predict(prompts), router.predict_cost(prompts)
    rows = np.arange(data.n_prompts)
    points: list[list[float]] = []
    for w in weight_grid(pred_c, 60):
        pick = choose(pred_q, pred_c, float(w))
        point = [float(data.cost_usd[rows, pick].mean()), float(data.quality[rows, pick].mean())]
        if point not in points:
            points.append(point)
    models = [{"name": m, "quality": float(q), "cost_usd": float(c)}
              for m, q, c in zip(data.models, data.mean_quality(), data.mean_cost_usd(),
                                 strict=True)]
    return {"curve": sorted(points), "models": models}


def describe_calibration(cost_weight: float, record: dict[str, Any]) -> str:
    """One paragraph: the target, where it was solved, and what it achieved there."""
    best = record.get("best_single") or {}
    got = record.get("realised") or {}
    if record.get("target") == "quality_fraction":
        goal = f"{record['value']:.0%} of {best.get('name', 'the best model')}'s quality"
    elif record.get("target") == "budget_usd":
        goal = f"a budget of ${record['value']:.6g} per query"
    else:
        return f"cost weight {cost_weight:.4g} (not calibrated by routecast calibrate)"
    head = (f"cost weight {cost_weight:.4g}" if not record.get("fallback")
            else "a mix of single models")
    text = (f"{head}, calibrated for {goal} on "
            f"{record.get('dataset')}/{record.get('split')} ({record.get('n_prompts')} prompts)")
    if got and best:
        vs = got["cost_usd"] / best["cost_usd"] - 1 if best["cost_usd"] > 0 else 0.0
        text += (f": quality {got['quality']:.4f} (best single {best['quality']:.4f}) at "
                 f"${got['cost_usd']:.3g} per query ({vs:+.0%} vs its ${best['cost_usd']:.3g})")
    guarantee = record.get("guarantee") or {}
    if guarantee.get("confidence") is not None:
        bound = guarantee.get("quality_bound")
        text += (f"; certified with confidence {guarantee['confidence']:g} "
                 f"({guarantee.get('method')} bound, target {guarantee.get('target', 0):.4f}, "
                 f"lower bound on its quality "
                 f"{'-' if bound is None else format(bound, '.4f')})")
    if record.get("policy"):
        text += f"; operating point: {record['policy']}"
    elif record.get("fallback"):
        text += f"; fallback: {record['fallback']}"
    return text


# -- route -----------------------------------------------------------------------------------


@click.command("route")
@click.argument("directory", metavar="DIR")
@click.argument("prompt")
@click.option("--json", "as_json", is_flag=True, help="print the decision as JSON")
@click.option("--cost-weight", type=float, default=None,
              help="use this cost weight instead of the calibrated policy")
def route_cmd(directory: str, prompt: str, as_json: bool, cost_weight: float | None) -> None:
    """Route PROMPT ("-" reads it from stdin) with the router saved in DIR and say why."""
    from routecast.explain import explain_decision
    from routecast.policy import Policy
    from routecast.routers.persist import load_router, read_calibration

    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise ConfigError('the prompt is empty; pass the text to route, or "-" to read stdin')
    t0 = time.perf_counter()
    router, policy = load_router(directory)
    load_s = time.perf_counter() - t0
    calibration = read_calibration(directory) if policy is not None else {}
    if cost_weight is not None:
        policy, calibration = Policy(cost_weight), {}
    if policy is None:
        raise ConfigError(f"{directory} has no calibrated policy; run `routecast calibrate "
                          f"{directory} --quality-fraction 0.95 --data DATA` or pass "
                          "--cost-weight W")
    t0 = time.perf_counter()
    quality = [float(x) for x in router.predict([prompt])[0]]
    cost = [float(x) for x in router.predict_cost([prompt])[0]]
    pick = int(policy.choose(_row(quality), _row(cost), models=router.models_,
                             prompts=[prompt])[0])
    route_s = time.perf_counter() - t0
    w = policy.cost_weight
    why = explain_decision(policy, router.models_, quality, cost, pick)
    scores = [None if math.isinf(w) else q - w * c for q, c in zip(quality, cost, strict=True)]
    if as_json:
        click.echo(json.dumps({
            "model": router.models_[pick], "router": router.name,
            "cost_weight": None if math.isinf(w) else w,
            "models": [{"name": m, "quality": q, "cost_usd": c, "score": s}
                       for m, q, c, s in zip(router.models_, quality, cost, scores, strict=True)],
            "why": why, "calibration": calibration, "policy": policy.to_dict(),
            "fallback": policy.fallback,
            "load_ms": 1e3 * load_s, "route_ms": 1e3 * route_s,
        }, indent=1, allow_nan=False))
        return
    click.echo(router.models_[pick])
    width = max(len(m) for m in router.models_) + 2
    click.echo(f"  {'model':<{width}}{'quality':>9}{'cost USD':>12}{'score':>9}")
    def rank(j: int) -> tuple[float, float]:
        score = scores[j]
        return (-score if score is not None else cost[j], cost[j])

    order = sorted(range(len(quality)), key=rank)
    for j in order:
        mark = "*" if j == pick else " "
        score = "" if scores[j] is None else f"{scores[j]:.3f}"
        click.echo(f"{mark} {router.models_[j]:<{width}}{quality[j]:>9.3f}"
                   f"{cost[j]:>12.6g}{score:>9}")
    click.echo("why: " + "\n     ".join(f"{line}." for line in why))
    policy_text = (describe_calibration(w, calibration) if calibration
                   else f"cost weight {w:.4g} (given on the command line)")
    click.echo(f"policy: {policy_text}.")
    if policy.fallback:
        click.echo(f"fallback: {policy.fallback}.")
    click.echo(f"({router.name} router loaded in {1e3 * load_s:.0f} ms, "
               f"routed in {1e3 * route_s:.2f} ms)")


def _row(values: list[float]) -> Any:
    import numpy as np

    return np.asarray([values], dtype=np.float64)
