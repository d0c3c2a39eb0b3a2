"""``routecast stats``: what the server's request log says, per endpoint and model.

* **spend**: the sum of ``cost_usd`` (the upstreams' reported usage at the configured prices);
* **saved**: ``1 - spend / baseline``, where ``baseline`` prices every answered request's tokens
  at the endpoint's strongest (most expensive) model: "what always sending this traffic to the
  best model would have cost". It assumes that model would have used as many tokens, the usual
  estimate (a stronger model often writes more, so the true saving tends to be larger);
* **escalation rate**: answered requests whose route asked more than one model (a fallback or a
  cascade escalation), over all answered requests;
* **latency p50/p90/p99**: arrival to last byte, answered requests only.

The database computes the counts and sums (one grouped query, portable SQLAlchemy Core), so a
large shared log is not fetched row by row; latency percentiles come from
:mod:`routecast.storage.percentiles` (PostgreSQL's ``percentile_cont``; on SQLite, the
answered requests' latencies alone, sorted here). SQLite and PostgreSQL give the same numbers
(floats may differ in their last bits: each database adds in its own order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from routecast.errors import ConfigError
from routecast.storage.database import Database, open_database
from routecast.storage.percentiles import percentiles
from routecast.storage.schema import requests

if TYPE_CHECKING:
    from rich.table import Table

#: The ``model`` shown for requests no model answered.
FAILED = "(failed)"
#: The ``model`` of an endpoint's total row.
ALL = "(all)"


class Savings:
    """What a row of the request log's figures saved against its baseline (the same tokens at
    the endpoint's dearest model); for dataclasses with ``spend_usd`` and ``baseline_usd``."""

    spend_usd: float
    baseline_usd: float

    @property
    def saved_usd(self) -> float:
        return self.baseline_usd - self.spend_usd

    @property
    def saved_fraction(self) -> float | None:
        return self.saved_usd / self.baseline_usd if self.baseline_usd > 0 else None


@dataclass
class StatsRow(Savings):
    endpoint: str
    model: str
    requests: int
    errors: int
    escalation_rate: float
    spend_usd: float
    baseline_usd: float
    baseline_model: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_usd": self.saved_usd,
                "saved_fraction": self.saved_fraction}


def request_stats(db: str | Path | Database, since_ts: float | None = None) -> list[StatsRow]:
    """One row per (endpoint, answering model), then one ``(all)`` row per endpoint. ``db``
    is a SQLite path, a database URL or an open :class:`Database` (read, never written)."""
    database, owned = open_database(db, readonly=True)
    try:
        with database.connect() as conn:
            return _stats(conn, since_ts or 0.0)
    except SQLAlchemyError as e:
        raise ConfigError(f"{database.describe()} is not a routecast request log "
                          f"({getattr(e, 'orig', None) or e}). Fix: "
                          "pass the database the server writes (storage.db in its config, or "
                          "the config itself with --config)") from None
    finally:
        if owned:
            database.close()


_R = requests.c
_OK = _R.status == 200


def _stats(conn: Connection, since_ts: float) -> list[StatsRow]:
    where = [_R.ts >= since_ts]
    # One pass, grouped finely enough for every row of the output and the baseline model
    # shown (the one most answered requests were priced at); the rest is added up here.
    totals: dict[tuple[str, str], list[Any]] = {}
    baselines: dict[tuple[str, str], dict[str, int]] = {}
    for endpoint, model, baseline_model, *sums in conn.execute(
            select(_R.endpoint, _R.model, _R.baseline_model, func.count(),
                   func.sum(case((_OK, 1), else_=0)),
                   func.sum(case((and_(_OK, _R.route.like("%,%")), 1), else_=0)),
                   func.sum(_R.cost_usd), func.sum(case((_OK, _R.baseline_cost_usd), else_=0.0)),
                   func.sum(_R.prompt_tokens), func.sum(_R.completion_tokens))
            .where(*where).group_by(_R.endpoint, _R.model, _R.baseline_model)):
        for group in ((endpoint, model or FAILED), (endpoint, ALL)):
            into = totals.get(group)
            totals[group] = list(sums) if into is None else [a + b for a, b in
                                                             zip(into, sums, strict=True)]
            if baseline_model and sums[1]:
                counts = baselines.setdefault(group, {})
                counts[baseline_model] = counts.get(baseline_model, 0) + sums[1]
    latencies = percentiles(conn, _R.latency_s, [_R.endpoint, _R.model], [*where, _OK],
                            (50, 90, 99), levels=(2, 1), scale=1000)
    ordered = sorted(totals, key=lambda k: (k[0], k[1] == ALL, k[1]))
    return [_row(endpoint, model, totals[(endpoint, model)], baselines.get((endpoint, model)),
                 latencies.get((endpoint,) if model == ALL
                               else (endpoint, None if model == FAILED else model)))
            for endpoint, model in ordered]


def _row(endpoint: str, model: str, totals: list[Any], baselines: dict[str, int] | None,
         latencies: list[float | None] | None) -> StatsRow:
    count, ok, escalated, spend, baseline, prompt, completion = totals
    p50, p90, p99 = latencies or (None, None, None)
    return StatsRow(
        endpoint=endpoint, model=model, requests=count, errors=count - ok,
        escalation_rate=escalated / ok if ok else 0.0, spend_usd=float(spend),
        # An integer 0 where no request was answered, as a sum over none of them is.
        baseline_usd=float(baseline) if ok else 0,
        baseline_model=(max(baselines, key=lambda m: (baselines[m], m))
                        if baselines else None),
        prompt_tokens=int(prompt), completion_tokens=int(completion),
        latency_p50_ms=p50, latency_p90_ms=p90, latency_p99_ms=p99)


def stats_table(rows: list[StatsRow], title: str) -> Table:
    """The rows as a rich table (money in USD, latency in ms)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("endpoint", "model", "requests", "errors", "escalated", "spend $",
                 "vs strongest $", "saved", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(name, justify="left" if name in ("endpoint", "model") else "right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for r in rows:
        saved = "-" if r.saved_fraction is None else f"{r.saved_fraction:.1%}"
        strongest = "-" if r.baseline_model is None else f"{r.baseline_usd:.6f}"
        table.add_row(r.endpoint, r.model, str(r.requests), str(r.errors),
                      f"{r.escalation_rate:.1%}", f"{r.spend_usd:.6f}", strongest, saved,
                      ms(r.latency_p50_ms), ms(r.latency_p90_ms), ms(r.latency_p99_ms),
                      style="bold" if r.model == ALL else None)
    return table
