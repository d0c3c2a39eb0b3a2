"""Client API keys for the server: bearer tokens stored hashed, with spend budgets and rate limits.

A token looks like ``rc-<id>-<secret>``: ``id`` (8 hex digits) finds the row, ``secret`` (32
random bytes, URL-safe base64) proves possession. The database keeps only
``sha256(salt || secret)`` with a per-key random salt. A slow password hash (scrypt, argon2)
protects *low-entropy* secrets from guessing; a 256-bit random secret cannot be guessed
however fast the hash, so a fast salted hash is as safe here and keeps authentication at a few
microseconds per request. Comparison is constant-time (:func:`hmac.compare_digest`).

Budgets and rate limits are enforced in the server's one event loop: the check and the
reservation happen with no ``await`` between them, so concurrent requests cannot both pass a
check meant for one (that is the atomicity; no lock is needed on one loop). A request's cost is
known only when it finishes, so admission counts what is in flight at the key's typical cost
(a running mean of its settled requests): a request is admitted while ``spent + in_flight x
typical cost`` is below the budget. A burst therefore stops where the budget would run out, not
after it; only a key's very first requests, before any cost is known, can overspend (by at most
their own cost). Spend is written back to the database (the ``api_keys`` table of
:mod:`routecast.storage`, SQLite or PostgreSQL) by :meth:`KeyStore.flush` (every second while
serving, and at shutdown) as deltas, so replicas sharing the table add up; a crash loses at
most the last second's spend accounting, never the request log. The server runs the database
side of flushes and reloads in a worker thread (:meth:`KeyStore.flush_async`,
:meth:`KeyStore.reload_async`) and applies their results on the event loop.

:meth:`KeyStore.reload` (every second, to see new and revoked keys) updates the
:class:`ClientKey` objects in place: a request that started before a reload settles its cost
on the same object the next request is admitted against.

A well-formed token whose id is not loaded may be a key added since the last reload, so
:meth:`KeyStore.authenticate` looks again, but never on the event loop and never more than
once per :data:`MISS_READ_S`: anyone can send random well-formed tokens, and on PostgreSQL each
read is a network round trip. Every request waiting on an unknown id shares the next read
(the background reload counts as one), which starts no sooner than :data:`MISS_READ_S` after
the previous; an id that read did not find is refused at once until the interval has passed
(a short negative cache). A flood of random keys thus costs at most one read of the table a
second (the server's periodic reload, :meth:`KeyStore.refresh`, skips its turn after such a
read), and a key added to the database is accepted within :data:`MISS_READ_S` (its first
request may wait that long). Loaded keys are authenticated synchronously
(:meth:`KeyStore.cached`), in a few microseconds.

Rate limits are token buckets of ``rpm`` requests per minute (bursts up to ``rpm``).

Replicas sharing Redis (``state.redis_url``) admit keys with a budget or a rate limit through
:attr:`KeyStore.state` instead (:mod:`routecast.state`): the same rule, run atomically in
Redis across replicas, with each request in flight a reservation that expires. Spend still
reaches the database from each replica as a delta (:meth:`KeyStore.flush`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from routecast.errors import ConfigError, RequestError
from routecast.storage.database import Database, open_database
from routecast.storage.schema import api_keys

if TYPE_CHECKING:
    from routecast.state.base import SharedState

#: What a key store's database may be given as: the server's Database, a SQLite path, a URL.
Target = str | Path | Database
_KEY_COLUMNS = (api_keys.c.id, api_keys.c.name, api_keys.c.salt, api_keys.c.hash,
                api_keys.c.budget_usd, api_keys.c.spent_usd, api_keys.c.rpm, api_keys.c.revoked)
_ADD_SPEND = (update(api_keys).where(api_keys.c.id == bindparam("key_id"))
              .values(spent_usd=api_keys.c.spent_usd + bindparam("delta")))

_TOKEN = re.compile(r"rc-([0-9a-f]{8})-([A-Za-z0-9_-]{20,100})")
#: The least time between two reads of the key table on behalf of unknown ids (seconds).
MISS_READ_S = 1.0
#: The most unknown ids remembered between two reads (a flood of distinct ids is bounded).
_ABSENT_MAX = 100_000


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _using(target: Target) -> tuple[Database, bool]:
    """The database of ``target`` (migrated if opened here) and whether to close it."""
    return open_database(target)


def add_key(db: Target, name: str, *, budget_usd: float | None = None,
            rpm: int | None = None) -> str:
    """Create a key and return its token (shown once: only its hash is stored)."""
    if budget_usd is not None and not budget_usd >= 0:
        raise ConfigError(f"--budget-usd must be >= 0, got {budget_usd}")
    if rpm is not None and rpm < 1:
        raise ConfigError(f"--rpm must be >= 1, got {rpm}")
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    database, owned = _using(db)
    try:
        with database.begin() as conn:
            conn.execute(insert(api_keys).values(
                id=key_id, name=name, salt=salt, hash=_hash(salt, secret),
                budget_usd=budget_usd, rpm=rpm, created=time.time()))
    except IntegrityError:
        raise ConfigError(f"a key named {name!r} exists already; pick another name or revoke "
                          f"it with `routecast keys revoke {name}`") from None
    finally:
        if owned:
            database.close()
    return f"rc-{key_id}-{secret}"


def revoke_key(db: Target, name: str) -> bool:
    """Mark the key ``name`` revoked; ``False`` when there is none."""
    database, owned = _using(db)
    try:
        with database.begin() as conn:
            return conn.execute(update(api_keys).where(api_keys.c.name == name)
                                .values(revoked=1)).rowcount > 0
    finally:
        if owned:
            database.close()


def list_keys(db: Target) -> list[dict[str, object]]:
    """Every key (oldest first) as a dict: name, id, budget_usd, spent_usd, rpm, created,
    revoked."""
    cols = (api_keys.c.name, api_keys.c.id, api_keys.c.budget_usd, api_keys.c.spent_usd,
            api_keys.c.rpm, api_keys.c.created, api_keys.c.revoked)
    database, owned = _using(db)
    try:
        with database.connect() as conn:
            rows = conn.execute(select(*cols).order_by(api_keys.c.created)).all()
    finally:
        if owned:
            database.close()
    return [dict(zip([c.name for c in cols], r, strict=True)) for r in rows]


@dataclass
class ClientKey:
    """One key as the server holds it; ``spent_usd`` includes what is not yet flushed."""

    id: str
    name: str
    salt: bytes
    hash: bytes
    budget_usd: float | None
    spent_usd: float
    rpm: int | None
    revoked: bool = False
    #: Requests admitted and not yet settled.
    in_flight: int = 0
    unflushed_usd: float = 0.0
    #: Spend being written by a flush that has not committed yet.
    flushing_usd: float = 0.0
    #: Running mean cost of this key's settled requests (``None``: none settled yet).
    typical_cost_usd: float | None = None
    _tokens: float = field(default=0.0, repr=False)
    _refilled: float = field(default=0.0, repr=False)


class KeyStore:
    """The keys of one database, cached in memory; see the module docstring."""

    def __init__(self, db: Target, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = db
        self.clock = clock
        self.keys: dict[str, ClientKey] = {}
        self._db: Database | None = None
        self._owned = False
        #: The state replicas share (Redis), set by the server; ``None``: this process alone,
        #: and :meth:`admit` decides.
        self.state: SharedState | None = None
        #: Reads of the table made (or tried) so far, whatever asked for them.
        self.reads = 0
        #: When the last read began / the last applied read began (``time.monotonic``):
        #: the first paces reads for unknown ids, the second says what they can have seen.
        self._tried_at = -MISS_READ_S
        self._read_at = -MISS_READ_S
        #: Ids the read begun at ``_read_at`` was asked for and did not find.
        self._absent: set[str] = set()
        self._miss_read: asyncio.Task[None] | None = None

    @property
    def path(self) -> Target:
        """The database this store was given (a path, URL or :class:`Database`)."""
        return self.target

    def open(self) -> None:
        self._db, self._owned = _using(self.target)
        self.reload()

    def _read(self) -> tuple[float, Sequence[Any]]:
        """When the read began and the table's rows (blocking: in a worker thread when
        serving)."""
        assert self._db is not None, "KeyStore.open() first"
        self.reads += 1
        began = self._tried_at = time.monotonic()
        with self._db.connect() as conn:
            return began, conn.execute(select(*_KEY_COLUMNS)).all()

    def reload(self) -> None:
        """Re-read the table (new and revoked keys, changed budgets), keeping unflushed spend
        and updating known keys in place (see the module docstring)."""
        self._apply(*self._read())

    async def reload_async(self) -> None:
        """:meth:`reload` with the read in a worker thread and the update on the event loop
        (where admissions read the keys)."""
        self._apply(*await asyncio.to_thread(self._read))

    async def refresh(self) -> None:
        """The server's periodic :meth:`reload_async`, skipped when a read for unknown ids
        began less than half :data:`MISS_READ_S` ago (it saw the table as recently): under a
        flood of unknown keys the two together still read about once a second."""
        if time.monotonic() - self._tried_at >= MISS_READ_S / 2:
            await self.reload_async()

    def _apply(self, began: float, rows: Sequence[Any]) -> None:
        if began > self._read_at:
            self._read_at = began
            self._absent = set()
        fresh: dict[str, ClientKey] = {}
        for key_id, name, salt, digest, budget, spent, rpm, revoked in rows:
            key = self.keys.get(key_id)
            if key is None:
                key = ClientKey(key_id, name, salt, digest, budget, spent, rpm, bool(revoked))
                if rpm:
                    key._tokens, key._refilled = float(rpm), self.clock()
            else:
                if rpm and not key.rpm:  # a rate limit set since: start with a full bucket
                    key._tokens, key._refilled = float(rpm), self.clock()
                key.name, key.salt, key.hash, key.rpm = name, salt, digest, rpm
                key.budget_usd, key.revoked = budget, bool(revoked)
                key.spent_usd = spent + key.unflushed_usd + key.flushing_usd
            fresh[key_id] = key
        self.keys = fresh

    def cached(self, authorization: str | None) -> ClientKey | None:
        """The loaded key of an ``Authorization: Bearer <token>`` header, or a 401; ``None``
        when the token is well formed but its id is not loaded (:meth:`authenticate` looks
        again). Synchronous and cheap: a dict lookup and one hash."""
        if not authorization:
            raise RequestError("this server needs an API key: send `Authorization: Bearer "
                               "<key>` (create one with `routecast keys add NAME`)",
                               status=401, code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        match = _TOKEN.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
        if match is None:
            raise invalid_key()
        key = self.keys.get(match.group(1))
        if key is None:
            if self._db is None or (match.group(1) in self._absent
                                    and time.monotonic() - self._read_at < MISS_READ_S):
                raise invalid_key()
            return None
        if key.revoked or not hmac.compare_digest(_hash(key.salt, match.group(2)), key.hash):
            raise invalid_key()
        return key

    async def authenticate(self, authorization: str | None) -> ClientKey:
        """The key of an ``Authorization: Bearer <token>`` header, or a 401. An id not loaded
        waits for the next paced read of the table (see the module docstring; a 503 if that
        read fails)."""
        key = self.cached(authorization)
        if key is not None:
            return key
        assert authorization is not None  # else cached() raised
        key_id = authorization.partition(" ")[2].strip()[3:11]  # cached() matched _TOKEN
        arrived = time.monotonic()
        while self._read_at < arrived:  # no read since this request came: wait for one
            if self._miss_read is None:
                self._miss_read = asyncio.create_task(self._paced_read())
            try:
                # Shielded: a client that hangs up must not cancel the others' read.
                await asyncio.shield(self._miss_read)
            except Exception as e:
                raise RequestError("cannot read the client keys from the database; retry "
                                   "shortly", status=503, code="keys_unavailable") from e
            if key_id in self.keys:
                break
        if key_id not in self.keys and len(self._absent) < _ABSENT_MAX:
            self._absent.add(key_id)
        key = self.cached(authorization)
        if key is None:
            raise invalid_key()
        return key

    async def _paced_read(self) -> None:
        """One read of the table for the requests waiting on unknown ids, no sooner than
        :data:`MISS_READ_S` after the previous read (which may have been the background
        reload, in which case this one is not needed)."""
        try:
            asked = time.monotonic()
            wait = self._tried_at + MISS_READ_S - asked
            if wait > 0:
                await asyncio.sleep(wait)
                if self._read_at >= asked:  # a reload began meanwhile: the waiters use it
                    return
            await self.reload_async()
        finally:
            self._miss_read = None

    def admit(self, key: ClientKey) -> None:
        """Check the budget and take one rate-limit token in this process; raises 429. Call
        :meth:`settle` once the request is done. Synchronous on purpose: see the module
        docstring. Replicas sharing Redis admit through :attr:`state` instead
        (:meth:`routecast.state.base.SharedState.admit_key`)."""
        admit_locally(key, self.clock)

    def settle(self, key: ClientKey, cost_usd: float, reservation: str | None = None) -> None:
        """Add a finished request's cost (0 for a failed one) to its key, and release its
        ``reservation`` in the shared :attr:`state` when it was admitted there."""
        if reservation is not None and self.state is not None:
            # Before the local update: the state seeds a lost Redis entry from the spend
            # without this request's cost, which it adds itself.
            self.state.settle_key(key, reservation, cost_usd)
        # Reloads update keys in place, so this is the object the next admission reads.
        key.in_flight = max(0, key.in_flight - 1)
        key.spent_usd += cost_usd
        key.unflushed_usd += cost_usd
        if cost_usd > 0:
            # A short memory (alpha 0.2), as the breakers' latency: a key whose requests grow
            # costlier is held to its new cost within a few requests.
            typical = key.typical_cost_usd
            key.typical_cost_usd = cost_usd if typical is None else 0.8 * typical + 0.2 * cost_usd

    def flush(self) -> None:
        """Add unflushed spend to the database (a delta, so two servers sharing it add up)."""
        if self._db is None:
            return
        deltas = self._take_deltas()
        written = False
        try:
            self._write(deltas)
            written = True
        finally:
            self._done(deltas, written)

    async def flush_async(self) -> None:
        """:meth:`flush` with the write in a worker thread: the deltas are taken on the event
        loop (spend settled meanwhile goes to the next flush), counted in the keys' spend
        while being written (a reload meanwhile does not lose them) and given back if the
        write fails."""
        if self._db is None:
            return
        deltas = self._take_deltas()
        written = False
        try:
            await asyncio.to_thread(self._write, deltas)
            written = True
        finally:
            self._done(deltas, written)

    def _take_deltas(self) -> list[dict[str, Any]]:
        deltas = []
        for key in self.keys.values():
            if key.unflushed_usd:
                deltas.append({"key_id": key.id, "delta": key.unflushed_usd})
                key.flushing_usd += key.unflushed_usd
                key.unflushed_usd = 0.0
        return deltas

    def _done(self, deltas: list[dict[str, Any]], written: bool) -> None:
        for d in deltas:
            key = self.keys.get(d["key_id"])
            if key is not None:
                key.flushing_usd -= d["delta"]
                if not written:
                    key.unflushed_usd += d["delta"]

    def _write(self, deltas: list[dict[str, Any]]) -> None:
        if not deltas:
            return
        assert self._db is not None
        with self._db.begin() as conn:
            conn.execute(_ADD_SPEND, deltas)

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            if self._owned:
                self._db.close()
            self._db = None


def invalid_key() -> RequestError:
    """The 401 of a token that is not a valid key: one message for every failure (which part
    was wrong is a hint to an attacker)."""
    return RequestError("invalid API key; check the key, or create one with "
                        "`routecast keys add NAME`", status=401, code="invalid_api_key")


def admit_locally(key: ClientKey, clock: Callable[[], float]) -> None:
    """One process's admission of a request on ``key`` (see the module docstring): the budget
    check against spend and what is in flight at the key's typical cost, then a token of its
    bucket; raises 429, else counts the request in flight. No ``await``: atomic on one loop."""
    if key.budget_usd is not None:
        pending = key.in_flight * (key.typical_cost_usd or 0.0)
        if key.spent_usd + pending >= key.budget_usd:
            raise budget_exceeded(key.name, key.spent_usd, key.budget_usd, pending,
                                  key.in_flight)
    if key.rpm:
        now = clock()
        key._tokens = min(float(key.rpm), key._tokens + (now - key._refilled) * key.rpm / 60.0)
        key._refilled = now
        if key._tokens < 1.0:
            raise rate_limited(key.name, key.rpm, (1.0 - key._tokens) * 60.0 / key.rpm)
        key._tokens -= 1.0
    key.in_flight += 1


def budget_exceeded(name: str, spent: float, budget: float, pending: float,
                    in_flight: int) -> RequestError:
    """The 429 of a key whose spend (plus ``pending`` held by ``in_flight`` requests) has
    reached its budget."""
    held = f", ${pending:.4f} more held by {in_flight} request(s) in flight" if pending else ""
    return RequestError(f"the key {name!r} has spent its budget (${spent:.4f} of "
                        f"${budget:.4f}{held}); ask for a higher --budget-usd", status=429,
                        code="budget_exceeded")


def rate_limited(name: str, rpm: int, wait_s: float) -> RateLimitedError:
    """The 429 of a key past its ``rpm``, admitted again in ``wait_s`` seconds."""
    return RateLimitedError(f"the key {name!r} is limited to {rpm} requests per minute; retry "
                            f"in {wait_s:.1f} s", wait_s)


class RateLimitedError(RequestError):
    """A 429 with the seconds after which a retry would be admitted (for ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, status=429, code="rate_limited")
        self.retry_after_s = retry_after_s
