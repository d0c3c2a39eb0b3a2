"""``routecast keys``: client API keys for the server (``auth.required: true``)."""

from __future__ import annotations

import click

from routecast.cli.storage import describe, storage_options, storage_target


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke the API keys clients use against ``routecast serve``."""


@keys_group.command("add")
@click.argument("name")
@storage_options
@click.option("--budget-usd", type=float, default=None,
              help="stop admitting requests once the key has spent this much")
@click.option("--rpm", type=int, default=None, help="requests per minute (bursts up to it)")
def keys_add_cmd(name: str, db_path: str | None, config_file: str | None,
                 budget_usd: float | None, rpm: int | None) -> None:
    """Create a key named NAME and print its token: it is shown once, only its hash is kept."""
    from routecast.server.keys import add_key

    token = add_key(storage_target(db_path, config_file), name, budget_usd=budget_usd, rpm=rpm)
    click.echo(token)
    click.echo(f"key {name!r} created; the token above is not stored and cannot be shown "
               "again", err=True)


@keys_group.command("list")
@storage_options
def keys_list_cmd(db_path: str | None, config_file: str | None) -> None:
    """Every key with its budget, spend and rate limit (never the token)."""
    from routecast.server.keys import list_keys

    for k in list_keys(storage_target(db_path, config_file)):
        budget = "-" if k["budget_usd"] is None else f"${k['budget_usd']:g}"
        rpm = "-" if k["rpm"] is None else str(k["rpm"])
        state = " (revoked)" if k["revoked"] else ""
        click.echo(f"{k['name']}\trc-{k['id']}-...\tspent ${k['spent_usd']:.6f} of {budget}"
                   f"\trpm {rpm}{state}")


@keys_group.command("revoke")
@click.argument("name")
@storage_options
def keys_revoke_cmd(name: str, db_path: str | None, config_file: str | None) -> None:
    """Revoke NAME (a running server refuses it within a second)."""
    from routecast.errors import ConfigError
    from routecast.server.keys import revoke_key

    target = storage_target(db_path, config_file)
    if not revoke_key(target, name):
        raise ConfigError(f"no key named {name!r} in {describe(target)}; `routecast keys list` "
                          "shows them")
    click.echo(f"revoked {name!r}")
