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
    └── CalibrationError          no policy on the validation split meets the target
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
