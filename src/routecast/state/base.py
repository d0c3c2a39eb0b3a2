"""The interface of the server's shared state, whichever store holds it.

Four things a replica must agree on with the others (see :mod:`routecast.state`): a key's
budget and rate admission, the settling of what an admitted request cost, the model a session
is pinned to, and which models' circuit breakers are open. :class:`SharedState` is that
interface; :class:`~routecast.state.local.LocalState` keeps it all in one process (the
default), :class:`~routecast.state.redis_state.RedisState` in Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from routecast.errors import RequestError

if TYPE_CHECKING:
    from routecast.server.endpoints import EndpointTable
    from routecast.server.keys import ClientKey


class StateUnavailableError(RequestError):
    """The shared state cannot be reached: a 503, so the client retries (elsewhere, later)
    rather than being admitted past a budget nobody can check."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message, status=503, code="state_unavailable")
        self.retry_after_s = retry_after_s


class SharedState(Protocol):
    """What the server asks of its state store. ``shared`` says whether other replicas see
    it (``False``: one process, and the server keeps today's synchronous paths)."""

    shared: bool

    async def start(self) -> None:
        """Connect (a :class:`~routecast.errors.ConfigError` naming the store if it cannot)
        and start any background work."""

    async def aclose(self) -> None:
        """Stop background work, write what is still pending (briefly), disconnect."""

    async def ping(self) -> str | None:
        """``None`` when the store answers, else what is wrong (for readiness probes; never
        raises, and answers at once while backing off after a failure)."""

    async def admit_key(self, key: ClientKey) -> str | None:
        """Admit one request on ``key``: the budget check, a reservation in flight and a
        rate-limit token, all or nothing. Returns the reservation to settle (``None`` where
        there is none to name); raises a 429 (budget or rate) or a 503
        (:class:`StateUnavailableError`). Increments ``key.in_flight``."""

    def settle_key(self, key: ClientKey, reservation: str, cost_usd: float) -> None:
        """Release ``reservation`` and add what the request cost. Never blocks and never
        fails: what cannot be written now is retried in the background."""

    async def get_pin(self, scope: str, session: str) -> str | None:
        """The model ``session`` is pinned to on endpoint ``scope`` (``None``: not yet)."""

    async def pin(self, scope: str, session: str, model: str) -> str:
        """Pin ``session`` to ``model`` unless another turn pinned it first; returns the model
        the session is pinned to (the first writer wins, so replicas cannot disagree)."""

    async def raise_step(self, scope: str, session: str, step: int) -> None:
        """Record that ``session`` reached ``step`` on ``scope`` (a cascade's step: it only
        grows, the highest written stays); :meth:`get_pin` reads it back as text."""

    def attach(self, table: EndpointTable) -> None:
        """Take a (new) endpoint table into use: its routed endpoints' pins and its models'
        breakers join the shared state."""
