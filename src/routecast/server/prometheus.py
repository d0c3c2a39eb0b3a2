"""``GET /metrics``: counters and histograms in the Prometheus text format (version 0.0.4).

Written by hand rather than with prometheus_client: on the reference machine its labelled
``inc``/``observe`` cost ~3 us each (~10 us for the three updates a request needs), against
~1 us for all of them here, and the proxy's whole budget is well under a millisecond a request.
The format is small: ``# HELP``/``# TYPE`` lines, then ``name{labels} value``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from routecast.server.worker_metrics import SharedMetrics

LabelValues = tuple[str, ...]
#: One metric family as plain JSON-able data, for merging across worker processes
#: (:mod:`routecast.server.worker_metrics`): ``name``, ``help``, ``type`` (counter, gauge,
#: histogram), ``labels``, ``merge`` (gauges: ``sum`` or ``worker``), ``buckets``
#: (histograms) and ``samples``: ``[label values, value]`` pairs (histograms: the value is the
#: per-bucket counts, +Inf last, then the sum).
Family = dict[str, Any]

#: Latency buckets in seconds: proxy overhead (ms) up to long generations (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[LabelValues, float] = {}

    def inc(self, key: LabelValues, amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for key, value in self.values.items():
            yield f"{self.name}{_labels(self.labels, key)} {_num(value)}"

    def family(self) -> Family:
        return {"name": self.name, "help": self.help, "type": "counter",
                "labels": list(self.labels), "samples": [[list(k), v]
                                                         for k, v in self.values.items()]}


class Histogram:
    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.labels, self.buckets = name, help, labels, buckets
        # per label set: [count per bucket (the last is +Inf)..., sum]
        self.values: dict[LabelValues, list[float]] = {}

    def observe(self, key: LabelValues, value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for key, row in self.values.items():
            cumulative = 0.0
            for bound, count in zip((*self.buckets, math.inf), row, strict=False):
                cumulative += count
                le = "+Inf" if math.isinf(bound) else _num(bound)
                yield (f"{self.name}_bucket{_labels((*self.labels, 'le'), (*key, le))} "
                       f"{_num(cumulative)}")
            yield f"{self.name}_sum{_labels(self.labels, key)} {_num(row[-1])}"
            yield f"{self.name}_count{_labels(self.labels, key)} {_num(cumulative)}"

    def family(self) -> Family:
        return {"name": self.name, "help": self.help, "type": "histogram",
                "labels": list(self.labels), "buckets": list(self.buckets),
                "samples": [[list(k), list(row)] for k, row in self.values.items()]}


class Gauge:
    """Values read when scraped (in-flight requests, pinned sessions, totals kept elsewhere);
    ``kind="counter"`` for a total that only grows. Across worker processes a counter is
    summed; a gauge is summed over the live workers (``merge="sum"``) or shown per worker with
    a ``worker`` label (``merge="worker"``, for states such as a circuit breaker's)."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 read: Callable[[], Iterable[tuple[LabelValues, float]]],
                 kind: str = "gauge", merge: Literal["sum", "worker"] = "worker") -> None:
        self.name, self.help, self.labels, self.read, self.kind = name, help, labels, read, kind
        self.merge = merge

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for key, value in self.read():
            yield f"{self.name}{_labels(self.labels, key)} {_num(value)}"

    def family(self) -> Family:
        return {"name": self.name, "help": self.help, "type": self.kind,
                "labels": list(self.labels), "merge": self.merge,
                "samples": [[list(k), v] for k, v in self.read()]}


class ServerMetrics:
    """The server's metrics; :meth:`observe` is called once per answered request. With
    :attr:`share` set (``routecast serve --workers N``), :meth:`render` describes every worker
    of the server (:mod:`routecast.server.worker_metrics`); the per-request path is the same."""

    def __init__(self) -> None:
        self.requests = Counter("routecast_requests_total",
                                "Requests answered, by endpoint, answering model and status.",
                                ("endpoint", "model", "status"))
        self.cost = Counter("routecast_cost_usd_total", "USD spent, by endpoint and model.",
                            ("endpoint", "model"))
        self.tokens = Counter("routecast_tokens_total", "Tokens, by endpoint, model and kind.",
                              ("endpoint", "model", "kind"))
        self.escalations = Counter("routecast_escalations_total",
                                   "Requests answered by a model other than the first asked.",
                                   ("endpoint",))
        self.latency = Histogram("routecast_request_latency_seconds",
                                 "Time from arrival to the last byte, by endpoint.", ("endpoint",))
        self.extra: list[Gauge] = []
        self.in_flight = 0
        self.share: SharedMetrics | None = None

    def observe(self, endpoint: str, model: str | None, status: int, latency_s: float,
                cost_usd: float = 0.0, prompt_tokens: int = 0, completion_tokens: int = 0,
                escalated: bool = False) -> None:
        name = model or ""
        self.requests.inc((endpoint, name, str(status)))
        self.latency.observe((endpoint,), latency_s)
        if model is not None:
            self.cost.inc((endpoint, name), cost_usd)
            self.tokens.inc((endpoint, name, "prompt"), prompt_tokens)
            self.tokens.inc((endpoint, name, "completion"), completion_tokens)
        if escalated:
            self.escalations.inc((endpoint,))

    def render(self) -> str:
        if self.share is not None:
            return self.share.render(self.families())
        return "\n".join(line for m in self._all() for line in m.render()) + "\n"

    def families(self) -> list[Family]:
        """Every metric's current values as plain data (a worker's snapshot)."""
        return [m.family() for m in self._all()]

    def _all(self) -> tuple[Counter | Histogram | Gauge, ...]:
        in_flight = Gauge("routecast_requests_in_flight", "Requests being answered now.", (),
                          lambda: [((), float(self.in_flight))], merge="sum")
        return (self.requests, self.cost, self.tokens, self.escalations, self.latency,
                in_flight, *self.extra)


def render_families(families: Iterable[Family]) -> str:
    """The text exposition of families in :data:`Family` form (merged across workers)."""
    lines: list[str] = []
    for f in families:
        name, labels = f["name"], tuple(f["labels"])
        lines += [f"# HELP {name} {f['help']}", f"# TYPE {name} {f['type']}"]
        if f["type"] != "histogram":
            lines += [f"{name}{_labels(labels, tuple(k))} {_num(v)}" for k, v in f["samples"]]
            continue
        bounds = [*(_num(b) for b in f["buckets"]), "+Inf"]
        for k, row in f["samples"]:
            key, cumulative = tuple(k), 0.0
            for le, count in zip(bounds, row, strict=False):
                cumulative += count
                lines.append(f"{name}_bucket{_labels((*labels, 'le'), (*key, le))} "
                             f"{_num(cumulative)}")
            lines.append(f"{name}_sum{_labels(labels, key)} {_num(row[-1])}")
            lines.append(f"{name}_count{_labels(labels, key)} {_num(cumulative)}")
    return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: LabelValues) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))
