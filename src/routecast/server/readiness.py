"""Readiness: whether a replica should get new requests (``GET /ready``), as opposed to
liveness (``GET /health``: the process answers).

A replica is not ready while it drains (from the SIGTERM that starts its shutdown: a load
balancer or Kubernetes stops sending it new requests while the ones in flight finish), or while
the database or the shared state (Redis) it needs does not answer. Probes come often (HAProxy
checks every 200 ms, Kubernetes every few seconds, from every balancer), so the stores are
asked at most once per ``every_s`` however many probes arrive: probes in between get the last
answer, and concurrent probes share one check. A database that hangs (a dropped network, not a
refused connection) is given ``timeout_s``; while that call is still stuck, later checks report
it at once instead of starting another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from routecast.state.base import SharedState
    from routecast.storage.database import Database

log = logging.getLogger("routecast.server")


class Readiness:
    """See the module docstring. ``state`` is asked only when it is shared (Redis)."""

    def __init__(self, state: SharedState, database: Database | None, *, every_s: float = 1.0,
                 timeout_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.database = database
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.clock = clock
        #: Set from the SIGTERM that starts a drain (:meth:`watch_sigterm`) or at shutdown.
        self.draining = False
        self._problems: list[str] = []
        self._checked_at = -float("inf")
        self._check: asyncio.Task[None] | None = None
        self._db_call: asyncio.Future[None] | None = None

    async def problems(self) -> list[str]:
        """What keeps this replica from taking requests now (empty: ready)."""
        if self.draining:
            return ["draining: the server is shutting down"]
        if self.clock() - self._checked_at >= self.every_s:
            if self._check is None or self._check.done():
                self._check = asyncio.get_running_loop().create_task(self._run())
            await asyncio.shield(self._check)
        return list(self._problems)

    async def _run(self) -> None:
        problems = []
        if self.state.shared:
            problem = await self.state.ping()
            if problem is not None:
                problems.append(problem)
        if self.database is not None:
            problem = await self._ping_database(self.database)
            if problem is not None:
                problems.append(problem)
        if problems and problems != self._problems:
            log.warning("not ready: %s", "; ".join(problems))
        self._problems, self._checked_at = problems, self.clock()

    async def _ping_database(self, database: Database) -> str | None:
        where = f"the database ({database.describe()})"
        if self._db_call is not None and not self._db_call.done():
            return f"{where} has not answered for over {self.timeout_s:g} s"
        self._db_call = asyncio.ensure_future(asyncio.to_thread(_select_one, database))
        # A call that outlives its wait still ends: its error is read here, not warned about.
        self._db_call.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(asyncio.shield(self._db_call), self.timeout_s)
        except TimeoutError:
            return f"{where} did not answer within {self.timeout_s:g} s"
        except Exception as e:  # any driver error: the database is what is wrong
            return f"{where} is unreachable ({type(e).__name__})"
        return None

    def watch_sigterm(self) -> Callable[[], None] | None:
        """Mark the replica draining on SIGTERM, then hand the signal to the handler already
        installed (uvicorn's, which starts the graceful shutdown). Returns the undo; ``None``
        where there is nothing to chain to (not the main thread, or no Python handler)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return None
        chained = previous

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.draining = True
            chained(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

        def undo() -> None:
            with contextlib.suppress(ValueError):
                if signal.getsignal(signal.SIGTERM) is on_sigterm:
                    signal.signal(signal.SIGTERM, chained)

        return undo


def _select_one(database: Database) -> None:
    with database.connect() as conn:
        conn.execute(text("SELECT 1"))
