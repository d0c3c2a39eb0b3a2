"""A learner's router as bytes, to publish to the shared database and load on other replicas.

The payload is a zip of the folder :func:`~routecast.routers.persist.save_router` writes (the
fitted router and its calibrated policy: JSON and ``.npz``, no pickle) and ``snapshot.json``:
the snapshot's kind, the number of labels it was fitted on, and which models the serving
router trusts (:class:`~routecast.learning.learner.TrustedRouter`). Cold and prior routers are
not published: every replica builds them from the same config.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from routecast.errors import DataFormatError
from routecast.learning.learner import Snapshot, TrustedRouter
from routecast.routers.persist import load_router, save_router

#: The artifact kind of a learning endpoint's router.
KIND = "learned-router"
_SNAPSHOT = "snapshot.json"


def snapshot_payload(snap: Snapshot, labels: int) -> bytes | None:
    """``snap`` as bytes, or ``None`` for a router that is not published (cold, prior)."""
    if snap.kind in ("cold", "prior"):
        return None
    trusted = (list(snap.router.trusted) if isinstance(snap.router, TrustedRouter) else None)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="routecast-publish-") as tmp:
        folder = save_router(snap.fitted, Path(tmp) / "router", policy=snap.policy)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(folder.iterdir()):
                z.write(path, path.name)
            z.writestr(_SNAPSHOT, json.dumps({"kind": snap.kind, "labels": labels,
                                              "trusted": trusted}))
    return buffer.getvalue()


def snapshot_from_payload(payload: bytes, version: int) -> tuple[Snapshot, int]:
    """The snapshot a payload holds (numbered ``version``) and its label count."""
    try:
        with tempfile.TemporaryDirectory(prefix="routecast-load-") as tmp, \
                zipfile.ZipFile(io.BytesIO(payload)) as z:
            names = [n for n in z.namelist() if "/" not in n and not n.startswith(".")]
            for name in names:
                (Path(tmp) / name).write_bytes(z.read(name))
            meta = json.loads((Path(tmp) / _SNAPSHOT).read_text(encoding="utf-8"))
            router, policy = load_router(tmp)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"is not a published router ({e})",
                              where=f"artifact version {version}") from None
    if policy is None:
        raise DataFormatError("has no policy", where=f"artifact version {version}")
    serving = router
    if meta.get("trusted") is not None:
        serving = TrustedRouter(router, [bool(t) for t in meta["trusted"]]).ready()
    return Snapshot(serving, policy, version, str(meta["kind"]), router), int(meta["labels"])
