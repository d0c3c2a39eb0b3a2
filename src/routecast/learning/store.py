"""The outcome store: learning's labels, spend and refits, in the server's database.

Three tables beside ``requests`` (same database, :mod:`routecast.storage`: a SQLite file in WAL
mode, or PostgreSQL, so ``routecast stats`` and ``routecast outcomes export`` read while the
server writes):

* ``labels``: one row per label: endpoint, the prompt text the router reads (masked by the
  privacy rule when it matched), model, quality in [0, 1], the answer's cost when known,
  ``source`` (``judge`` for a judged served answer, ``shadow`` for a judged shadow answer,
  ``feedback`` for a client's score), the response id and the client key's name; for a
  cascade endpoint also the step's signal score and the row's sampling weight;
* ``learning_spend``: every shadow answer and judge call the loop paid for;
* ``learning_refits``: every refit, swapped in or not, with its validation scores.

Replicas sharing a database share these tables: each one's labels reach the others
(:meth:`OutcomeStore.labels_since`), so a refit on any replica fits on all of them.

Learning stores prompt text (it cannot learn without it), only for endpoints with ``learning``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, func, insert, select
from sqlalchemy.exc import DBAPIError

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.storage.database import Database, missing_table, open_database
from routecast.storage.schema import labels, learning_refits, learning_spend

_LABEL_COLUMNS = (labels.c.endpoint, labels.c.prompt, labels.c.model, labels.c.quality,
                  labels.c.cost_usd, labels.c.source, labels.c.response_id, labels.c.client,
                  labels.c.score, labels.c.weight)


@dataclass(frozen=True)
class LabelRow:
    endpoint: str
    prompt: str
    model: str
    quality: float
    cost_usd: float | None
    source: str
    response_id: str | None = None
    client: str | None = None
    #: A cascade step's signal score (-inf: the signal failed; ``None``: not a cascade's
    #: label) and its row's sampling weight (:mod:`routecast.learning.cascade`).
    score: float | None = None
    weight: float | None = None


class OutcomeStore:
    """Thread-safe writer and reader of the learning tables (blocking: call it from worker
    threads). ``db`` is the server's database (not closed here), or a SQLite path or URL."""

    def __init__(self, db: str | Path | Database) -> None:
        self.db, self._owned = open_database(db)

    @property
    def path(self) -> Path | None:
        return self.db.path

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def add_label(self, row: LabelRow) -> int:
        """Store a label; returns its row id."""
        with self.db.begin() as conn:
            result = conn.execute(insert(labels).values(
                ts=time.time(), endpoint=row.endpoint, prompt=row.prompt, model=row.model,
                quality=row.quality, cost_usd=row.cost_usd, source=row.source,
                response_id=row.response_id, client=row.client, score=row.score,
                weight=row.weight))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def add_spend(self, endpoint: str, kind: str, model: str, cost_usd: float) -> None:
        with self.db.begin() as conn:
            conn.execute(insert(learning_spend).values(
                ts=time.time(), endpoint=endpoint, kind=kind, model=model, cost_usd=cost_usd))

    def add_refit(self, endpoint: str, version: int, swapped: bool, router: str, labels: int,
                  scores: dict[str, float], cost_weight: float, seconds: float) -> None:
        with self.db.begin() as conn:
            conn.execute(insert(learning_refits).values(
                ts=time.time(), endpoint=endpoint, version=version, swapped=int(swapped),
                router=router, labels=labels,
                scores=json.dumps({k: (v if np.isfinite(v) else None)
                                   for k, v in scores.items()}),
                cost_weight=cost_weight, seconds=seconds))

    def labels(self, endpoint: str) -> list[LabelRow]:
        return [row for _, row in self.labels_since(endpoint, 0)]

    def labels_since(self, endpoint: str, after_id: int) -> list[tuple[int, LabelRow]]:
        """``endpoint``'s labels with a row id above ``after_id``, oldest first, with their
        ids (what other replicas stored since this one last looked)."""
        with self.db.connect() as conn:
            rows = conn.execute(select(labels.c.id, *_LABEL_COLUMNS)
                                .where(labels.c.endpoint == endpoint, labels.c.id > after_id)
                                .order_by(labels.c.id)).all()
        return [(int(r[0]), LabelRow(*r[1:])) for r in rows]

    def spend(self, endpoint: str) -> dict[str, float]:
        with self.db.connect() as conn:
            rows = conn.execute(select(learning_spend.c.kind, func.sum(learning_spend.c.cost_usd))
                                .where(learning_spend.c.endpoint == endpoint)
                                .group_by(learning_spend.c.kind)).all()
        return {k: float(v) for k, v in rows}


