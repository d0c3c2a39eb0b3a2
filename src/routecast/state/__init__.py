"""State the server's replicas share: key admission, session pins, circuit-breaker hints.

One process keeps all of it in memory (:class:`LocalState`, the default: nothing changes for a
single server). Several replicas behind a load balancer need one copy, or a key's budget would
be spent once per replica, its rate limit multiplied, a conversation re-routed on each replica
it lands on, and a dead upstream rediscovered by each. With ``state.redis_url`` they share
Redis (:class:`RedisState`), through atomic Lua scripts (:mod:`routecast.state.scripts`).

What is shared, how, and what happens when Redis fails is in
:mod:`routecast.state.redis_state` and ``docs/state.md``; in short:

* **Key admission** (keys with a budget or ``rpm`` only; others never touch Redis): budget
  check, a reservation in flight that expires, and a rate-limit token, in one script.
  The bound: *a key never spends more than its budget plus the cost of the requests already in
  flight when it was crossed* (proof in :mod:`routecast.state.redis_state`).
* **Session pins**: first writer wins, idle expiry ``state.pin_ttl_s``.
* **Breaker hints**: a model whose breaker opens on one replica reads as open on all for the
  breaker's ``open_s``.
* **Redis down**: admission fails closed (503 ``state_unavailable``), pins and breakers fall
  back to the replica's own.

:func:`check_shared_state` refuses a multi-replica config without Redis; :func:`make_state`
builds the state a config asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from routecast.errors import ConfigError
from routecast.state.base import SharedState, StateUnavailableError
from routecast.state.local import LocalState
from routecast.state.redis_state import SETTLE_GRACE_S, RedisState, check_reachable

if TYPE_CHECKING:
    from routecast.server.config import Config

__all__ = ["LocalState", "RedisState", "SharedState", "StateUnavailableError", "check_reachable",
           "check_shared_state", "make_state"]


def check_shared_state(config: Config, env: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL ``config`` shares state through (``None``: none), or a
    :class:`ConfigError` when ``state.replicas`` is above 1 without one (each replica would
    keep its own budgets and rate limits), or when ``state.redis_url_env`` names an unset
    variable. ``env`` defaults to ``os.environ``."""
    state = config.state
    url = state.resolved_redis_url(env)
    if state.replicas > 1 and url is None:
        n = state.replicas
        raise ConfigError(
            f"state.replicas is {n} but state.redis_url is not set: {n} replicas would each "
            f"keep their own key budgets and rate limits (a key could spend its budget {n} "
            "times), session pins and circuit breakers. Fix: set state.redis_url "
            "(redis://host:6379/0) or state.redis_url_env, or run one replica "
            "(state.replicas: 1, no --workers)")
    return url


def make_state(config: Config, env: Mapping[str, str] | None = None) -> SharedState:
    """The state ``config`` asks for: :class:`RedisState` with a Redis URL (not connected
    yet: its ``start`` does, in the server's lifespan), else :class:`LocalState`. Runs
    :func:`check_shared_state` first."""
    url = check_shared_state(config, env)
    if url is None:
        return LocalState()
    state = config.state
    return RedisState(url, prefix=state.key_prefix, timeout_s=state.timeout_s,
                      hold_s=config.limits.deadline_s + SETTLE_GRACE_S,
                      pin_ttl_s=state.pin_ttl_s)

