"""Outcome data: the :class:`Dataset`, routecast's own file format, and importers.

Importers are one :class:`~routecast.registry.Registry` (entry-point group
``routecast.formats``): each is a module (or any object) with ``detect(path) -> bool`` and
``load(path, *, seed, name) -> Dataset``, imported only when used; a plugin's format joins
the same way. Detection tries the built-ins in the order below, then plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, cast

from routecast.data import canonical
from routecast.data.dataset import SPLITS, Dataset
from routecast.data.splits import DEFAULT_SEED
from routecast.errors import ConfigError, DataError
from routecast.registry import Registry

__all__ = ["IMPORTERS", "SPLITS", "Dataset", "detect_format", "load_dataset", "save_dataset"]


class Importer(Protocol):
    def detect(self, path: Path) -> bool: ...

    def load(self, path: str | Path, *, seed: int = ..., name: str | None = ...) -> Dataset: ...


def _check(name: str, obj: object) -> Importer:
    if not (callable(getattr(obj, "detect", None)) and callable(getattr(obj, "load", None))):
        raise ConfigError(f"data format {name!r} is {obj!r}, which lacks detect(path) and "
                          "load(path, *, seed, name)")
    return cast(Importer, obj)


#: Every importer by format name (a read-only mapping; plugins included).
IMPORTERS: Registry[Importer] = Registry("data format", "routecast.formats", {
    "routerbench": "routecast.data.routerbench",
    "routellm": "routecast.data.routellm",
    "cascades": "routecast.data.zellinger",
    "llmrouter": "routecast.data.llmrouter",
}, _check)


def _importer(fmt: str) -> Importer:
    if fmt not in IMPORTERS:
        known = ", ".join(["routecast", *IMPORTERS])
        raise ConfigError(f"unknown data format {fmt!r}; known formats: {known}")
    return IMPORTERS.load(fmt)


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path``: ``"routecast"`` or one of :data:`IMPORTERS`."""
    path = Path(path)
    if not path.exists():
        raise DataError("does not exist", where=path, fix="check the path")
    if canonical.is_canonical(path):
        return "routecast"
    for fmt in IMPORTERS:
        if _importer(fmt).detect(path):
            return fmt
    raise DataError(
        "is not in a format routecast recognises", where=path,
        fix="give a routecast outcomes file (.jsonl[.gz]) or a folder in one of the public "
            f"formats ({', '.join(IMPORTERS)}); `--format NAME` forces one",
    )


def load_dataset(path: str | Path, *, fmt: str = "auto", seed: int = DEFAULT_SEED,
                 name: str | None = None) -> Dataset:
    """Load outcomes from a routecast file or any supported public format."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "routecast":
        return canonical.load(path)
    return _importer(fmt).load(path, seed=seed, name=name)


def save_dataset(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` in routecast's own format (``.jsonl`` or ``.jsonl.gz``)."""
    return canonical.save(dataset, path)
