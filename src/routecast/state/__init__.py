"""State shared by replicas (Redis). Only the start-up check lives here so far: the state layer
itself is built on another branch, whose version of this module replaces this one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.server.config import Config


def check_shared_state(config: Config) -> None:
    """Refuse a multi-replica config without Redis: budgets, rate limits and session pins
    kept in each process would multiply by the number of replicas.

    Raises :class:`~routecast.errors.ConfigError` when ``state.replicas`` is above 1 and no
    ``state.redis_url`` (nor ``state.redis_url_env``) is set."""
    state = config.state
    if state.replicas > 1 and state.redis_url is None and state.redis_url_env is None:
        raise ConfigError(
            f"state.replicas is {state.replicas} but state.redis_url is not set: budgets, rate "
            "limits and session pins kept in each replica would multiply by the number of "
            "replicas. Fix: set state.redis_url (redis://host:6379/0), or run one replica "
            "(state.replicas: 1, no --workers)")
