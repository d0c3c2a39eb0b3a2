"""Routers as artifacts: a folder with ``router.json`` and ``arrays.npz``, no pickle.

``router.json`` holds the router's name, its constructor parameters, its JSON-able learned
state, the state of its encoder(s), and optionally the calibrated policy; ``arrays.npz`` holds
every numpy array (scipy sparse matrices as their CSR parts). Arrays are read back with
``allow_pickle=False``, so loading a folder from elsewhere cannot run code.

Routers take part through :meth:`Router.get_state` / :meth:`Router.set_state`; the default
covers learned attributes that are numpy arrays, sparse matrices, JSON-able values and
registered encoders, which is all the built-ins need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.artifacts import write_json_npz
from routecast.errors import ConfigError, DataFormatError
from routecast.policy import Policy
from routecast.routers import make_router
from routecast.routers.base import Router

FORMAT = "routecast-router"
VERSION = 1
META_FILE = "router.json"
ARRAYS_FILE = "arrays.npz"


def save_router(router: Router, directory: str | Path, *, policy: Policy | None = None,
                calibration: dict[str, Any] | None = None) -> Path:
    """Write ``router`` (fitted) and optionally its ``policy`` into ``directory``.

    ``calibration`` records how the policy was solved (target, data, realised figures) so that
    ``routecast route`` can explain its choice. Files are written under temporary names and
    renamed, so an existing artifact is replaced whole or not at all.
    """
    directory = Path(directory)
    router._check_fitted()
    values, arrays = router.get_state()
    params = _json_params(router)
    meta = {"format": FORMAT, "version": VERSION, "router": router.name, "params": params,
            "state": values,
            "policy": None if policy is None else {**policy.to_dict(),
                                                   "calibration": calibration or {}}}
    try:
        text = json.dumps(meta, indent=1, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"router state of {router.name!r} is not JSON-serialisable: {e}") from e
    return write_json_npz(directory, META_FILE, ARRAYS_FILE, text, arrays)


def _json_params(router: Router) -> dict[str, Any]:
    params = dict(router.get_params())
    for key, value in params.items():
        if isinstance(value, str | int | float | bool | type(None)):
            continue
        if isinstance(value, tuple | list) and all(
                isinstance(v, str | int | float | bool) for v in value):
            params[key] = list(value)
            continue
        name = getattr(value, "name", None)
        from routecast.encoders import ENCODERS

        if isinstance(name, str) and name in ENCODERS:
            params[key] = name  # a registered encoder object is saved by name
            continue
        raise ConfigError(
            f"cannot save parameter {key}={value!r} of router {router.name!r}: only plain "
            "values and registered encoders persist; register the encoder with "
            "`routecast.register_encoder` and pass its name")
    return params


def load_router(directory: str | Path) -> tuple[Router, Policy | None]:
    """Read a folder written by :func:`save_router`; returns the router and its policy."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise DataFormatError(f"has no {META_FILE}", where=directory,
                              fix="point at a folder written by `routecast fit`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot be read as JSON ({e})", where=meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataFormatError("is not a routecast router file", where=meta_path,
                              fix="point at a folder written by `routecast fit`")
    if meta.get("version") != VERSION:
        raise DataFormatError(f"has unsupported version {meta.get('version')!r}",
                              where=meta_path, fix=f"this routecast reads version {VERSION}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    array_path = directory / ARRAYS_FILE
    if array_path.exists():
        try:
            with np.load(array_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as e:
            raise DataFormatError(f"cannot be read ({e})", where=array_path,
                                  fix="re-create the router with `routecast fit`") from None
    try:
        router = make_router(str(meta["router"]), **dict(meta.get("params") or {}))
        router.set_state(dict(meta.get("state") or {}), arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"holds an inconsistent router state ({e!r})", where=directory,
                              fix="re-create the router with `routecast fit`") from None
    policy = None
    if meta.get("policy") is not None:
        policy = Policy.from_dict(dict(meta["policy"]))
    return router, policy


def read_calibration(directory: str | Path) -> dict[str, Any]:
    """The calibration record saved with the policy (empty if none)."""
    meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    policy = meta.get("policy") or {}
    return dict(policy.get("calibration") or {})
