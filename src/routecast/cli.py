"""The ``routecast`` command line.

Errors that routecast raises on purpose (:class:`routecast.errors.RoutecastError`) are printed
as one line with their fix, exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from routecast.errors import ConfigError, RoutecastError

err_console = Console(stderr=True)


@contextmanager
def _progress(total: int, enabled: bool = True) -> Iterator[Callable[[int, str], None]]:
    """A progress bar on stderr over ``total`` items (silent when not a terminal)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=not enabled)
    with progress:
        task = progress.add_task("starting", total=total)

        def update(done: int, description: str) -> None:
            progress.update(task, completed=done, description=description)

        yield update
        progress.update(task, completed=total)


def _load(data: str, fmt: str, seed: int, prices: str | None = None) -> Any:
    from routecast.data import load_dataset

    options: dict[str, Any] = {}
    if prices is not None:
        from routecast.data.pricing import load_prices

        options["prices"] = load_prices(prices)
    with err_console.status(f"loading {data}"):
        t0 = time.perf_counter()
        ds = load_dataset(data, fmt=fmt, seed=seed, **options)
    dropped = ds.meta.get("dropped") or {}
    note = ""
    if dropped.get("prompts"):
        note = f"; dropped {dropped['prompts']} prompts ({dropped.get('rule', '')})"
    err_console.print(f"loaded {ds!r} in {time.perf_counter() - t0:.1f}s{note}",
                      highlight=False)
    return ds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="routecast")
def cli() -> None:
    """routecast: routing and cascades across many LLMs, measured on recorded outcomes."""


FORMAT_HELP = "input format: auto, routecast, routerbench, routellm, cascades, llmrouter"


@cli.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default="auto", show_default=True, help=FORMAT_HELP)
@click.option("--seed", default=0, show_default=True,
              help="seed of the train/validation/test split")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False),
              help="JSON price table for sources without costs (see README: Price table)")
def import_cmd(source: str, out: str, fmt: str, seed: int, prices: str | None) -> None:
    """Convert public outcome data at SOURCE into routecast's format at OUT (.jsonl[.gz])."""
    from routecast.data import save_dataset

    if not out.endswith((".jsonl", ".jsonl.gz")):
        raise ConfigError(f"output {out!r} must end in .jsonl or .jsonl.gz")
    ds = _load(source, fmt, seed, prices)
    path = save_dataset(ds, out)
    click.echo(f"wrote {ds.n_prompts} prompts x {ds.n_models} models to {path}")


@cli.command("info")
@click.argument("data", type=click.Path(exists=True))
@click.option("--format", "fmt", default="auto", show_default=True, help=FORMAT_HELP)
@click.option("--seed", default=0, show_default=True)
def info_cmd(data: str, fmt: str, seed: int) -> None:
    """Describe a dataset: models, splits, mean quality and cost per model."""
    from rich.table import Table

    from routecast.data import SPLITS

    ds = _load(data, fmt, seed)
    console = Console()
    counts = ", ".join(f"{s} {int((ds.split == s).sum())}" for s in SPLITS)
    extras = [k for k in ("latency_s", "tokens_in", "tokens_out", "confidence", "responses")
              if getattr(ds, k) is not None]
    console.print(f"{ds.name}: {ds.n_prompts} prompts ({counts}); "
                  f"also records: {', '.join(extras) or 'nothing else'}", highlight=False)
    table = Table()
    for col in ("model", "quality", "cost USD/query"):
        table.add_column(col)
    for j, m in enumerate(ds.models):
        table.add_row(m, f"{ds.quality[:, j].mean():.4f}", f"{ds.cost_usd[:, j].mean():.6g}")
    console.print(table)


@cli.command("bench")
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
@click.option("--format", "fmt", default="auto", show_default=True, help=FORMAT_HELP)
@click.option("--seed", default=0, show_default=True, help="seed of splits and bootstrap")
def bench_cmd(data: str, split: str, routers: str | None, pair: str | None,
              json_path: str | None, plot_path: str | None, report_path: str | None,
              n_boot: int, fmt: str, seed: int) -> None:
    """Fit on train, calibrate on validation, and compare routers on SPLIT of DATA."""
    from routecast.bench import report
    from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate

    names = tuple(r.strip() for r in routers.split(",") if r.strip()) if routers else None
    weak_strong: tuple[str, str] | None = None
    if pair:
        parts = [p.strip() for p in pair.split(",")]
        if len(parts) != 2:
            raise ConfigError(f"--pair takes WEAK,STRONG, got {pair!r}")
        weak_strong = (parts[0], parts[1])
    ds = _load(data, fmt, seed)
    chosen = names or DEFAULT_ROUTERS
    with _progress(len(chosen), enabled=err_console.is_terminal) as update:
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning routecast errors into one clear line."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except RoutecastError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
