"""A learner's router as bytes, to publish to the shared database and load on other replicas.

A replica that loads a version must serve what its publisher serves: the same predictions,
costs and policy. The learner's serving router is a chain of wrappers around the router family
it fitted (:mod:`routecast.learning.learner`, :mod:`routecast.learning.cost`), for example
``DebiasedRouter(TrustedRouter(PromptCostRouter(ShrunkRouter(LinearRouter))))``, and every
layer changes what is served, so the payload carries the whole chain, no pickle:

* ``router/``: the innermost router (the fitted family, or the zero router) and the policy, as
  :func:`~routecast.routers.persist.save_router` writes them (JSON and ``.npz``);
* ``snapshot.json``: ``format`` and ``version``, the snapshot's kind, the label count, and the
  layers as JSON, outermost first: ``fitted`` wraps the innermost router into the snapshot's
  ``fitted`` (raw) router, ``serving`` wraps that into the router that serves. A layer is its
  ``kind`` (``shrunk``, ``prompt-cost``, ``trusted``, ``debiased``) and its plain parameters;
* ``layers.npz``: the layers' arrays (read with ``allow_pickle=False``), keyed
  ``<chain>.<index>.<name>``; a per-prompt cost model's encoder is saved like a router's
  (:func:`~routecast.encoders.encoder_state`), unless it is the innermost router's own, which
  is then shared again on load.

Version 1 (before the wrappers) had the router folder at the top level and a ``trusted`` list;
it is still read. Cold and prior routers are not published: every replica builds them from the
same config.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.encoders import encoder_from_state, encoder_state
from routecast.errors import ConfigError, DataFormatError
from routecast.learning.cost import PromptCostModel, PromptCostRouter
from routecast.learning.learner import DebiasedRouter, ShrunkRouter, Snapshot, TrustedRouter
from routecast.policy import Policy
from routecast.routers.base import Router
from routecast.routers.persist import load_router, save_router

#: The artifact kind of a learning endpoint's router.
KIND = "learned-router"
FORMAT = "routecast-learned-router"
VERSION = 2
_SNAPSHOT = "snapshot.json"
_LAYERS = "layers.npz"
_ROUTER = "router"
#: What a payload may hold; nothing else is extracted.
_FILES = (_SNAPSHOT, _LAYERS, f"{_ROUTER}/router.json", f"{_ROUTER}/arrays.npz")
_V1_FILES = (_SNAPSHOT, "router.json", "arrays.npz")

Arrays = dict[str, npt.NDArray[Any]]


def snapshot_payload(snap: Snapshot, labels: int) -> bytes | None:
    """``snap`` as bytes, or ``None`` for a router that is not published (cold, prior).

    Raises :class:`~routecast.errors.ConfigError` for a router this module cannot describe
    (a wrapper it does not know, or a serving router that does not wrap ``snap.fitted``)."""
    if snap.kind in ("cold", "prior"):
        return None
    arrays: Arrays = {}
    serving, _ = _peel(snap.router, snap.fitted)
    fitted_layers, base = _peel(snap.fitted, None)
    layers = {"serving": serving, "fitted": fitted_layers}
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": snap.kind,
                            "labels": labels}
    for chain, routers in layers.items():
        meta[chain] = [_describe(r, base, f"{chain}.{i}.", arrays)
                       for i, r in enumerate(routers)]
    try:
        text = json.dumps(meta, allow_nan=False)
    except ValueError as e:
        raise ConfigError(f"the learned router has a non-finite parameter: {e}") from e
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="routecast-publish-") as tmp:
        folder = save_router(base, Path(tmp) / _ROUTER, policy=snap.policy)
        npz = io.BytesIO()
        np.savez(npz, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(folder.iterdir()):
                z.write(path, f"{_ROUTER}/{path.name}")
            z.writestr(_LAYERS, npz.getvalue())
            z.writestr(_SNAPSHOT, text)
    return buffer.getvalue()


_WRAPPERS = (ShrunkRouter, PromptCostRouter, TrustedRouter, DebiasedRouter)


def _peel(router: Router, stop: Router | None) -> tuple[list[Router], Router]:
    """The wrappers from ``router`` down to ``stop`` (outermost first) and what they wrap:
    ``stop``, or with ``stop`` ``None`` the first router that is no known wrapper."""
    layers: list[Router] = []
    while router is not stop:
        if not isinstance(router, _WRAPPERS):
            if stop is None:
                break
            raise ConfigError(f"cannot publish router {router.name!r}: the serving router "
                              "must be the fitted one wrapped in "
                              + ", ".join(repr(w.name) for w in _WRAPPERS))
        layers.append(router)
        router = router.inner
    return layers, router


def _describe(router: Router, base: Router, prefix: str, arrays: Arrays) -> dict[str, Any]:
    """One wrapper as its JSON description; its arrays go into ``arrays`` under ``prefix``."""
    if isinstance(router, ShrunkRouter):
        arrays.update({prefix + "slope": router.slope, prefix + "center": router.center,
                       prefix + "mean": router.mean})
        return {"kind": "shrunk"}
    if isinstance(router, TrustedRouter):
        return {"kind": "trusted", "trusted": [bool(t) for t in router.trusted]}
    if isinstance(router, DebiasedRouter):
        return {"kind": "debiased", "noise": float(router.noise)}
    assert isinstance(router, PromptCostRouter)
    cost = router.cost
    arrays.update({prefix + "coef": np.asarray(cost.coef, dtype=np.float64),
                   prefix + "mean_cost_usd": np.asarray(cost.mean_cost_usd, dtype=np.float64)})
    encoder: Any = "router"  # the innermost router's own encoder, shared again on load
    if cost.encoder is not getattr(base, "encoder_", None):
        encoder, enc_arrays = encoder_state(cost.encoder)
        arrays.update({f"{prefix}encoder::{k}": v for k, v in enc_arrays.items()})
    return {"kind": "prompt-cost", "intercept": float(cost.intercept), "encoder": encoder}


def snapshot_from_payload(payload: bytes, version: int) -> tuple[Snapshot, int]:
    """The snapshot a payload holds (numbered ``version``) and its label count; a
    :class:`~routecast.errors.DataFormatError` naming the version if it cannot be read."""
    where = f"artifact version {version}"
    try:
        with tempfile.TemporaryDirectory(prefix="routecast-load-") as tmp, \
                zipfile.ZipFile(io.BytesIO(payload)) as z:
            names = set(z.namelist())
            if _SNAPSHOT not in names:
                raise DataFormatError(f"has no {_SNAPSHOT}", where=where)
            meta = json.loads(z.read(_SNAPSHOT).decode("utf-8"))
            if not isinstance(meta, dict):
                raise DataFormatError(f"{_SNAPSHOT} is not an object", where=where)
            got = meta.get("version", 1) if "format" in meta else 1
            if "format" in meta and meta["format"] != FORMAT:
                raise DataFormatError(f"has format {meta['format']!r}, not {FORMAT!r}",
                                      where=where)
            if type(got) is not int or got not in (1, VERSION):
                raise DataFormatError(
                    f"has unsupported version {got!r} of the published router format",
                    where=where, fix=f"this routecast reads versions 1 and {VERSION}; upgrade "
                    "this replica to the routecast of the one that published it")
            for name in (_FILES if got == VERSION else _V1_FILES):
                if name in names:  # only known names: nothing is written outside tmp
                    path = Path(tmp) / name
                    path.parent.mkdir(exist_ok=True)
                    path.write_bytes(z.read(name))
            if got == 1:
                return _load_v1(Path(tmp), meta, version)
            return _load(Path(tmp), meta, version)
    except DataFormatError as e:
        if e.where == where:
            raise
        raise DataFormatError(f"is not a published router ({e})", where=where) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, ConfigError,
            zipfile.BadZipFile) as e:
        raise DataFormatError(f"is not a published router ({e!r})", where=where) from None


def _load(folder: Path, meta: dict[str, Any], version: int) -> tuple[Snapshot, int]:
    base, policy = load_router(folder / _ROUTER)
    policy = _require(policy, version)
    arrays: Arrays = {}
    if (folder / _LAYERS).is_file():
        with np.load(folder / _LAYERS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    fitted = _wrap(base, base, list(meta["fitted"]), "fitted", arrays)
    serving = _wrap(fitted, base, list(meta["serving"]), "serving", arrays)
    return (Snapshot(serving, policy, version, str(meta["kind"]), fitted),
            int(meta["labels"]))


def _wrap(router: Router, base: Router, layers: list[dict[str, Any]], chain: str,
          arrays: Arrays) -> Router:
    """``router`` wrapped in ``layers`` (outermost first), the inverse of :func:`_peel`."""
    n = len(router.models_)
    for i in reversed(range(len(layers))):
        layer, prefix = dict(layers[i]), f"{chain}.{i}."
        kind = layer.get("kind")
        if kind == "shrunk":
            slope, center, mean = (_vector(arrays, prefix + k, n)
                                   for k in ("slope", "center", "mean"))
            router = ShrunkRouter(router, slope, center, mean).ready()
        elif kind == "trusted":
            trusted = [bool(t) for t in layer["trusted"]]
            if len(trusted) != n:
                raise ValueError(f"{len(trusted)} trusted flags for {n} models")
            router = TrustedRouter(router, trusted).ready()
        elif kind == "debiased":
            noise = float(layer["noise"])
            if not 0.0 <= noise < 0.5:
                raise ValueError(f"judge noise {noise} outside [0, 0.5)")
            router = DebiasedRouter(router, noise).ready()
        elif kind == "prompt-cost":
            if layer["encoder"] == "router":
                encoder = getattr(base, "encoder_", None)
                if encoder is None:
                    raise ValueError(f"router {base.name!r} has no encoder to share")
            else:
                enc = f"{prefix}encoder::"
                encoder = encoder_from_state(dict(layer["encoder"]), {
                    k[len(enc):]: v for k, v in arrays.items() if k.startswith(enc)})
            coef = np.asarray(arrays[prefix + "coef"], dtype=np.float64)
            if coef.ndim != 1:
                raise ValueError(f"cost coefficients of shape {coef.shape}")
            model = PromptCostModel(encoder, coef, float(layer["intercept"]),
                                    _vector(arrays, prefix + "mean_cost_usd", n))
            router = PromptCostRouter(router, model).ready()
        else:
            raise ValueError(f"unknown layer kind {kind!r} in {chain}[{i}]")
    return router


def _vector(arrays: Arrays, key: str, n: int) -> npt.NDArray[np.float64]:
    value = np.asarray(arrays[key], dtype=np.float64)
    if value.shape != (n,):
        raise ValueError(f"{key} has shape {value.shape}, not ({n},)")
    return value


def _require(policy: Policy | None, version: int) -> Policy:
    if policy is None:
        raise DataFormatError("has no policy", where=f"artifact version {version}")
    return policy


def _load_v1(folder: Path, meta: dict[str, Any], version: int) -> tuple[Snapshot, int]:
    """A version-1 payload: the fitted router and, if some models were not trusted, a mask."""
    router, policy = load_router(folder)
    serving = router
    if meta.get("trusted") is not None:
        serving = TrustedRouter(router, [bool(t) for t in meta["trusted"]]).ready()
    return (Snapshot(serving, _require(policy, version), version, str(meta["kind"]), router),
            int(meta["labels"]))
