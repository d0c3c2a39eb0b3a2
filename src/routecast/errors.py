"""The one exception tree of routecast.

Every error routecast raises on purpose derives from :class:`RoutecastError`, so callers can
catch one class. Messages say what is wrong *and* how to fix it; the CLI prints them without a
traceback.

::

    RoutecastError
    ├── DataError                 malformed or inconsistent outcome data
    │   └── DataFormatError       a file that cannot be read as the expected format
    ├── ConfigError               a bad argument, option or configuration value
    ├── NotFittedError            a router or encoder used before ``fit``
    ├── OptionalDependencyError   an optional extra is not installed
    ├── CalibrationError          no policy on the validation split meets the target
    ├── RequestError              a bad request from an API client (the server answers 4xx)
    └── UpstreamError             a model's server failed or could not be reached (502/504)
        └── UpstreamTimeoutError  ... within the configured timeout (504)
"""

from __future__ import annotations

from pathlib import Path


class RoutecastError(Exception):
    """Base class of every error routecast raises on purpose."""


class DataError(RoutecastError):
    """Outcome data is missing, malformed or inconsistent.

    ``where`` names the file (and row or line) so the message can point at the problem.
    """

    def __init__(self, message: str, *, where: str | Path | None = None, fix: str | None = None):
        self.where = str(where) if where is not None else None
        self.fix = fix
        parts = [f"{self.where}: {message}" if self.where else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class DataFormatError(DataError):
    """A file that cannot be read as the format it was expected to be in."""


class ConfigError(RoutecastError):
    """A bad argument, option or configuration value."""


class NotFittedError(RoutecastError):
    """A router or encoder was used before ``fit`` was called."""


class OptionalDependencyError(RoutecastError):
    """An optional extra is needed but not installed; the message gives the install command."""

    def __init__(self, package: str, extra: str, purpose: str, hint: str | None = None):
        install = hint or f"pip install 'routecast[{extra}]'"
        super().__init__(
            f"{purpose} needs the optional package {package!r}. Install it with: {install}")


class CalibrationError(RoutecastError):
    """No operating point on the calibration data meets the requested budget or quality."""


class RequestError(RoutecastError):
    """A request from an API client that cannot be served as sent.

    ``status`` is the HTTP status the server answers with, ``param`` the offending field (as in
    OpenAI's error objects) and ``code`` a short machine-readable reason.
    """

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None):
        self.status = status
        self.param = param
        self.code = code
        super().__init__(message)


class UpstreamError(RoutecastError):
    """A model's server answered with an error, or could not be reached.

    ``status`` is what the routecast server answers with (502 for a failed or unreachable
    upstream, the upstream's own 4xx for a request it rejected); ``upstream_status`` is what
    the upstream said (``None`` when no answer came). ``retryable`` errors (429, 5xx,
    connection failures, timeouts) are retried with backoff and may fall back to another
    model; a request the upstream rejected as invalid is neither.

    ``param`` and ``upstream_code`` are the upstream's own ``param`` and ``code`` (of a request
    it rejected, or a rate limit), which the client is told; ``code`` stays routecast's reason.
    ``retry_after_s`` is the wait a rate-limited upstream asked for.
    """

    def __init__(self, message: str, *, model: str, status: int = 502,
                 upstream_status: int | None = None, retryable: bool = False,
                 code: str = "upstream_error", param: str | None = None,
                 upstream_code: str | None = None, retry_after_s: float | None = None):
        self.model = model
        self.status = status
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.code = code
        self.param = param
        self.upstream_code = upstream_code
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UpstreamTimeoutError(UpstreamError):
    """A model's server did not connect or answer within the configured timeout."""
