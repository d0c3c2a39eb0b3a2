"""``routecast bench``: the replay benchmark."""

from __future__ import annotations

from pathlib import Path

import click

from routecast.cli.common import err_console, format_option, load_data, progress_bar, write_json
from routecast.errors import ConfigError


def parse_pair(pair: str | None) -> tuple[str, str] | None:
    """``"WEAK,STRONG"`` -> ``(weak, strong)``."""
    if not pair:
        return None
    parts = [p.strip() for p in pair.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--pair takes WEAK,STRONG, got {pair!r}")
    return parts[0], parts[1]


@click.command("bench")
@click.argument("data", type=click.Path(exists=True), required=False)
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "validation"]), help="split to evaluate on")
@click.option("--routers", default=None,
              help="comma-separated routers [default: random,best-single,cheapest,knn,linear]")
@click.option("--pair", default=None, help="WEAK,STRONG models for RouteLLM's APGR/CPT")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write results JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="write a PNG plot")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="write a Markdown report")
@click.option("--bootstrap", "n_boot", default=200, show_default=True,
              help="bootstrap resamples for confidence intervals (0: none)")
@format_option
@click.option("--seed", default=0, show_default=True, help="seed of splits and bootstrap")
@click.option("--train", "train_path", type=click.Path(exists=True), default=None,
              help="instead of DATA: fit and calibrate on this data set ... (with --test)")
@click.option("--test", "test_path", type=click.Path(exists=True), default=None,
              help="... and evaluate on all prompts of this one (same models)")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="also run K-fold cross-validation over all prompts of DATA")
@click.option("--no-cascades", is_flag=True,
              help="leave out the cascades and cascade routing (added by default when the "
                   "data records confidences or responses)")
@click.option("--few-labels", "few_model", default=None, metavar="MODEL",
              help="instead: measure adding MODEL to a router fitted without it, from a few "
                   "labelled prompts (add_model), against refitting on them and the full fit")
@click.option("--labels", "label_counts", default="25,50,100,200", show_default=True,
              help="with --few-labels: numbers of labelled prompts")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="with --few-labels: seeded draws of labelled prompts per number")
def bench_cmd(data: str | None, split: str, routers: str | None, pair: str | None,
              json_path: str | None, plot_path: str | None, report_path: str | None,
              n_boot: int, fmt: str, seed: int, train_path: str | None,
              test_path: str | None, folds: int | None, no_cascades: bool = False,
              few_model: str | None = None, label_counts: str = "25,50,100,200",
              repeats: int = 5) -> None:
    """Fit on train, calibrate on validation, and compare routers on SPLIT of DATA.

    With --train A --test B (no DATA): fit and calibrate on A, evaluate on all of B.
    With --few-labels MODEL: the few-labels curve of adding MODEL (bench/fewlabels.py).
    """
    from routecast.bench import report
    from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate

    names = tuple(r.strip() for r in routers.split(",") if r.strip()) if routers else None
    if few_model is not None:
        _few_labels(data, few_model, names, label_counts, repeats, split, fmt, seed, json_path)
        return
    weak_strong = parse_pair(pair)
    chosen = names or DEFAULT_ROUTERS
    if train_path or test_path:  # generalisation across data sets (bench/crossval.py)
        from routecast.bench.crossval import cross_dataset

        if data or folds or not (train_path and test_path):
            raise ConfigError("--train A --test B go together and replace DATA and --folds")
        a, b = load_data(train_path, fmt, seed), load_data(test_path, fmt, seed)
        with progress_bar(len(chosen)) as update:
            result = cross_dataset(a, b, routers=chosen, pair=weak_strong, n_boot=n_boot,
                                   seed=seed, progress=update, cascades=not no_cascades)
    else:
        if data is None:
            raise ConfigError("give DATA to benchmark, or --train A --test B")
        ds = load_data(data, fmt, seed)
        with progress_bar(len(chosen)) as update:
            result = evaluate(ds, split=split, routers=chosen, pair=weak_strong,
                              n_boot=n_boot, seed=seed, progress=update,
                              cascades=not no_cascades)
        if folds:
            from routecast.bench.crossval import k_fold

            with progress_bar(folds * len(chosen)) as update:
                result["folds"] = k_fold(ds, folds, routers=chosen, pair=weak_strong,
                                         seed=seed, progress=update,
                                         cascades=not no_cascades)
    report.print_table(result)
    if "cross" in result:
        from routecast.bench.crossval import print_cross

        print_cross(result)
    if "folds" in result:
        from routecast.bench.crossval import print_folds

        print_folds(result["folds"])
    if json_path:
        write_json(json_path, result)
    if plot_path:
        from routecast.bench.plot import plot

        plot(result, plot_path)
        err_console.print(f"wrote {plot_path}")
    if report_path:
        Path(report_path).write_text(report.markdown(result, plot_path), encoding="utf-8")
        err_console.print(f"wrote {report_path}")


def _few_labels(data: str | None, model: str, names: tuple[str, ...] | None, label_counts: str,
                repeats: int, split: str, fmt: str, seed: int, json_path: str | None) -> None:
    """``--few-labels MODEL``: run and print ``bench/fewlabels.py``'s curve."""
    from routecast.bench.fewlabels import DEFAULT_ROUTERS as FEW_ROUTERS
    from routecast.bench.fewlabels import few_labels, print_table

    if data is None:
        raise ConfigError("--few-labels needs DATA")
    try:
        sizes = [int(x) for x in label_counts.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--labels takes comma-separated integers, got {label_counts!r}"
                          ) from None
    ds = load_data(data, fmt, seed)
    chosen = names or FEW_ROUTERS
    with progress_bar(len(chosen)) as update:
        result = few_labels(ds, model, routers=chosen, labels=sizes, repeats=repeats,
                            seed=seed, split=split, progress=update)
    print_table(result)
    if json_path:
        write_json(json_path, result)
