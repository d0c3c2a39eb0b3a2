"""``routecast demo``: the embedded default answering real questions (see routecast.local.demo),
then recorded cloud models replayed behind routed and cascade endpoints (routecast.fleet.demo).
"""

from __future__ import annotations

import os

import click


def _default_data() -> str:
    return os.environ.get("ROUTECAST_SHARED_DATA") or os.path.join("..", "shared", "data")


@click.command("demo")
@click.option("--questions", "n_questions", default=9, show_default=True,
              type=click.IntRange(1, 100),
              help="held-out questions to ask the local models (one per category first)")
@click.option("--port", type=click.IntRange(1, 65535),
              help="port to serve the local models on [default: a free one]")
@click.option("--data", default=None,
              help="the shared recorded data folder [default: $ROUTECAST_SHARED_DATA or "
                   "../shared/data]")
@click.option("--fleet-prompts", type=click.IntRange(min=1), default=None,
              help="ask only a seeded sample of this many test prompts of the recorded models "
                   "[default: all]")
@click.option("--local/--no-local", default=True, show_default=True,
              help="run the first part (two local models under llama.cpp)")
@click.option("--fleet/--no-fleet", default=True, show_default=True,
              help="run the second part (recorded cloud models, replayed)")
def demo_cmd(n_questions: int, port: int | None, data: str | None, fleet_prompts: int | None,
             local: bool, fleet: bool) -> None:
    """Start `routecast serve` on two local models (offline), ask it real questions through
    the OpenAI client, and show which model answered each and what the cascade saved in time
    and energy against always using the larger model (Gemma 3 270M). Then serve real recorded
    cloud models (the RouterBench subset, replayed) behind a routed and a cascade endpoint, ask
    them held-out prompts, and show accuracy, cost and the saving against always the best
    model."""
    from routecast.errors import DataError

    shared = data or _default_data()
    missing = None
    if fleet:
        from routecast.fleet.demo import find_data

        try:
            find_data(shared)
        except DataError as e:
            missing = str(e)
            click.echo(f"note: {missing}\n(the local part runs; the recorded part is skipped)",
                       err=True)
    if local:
        from routecast.local.demo import run, summary

        result = run(n_questions, port=port, say=lambda line: click.echo(line))
        for line in summary(result):
            click.echo(line)
    if fleet and missing is None:
        from routecast.fleet import demo as fleet_demo

        click.echo("\nPart 2: recorded cloud models, replayed (routecast fleet)")
        outcome = fleet_demo.run(shared, sample=fleet_prompts, say=lambda line: click.echo(line))
        for line in fleet_demo.summary(outcome):
            click.echo(line)
        click.echo(f"(part 2 took {outcome.seconds:.0f} s)")
    elif fleet:
        click.echo(f"\nPart 2 skipped: {missing}")
