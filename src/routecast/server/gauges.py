"""Gauges over live server state for /metrics: routing cost per routed endpoint, each
model's circuit breaker, and the published router each learning endpoint serves. Each reads
the current endpoint table when scraped, so a config reload (SIGHUP) shows up without
re-registering anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.routed import RoutedBackend
from routecast.server.endpoints import EndpointTable
from routecast.server.prometheus import Gauge

if TYPE_CHECKING:
    from routecast.server.learning import LearningService

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
