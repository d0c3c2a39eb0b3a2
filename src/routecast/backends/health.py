"""Live health of one upstream: a circuit breaker, and a latency estimate routers can read.

A backend that keeps failing (or timing out) is not worth asking: every request sent to it pays
its timeout or its retries before a fallback gets its turn. The breaker has the classic three
states::

    closed     requests flow; ``failure_threshold`` failures in a row open it
    open       requests are refused at once (no network call) for ``open_s`` seconds
    half-open  after ``open_s``, up to ``half_open_probes`` requests go through as probes;
               a success closes the breaker, a failure opens it again for another ``open_s``

Composites read :attr:`CircuitBreaker.available` to skip an open backend (fallback chains move
on, routed endpoints pick the best model that is available, cascades escalate past it), so one
dead upstream costs nothing after the first few failures. Only upstream failures count: a
request the upstream rejected as invalid says nothing about its health.

Replicas sharing Redis share what their breakers learn as *hints* (:mod:`routecast.state`):
a breaker that opens calls :attr:`CircuitBreaker.on_open`, which publishes the model as open
for ``open_s``; the other replicas' breakers for that model get :meth:`CircuitBreaker.hint_open`
and read as open until it ends. A hint never closes a breaker and changes no count; when it
ends the breaker is as its own calls left it.

The clock is injectable so tests can step time rather than sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """Per-backend failure tracking; see the module docstring for the states."""

    failure_threshold: int = 5
    open_s: float = 10.0
    half_open_probes: int = 1
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    #: Exponentially weighted mean of successful call latencies, in seconds (``None``: no data).
    latency_s: float | None = None
    _failures: int = 0
    _opened_at: float | None = None
    _probes: int = 0
    #: How often the breaker opened, for /metrics.
    opened_total: int = 0
    #: Called with ``open_s`` whenever this breaker opens (the shared state publishes it).
    on_open: Callable[[float], None] | None = field(default=None, repr=False)
    #: Until when (on ``clock``) another replica's hint keeps this breaker open (0: none).
    _hinted_until: float = 0.0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            if self._hinted_until:  # another replica's breaker opened (see hint_open)
                if self.clock() < self._hinted_until:
                    return "open"
                self._hinted_until = 0.0
            return "closed"
        if self.clock() - self._opened_at < self.open_s:
            return "open"
        return "half_open"

    @property
    def available(self) -> bool:
        """Whether a request may be sent now (closed, or half-open with a probe slot free)."""
        state = self.state
        return state == "closed" or (state == "half_open" and self._probes < self.half_open_probes)

    def acquire(self) -> bool:
        """Take permission for one call; ``False`` means refuse it without calling."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self.half_open_probes:
            self._probes += 1
            return True
        return False

    def success(self, latency_s: float | None = None) -> None:
        self._failures = 0
        self._opened_at = None
        self._probes = 0
        if latency_s is not None:
            # A short memory (alpha 0.2): routing should see a backend slowing down within a
            # handful of requests, not after hundreds.
            self.latency_s = latency_s if self.latency_s is None else (
                0.8 * self.latency_s + 0.2 * latency_s)

    def failure(self) -> None:
        if self.state == "half_open":  # the probe failed: stay away for another period
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold and self._opened_at is None:
            self._open()

    def release(self) -> None:
        """Give back a probe slot without a verdict (the call was cancelled)."""
        if self._probes:
            self._probes -= 1

    def hint_open(self, for_s: float) -> None:
        """Another replica's breaker for this model opened: read as open for ``for_s``
        seconds from now (or until an earlier hint ends, whichever is later)."""
        until = self.clock() + for_s
        if until > self._hinted_until:
            self._hinted_until = until

    def retry_in_s(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return max(0.0, self._hinted_until - self.clock()) if self._hinted_until else 0.0
        return max(0.0, self.open_s - (self.clock() - self._opened_at))

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._probes = 0
        self._failures = 0
        self.opened_total += 1
        if self.on_open is not None:
            self.on_open(self.open_s)
