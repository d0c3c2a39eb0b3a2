"""When to retry a failed upstream call, and how long to wait first.

Exponential backoff with jitter, as the OpenAI SDK does: the ``n``-th retry waits
``min(max_backoff_s, backoff_s * 2**n)`` shortened by up to a quarter at random, so clients that
failed together do not all come back together. A ``Retry-After`` (or ``retry-after-ms``) header
from the upstream wins when it is present and no longer than ``max_retry_after_s``; a longer one
means "not soon", and waiting would only hold the client, so the call fails at once (and a
fallback model, if configured, gets its turn).

A timed-out call is not retried on the same model while another model is waiting to take over
(:func:`another_model_waiting`, set by fallback chains and cascades around every member but the
last, and around a cascade's judge calls): a model that did not answer within its read timeout
is likely to time out again, and retrying it would spend the request's deadline before the
fallback had its turn.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

#: Upstream statuses worth another try: rate limited, or a server-side failure.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

_ANOTHER_MODEL_WAITING: ContextVar[bool] = ContextVar("another_model_waiting", default=False)


@contextlib.contextmanager
def another_model_waiting() -> Iterator[None]:
    """Within this block, calls that time out are not retried: another model is next."""
    token = _ANOTHER_MODEL_WAITING.set(True)
    try:
        yield
    finally:
        _ANOTHER_MODEL_WAITING.reset(token)


def retry_timeouts() -> bool:
    """Whether a timed-out call may be retried on the same model here (see the module
    docstring)."""
    return not _ANOTHER_MODEL_WAITING.get()


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` further attempts after the first, with the waits described above."""

    max_retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); ``None``: do not retry."""
        if retry >= self.max_retries:
            return None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_retry_after_s else None
        wait = min(self.max_backoff_s, self.backoff_s * 2.0 ** retry)
        return wait * (1.0 - 0.25 * self.rng.random())


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait an upstream asked for: ``retry-after-ms``, or ``Retry-After`` in seconds or as
    an HTTP date; ``None`` when absent or unreadable (negative waits count as zero)."""
    # Real header maps (aiohttp's) ignore case; plain dicts (test transports) may not.
    ms = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
