"""State shared by replicas in Redis (``state.redis_url``), with atomic server-side scripts.

**Key admission** runs :data:`~routecast.state.scripts.ADMIT` (one EVALSHA, one round trip):
the budget check (spend, plus the requests in flight at the key's typical cost, below the
budget), a rate-limit token (a token bucket of ``rpm`` a minute on Redis's clock) and a
reservation for the request, all or nothing. A reservation is a member of the key's in-flight
sorted set scored by its expiry, ``limits.deadline_s`` plus :data:`SETTLE_GRACE_S` after
admission: no live replica holds a request longer than its deadline, so only a replica that
died (``kill -9``, a lost node) leaves reservations behind, and those stop counting at expiry
instead of blocking the key for good. **Settling** runs
:data:`~routecast.state.scripts.SETTLE`: release the reservation, add the cost to the spend and
the typical cost. Settles are queued and written by one background task, many per pipeline,
so a request never waits on them; one that cannot be written is retried every ``poll_s``
until it is (its reservation keeps counting meanwhile, at the typical cost). The task waits
:data:`SETTLE_LINGER_S` before writing, so the settles of that while share one round trip
(at 1,000 requests a second, about five per pipeline instead of one).

Spend in Redis starts from the database (``api_keys.spent_usd``, set only if Redis has none:
HSETNX) and then counts every replica's settles; the database keeps receiving each replica's
deltas from :meth:`routecast.server.keys.KeyStore.flush`, so the two agree within a flush
(a second). A key Redis has not seen for :data:`KEY_TTL_S` is forgotten there and re-seeded
from the database on its next request.

**The bound.** Admission and settlement are each atomic, and a request is admitted only while
``spent < budget`` (strictly; the in-flight estimate only makes admission stricter). Call *t*
the settle that first makes ``spent >= budget``. Every request settled before *t* left
``spent < budget``; no request is admitted after *t*. So the key's final spend is at most
``budget`` plus the costs of the requests that were in flight just before *t* (the one settled
at *t* included), whatever their number, replicas or interleaving: **a key never spends more
than its budget plus the cost of the requests already in flight when it was crossed.** The
typical-cost estimate keeps that set small (a burst stops where the estimate says the budget
runs out); it is not needed for the bound. The exceptions are explicit: a settle whose reply was
lost is retried and may be counted twice (spend errs high, never low), and a replica that dies
with requests in flight never reports their cost (nor does the request log).

**Session pins** are plain keys with an idle expiry: ``GETEX ... PX pin_ttl_s`` on every turn
(a conversation in use never expires), and ``SET ... NX GET PX`` on the first, so two replicas
routing a conversation's first turns at once agree on the first writer's model. A cascade
conversation's step (:mod:`routecast.server.apis.conversations`) is such a key too, raised by
:data:`~routecast.state.scripts.RAISE` (never lowered).

**Circuit-breaker hints**: when a replica's breaker for a model opens, it sets
``<prefix>breaker:<model>`` for the breaker's ``open_s``; every replica polls the hints of its
models every ``poll_s`` and treats each as open until its hint expires
(:meth:`routecast.backends.health.CircuitBreaker.hint_open`). Hints never close a breaker, and
a replica that cannot reach Redis keeps its own breakers.

**When Redis fails** (refused, timed out after ``timeout_s``): requests needing key admission
get a 503 ``state_unavailable`` with ``Retry-After`` (fail closed: an unchecked budget could be
overspent by every replica at once); for a second after a failure the state does not try again,
so an outage costs each such request microseconds, not a timeout. Settles wait in memory and
are retried. Pins fall back to a bounded LRU in this replica (a conversation may be re-routed
on another replica meanwhile); breaker hints are neither published nor read (local breakers
still work). Requests without a budget or rate limit never touch Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from routecast.backends.routed import SessionPins
from routecast.errors import ConfigError, OptionalDependencyError
from routecast.server.keys import budget_exceeded, rate_limited
from routecast.state.base import StateUnavailableError
from routecast.state.scripts import ADMIT, RAISE, SETTLE

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from routecast.backends.health import CircuitBreaker
    from routecast.server.endpoints import EndpointTable
    from routecast.server.keys import ClientKey

log = logging.getLogger("routecast.state")

T = TypeVar("T")

#: How long past its request's deadline a reservation still counts: time to settle it.
SETTLE_GRACE_S = 30.0
#: A key's admission state is forgotten after this long unused (re-seeded from the database).
KEY_TTL_S = 7 * 86_400
#: After a failure, Redis is not asked again for this long (requests fail fast meanwhile).
BACKOFF_S = 1.0
#: How long the settle writer waits for more settles to share its pipeline. Each round trip
#: costs this replica ~0.1 ms of CPU (redis-py and the loopback socket), so at 1,000 requests
#: a second one pipeline per 5 ms instead of one per request saves about a tenth of a core;
#: spend reaches Redis 5 ms later (the request counts in flight until then: see the bound).
SETTLE_LINGER_S = 0.005
#: Session keys longer than this are hashed into the Redis key (bounded key size).
_MAX_SESSION_CHARS = 64

_Settle = tuple[str, str, float, float]  # key id, reservation, cost, spend before it


def where(url: str) -> str:
    """A Redis URL without its credentials, for messages: ``host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def _errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def _client(url: str, timeout_s: float, max_connections: int) -> Redis:
    try:
        from redis.asyncio import ConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise OptionalDependencyError("redis", "scale", "state.redis_url (shared state)"
                                      ) from None
    # Connecting gets longer than a call: it is rare (the pool keeps connections), and a
    # busy machine can take a while to accept a burst of them. No retries inside the client:
    # the state's own policy (fail fast, retry settles later) decides, and a retry would
    # multiply the time a request waits on a dead Redis. The pool is bounded by the state's
    # semaphore (cheaper than redis-py's BlockingConnectionPool: ~20 us a call less), with
    # room for the background tasks.
    pool = ConnectionPool.from_url(
        url, max_connections=max_connections + 8, socket_timeout=timeout_s,
        socket_connect_timeout=max(1.0, 4 * timeout_s), retry=Retry(NoBackoff(), 0),
        decode_responses=True)
    return Redis(connection_pool=pool)


