"""``routecast keys``: client API keys for the server (``auth.required: true``)."""

from __future__ import annotations

import click

DB_HELP = "the server's database (its config's storage.db)"


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke the API keys clients use against ``routecast serve``."""


@keys_group.command("add")
@click.argument("name")
@click.option("--db", "db_path", default="routecast.db", show_default=True,
              type=click.Path(dir_okay=False), help=DB_HELP)
@click.option("--budget-usd", type=float, default=None,
              help="stop admitting requests once the key has spent this much")
@click.option("--rpm", type=int, default=None, help="requests per minute (bursts up to it)")
def keys_add_cmd(name: str, db_path: str, budget_usd: float | None, rpm: int | None) -> None:
    """Create a key named NAME and print its token: it is shown once, only its hash is kept."""
    from routecast.server.keys import add_key

    token = add_key(db_path, name, budget_usd=budget_usd, rpm=rpm)
    click.echo(token)
    click.echo(f"key {name!r} created; the token above is not stored and cannot be shown "
               "again", err=True)


@keys_group.command("list")
@click.option("--db", "db_path", default="routecast.db", show_default=True,
              type=click.Path(dir_okay=False), help=DB_HELP)
def keys_list_cmd(db_path: str) -> None:
    """Every key with its budget, spend and rate limit (never the token)."""
    from routecast.server.keys import list_keys

    for k in list_keys(db_path):
        budget = "-" if k["budget_usd"] is None else f"${k['budget_usd']:g}"
        rpm = "-" if k["rpm"] is None else str(k["rpm"])
        state = " (revoked)" if k["revoked"] else ""
        click.echo(f"{k['name']}\trc-{k['id']}-...\tspent ${k['spent_usd']:.6f} of {budget}"
                   f"\trpm {rpm}{state}")


@keys_group.command("revoke")
@click.argument("name")
@click.option("--db", "db_path", default="routecast.db", show_default=True,
              type=click.Path(dir_okay=False), help=DB_HELP)
def keys_revoke_cmd(name: str, db_path: str) -> None:
    """Revoke NAME (a running server refuses it within a second)."""
    from routecast.errors import ConfigError
    from routecast.server.keys import revoke_key

    if not revoke_key(db_path, name):
        raise ConfigError(f"no key named {name!r} in {db_path}; `routecast keys list` shows "
                          "them")
    click.echo(f"revoked {name!r}")
