"""``routecast stats`` and the dashboard's overview computed by the database: the same figures
on SQLite and PostgreSQL for the same rows, and the same as computing them in Python over
every row (the way they were computed before, kept here as the reference)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from routecast.server.stats import ALL, FAILED, request_stats
from routecast.server.ui.queries import overview
from routecast.storage.database import Database
from routecast.storage.schema import requests
from tests.services import pg_url

__all__ = ["pg_url"]

NOW = 1_700_000_000.0


def make_rows(n: int = 600, seed: int = 7) -> list[dict[str, Any]]:
    """A log with what the figures must handle: failed requests (no model), escalated routes,
    groups of one, an endpoint with no answered request, equal latencies, old rows outside the
    overview's window, rows at its very end."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        endpoint = rng.choice(["auto", "auto", "guarded", "chat"])
        ok = rng.random() < 0.8
        model = rng.choice(["small", "medium", "large"]) if ok else None
        route = rng.choice([model or "small", f"small,{model or 'large'}",
                            "small,medium,large"])
        rows.append({
            "ts": NOW - rng.choice([rng.uniform(0, 3500), rng.uniform(3600, 7200), 0.0]),
            "endpoint": endpoint, "model": model, "route": route,
            "status": 200 if ok else rng.choice([429, 502]), "stream": 0, "cached_tokens": 0,
            "reasoning_tokens": 0, "usage_estimated": 0, "routing_s": 0.0,
            "prompt_tokens": rng.randint(1, 500), "completion_tokens": rng.randint(0, 300),
            "cost_usd": rng.random() / 1000 if ok else 0.0,
            "baseline_model": rng.choice(["large", "large", "medium", None, ""]),
            "baseline_cost_usd": rng.random() / 500,
            "latency_s": round(rng.uniform(0.001, 3.0), rng.choice([2, 6])),
        })
    rows.append({**rows[0], "endpoint": "lonely", "status": 502, "model": None})
    rows.append({**rows[1], "endpoint": "one", "status": 200, "model": "small", "ts": NOW})
    return rows


def _percentile(values: list[float], q: float) -> float | None:
    """The reference: numpy's own percentile (linear interpolation), not the code under
    test."""
    return float(np.percentile(values, q)) if values else None


def reference_stats(rows: list[dict[str, Any]], since: float = 0.0) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["ts"] >= since:
            groups.setdefault((r["endpoint"], r["model"] or FAILED), []).append(r)
            groups.setdefault((r["endpoint"], ALL), []).append(r)
    out = []
    for endpoint, model in sorted(groups, key=lambda k: (k[0], k[1] == ALL, k[1])):
        g = groups[(endpoint, model)]
        ok = [r for r in g if r["status"] == 200]
        lat = sorted(r["latency_s"] * 1000 for r in ok)
        baselines = [r["baseline_model"] for r in ok if r["baseline_model"]]
        counts = {b: baselines.count(b) for b in baselines}
        out.append({
            "endpoint": endpoint, "model": model, "requests": len(g),
            "errors": len(g) - len(ok),
            "escalation_rate": sum(1 for r in ok if "," in r["route"]) / len(ok) if ok else 0.0,
            "spend_usd": sum(r["cost_usd"] for r in g),
            "baseline_usd": sum(r["baseline_cost_usd"] for r in ok),
            "baseline_model": max(counts, key=lambda m: (counts[m], m)) if counts else None,
            "prompt_tokens": sum(r["prompt_tokens"] for r in g),
            "completion_tokens": sum(r["completion_tokens"] for r in g),
            "latency_p50_ms": _percentile(lat, 50), "latency_p90_ms": _percentile(lat, 90),
            "latency_p99_ms": _percentile(lat, 99)})
    return out


