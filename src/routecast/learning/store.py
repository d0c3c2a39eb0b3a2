"""The outcome store: learning's labels, spend and refits, in the request log's SQLite file.

Three tables beside ``requests`` (same database, WAL mode, so ``routecast stats`` and
``routecast outcomes export`` read while the server writes):

* ``labels``: one row per label: endpoint, the prompt text the router reads (masked by the
  privacy rule when it matched), model, quality in [0, 1], the answer's cost when known,
  ``source`` (``judge`` for a judged served answer, ``shadow`` for a judged shadow answer,
  ``feedback`` for a client's score), the response id and the client key's name;
* ``learning_spend``: every shadow answer and judge call the loop paid for;
* ``learning_refits``: every refit, swapped in or not, with its validation scores.

Learning stores prompt text (it cannot learn without it), only for endpoints with ``learning``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    endpoint TEXT NOT NULL,
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    quality REAL NOT NULL,
    cost_usd REAL,
    source TEXT NOT NULL,
    response_id TEXT,
    client TEXT
);
CREATE INDEX IF NOT EXISTS labels_endpoint ON labels (endpoint, id);
CREATE TABLE IF NOT EXISTS learning_spend (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,          -- shadow | judge
    model TEXT NOT NULL,
    cost_usd REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS learning_refits (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    endpoint TEXT NOT NULL,
    version INTEGER NOT NULL,
    swapped INTEGER NOT NULL,
    router TEXT NOT NULL,
    labels INTEGER NOT NULL,
    scores TEXT NOT NULL,        -- JSON: Brier score on held-out labels per candidate
    cost_weight REAL NOT NULL,
    seconds REAL NOT NULL
);
"""


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


class OutcomeStore:
    """Thread-safe writer and reader of the learning tables (call it from worker threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_label(self, row: LabelRow) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO labels (ts, endpoint, prompt, model, quality, cost_usd, source, "
                "response_id, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), row.endpoint, row.prompt, row.model, row.quality, row.cost_usd,
                 row.source, row.response_id, row.client))

    def add_spend(self, endpoint: str, kind: str, model: str, cost_usd: float) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT INTO learning_spend (ts, endpoint, kind, model, cost_usd) "
                             "VALUES (?, ?, ?, ?, ?)", (time.time(), endpoint, kind, model,
                                                        cost_usd))

    def add_refit(self, endpoint: str, version: int, swapped: bool, router: str, labels: int,
                  scores: dict[str, float], cost_weight: float, seconds: float) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO learning_refits (ts, endpoint, version, swapped, router, labels, "
                "scores, cost_weight, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), endpoint, version, int(swapped), router, labels,
                 json.dumps({k: (v if np.isfinite(v) else None) for k, v in scores.items()}),
                 cost_weight, seconds))

    def labels(self, endpoint: str) -> list[LabelRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, prompt, model, quality, cost_usd, source, response_id, client "
                "FROM labels WHERE endpoint = ? ORDER BY id", (endpoint,)).fetchall()
        return [LabelRow(*r) for r in rows]

    def spend(self, endpoint: str) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute("SELECT kind, SUM(cost_usd) FROM learning_spend "
                                    "WHERE endpoint = ? GROUP BY kind", (endpoint,)).fetchall()
        return {k: float(v) for k, v in rows}


def _read(db: str | Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    path = Path(db)
    if not path.is_file():
        raise ConfigError(f"no database at {path}. Fix: pass the database the server writes "
                          "(storage.db in its config) with --db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return con.execute(sql, tuple(args)).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []  # a log written before learning existed, or no learning endpoint
        raise ConfigError(f"{path} cannot be read ({e})") from None


def export_outcomes(db: str | Path, endpoint: str, models: Sequence[str] | None = None
                    ) -> Dataset:
    """The labels of ``endpoint`` as a sparse :class:`Dataset` (one row per prompt, the latest
    label of each (prompt, model) pair), ready for ``routecast fit`` or the canonical format."""
    rows = _read(db, "SELECT prompt, model, quality, cost_usd FROM labels WHERE endpoint = ? "
                     "ORDER BY id", (endpoint,))
    if not rows:
        known = sorted({r[0] for r in _read(db, "SELECT DISTINCT endpoint FROM labels")})
        raise ConfigError(f"no labels for endpoint {endpoint!r} in {db}"
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


def learning_stats(db: str | Path) -> list[LearningStats]:
    """Per learning endpoint: labels by source, exploration and judge spend, refits."""
    labels = _read(db, "SELECT endpoint, source, COUNT(*) FROM labels GROUP BY endpoint, source")
    spend = _read(db, "SELECT endpoint, kind, SUM(cost_usd) FROM learning_spend "
                      "GROUP BY endpoint, kind")
    refits = _read(db, "SELECT endpoint, COUNT(*), SUM(swapped) FROM learning_refits "
                       "GROUP BY endpoint")
    names = sorted({r[0] for r in labels} | {r[0] for r in spend} | {r[0] for r in refits})
    out = []
    for name in names:
        by = {s: int(n) for e, s, n in labels if e == name}
        money = {k: float(v) for e, k, v in spend if e == name}
        ref = next(((int(n), int(s or 0)) for e, n, s in refits if e == name), (0, 0))
        out.append(LearningStats(name, sum(by.values()), by, money.get("shadow", 0.0),
                                 money.get("judge", 0.0), *ref))
    return out