def _read(db: str | Path | Database, stmt: Select[Any]) -> list[Any]:
    """Run a query read-only; no rows when its table does not exist (a log written before
    learning existed, or no learning endpoint)."""
    database, owned = open_database(db, readonly=True)
    try:
        with database.connect() as conn:
            return list(conn.execute(stmt).all())
    except DBAPIError as e:
        if missing_table(e):
            return []
        raise ConfigError(f"{database.describe()} cannot be read ({e.orig})") from None
    finally:
        if owned:
            database.close()


def export_outcomes(db: str | Path | Database, endpoint: str,
                    models: Sequence[str] | None = None) -> Dataset:
    """The labels of ``endpoint`` as a sparse :class:`Dataset` (one row per prompt, the latest
    label of each (prompt, model) pair), ready for ``routecast fit`` or the canonical format."""
    rows = _read(db, select(labels.c.prompt, labels.c.model, labels.c.quality, labels.c.cost_usd)
                 .where(labels.c.endpoint == endpoint).order_by(labels.c.id))
    if not rows:
        known = sorted({r[0] for r in _read(db, select(labels.c.endpoint).distinct())})
        where = db.describe() if isinstance(db, Database) else db
        raise ConfigError(f"no labels for endpoint {endpoint!r} in {where}"
                          + (f"; endpoints with labels: {', '.join(known)}" if known else
                             "; no endpoint has any yet (is `learning:` configured?)"))
    cols = list(models) if models else sorted({r[1] for r in rows})
    col = {m: j for j, m in enumerate(cols)}
    index: dict[str, int] = {}
    for prompt, *_ in rows:
        index.setdefault(prompt, len(index))
    q = np.full((len(index), len(cols)), np.nan)
    c = np.full((len(index), len(cols)), np.nan)
    for prompt, model, quality, cost in rows:
        if model in col:
            q[index[prompt], col[model]] = quality
            if cost is not None:
                c[index[prompt], col[model]] = cost
    prompts = list(index)
    return Dataset(name=f"{endpoint}-labels", models=tuple(cols),
                   ids=tuple(f"{endpoint}-{i}" for i in range(len(prompts))),
                   prompts=tuple(prompts), quality=q, cost_usd=c,
                   split=np.full(len(prompts), "train"), sparse=True,
                   meta={"source": "routecast learning labels", "endpoint": endpoint})


@dataclass
class LearningStats:
    endpoint: str
    labels: int
    by_source: dict[str, int]
    shadow_usd: float
    judge_usd: float
    refits: int
    swaps: int


def learning_stats(db: str | Path | Database) -> list[LearningStats]:
    """Per learning endpoint: labels by source, exploration and judge spend, refits."""
    counts = _read(db, select(labels.c.endpoint, labels.c.source, func.count())
                   .group_by(labels.c.endpoint, labels.c.source))
    spend = _read(db, select(learning_spend.c.endpoint, learning_spend.c.kind,
                             func.sum(learning_spend.c.cost_usd))
                  .group_by(learning_spend.c.endpoint, learning_spend.c.kind))
    refits = _read(db, select(learning_refits.c.endpoint, func.count(),
                              func.sum(learning_refits.c.swapped))
                   .group_by(learning_refits.c.endpoint))
    names = sorted({r[0] for r in counts} | {r[0] for r in spend} | {r[0] for r in refits})
    out = []
    for name in names:
        by = {s: int(n) for e, s, n in counts if e == name}
        money = {k: float(v) for e, k, v in spend if e == name}
        ref = next(((int(n), int(s or 0)) for e, n, s in refits if e == name), (0, 0))
        out.append(LearningStats(name, sum(by.values()), by, money.get("shadow", 0.0),
                                 money.get("judge", 0.0), *ref))
    return out