def check_reachable(url: str, timeout_s: float) -> None:
    """Raise a :class:`ConfigError` when no Redis answers at ``url`` (a PING, synchronous:
    for start-up, before the server binds its port)."""
    try:
        import redis
    except ImportError:
        raise OptionalDependencyError("redis", "scale", "state.redis_url (shared state)"
                                      ) from None
    client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        raise ConfigError(_unreachable(url, e)) from None
    finally:
        client.close()


def _unreachable(url: str, error: BaseException) -> str:
    return (f"state.redis_url: cannot reach Redis at {where(url)} "
            f"({type(error).__name__}: {error}). Fix: start Redis there, or correct "
            "state.redis_url (or the variable state.redis_url_env names)")


class RedisState:
    """:class:`~routecast.state.base.SharedState` in Redis; see the module docstring.

    ``prefix`` starts every key (``state.key_prefix``), ``timeout_s`` bounds each call,
    ``hold_s`` is a reservation's lifetime (``limits.deadline_s`` + :data:`SETTLE_GRACE_S`),
    ``pin_ttl_s`` a pin's idle lifetime, ``poll_s`` the breaker-hint poll period,
    ``max_connections`` the connections this replica opens at most. ``clock`` is
    the replica's monotonic clock (for back-off and hints; Redis keeps its own time)."""

    shared = True

    def __init__(self, url: str, *, prefix: str = "routecast:", timeout_s: float = 0.25,
                 hold_s: float = 300.0 + SETTLE_GRACE_S, pin_ttl_s: float = 86_400.0,
                 poll_s: float = 0.5, max_sessions: int = 10_000, max_connections: int = 32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.hold_ms = max(1, round(hold_s * 1000))
        self.pin_ttl_ms = max(1, round(pin_ttl_s * 1000))
        self.poll_s = poll_s
        self.clock = clock
        self.client = _client(url, timeout_s, max_connections)
        #: Calls on the request path share ``max_connections`` connections: a burst waits
        #: for one (in order) instead of opening one per request.
        self._slots = asyncio.Semaphore(max_connections)
        self._admit = self.client.register_script(ADMIT)
        self._raise = self.client.register_script(RAISE)
        self._settle_sha = hashlib.sha1(SETTLE.encode()).hexdigest()
        self._replica = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._down_until = 0.0
        self._settles: list[_Settle] = []
        self._writer: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._breakers: dict[str, CircuitBreaker] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        #: Pins while Redis is unreachable, per endpoint (see the module docstring).
        self._fallback: dict[str, SessionPins] = {}
        self._max_sessions = max_sessions
        #: Failed calls (refused, timed out, an error reply), in all and by (call, error)
        #: where error is ``timeout`` or ``error`` (``routecast_state_failures_total``).
        self.failures = 0
        self.failed: dict[tuple[str, str], int] = {}
        #: Calls answered without Redis because it was unreachable, by call: admissions
        #: refused (503), pins served from this replica
        #: (``routecast_state_unavailable_total``).
        self.unavailable: dict[str, int] = {}
        #: The settles being written by the pipeline in flight (still pending until it
        #: answers).
        self._writing: list[_Settle] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.client.ping()
            await self.client.script_load(SETTLE)
            await self.client.script_load(ADMIT)
        except _errors() as e:
            raise ConfigError(_unreachable(self.url, e)) from None
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._down_until = 0.0
        if self._settles and (self._writer is None or self._writer.done()):
            self._writer = asyncio.get_running_loop().create_task(self._write_settles())
        if self._writer is not None:
            # What is pending gets one more try, briefly.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), max(1.0, self.timeout_s))
        if self._settles:
            log.error("shared state: %d settle(s) could not be written to Redis at %s; "
                      "their spend is in the database (KeyStore.flush) but not in Redis",
                      len(self._settles), where(self.url))
        for task in list(self._publishing):
            task.cancel()
        await self.client.aclose()

    async def ping(self) -> str | None:
        try:
            await self._call(self.client.ping(), "readiness")
        except StateUnavailableError:
            return f"the shared state (Redis at {where(self.url)}) is unreachable"
        return None

    # -- key admission -----------------------------------------------------------------------

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self.prefix}key:{{{key_id}}}"
        return [base, base + ":inflight"]

    async def admit_key(self, key: ClientKey) -> str | None:
        reservation = f"{self._replica}:{next(self._ids):x}"
        budget = "" if key.budget_usd is None else repr(float(key.budget_usd))
        result: list[Any] = await self._call(self._admit(
            self._keys(key.id), [repr(float(key.spent_usd)), budget, key.rpm or 0, reservation,
                                 self.hold_ms, KEY_TTL_S]), "admission")
        verdict = int(result[0])
        if verdict == 1:
            key.in_flight += 1
            return reservation
        if verdict == 0:
            spent, n, typical = float(result[1]), int(result[2]), float(result[3])
            assert key.budget_usd is not None
            raise budget_exceeded(key.name, spent, key.budget_usd, n * typical, n)
        raise rate_limited(key.name, key.rpm or 0, float(result[1]) / 1000.0)

    def settle_key(self, key: ClientKey, reservation: str, cost_usd: float) -> None:
        self._settles.append((key.id, reservation, cost_usd, key.spent_usd))
        if self._writer is None or self._writer.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test's sync call): the poller writes it
                return
            self._writer = loop.create_task(self._write_settles(SETTLE_LINGER_S))

    async def flush_settles(self) -> None:
        """Write the settles queued so far now (those Redis refuses stay queued)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        await self._write_settles()

    async def _write_settles(self, linger_s: float = 0.0) -> None:
        """Write every queued settle, one pipeline per batch, until none is left or Redis
        fails (the rest stay queued for the poller's next try); first wait ``linger_s`` for
        more to join each batch."""
        while self._settles and self.clock() >= self._down_until:
            if linger_s:
                await asyncio.sleep(linger_s)
            batch, self._settles = self._settles, []
            pipe = self.client.pipeline(transaction=False)
            for key_id, reservation, cost, before in batch:
                pipe.evalsha(self._settle_sha, 2, *self._keys(key_id), reservation, repr(cost),
                             repr(float(before)), KEY_TTL_S)
            self._writing = batch
            try:
                results = await pipe.execute(raise_on_error=False)
            except _errors() as e:
                # Unknown which were applied: all are retried (spend can only err high).
                self._settles[:0] = batch
                self._failed("settle", e)
                return
            finally:
                self._writing = []
            failed = [s for s, r in zip(batch, results, strict=True)
                      if isinstance(r, Exception)]
            if failed:
                self._settles[:0] = failed
                first = next(r for r in results if isinstance(r, Exception))
                if "NOSCRIPT" in str(first):  # Redis restarted: load it again, then retry
                    try:
                        await self.client.script_load(SETTLE)
                    except _errors() as e:
                        self._failed("settle", e)
                        return
                    continue
                self._failed("settle", first)
                return

    def pending_settles(self) -> tuple[int, float]:
        """The settles not yet written to Redis (queued, or in a pipeline that has not
        answered) and the spend they carry, in USD."""
        waiting = [*self._settles, *self._writing]
        return len(waiting), sum(s[2] for s in waiting)

    # -- pins ------------------------------------------------------------------------------

    def _pin_key(self, scope: str, session: str) -> str:
        if len(session) > _MAX_SESSION_CHARS:
            session = "h:" + hashlib.sha256(session.encode()).hexdigest()
        return f"{self.prefix}pin:{scope}:{session}"

    def _local_pins(self, scope: str) -> SessionPins:
        pins = self._fallback.get(scope)
        if pins is None:
            pins = self._fallback[scope] = SessionPins(self._max_sessions)
        return pins

    async def get_pin(self, scope: str, session: str) -> str | None:
        try:
            value = await self._call(self.client.getex(self._pin_key(scope, session),
                                                       px=self.pin_ttl_ms), "pins")
        except StateUnavailableError:
            return self._local_pins(scope).get(session)
        return value if isinstance(value, str) else None

    async def pin(self, scope: str, session: str, model: str) -> str:
        try:
            first = await self._call(self.client.set(self._pin_key(scope, session), model,
                                                     nx=True, px=self.pin_ttl_ms, get=True),
                                     "pins")
        except StateUnavailableError:
            local = self._local_pins(scope)
            pinned = local.get(session)
            if pinned is None:
                local.set(session, model)
            return pinned or model
        return first if isinstance(first, str) else model

    async def raise_step(self, scope: str, session: str, step: int) -> None:
        try:
            await self._call(self._raise([self._pin_key(scope, session)],
                                         [step, self.pin_ttl_ms]), "pins")
        except StateUnavailableError:
            local = self._local_pins(scope)
            now = local.get(session)
            if now is None or not now.isdigit() or int(now) < step:
                local.set(session, str(step))

    # -- breaker hints ---------------------------------------------------------------------

    def attach(self, table: EndpointTable) -> None:
        breakers = dict(breakers_of(table))
        for model, breaker in breakers.items():
            breaker.on_open = self._publisher(model)
        for backend in table.backends.values():
            if hasattr(backend, "shared_pins"):  # routed endpoints pin through this state
                backend.shared_pins = self
        self._breakers = breakers

    def _publisher(self, model: str) -> Callable[[float], None]:
        def publish(open_s: float) -> None:
            if self.clock() < self._down_until:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            task = loop.create_task(self._publish(model, open_s))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        return publish

    async def _publish(self, model: str, open_s: float) -> None:
        try:
            await self.client.set(f"{self.prefix}breaker:{model}", self._replica,
                                  px=max(1, round(open_s * 1000)))
        except _errors() as e:
            self._failed("breaker hint", e)

    async def _read_hints(self) -> None:
        models = list(self._breakers)
        if not models:
            return
        pipe = self.client.pipeline(transaction=False)
        for model in models:
            pipe.pttl(f"{self.prefix}breaker:{model}")
        ttls = await pipe.execute()
        for model, ttl in zip(models, ttls, strict=True):
            if isinstance(ttl, int) and ttl > 0:
                self._breakers[model].hint_open(ttl / 1000.0)

    async def _poll(self) -> None:
        """Every ``poll_s``: read breaker hints, retry settles that wait."""
        while True:
            await asyncio.sleep(self.poll_s)
            if self.clock() < self._down_until:
                continue
            try:
                await self._read_hints()
            except _errors() as e:
                self._failed("breaker hints", e)
                continue
            if self._settles and (self._writer is None or self._writer.done()):
                self._writer = asyncio.get_running_loop().create_task(self._write_settles())

    # -- failures --------------------------------------------------------------------------

    async def _call(self, call: Awaitable[T], what: str) -> T:
        """Await one Redis call, or raise :class:`StateUnavailableError` (at once while backing
        off after a failure)."""
        if self.clock() < self._down_until:
            if asyncio.iscoroutine(call):
                call.close()
            raise self._unavailable(what)
        try:
            async with self._slots:
                return await call
        except _errors() as e:
            self._failed(what, e)
            raise self._unavailable(what) from None

    def _failed(self, what: str, error: BaseException) -> None:
        now = self.clock()
        if now >= self._down_until:  # once per back-off period, not once per request
            log.error("shared state: Redis at %s failed (%s: %s: %s); retrying in %.0f s",
                      where(self.url), what, type(error).__name__, error, BACKOFF_S)
        self._down_until = now + BACKOFF_S
        self.failures += 1
        kind = (what, "timeout" if isinstance(error, TimeoutError) or "Timeout" in
                type(error).__name__ else "error")
        self.failed[kind] = self.failed.get(kind, 0) + 1

    def _unavailable(self, what: str) -> StateUnavailableError:
        self.unavailable[what] = self.unavailable.get(what, 0) + 1
        return StateUnavailableError(
            f"the shared state (Redis at {where(self.url)}) is unreachable, so {what} cannot "
            "be checked across replicas; requests on keys with a budget or rate limit are "
            "refused until it answers again (retry shortly)", BACKOFF_S)


def breakers_of(table: EndpointTable) -> Mapping[str, CircuitBreaker]:
    """Each model's circuit breaker in ``table`` (its HTTP backends), by model name."""
    out: dict[str, CircuitBreaker] = {}
    for member in table.members:
        breaker, model = getattr(member, "breaker", None), getattr(member, "model", None)
        if breaker is not None and isinstance(model, str):
            out[model] = breaker
    return out
