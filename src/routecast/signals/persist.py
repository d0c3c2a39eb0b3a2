"""Learned scorers as artifacts: ``scorer.json`` + ``scorer.npz`` in a folder, no pickle.

The layout follows :mod:`routecast.routers.persist`: the JSON file holds the signal's name,
its constructor parameters and its JSON-able state (the vocabularies' terms, the analyser
settings); the ``.npz`` holds every numpy array (idf weights, coefficients), read back with
``allow_pickle=False``, so loading a folder from elsewhere cannot run code. The file names
differ from a router's, so one folder can hold a tuned cascade (``cascade.json``) and the
scorer it defers on, as ``routecast tune-cascade --signal learned`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from routecast.artifacts import write_json_npz
from routecast.errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from routecast.signals.learned import LearnedScorer

FORMAT = "routecast-scorer"
VERSION = 1
META_FILE = "scorer.json"
ARRAYS_FILE = "scorer.npz"


def save_scorer(scorer: LearnedScorer, directory: str | Path) -> Path:
    """Write a fitted ``scorer`` into ``directory`` (created if needed); returns it.

    Both files are written under temporary names and renamed, so an existing scorer is
    replaced whole or not at all.
    """
    directory = Path(directory)
    values, arrays = scorer.get_state()
    meta = {"format": FORMAT, "version": VERSION, "signal": scorer.name,
            "params": scorer.get_params(), "state": values}
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the {scorer.name!r} scorer's state is not JSON-serialisable: "
                          f"{e}") from e
    return write_json_npz(directory, META_FILE, ARRAYS_FILE, text, arrays)


def has_scorer(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a saved scorer (or a ``scorer.json`` itself)."""
    path = Path(path)
    return (path / META_FILE).is_file() or (path.name == META_FILE and path.is_file())


def load_scorer(path: str | Path) -> LearnedScorer:
    """Read a scorer written by :func:`save_scorer`: its folder, or the ``scorer.json`` in it."""
    from routecast.signals.learned import LearnedScorer

    path = Path(path)
    directory = path.parent if path.name == META_FILE else path
    meta_path = directory / META_FILE
    fix = "point at a folder written by `routecast tune-cascade --signal learned`"
    if not meta_path.is_file():
        raise DataFormatError(f"has no {META_FILE}", where=directory, fix=fix)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot be read as JSON ({e})", where=meta_path, fix=fix) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataFormatError("is not a routecast scorer file", where=meta_path, fix=fix)
    if meta.get("version") != VERSION:
        raise DataFormatError(f"has unsupported version {meta.get('version')!r}",
                              where=meta_path, fix=f"this routecast reads version {VERSION}")
    if meta.get("signal") != LearnedScorer.name:
        raise DataFormatError(f"holds a {meta.get('signal')!r} signal, not a learned scorer",
                              where=meta_path, fix=fix)
    arrays: dict[str, npt.NDArray[Any]] = {}
    try:
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot be read ({e})", where=directory / ARRAYS_FILE,
                              fix="save the scorer again (`routecast tune-cascade`)") from None
    try:
        params = dict(meta.get("params") or {})
        # Scorers saved before the answer-form features existed were fitted without them.
        params.setdefault("text_features", False)
        scorer = LearnedScorer(**params)
        scorer.set_state(dict(meta["state"]), arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"holds an inconsistent scorer state ({e!r})", where=directory,
                              fix="save the scorer again (`routecast tune-cascade`)") from None
    return scorer
