"""``routecast tune-cascade``: tune a cascade on recorded outcomes, into a folder the server loads.

::

    routecast tune-cascade DATA --out DIR [--models a,b,...] [--signal confidence|learned]
                           [--quality-fraction 0.95 | --budget-usd B] [--max-latency-p95-s S]
                           [--max-steps 4] [--no-use-confidence] [--format auto] [--seed 0]

writes ``DIR/cascade.json`` (:meth:`Cascade.to_dict`, plus a ``tuning`` record of the data,
the goal and the figures below) and, for the learned signal, the fitted scorer
(``DIR/scorer.json`` + ``scorer.npz``, :mod:`routecast.signals.persist`). A cascade endpoint
serves it with ``file: DIR``.

How, as in the replay benchmark (:mod:`routecast.bench.cascades`): the signal is fitted on the
train split; the cascade (models, order, thresholds: :mod:`routecast.cascades.tuning`) is tuned
on train, scored out-of-fold so no score saw its own outcome, plus validation. Goals: the
cheapest cascade that reaches ``--quality-fraction`` of the best single model's mean quality
on that data (default 95 %), or the best one within ``--budget-usd`` per query.

``confidence`` thresholds are on the recorded confidence as it is (not Platt-scaled): the live
endpoint compares them with the answer's summarised token log-probs, so the config's
``logprobs:`` must summarise them the way the data recorded them. The figures printed are on
validation (part of the tuning data, so optimistic) and, when the data has one, on the test
split, which nothing was fitted or tuned on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from routecast.cli.common import format_option
from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.cascades.cascade import Cascade
    from routecast.data.dataset import Dataset, FloatArray

CASCADE_FILE = "cascade.json"
#: Folds of the out-of-fold scores of train (as the benchmark).
FOLDS = 3


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the cascade")
    if out.is_dir() and any(out.iterdir()) and not (out / CASCADE_FILE).exists():
        raise ConfigError(f"--out {out} is a non-empty folder that holds no cascade; give a new "
                          "or empty folder (an existing tuned cascade folder is replaced)")


def _figures(cascade: Cascade, data: Dataset, scores: FloatArray) -> dict[str, Any]:
    """The cascade replayed on ``data``, beside the best single model there."""
    replay = cascade.replay(data, scores)
    best = int(data.mean_quality().argmax())
    return {"n_prompts": data.n_prompts, "quality": replay.mean_quality,
            "cost_usd": replay.mean_cost_usd, "escalation_rate": replay.escalation_rate,
            "best_single": {"name": data.models[best],
                            "quality": float(data.mean_quality()[best]),
                            "cost_usd": float(data.mean_cost_usd()[best])}}


@click.command("tune-cascade")
@click.argument("data")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder to write cascade.json (and the scorer) to")
@click.option("--models", default=None, metavar="A,B,...",
              help="models the cascade may use (default: every model of DATA)")
@click.option("--signal", type=click.Choice(["confidence", "learned"]), default="confidence",
              show_default=True, help="deferral signal the thresholds are tuned for")
@click.option("--quality-fraction", type=float, default=None,
              help="cheapest cascade reaching this share of the best single model's quality "
                   "(default 0.95)")
@click.option("--budget-usd", type=float, default=None,
              help="or: the best cascade within this mean cost per query")
@click.option("--max-latency-p95-s", type=float, default=None,
              help="also keep p95 end-to-end latency within this (needs recorded latencies)")
@click.option("--max-steps", default=4, show_default=True, help="most models one cascade asks")
@click.option("--use-confidence/--no-use-confidence", default=True, show_default=True,
              help="learned: let the scorer read the answers' recorded confidence (then the "
                   "live step is asked for log-probs)")
@format_option
@click.option("--seed", default=0, show_default=True, help="seed of the split and of the folds")
def tune_cmd(data: str, out: str, models: str | None, signal: str,
             quality_fraction: float | None, budget_usd: float | None,
             max_latency_p95_s: float | None, max_steps: int, use_confidence: bool, fmt: str,
             seed: int) -> None:
    """Tune a cascade on DATA's train and validation splits and save it to --out."""
    import numpy as np

    from routecast.cascades.tuning import CascadeSearch
    from routecast.cli.common import err_console, load_data
    from routecast.signals import make_signal
    from routecast.signals.learned import LearnedScorer
    from routecast.signals.persist import ARRAYS_FILE, META_FILE, save_scorer

    if quality_fraction is not None and budget_usd is not None:
        raise ConfigError("give one goal: --quality-fraction or --budget-usd, not both")
    if budget_usd is None and quality_fraction is None:
        quality_fraction = 0.95
    if quality_fraction is not None and not 0 < quality_fraction <= 1:
        raise ConfigError(f"--quality-fraction must lie in (0, 1], got {quality_fraction}")
    out_dir = Path(out)
    _check_out(out_dir)
    ds = load_data(data, fmt, seed)
    if models is not None:
        ds = ds.select_models([m.strip() for m in models.split(",") if m.strip()])
    train, val = ds.subset("train"), ds.subset("validation")
    params: dict[str, Any] = ({"calibrate": False} if signal == "confidence"
                              else {"use_confidence": use_confidence})
    with err_console.status(f"fitting the {signal} signal on {train.n_prompts} prompts"):
        fitted = make_signal(signal, **params).fit(train)
        s_val = fitted.score(val)
        tuning = ds.take(np.isin(ds.split, ("train", "validation")))
        in_train = tuning.split == "train"
        s_tuning = np.empty((tuning.n_prompts, tuning.n_models))
        s_tuning[in_train] = fitted.cross_fit(train, FOLDS, seed)
        s_tuning[~in_train] = s_val
    search = CascadeSearch(tuning, s_tuning, signal=signal, max_steps=max_steps)
    if budget_usd is not None:
        goal: dict[str, Any] = {"budget_usd": budget_usd}
        index = search.best_within(budget_usd, max_latency_p95_s=max_latency_p95_s)
    else:
        assert quality_fraction is not None
        target = quality_fraction * float(tuning.mean_quality().max())
        goal = {"quality_fraction": quality_fraction, "min_quality": target}
        index = search.cheapest_reaching(target, max_latency_p95_s=max_latency_p95_s)
    if max_latency_p95_s is not None:
        goal["max_latency_p95_s"] = max_latency_p95_s
    cascade = search.cascade(index)
    figures = {"validation": _figures(cascade, val, s_val)}
    if (ds.split == "test").any():
        test = ds.subset("test")
        figures["test"] = _figures(cascade, test, fitted.score(test))

    record = {"data": str(Path(data).resolve()), "dataset": ds.name, "data_format": fmt,
              "seed": seed, "signal": signal, "signal_params": params, "goal": goal,
              "tuned_on": {"train (out-of-fold)": int(in_train.sum()),
                           "validation": int((~in_train).sum())},
              "searched": search.describe_pruning(), **figures,
              # The dashboard's router card draws these: the tuning data's cost-quality
              # frontier of every cascade searched, and each single model on the same data.
              "curve": [[float(search.cost_usd[i]), float(search.quality[i])]
                        for i in search.frontier()],
              "models": [{"name": m, "quality": float(q), "cost_usd": float(c)}
                         for m, q, c in zip(tuning.models, tuning.mean_quality(),
                                            tuning.mean_cost_usd(), strict=True)]}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / CASCADE_FILE]
    reads_logprobs = signal == "confidence"
    if isinstance(fitted, LearnedScorer):
        save_scorer(fitted, out_dir)
        written += [out_dir / META_FILE, out_dir / ARRAYS_FILE]
        reads_logprobs = fitted.uses_confidence_
    else:  # a scorer left from an earlier run would belong to other thresholds
        for stale in (META_FILE, ARRAYS_FILE):
            (out_dir / stale).unlink(missing_ok=True)
    tmp = out_dir / f".partial-{CASCADE_FILE}"
    tmp.write_text(json.dumps({**cascade.to_dict(), "tuning": record}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out_dir / CASCADE_FILE)
    _report(cascade, goal, figures, tuning.n_prompts, written, out_dir, reads_logprobs)


def _report(cascade: Cascade, goal: dict[str, Any], figures: dict[str, dict[str, Any]],
            n_tuning: int, written: list[Path], out_dir: Path, reads_logprobs: bool) -> None:
    aim = (f"the best within ${goal['budget_usd']:.3g} per query" if "budget_usd" in goal
           else f"the cheapest reaching {goal['quality_fraction']:.0%} of the best single "
                f"model's quality ({goal['min_quality']:.3f})")
    click.echo(f"tuned on {n_tuning} prompts (train out-of-fold + validation): {aim}")
    click.echo(f"cascade ({cascade.signal}): {cascade.describe()}")
    for split, f in figures.items():
        best = f["best_single"]
        label = split if split == "validation" else f"{split} (held out)"
        click.echo(f"  {label}, {f['n_prompts']} prompts: quality {f['quality']:.3f} at "
                   f"${f['cost_usd']:.3g}/query, escalated {f['escalation_rate']:.0%}; best "
                   f"single {best['name']}: {best['quality']:.3f} at ${best['cost_usd']:.3g}")
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
    click.echo(f"serve it: endpoints: {{NAME: {{type: cascade, file: {out_dir}}}}}"
               + ("  (with logprobs: summarising log-probs as the data's confidence was)"
                  if reads_logprobs else ""))
