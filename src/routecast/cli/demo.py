"""``routecast demo``: the embedded default answering real questions (see routecast.local.demo)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--questions", "n_questions", default=9, show_default=True,
              type=click.IntRange(1, 100),
              help="held-out questions to ask (one per category first)")
@click.option("--port", type=click.IntRange(1, 65535),
              help="port to serve on [default: a free one]")
def demo_cmd(n_questions: int, port: int | None) -> None:
    """Start `routecast serve` on two local models (offline), ask it real questions through
    the OpenAI client, and show which model answered each and what the cascade saved in time
    and energy against always using the larger model (Gemma 3 270M)."""
    from routecast.local.demo import run, summary

    result = run(n_questions, port=port, say=lambda line: click.echo(line))
    for line in summary(result):
        click.echo(line)
