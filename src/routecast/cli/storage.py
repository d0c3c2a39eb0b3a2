"""The ``--db`` / ``--config`` options of the commands that read the server's storage
(``routecast stats``, ``routecast keys``, ``routecast outcomes export``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from routecast.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: The SQLite file ``--db`` means when neither option is given.
DEFAULT_DB = "routecast.db"


def storage_options(func: F) -> F:
    """Add ``--db FILE`` (a SQLite file) and ``--config FILE`` (the server's config: the
    storage it names, SQLite or PostgreSQL) to a command, as ``db_path`` and ``config_file``."""
    func = click.option(
        "--config", "config_file", default=None, type=click.Path(dir_okay=False),
        help="the server's config file: use the storage it names (storage.db, storage.url, "
             "or storage.url_env read from the environment), as the server does")(func)
    return click.option(
        "--db", "db_path", default=None, type=click.Path(dir_okay=False),
        help=f"the server's SQLite file (its config's storage.db; default {DEFAULT_DB})")(func)


def storage_target(db_path: str | None, config_file: str | None) -> str:
    """The database the options name: a SQLite path or a database URL."""
    if db_path is not None and config_file is not None:
        raise ConfigError("give --db or --config, not both: --db names a SQLite file, "
                          "--config the server's config (whose storage is used)")
    if config_file is None:
        return db_path or DEFAULT_DB
    from routecast.server.config import load_config

    url = load_config(config_file).storage.database_url()
    if url is None:
        raise ConfigError(f"{config_file}: storage.db is null, so the server stores nothing "
                          "there. Fix: set storage.db or storage.url in the config")
    return url


def describe(target: str) -> str:
    """A database for messages: the path, or the URL without its password."""
    from routecast.storage.database import normalize_url

    if "://" not in target:
        return target
    url = normalize_url(target)
    return (url.database or target) if url.get_backend_name() == "sqlite" \
        else url.render_as_string(hide_password=True)
