"""``routecast outcomes export``: a learning endpoint's labels as a routecast outcomes file."""

from __future__ import annotations

import click

from routecast.cli.storage import storage_options, storage_target


@click.group("outcomes")
def outcomes_group() -> None:
    """Labels gathered from traffic by learning endpoints."""


@outcomes_group.command("export")
@storage_options
@click.option("--endpoint", required=True, help="the learning endpoint")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="a .jsonl or .jsonl.gz routecast outcomes file (sparse)")
def export_cmd(db_path: str | None, config_file: str | None, endpoint: str, output: str
               ) -> None:
    """Write ENDPOINT's labels (judge, shadow, feedback) as sparse routecast outcomes: one
    prompt per line, with the models that were labelled on it (`routecast fit` reads it with
    the routers that fit on sparse labels: linear, knn, mf, best-single)."""
    from routecast.data.canonical import save
    from routecast.learning.store import export_outcomes

    data = export_outcomes(storage_target(db_path, config_file), endpoint)
    save(data, output)
    click.echo(f"{output}: {data.n_prompts} prompts, {int(data.labelled.sum())} labels over "
               f"{data.n_models} models ({', '.join(data.models)})")
