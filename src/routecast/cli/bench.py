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
@click.option("--folds", default=None, metavar="K|task",
              help="also run K-fold cross-validation over all prompts of DATA, or with "
                   "'task' leave one task out (fit and calibrate on the other tasks)")
@click.option("--no-cascades", is_flag=True,
              help="leave out the cascades and cascade routing (added by default when the "
                   "data records confidences or responses)")
@click.option("--few-labels", "few_model", default=None, metavar="MODEL",
              help="instead: measure adding MODEL to a router fitted without it, from a few "
                   "labelled prompts (add_model), against refitting on them and the full fit")
@click.option("--labels", "label_counts", default="25,50,100,200", show_default=True,
              help="with --few-labels: numbers of labelled prompts")
@click.option("--repeats", default=None, type=click.IntRange(min=1),
              help="also evaluate on R seeded random train/validation/test splits and report "
                   "the spread of every figure; with --few-labels: seeded draws of labelled "
                   "prompts per number [default there: 5]")
@click.option("--confidence", default=0.9, show_default=True,
              type=click.FloatRange(min=0, max=1, max_open=True),
              help="also calibrate every entry's 95 % point with this probability of meeting "
                   "its target out of sample (0: no guarantee)")
def bench_cmd(data: str | None, split: str, routers: str | None, pair: str | None,
              json_path: str | None, plot_path: str | None, report_path: str | None,
              n_boot: int, fmt: str, seed: int, train_path: str | None,
              test_path: str | None, folds: str | None, no_cascades: bool = False,
              few_model: str | None = None, label_counts: str = "25,50,100,200",
              repeats: int | None = None, confidence: float = 0.9) -> None:
    """Fit on train, calibrate on validation, and compare routers on SPLIT of DATA.

    With --train A --test B (no DATA): fit and calibrate on A, evaluate on all of B.
    With --few-labels MODEL: the few-labels curve of adding MODEL (bench/fewlabels.py).
    """
    from routecast.bench import report
    from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate

    names = tuple(r.strip() for r in routers.split(",") if r.strip()) if routers else None
    if few_model is not None:
        _few_labels(data, few_model, names, label_counts, repeats or 5, split, fmt, seed,
                    json_path)
        return
    conf = confidence or None
    k_folds = _parse_folds(folds)
    weak_strong = parse_pair(pair)
    chosen = names or DEFAULT_ROUTERS
    if train_path or test_path:  # generalisation across data sets (bench/crossval.py)
        from routecast.bench.crossval import cross_dataset

        if data or folds or repeats or not (train_path and test_path):
            raise ConfigError("--train A --test B go together and replace DATA and --folds")
        a, b = load_data(train_path, fmt, seed), load_data(test_path, fmt, seed)
        with progress_bar(len(chosen)) as update:
            result = cross_dataset(a, b, routers=chosen, pair=weak_strong, n_boot=n_boot,
                                   seed=seed, progress=update, cascades=not no_cascades,
                                   confidence=conf)
    else:
        if data is None:
            raise ConfigError("give DATA to benchmark, or --train A --test B")
        ds = load_data(data, fmt, seed)
        with progress_bar(len(chosen)) as update:
            result = evaluate(ds, split=split, routers=chosen, pair=weak_strong,
                              n_boot=n_boot, seed=seed, progress=update,
                              cascades=not no_cascades, confidence=conf)
        if isinstance(k_folds, int):
            from routecast.bench.crossval import k_fold

            with progress_bar(k_folds * len(chosen)) as update:
                result["folds"] = k_fold(ds, k_folds, routers=chosen, pair=weak_strong,
                                         seed=seed, progress=update,
                                         cascades=not no_cascades)
        if k_folds == "task" or repeats:
            from routecast.bench.outofsample import out_of_sample, task_groups

            if k_folds == "task" and repeats:
                raise ConfigError("--folds task and --repeats R are two protocols; run one "
                                  "at a time")
            total = len(set(task_groups(ds).tolist())) if k_folds == "task" else repeats or 0
            with progress_bar(total) as update:
                result["out_of_sample"] = out_of_sample(
                    ds, "task" if k_folds == "task" else "repeats", repeats=repeats or 0,
                    routers=chosen, seed=seed, confidence=conf, cascades=not no_cascades,
                    progress=update)
    report.print_table(result)
    if "cross" in result:
        from routecast.bench.crossval import print_cross

        print_cross(result)
    if "folds" in result:
        from routecast.bench.crossval import print_folds

        print_folds(result["folds"])
    if "out_of_sample" in result:
        from routecast.bench.outofsample import print_out_of_sample

        print_out_of_sample(result["out_of_sample"])
    if json_path:
        write_json(json_path, result)
    if plot_path:
        from routecast.bench.plot import plot

        plot(result, plot_path)
        err_console.print(f"wrote {plot_path}")
    if report_path:
        Path(report_path).write_text(report.markdown(result, plot_path), encoding="utf-8")
        err_console.print(f"wrote {report_path}")


def _parse_folds(folds: str | None) -> int | str | None:
    """``--folds``: an integer K >= 2, or ``task``."""
    if folds is None:
        return None
    if folds.strip().lower() == "task":
        return "task"
    try:
        k = int(folds)
    except ValueError:
        raise ConfigError(f"--folds takes a number of folds K >= 2 or 'task', got {folds!r}"
                          ) from None
    if k < 2:
        raise ConfigError(f"--folds needs at least 2 folds, got {k}")
    return k


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
