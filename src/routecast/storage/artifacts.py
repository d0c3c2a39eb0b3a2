"""Versioned artifacts in the shared database: what every replica should serve.

A refit on one replica :meth:`~ArtifactStore.publish`\\ es the new router (its bytes, see
:mod:`routecast.routers.persist`); the others poll :meth:`~ArtifactStore.latest` and load a
version newer than theirs. Versions count 1, 2, ... per ``(endpoint, kind)`` and only grow:
a publish takes the next number in the same transaction that inserts the row, and the unique
``(endpoint, kind, version)`` constraint makes two concurrent publishers collide instead of
sharing a number (the loser retries with the next one). Each row keeps the payload's SHA-256,
checked on load, and who published it (a replica's id), so a replica never takes its own
publication for news.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from routecast.storage.database import Database, open_database
from routecast.storage.schema import artifacts

#: Attempts at publishing when other replicas publish the same version at the same moment.
PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Artifact:
    """One published version."""

    endpoint: str
    kind: str
    version: int
    created: float
    payload: bytes
    sha256: str
    publisher: str | None


class CorruptArtifactError(Exception):
    """A stored payload whose SHA-256 does not match the row's."""


class ArtifactStore:
    """Publish and read artifacts of one database; thread-safe (blocking: call it from a
    worker thread when on an event loop)."""

    def __init__(self, db: str | Path | Database) -> None:
        self.db, self._owned = open_database(db)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def publish(self, endpoint: str, kind: str, payload: bytes, *,
                publisher: str | None = None) -> int:
        """Store ``payload`` as the next version of ``(endpoint, kind)``; returns it."""
        digest = hashlib.sha256(payload).hexdigest()
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                with self.db.begin(immediate=True) as conn:
                    version = 1 + (conn.execute(
                        select(func.max(artifacts.c.version))
                        .where(artifacts.c.endpoint == endpoint, artifacts.c.kind == kind)
                    ).scalar() or 0)
                    conn.execute(insert(artifacts).values(
                        endpoint=endpoint, kind=kind, version=version, created=time.time(),
                        payload=payload, sha256=digest, publisher=publisher))
                return int(version)
            except IntegrityError:  # another replica took this version meanwhile
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def latest_version(self, endpoint: str, kind: str) -> int | None:
        """The newest version's number (one indexed query, no payload), or ``None``."""
        with self.db.connect() as conn:
            version = conn.execute(
                select(func.max(artifacts.c.version))
                .where(artifacts.c.endpoint == endpoint, artifacts.c.kind == kind)).scalar()
        return None if version is None else int(version)

    def latest(self, endpoint: str, kind: str) -> Artifact | None:
        """The newest version of ``(endpoint, kind)``, or ``None`` when none was published."""
        with self.db.connect() as conn:
            row = conn.execute(
                select(artifacts.c.version, artifacts.c.created, artifacts.c.payload,
                       artifacts.c.sha256, artifacts.c.publisher)
                .where(artifacts.c.endpoint == endpoint, artifacts.c.kind == kind)
                .order_by(artifacts.c.version.desc()).limit(1)).first()
        if row is None:
            return None
        payload = bytes(row.payload)
        if hashlib.sha256(payload).hexdigest() != row.sha256:
            raise CorruptArtifactError(f"artifact {endpoint}/{kind} version {row.version}: "
                                       "its payload does not match its SHA-256")
        return Artifact(endpoint, kind, int(row.version), float(row.created), payload,
                        row.sha256, row.publisher)
