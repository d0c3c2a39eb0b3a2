"""``routecast bench``: the replay benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import click

from routecast.cli.common import err_console, format_option, load_data, progress_bar
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
@click.argument("data", type=click.Path(exists=True))
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
def bench_cmd(data: str, split: str, routers: str | None, pair: str | None,
              json_path: str | None, plot_path: str | None, report_path: str | None,
              n_boot: int, fmt: str, seed: int) -> None:
    """Fit on train, calibrate on validation, and compare routers on SPLIT of DATA."""
    from routecast.bench import report
    from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate

    names = tuple(r.strip() for r in routers.split(",") if r.strip()) if routers else None
    weak_strong = parse_pair(pair)
    ds = load_data(data, fmt, seed)
    chosen = names or DEFAULT_ROUTERS
    with progress_bar(len(chosen)) as update:
        result = evaluate(ds, split=split, routers=chosen, pair=weak_strong, n_boot=n_boot,
                          seed=seed, progress=update)
    report.print_table(result)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        err_console.print(f"wrote {json_path}")
    if plot_path:
        from routecast.bench.plot import plot

        plot(result, plot_path)
        err_console.print(f"wrote {plot_path}")
    if report_path:
        Path(report_path).write_text(report.markdown(result, plot_path), encoding="utf-8")
        err_console.print(f"wrote {report_path}")
