"""``routecast import`` and ``routecast info``: outcome data in and out."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from routecast.cli.common import format_option, load_data
from routecast.errors import ConfigError


@click.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@format_option
@click.option("--seed", default=0, show_default=True,
              help="seed of the train/validation/test split")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False),
              help="JSON price table for sources without costs (see README: Price table)")
def import_cmd(source: str, out: str, fmt: str, seed: int, prices: str | None) -> None:
    """Convert public outcome data at SOURCE into routecast's format at OUT (.jsonl[.gz])."""
    from routecast.data import save_dataset

    if not out.endswith((".jsonl", ".jsonl.gz")):
        raise ConfigError(f"output {out!r} must end in .jsonl or .jsonl.gz")
    ds = load_data(source, fmt, seed, prices)
    path = save_dataset(ds, out)
    click.echo(f"wrote {ds.n_prompts} prompts x {ds.n_models} models to {path}")


@click.command("info")
@click.argument("data", type=click.Path(exists=True))
@format_option
@click.option("--seed", default=0, show_default=True)
def info_cmd(data: str, fmt: str, seed: int) -> None:
    """Describe a dataset: models, splits, mean quality and cost per model."""
    from routecast.data import SPLITS

    ds = load_data(data, fmt, seed)
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