def reference_overview(rows: list[dict[str, Any]], window_s: float, buckets: int = 30
                       ) -> dict[str, Any]:
    since = NOW - window_s
    inside = sorted((r for r in rows if r["ts"] >= since), key=lambda r: r["ts"])
    ok = [r for r in inside if r["status"] == 200]
    lat = sorted(r["latency_s"] * 1000 for r in ok)
    recent_s = min(60.0, window_s)
    mix: dict[str, dict[str, int]] = {}
    for r in ok:
        models = mix.setdefault(r["endpoint"], {})
        models[r["model"]] = models.get(r["model"], 0) + 1
    start = inside[0]["ts"] if inside else since
    width = max(NOW - start, 1e-3) / buckets
    grouped: list[list[dict[str, Any]]] = [[] for _ in range(buckets)]
    for r in inside:
        grouped[min(buckets - 1, int((r["ts"] - start) / width))].append(r)
    series = []
    for k, group in enumerate(grouped):
        g_lat = sorted(r["latency_s"] * 1000 for r in group if r["status"] == 200)
        series.append({"t": start + k * width, "requests": len(group),
                       "errors": sum(1 for r in group if r["status"] != 200),
                       "p50_ms": _percentile(g_lat, 50), "p95_ms": _percentile(g_lat, 95),
                       "p99_ms": _percentile(g_lat, 99)})
    return {"requests": len(inside), "errors": len(inside) - len(ok),
            "requests_per_s": sum(1 for r in inside if r["ts"] >= NOW - recent_s) / recent_s,
            "spend_usd": sum(r["cost_usd"] for r in inside),
            "baseline_usd": sum(r["baseline_cost_usd"] for r in ok),
            "escalation_rate": sum(1 for r in ok if "," in r["route"]) / len(ok) if ok else 0.0,
            "latency_ms": {"p50": _percentile(lat, 50), "p95": _percentile(lat, 95),
                           "p99": _percentile(lat, 99)},
            "mix": mix, "series": series}


def same(got: Any, want: Any, path: str = "") -> None:
    """Equal, floats to 1e-12 relative (sums may add in another order), with dict keys in
    the same order; ints stay ints."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), (path, got, want)
        for k in want:
            same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-12,
                                                       abs_tol=1e-15), (path, got, want)
    else:
        assert type(got) is type(want) and got == want, (path, got, want)


def fill(url: str, rows: list[dict[str, Any]]) -> Database:
    db = Database.open(url)
    with db.begin() as conn:
        conn.execute(insert(requests), rows)
    return db


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return make_rows()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, rows: list[dict[str, Any]]
       ) -> Iterator[Database]:
    url = (str(tmp_path / "log.db") if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    database = fill(url, rows)
    yield database
    database.close()


def stats(db: Database, since: float = 0.0) -> list[dict[str, Any]]:
    return [asdict(r) for r in request_stats(db, since_ts=since)]


def test_stats_are_those_of_every_row(db: Database, rows: list[dict[str, Any]]) -> None:
    same(stats(db), reference_stats(rows))
    same(stats(db, NOW - 3600), reference_stats(rows, NOW - 3600))
    assert stats(db, NOW + 1) == []


@pytest.mark.parametrize("window_s", [3600.0, 30.0, 86400.0])
def test_the_overview_is_that_of_every_row(db: Database, rows: list[dict[str, Any]],
                                           window_s: float) -> None:
    got = overview(db, window_s, now=NOW).as_dict()
    want = reference_overview(rows, window_s)
    for derived in ("window_s", "saved_usd", "saved_fraction"):
        got.pop(derived)
    same(got, want)


def test_an_empty_window_keeps_its_buckets(db: Database) -> None:
    got = overview(db, 10.0, now=NOW + 10_000).as_dict()
    assert got["requests"] == 0 and got["spend_usd"] == 0 and got["mix"] == {}
    assert len(got["series"]) == 30 and {p["requests"] for p in got["series"]} == {0}


def test_sqlite_and_postgresql_agree(tmp_path: Path, pg_url: str,
                                     rows: list[dict[str, Any]]) -> None:
    lite, pg = fill(str(tmp_path / "log.db"), rows), fill(pg_url, rows)
    try:
        same(stats(pg), stats(lite))
        for window_s in (60.0, 3600.0, 7200.0):
            same(overview(pg, window_s, now=NOW).as_dict(),
                 overview(lite, window_s, now=NOW).as_dict())
    finally:
        lite.close()
        pg.close()
