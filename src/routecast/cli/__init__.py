"""The ``routecast`` command line.

Each command lives in its own module and is imported only when invoked (so ``routecast --help``
stays fast and a command's heavy imports never slow another). Errors that routecast raises on
purpose (:class:`routecast.errors.RoutecastError`) print as one line with their fix and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from routecast.errors import RoutecastError

#: command name -> "module:attribute". New commands register here.
COMMANDS: dict[str, str] = {
    "bench": "routecast.cli.bench:bench_cmd",
    "collect": "routecast.cli.collect:collect_cmd",
    "demo": "routecast.cli.demo:demo_cmd",
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


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


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

