"""What the dashboard reads from the request log: read-only queries over the server's database.

Every function takes the server's :class:`~routecast.storage.database.Database` (SQLite or
PostgreSQL; only ``SELECT`` s run on it) or a SQLite path, which it opens read-only
(``mode=ro``), so a dashboard can never change or lock what the server writes. The server calls
them in a worker thread (the event loop never waits on the database). The queries are SQLAlchemy
Core, portable between the two: the overview's counts, sums, model mix and time buckets are
computed by the database in one grouped query, so a large shared log is not fetched row by
row, and latency percentiles come from :mod:`routecast.storage.percentiles`. The log
is written in batches (``storage.batch_ms``, 200 ms by default), so the newest fraction of a
second may not show yet.

The figures mean what ``routecast stats`` means by them (:mod:`routecast.server.stats`): spend
is the sum of ``cost_usd``; *saved* compares it with pricing the same answered requests at each
endpoint's most expensive model; latency is arrival to last byte, answered requests only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, select
from sqlalchemy.exc import DBAPIError

from routecast.errors import ConfigError
from routecast.server.stats import Savings
from routecast.storage.database import Database, missing_table, open_database
from routecast.storage.percentiles import floor_int, percentiles
from routecast.storage.schema import learning_refits, requests

#: The server's database, or a SQLite file.
Source = Database | Path

#: Columns of a request as the Requests page and the story read them.
_REQUEST_COLUMNS = ("request_id", "ts", "endpoint", "model", "route", "status", "stream",
                    "prompt_tokens", "completion_tokens", "cost_usd", "baseline_model",
                    "baseline_cost_usd", "latency_s", "routing_s", "error", "session",
                    "key_name", "prompt", "trace")


_R = requests.c


@contextmanager
def _connect(db: Source) -> Iterator[Connection | None]:
    """A connection for reading, or ``None`` while the server has written nothing yet (no
    file, no table)."""
    try:
        database, owned = open_database(db, readonly=True)
    except ConfigError:  # no file yet
        yield None
        return
    try:
        with database.connect() as conn:
            yield conn
    finally:
        if owned:
            database.close()


def _rows(db: Source, stmt: Any) -> Sequence[Any] | None:
    """All rows of ``stmt``, or ``None`` when there is no log (yet)."""
    with _connect(db) as conn:
        if conn is None:
            return None
        try:
            return conn.execute(stmt).all()
        except DBAPIError as e:
            if missing_table(e):
                return None
            raise


@dataclass
class LatencyPoint:
    """Answered requests that arrived in one time bucket (``t`` its start, unix seconds)."""

    t: float
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class Overview(Savings):
    """The live numbers of the overview page, over the last ``window_s`` seconds."""

    window_s: float
    requests: int = 0
    errors: int = 0
    requests_per_s: float = 0.0
    spend_usd: float = 0.0
    baseline_usd: float = 0.0
    escalation_rate: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    #: endpoint -> answering model -> answered requests.
    mix: dict[str, dict[str, int]] = field(default_factory=dict)
    series: list[LatencyPoint] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "requests": self.requests, "errors": self.errors,
                "requests_per_s": self.requests_per_s, "spend_usd": self.spend_usd,
                "baseline_usd": self.baseline_usd, "saved_usd": self.saved_usd,
                "saved_fraction": self.saved_fraction, "escalation_rate": self.escalation_rate,
                "latency_ms": {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms},
                "mix": self.mix,
                "series": [vars(p) for p in self.series]}


def overview(db: Source, window_s: float = 3600.0, *, buckets: int = 30,
             now: float | None = None) -> Overview:
    """The overview's figures over the last ``window_s`` seconds, and latency percentiles in
    ``buckets`` equal time buckets from the window's first request to now. Requests per
    second are over the last minute (or the window, if shorter)."""
    now = time.time() if now is None else now
    out = Overview(window_s)
    with _connect(db) as conn:
        if conn is None:
            return out
        try:
            _overview(conn, out, now, buckets)
        except DBAPIError as e:
            if missing_table(e):
                return Overview(window_s)
            raise
    return out


_OK = _R.status == 200


def _overview(conn: Connection, out: Overview, now: float, buckets: int) -> None:
    since = now - out.window_s
    recent_s = min(60.0, out.window_s)
    window = [_R.ts >= since]
    # The buckets span the traffic the window holds (first request to now), so a burst of a
    # few seconds in an hour's window is still drawn over many buckets. (The first request
    # is found on the index of ts.)
    first = conn.execute(select(func.min(_R.ts)).where(*window)).scalar()
    start = since if first is None else first
    width = max(now - start, 1e-3) / buckets
    raw = floor_int((_R.ts - start) / width)
    bucket = case((raw > buckets - 1, buckets - 1), else_=raw)
    # One pass grouped by bucket, endpoint and model; the figures are added up here. (Grouped
    # through a subquery: PostgreSQL cannot match an expression with parameters in GROUP BY
    # to the same one in the select list.)
    rows = select(bucket.label("bucket"), _R.endpoint, _R.model, _R.status, _R.route, _R.ts,
                  _R.id, _R.cost_usd, _R.baseline_cost_usd).where(*window).subquery()
    r, ok_row = rows.c, rows.c.status == 200
    sizes: dict[int, list[int]] = {}
    mix: dict[tuple[str, str], list[Any]] = {}
    count = ok = escalated = recent = 0
    spend = baseline = 0.0
    for k, endpoint, model, *sums in conn.execute(
            select(r.bucket, r.endpoint, r.model, func.count(),
                   func.sum(case((ok_row, 1), else_=0)),
                   func.sum(case((and_(ok_row, r.route.like("%,%")), 1), else_=0)),
                   func.sum(r.cost_usd), func.sum(case((ok_row, r.baseline_cost_usd), else_=0.0)),
                   func.sum(case((r.ts >= now - recent_s, 1), else_=0)),
                   func.min(case((ok_row, r.ts))), func.min(case((ok_row, r.id))))
            .group_by(r.bucket, r.endpoint, r.model)):
        n, answered, esc, cost, base, last_minute, first_ok, first_id = sums
        count, ok, escalated, recent = (count + n, ok + answered, escalated + esc,
                                        recent + last_minute)
        spend, baseline = spend + cost, baseline + base
        size = sizes.setdefault(k, [0, 0])
        size[0], size[1] = size[0] + n, size[1] + n - answered
        if answered:
            seen = mix.setdefault((endpoint, model), [first_ok, first_id, 0])
            seen[0], seen[1] = min(seen[0], first_ok), min(seen[1], first_id)
            seen[2] += answered
    out.requests, out.errors = count, count - ok
    out.requests_per_s = recent / recent_s
    # Integer zeros where there is nothing to add up, as a sum over no rows is.
    out.spend_usd = spend if count else 0
    out.baseline_usd = baseline if ok else 0
    out.escalation_rate = escalated / ok if ok else 0.0
    # The mix in the order each endpoint and model first answered in the window.
    for (endpoint, model), (_, _, answered) in sorted(mix.items(), key=lambda i: i[1][:2]):
        out.mix.setdefault(endpoint, {})[model] = answered
    latencies = percentiles(conn, _R.latency_s, [bucket], [*window, _OK], (50, 95, 99),
                            levels=(1, 0), scale=1000)
    out.p50_ms, out.p95_ms, out.p99_ms = latencies.get((), (None, None, None))
    for k in range(buckets):
        requests_in, errors = sizes.get(k, (0, 0))
        p50, p95, p99 = latencies.get((k,), (None, None, None))
        out.series.append(LatencyPoint(start + k * width, requests_in, errors, p50, p95, p99))


@dataclass
class Filters:
    """The Requests page's filters; empty strings match everything."""

    endpoint: str = ""
    model: str = ""
    key: str = ""
    status: str = ""  # "ok", "error" or a number

    def where(self) -> list[ColumnElement[bool]]:
        """The filters as SQL conditions (all must hold)."""
        clauses: list[ColumnElement[bool]] = []
        for column, value in ((_R.endpoint, self.endpoint), (_R.model, self.model),
                              (_R.key_name, self.key)):
            if value:
                clauses.append(column == value)
        if self.status == "ok":
            clauses.append(_R.status == 200)
        elif self.status == "error":
            clauses.append(_R.status != 200)
        elif self.status.isdigit():
            clauses.append(_R.status == int(self.status))
        return clauses


