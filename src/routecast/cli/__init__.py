"""The ``routecast`` command line.

Each command lives in its own module and is imported only when invoked (so ``routecast --help``
stays fast and a command's heavy imports never slow another). Commands are one
:class:`~routecast.registry.Registry` (entry-point group ``routecast.commands``): a plugin adds
a command by pointing an entry point at a click command. Errors that routecast raises on
purpose (:class:`routecast.errors.RoutecastError`) print as one line with their fix and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from routecast.errors import ConfigError, RoutecastError
from routecast.registry import Registry


def _check(name: str, obj: object) -> click.Command:
    if not isinstance(obj, click.Command):
        raise ConfigError(f"command {name!r} is {obj!r}, not a click command")
    return obj


_BUILTINS = {
    "bench": "routecast.cli.bench:bench_cmd",
    "collect": "routecast.cli.collect:collect_cmd",
    "demo": "routecast.cli.demo:demo_cmd",
    "fleet": "routecast.cli.fleet:fleet_cmd",
    "import": "routecast.cli.data:import_cmd",
    "info": "routecast.cli.data:info_cmd",
    "serve": "routecast.cli.serve:serve_cmd",
    "stats": "routecast.cli.serve:stats_cmd",
    "config": "routecast.cli.serve:config_group",
    "hi": "routecast.cli.hi:hi_cmd",
    "fit": "routecast.cli.router:fit_cmd",
    "calibrate": "routecast.cli.router:calibrate_cmd",
    "route": "routecast.cli.router:route_cmd",
    "tune-cascade": "routecast.cli.tune:tune_cmd",
    "keys": "routecast.cli.keys:keys_group",
    "outcomes": "routecast.cli.learning:outcomes_group",
}

#: Every command by name (a read-only mapping; plugins included).
COMMANDS: Registry[click.Command] = Registry("command", "routecast.commands", _BUILTINS, _check)

#: Each built-in's one-line help, as its command gives it (a test keeps the two equal), so that
#: ``routecast --help`` imports no command module; plugins' commands are loaded for theirs.
SUMMARIES = {
    "bench": "Fit on train, calibrate on validation, and compare routers on SPLIT of DATA.",
    "collect": "Ask MODELs a task set with gold answers; write graded outcomes to OUT "
               "(.jsonl[.gz]).",
    "demo": "Start `routecast serve` on two local models (offline), ask it real questions "
            "through the OpenAI client, and show which model answered each and what the "
            "cascade saved in time and energy against always using the larger model "
            "(Gemma 3 270M).",
    "import": "Convert public outcome data at SOURCE into routecast's format at OUT "
              "(.jsonl[.gz]).",
    "info": "Describe a dataset: models, splits, mean quality and cost per model.",
    "serve": "Serve an OpenAI-compatible API that routes each request to a model.",
    "stats": "Spend, savings against each endpoint's strongest model, escalations and latency.",
    "config": "Check server config files.",
    "hi": "Simulate device-first hierarchical inference over the recorded outcomes in DATA.",
    "fit": "Fit a router on the train split of DATA and save it to --out.",
    "calibrate": "Solve the router's policy for a budget or a quality target and save it in "
                 "DIR.",
    "route": 'Route PROMPT ("-" reads it from stdin) with the router saved in DIR and say why.',
    "tune-cascade": "Tune a cascade on DATA's train and validation splits and save it to "
                    "--out.",
    "keys": "Create, list and revoke the API keys clients use against ``routecast serve``.",
    "fleet": "Serve every model of DATA from its recorded answers (OpenAI-compatible, one "
             "server).",
    "outcomes": "Labels gathered from traffic by learning endpoints.",
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # A built-in command is found without reading any plugin's metadata.
        if cmd_name not in COMMANDS:
            return None
        return COMMANDS.load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in SUMMARIES:
                # click's own shortening, on a stand-in that imports nothing
                stand_in = click.Command(name, help=SUMMARIES[name])
                rows.append((name, stand_in.get_short_help_str(limit)))
            elif not (command := COMMANDS.load(name)).hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="routecast")
def cli() -> None:
    """routecast: routing and cascades across many LLMs, measured on recorded outcomes."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning routecast errors into one clear line."""
    from routecast.cli.common import err_console

    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except RoutecastError as e:
        # click.echo, not rich: rich would wrap the line (and any path in it) at 80 columns.
        click.echo(f"error: {e}", err=True)
        sys.exit(2)

