"""``routecast fleet``: serve a recorded data set's models as OpenAI-compatible upstreams.

::

    routecast fleet DATA [--split S] [--task T ...] [--speed X] [--port P] [--host H]
                         [--judge-noise p] [--judge-model judge] [--seed N]
                         [--write-config FILE] [--format auto]

Once it listens it prints ``routecast fleet: serving ... on http://HOST:PORT/v1`` on stdout
(``--port 0`` picks a free port; :func:`routecast.fleet.spawn_fleet` reads that line).
``--write-config FILE`` writes a ``routecast serve`` config whose ``models:`` bill each fleet
model at the price its usage tokens were computed for; add ``endpoints:`` to it.
"""

from __future__ import annotations

import click

from routecast.cli.common import format_option


@click.command("fleet")
@click.argument("data")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default=None,
              help="serve only this split's prompts (default: all)")
@click.option("--task", "tasks", multiple=True, help="serve only this task's prompts (repeat)")
@click.option("--speed", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="recorded latency x this (0: answer at once, 1: as recorded)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(0, 65535),
              help="0: a free port")
@click.option("--judge-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="fraction of judge verdicts flipped (seeded)")
@click.option("--judge-model", default="judge", show_default=True,
              help="the name the judge is served under")
@click.option("--seed", default=0, show_default=True,
              help="seed of the data's split and of the judge's noise")
@click.option("--write-config", type=click.Path(dir_okay=False), default=None,
              help="write a routecast serve config (models: block) for this fleet")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@format_option
def fleet_cmd(data: str, split: str | None, tasks: tuple[str, ...], speed: float, host: str,
              port: int, judge_noise: float, judge_model: str, seed: int,
              write_config: str | None, log_level: str, fmt: str) -> None:
    """Serve every model of DATA from its recorded answers (OpenAI-compatible, one server).

    A request's `model` picks the model; its last user message (white space normalised)
    picks the recorded prompt. Usage tokens reproduce the recorded cost at the price
    GET /v1/models lists; the judge model scores an answer with its recorded quality.
    """
    import json
    from pathlib import Path

    import uvicorn

    from routecast.cli.common import err_console
    from routecast.fleet.app import create_fleet_app
    from routecast.fleet.replay import load_fleet
    from routecast.fleet.run import RunningFleet, bind

    with err_console.status(f"loading {data}"):
        fleet = load_fleet(data, split=split, tasks=tasks or None, fmt=fmt, seed=seed,
                           speed=speed, judge_noise=judge_noise, judge_model=judge_model)
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}/v1"
    if write_config:
        running = RunningFleet(url, fleet.models, fleet.judge_model, dict(fleet.prices),
                               fleet.judge_price)
        # JSON is YAML: routecast serve --config reads it.
        Path(write_config).write_text(
            json.dumps({"models": running.models_config(), "endpoints": {}}, indent=1) + "\n",
            encoding="utf-8")
        err_console.print(f"wrote {write_config}", highlight=False)
    for model in fleet.models:
        price = fleet.prices[model]
        err_console.print(f"  {model}: ${price.input_usd_per_mtok:.4g} in / "
                          f"${price.output_usd_per_mtok:.4g} out per M tokens ({price.how})",
                          highlight=False)
    click.echo(f"routecast fleet: serving {len(fleet.models)} models and the judge "
               f"{fleet.judge_model!r} over {fleet.n_prompts} prompts of {fleet.data.name} "
               f"on {url}", nl=True)
    config = uvicorn.Config(create_fleet_app(fleet), log_level=log_level, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
