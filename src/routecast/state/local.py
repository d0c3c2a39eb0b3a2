"""State kept in this process only: the default, for one replica (no Redis).

Exactly what the server did before state could be shared: a key is admitted by
:func:`routecast.server.keys.admit_locally` on the event loop (no ``await`` between check and
reservation, so no race on one loop), a session's pin is the routed endpoint's own bounded LRU
(:class:`routecast.backends.routed.SessionPins`), and circuit breakers are each backend's own.
The server does not even call this object on those paths (``shared`` is ``False``: it keeps
their synchronous code, which costs nothing extra); it exists so that code written against
:class:`~routecast.state.base.SharedState` (benchmarks, library users) runs without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from routecast.backends.routed import SessionPins
from routecast.server.keys import admit_locally

if TYPE_CHECKING:
    from routecast.server.endpoints import EndpointTable
    from routecast.server.keys import ClientKey


class LocalState:
    """:class:`~routecast.state.base.SharedState` for one process; see the module docstring.
    ``max_sessions`` bounds each endpoint's pins (as ``endpoints.*.max_sessions`` does)."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = 10_000) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self._pins: dict[str, SessionPins] = {}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> str | None:
        return None  # in this process: always there

    async def admit_key(self, key: ClientKey) -> str | None:
        admit_locally(key, self.clock)
        return None

    def settle_key(self, key: ClientKey, reservation: str, cost_usd: float) -> None:
        # KeyStore.settle releases the in-flight count and adds the spend itself.
        return None

    async def get_pin(self, scope: str, session: str) -> str | None:
        pins = self._pins.get(scope)
        return pins.get(session) if pins is not None else None

    async def pin(self, scope: str, session: str, model: str) -> str:
        pins = self._pins.get(scope)
        if pins is None:
            pins = self._pins[scope] = SessionPins(self.max_sessions)
        pinned = pins.get(session)
        if pinned is None:
            pins.set(session, model)
            return model
        return pinned

    async def raise_step(self, scope: str, session: str, step: int) -> None:
        pins = self._pins.get(scope)
        if pins is None:
            pins = self._pins[scope] = SessionPins(self.max_sessions)
        now = pins.get(session)
        if now is None or not now.isdigit() or int(now) < step:
            pins.set(session, str(step))

    def attach(self, table: EndpointTable) -> None:
        # Routed endpoints keep their own pins and backends their own breakers.
        return None
