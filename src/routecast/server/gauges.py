"""Gauges over live server state for /metrics: routing cost per routed endpoint, each
model's circuit breaker, the published router each learning endpoint serves, and the health of
what the server writes to elsewhere (the shared state in Redis, the request log's writer, the
key table). Each reads the current objects when scraped, so a config reload (SIGHUP) shows up
without re-registering anything; nothing here costs a request anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.routed import RoutedBackend
from routecast.server.endpoints import EndpointTable
from routecast.server.prometheus import Gauge

if TYPE_CHECKING:
    from routecast.server.keys import KeyStore
    from routecast.server.learning import LearningService
    from routecast.server.requestlog import RequestLog
    from routecast.state.redis_state import RedisState

TableGetter = Callable[[], EndpointTable]


def breaker_gauges(table: TableGetter) -> list[Gauge]:
    def leaves() -> list[OpenAIHTTPBackend]:
        return [b for b in table().members if isinstance(b, OpenAIHTTPBackend)]

    states = {"closed": 0.0, "open": 1.0, "half_open": 2.0}
    return [
        Gauge("routecast_breaker_state", "Circuit breaker per model: 0 closed, 1 open, "
              "2 half-open.", ("model",),
              lambda: [((b.model,), states[b.breaker.state]) for b in leaves()]),
        Gauge("routecast_breaker_opened_total", "Times the model's breaker opened.",
              ("model",), lambda: [((b.model,), float(b.breaker.opened_total))
                                   for b in leaves()], kind="counter"),
    ]


def routing_gauges(table: TableGetter) -> list[Gauge]:
    def routed() -> dict[str, RoutedBackend]:
        return {n: b for n, b in table().backends.items() if isinstance(b, RoutedBackend)}

    if not routed():
        return []
    return [
        Gauge("routecast_routing_seconds_total", "Seconds spent inside router.route().",
              ("endpoint",), lambda: [((n,), b.batcher.seconds_total)
                                      for n, b in routed().items()], kind="counter"),
        Gauge("routecast_routing_cpu_seconds_total",
              "CPU seconds of the event-loop thread inside router.route().", ("endpoint",),
              lambda: [((n,), b.batcher.cpu_seconds_total) for n, b in routed().items()],
              kind="counter"),
        Gauge("routecast_routed_prompts_total", "Prompts routed.", ("endpoint",),
              lambda: [((n,), b.batcher.prompts_total) for n, b in routed().items()],
              kind="counter"),
        Gauge("routecast_routing_batches_total", "router.route() calls (batches).",
              ("endpoint",), lambda: [((n,), b.batcher.batches_total)
                                      for n, b in routed().items()], kind="counter"),
        Gauge("routecast_pinned_sessions", "Sessions pinned to a model.", ("endpoint",),
              lambda: [((n,), len(b.pins)) for n, b in routed().items()], merge="sum"),
    ]


def learning_gauges(service: Callable[[], LearningService | None]) -> list[Gauge]:
    """The published router version each learning endpoint serves: replicas sharing a
    database show the same number once a refit has reached them (docs/storage.md)."""

    def versions() -> list[tuple[tuple[str, ...], float]]:
        learning = service()
        return [] if learning is None else [((name, ), float(e.artifact_version))
                                            for name, e in learning.endpoints.items()]

    return [Gauge("routecast_router_version", "Published router version a learning endpoint "
                  "serves (0: none published yet).", ("endpoint",), versions)]


def state_gauges(state: RedisState) -> list[Gauge]:
    """Redis as a replica sees it (:mod:`routecast.state.redis_state`): calls that failed,
    calls answered without it, and the spend still waiting to reach it."""
    return [
        Gauge("routecast_state_failures_total", "Calls to the shared state (Redis) that failed, "
              "by call (admission, settle, pins, breaker hint(s)) and error (timeout, error).",
              ("call", "error"), lambda: [(k, float(n)) for k, n in state.failed.items()],
              kind="counter"),
        Gauge("routecast_state_unavailable_total", "Calls answered without the shared state "
              "while Redis was unreachable: admissions refused with a 503, pins served from "
              "this replica.", ("call",),
              lambda: [((k,), float(n)) for k, n in state.unavailable.items()],
              kind="counter"),
        Gauge("routecast_state_settles_pending", "Settled requests whose cost has not reached "
              "Redis yet (queued or being written).", (),
              lambda: [((), float(state.pending_settles()[0]))], merge="sum"),
        Gauge("routecast_state_settles_pending_usd", "The spend those settles carry, USD.", (),
              lambda: [((), state.pending_settles()[1])], merge="sum"),
    ]


def request_log_gauges(log: RequestLog) -> list[Gauge]:
    """The request log's background writer (:mod:`routecast.server.requestlog`)."""
    return [
        Gauge("routecast_request_log_rows_written_total", "Request log rows committed.", (),
              lambda: [((), float(log.rows_written))], kind="counter"),
        Gauge("routecast_request_log_write_errors_total", "Request log batches that failed to "
              "commit (their rows are kept and retried).", (),
              lambda: [((), float(log.write_errors))], kind="counter"),
        Gauge("routecast_request_log_rows_dropped_total", "Request log rows lost: failed rows "
              "beyond the retry limit.", (), lambda: [((), float(log.rows_dropped))],
              kind="counter"),
        Gauge("routecast_request_log_backlog_rows", "Request log rows not yet committed "
              "(queued, being written, or waiting to be retried).", (),
              lambda: [((), float(log.backlog()))], merge="sum"),
    ]


def key_gauges(keys: KeyStore) -> list[Gauge]:
    """Reads of the client key table (every second, and paced reads for unknown keys:
    :mod:`routecast.server.keys`); a flood of unknown keys shows here, not on the database."""
    return [Gauge("routecast_key_table_reads_total", "Reads of the client key table.", (),
                  lambda: [((), float(keys.reads))], kind="counter")]