_SELECT_REQUEST = select(*(requests.c[name] for name in _REQUEST_COLUMNS))


def recent(db: Source, filters: Filters | None = None, limit: int = 100
           ) -> list[dict[str, Any]]:
    """The latest requests matching ``filters``, newest first."""
    rows = _rows(db, _SELECT_REQUEST.where(*(filters or Filters()).where())
                 .order_by(_R.id.desc()).limit(limit))
    return [_request(r) for r in rows or ()]


def choices(db: Source) -> dict[str, list[str]]:
    """Distinct endpoints, models and keys in the log, for the filters' menus."""
    out: dict[str, list[str]] = {}
    for name, column in (("endpoint", _R.endpoint), ("model", _R.model),
                         ("key", _R.key_name)):
        rows = _rows(db, select(column).where(column.is_not(None)).distinct()
                     .order_by(column))
        out[name] = [v for (v,) in rows or ()]
    return out


def request(db: Source, request_id: str) -> dict[str, Any] | None:
    """One request by its ``x-routecast-request-id``, or ``None``."""
    rows = _rows(db, _SELECT_REQUEST.where(_R.request_id == request_id)
                 .order_by(_R.id.desc()).limit(1))
    return _request(rows[0]) if rows else None


def live_point(db: Source, endpoint: str, window_s: float = 86400.0) -> dict[str, Any] | None:
    """An endpoint's operating point on its recent traffic: mean cost per answered request,
    and the mean quality the router estimated for the models it chose (routed endpoints;
    ``None`` when no request carried estimates). Quality measured on traffic needs labels,
    which the log does not hold; the estimate is labelled as one wherever it is shown."""
    rows = _rows(db, select(_R.model, _R.cost_usd, _R.trace)
                 .where(_R.endpoint == endpoint, _R.status == 200,
                        _R.ts >= time.time() - window_s))
    if not rows:
        return None
    estimated: list[float] = []
    for model, _, trace in rows:
        estimates = (json.loads(trace) if trace else {}).get("estimates") or {}
        if model in estimates:
            estimated.append(float(estimates[model]))
    return {"requests": len(rows), "cost_usd": sum(r[1] for r in rows) / len(rows),
            "estimated_quality": sum(estimated) / len(estimated) if estimated else None}


