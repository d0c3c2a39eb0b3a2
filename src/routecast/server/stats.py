"""``routecast stats``: what the server's request log says, per endpoint and model.

* **spend**: the sum of ``cost_usd`` (the upstreams' reported usage at the configured prices);
* **saved**: ``1 - spend / baseline``, where ``baseline`` prices every answered request's tokens
  at the endpoint's strongest (most expensive) model: "what always sending this traffic to the
  best model would have cost". It assumes that model would have used as many tokens, the usual
  estimate (a stronger model often writes more, so the true saving tends to be larger);
* **escalation rate**: answered requests whose route asked more than one model (a fallback or a
  cascade escalation), over all answered requests;
* **latency p50/p90/p99**: arrival to last byte, answered requests only.

The log is read with one portable query (plain columns, no SQL functions that differ between
SQLite and PostgreSQL), and the figures computed here, so both databases give the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from routecast.errors import ConfigError
from routecast.storage.database import Database, open_database
from routecast.storage.schema import requests

if TYPE_CHECKING:
    from rich.table import Table

#: The ``model`` shown for requests no model answered.
FAILED = "(failed)"
#: The ``model`` of an endpoint's total row.
ALL = "(all)"


@dataclass
class StatsRow:
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

    @property
    def saved_usd(self) -> float:
        return self.baseline_usd - self.spend_usd

    @property
    def saved_fraction(self) -> float | None:
        return self.saved_usd / self.baseline_usd if self.baseline_usd > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_usd": self.saved_usd,
                "saved_fraction": self.saved_fraction}


def request_stats(db: str | Path | Database, since_ts: float | None = None) -> list[StatsRow]:
    """One row per (endpoint, answering model), then one ``(all)`` row per endpoint. ``db``
    is a SQLite path, a database URL or an open :class:`Database` (read, never written)."""
    r = requests.c
    stmt = (select(r.endpoint, r.model, r.status, r.route, r.cost_usd, r.baseline_cost_usd,
                   r.baseline_model, r.latency_s, r.prompt_tokens, r.completion_tokens)
            .where(r.ts >= (since_ts or 0.0)).order_by(r.endpoint, r.model))
    database, owned = open_database(db, readonly=True)
    try:
        with database.connect() as conn:
            rows = conn.execute(stmt).all()
    except SQLAlchemyError as e:
        raise ConfigError(f"{database.describe()} is not a routecast request log "
                          f"({getattr(e, 'orig', None) or e}). Fix: "
                          "pass the database the server writes (storage.db in its config, or "
                          "the config itself with --config)") from None
    finally:
        if owned:
            database.close()

    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        endpoint, model = row[0], row[1] or FAILED
        groups.setdefault((endpoint, model), []).append(row)
        groups.setdefault((endpoint, ALL), []).append(row)
    ordered = sorted(groups, key=lambda k: (k[0], k[1] == ALL, k[1]))
    return [_summarise(endpoint, model, groups[(endpoint, model)])
            for endpoint, model in ordered]


def _summarise(endpoint: str, model: str, rows: list[tuple[Any, ...]]) -> StatsRow:
    ok = [r for r in rows if r[2] == 200]
    latencies = sorted(r[7] * 1000 for r in ok)
    baselines = [r[6] for r in ok if r[6]]
    return StatsRow(
        endpoint=endpoint, model=model, requests=len(rows), errors=len(rows) - len(ok),
        escalation_rate=(sum(1 for r in ok if "," in r[3]) / len(ok)) if ok else 0.0,
        spend_usd=sum(r[4] for r in rows), baseline_usd=sum(r[5] for r in ok),
        baseline_model=max(set(baselines), key=baselines.count) if baselines else None,
        prompt_tokens=sum(r[8] for r in rows), completion_tokens=sum(r[9] for r in rows),
        latency_p50_ms=_percentile(latencies, 50), latency_p90_ms=_percentile(latencies, 90),
        latency_p99_ms=_percentile(latencies, 99))


def _percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile of sorted ``values`` (numpy's default method)."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


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