def _request(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_REQUEST_COLUMNS, row, strict=True))
    out["stream"] = bool(out["stream"])
    out["trace"] = json.loads(out["trace"]) if out["trace"] else None
    return out


def client_headers(req: dict[str, Any]) -> dict[str, str]:
    """The ``x-routecast-*`` headers the client got for a logged request, rebuilt from the
    same values the server formatted them from. A stream's headers are sent before its
    answer is done, so they carry no cost or latency (its last event does)."""
    if req["status"] != 200:
        return {"x-routecast-request-id": req["request_id"]} if req["request_id"] else {}
    headers = {"x-routecast-request-id": req["request_id"], "x-routecast-model": req["model"],
               "x-routecast-route": req["route"]}
    if not req["stream"]:
        headers["x-routecast-cost-usd"] = f"{req['cost_usd']:.10g}"
        headers["x-routecast-latency-ms"] = f"{req['latency_s'] * 1000:.3f}"
    return headers


def learning(db: Source) -> list[dict[str, Any]]:
    """Per learning endpoint (``learning:`` blocks): labels collected by source, what shadows
    and judging cost, refits made and swapped in, and when the last refit ran. Empty when no
    endpoint learns (the tables do not exist)."""
    from routecast.learning.store import learning_stats

    rows = _rows(db, select(learning_refits.c.endpoint, func.max(learning_refits.c.ts))
                 .group_by(learning_refits.c.endpoint))
    if rows is None:
        return []
    last: dict[str, float] = {endpoint: ts for endpoint, ts in rows}  # noqa: C416
    return [{"endpoint": st.endpoint, "labels": st.labels, "by_source": st.by_source,
             "shadow_usd": st.shadow_usd, "judge_usd": st.judge_usd, "refits": st.refits,
             "swapped": st.swaps, "last_refit_ts": last.get(st.endpoint)}
            for st in learning_stats(db)]
