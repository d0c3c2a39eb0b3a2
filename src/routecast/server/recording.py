"""Recording: every request, answered or not, counted in /metrics and logged to SQLite.

:class:`Recorder` holds what a log row needs beyond the request's
:class:`~routecast.server.admission.Ticket` (its id, key name, verdict, body): the endpoint
table's prices (for the baseline cost stats measure savings against) and the privacy rule (to
redact logged prompts). It is built per config, like
:class:`~routecast.server.admission.Admission`; the metrics and the request log it writes to
live as long as the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from routecast.errors import RequestError, RoutecastError, UpstreamError
from routecast.server.requestlog import LogRow, RequestLog, prompt_text

if TYPE_CHECKING:
    from routecast.backends.base import Completion
    from routecast.server.admission import Ticket
    from routecast.server.endpoints import EndpointTable
    from routecast.server.privacy import PrivacyRule
    from routecast.server.prometheus import ServerMetrics

log = logging.getLogger("routecast.server")


def status_of(e: RoutecastError) -> tuple[int, str]:
    """The HTTP status and error code a routecast error is answered with."""
    if isinstance(e, (RequestError, UpstreamError)):
        return e.status, e.code or "invalid_request"
    return 500, "internal_error"


class Recorder:
    """Counts and logs requests for one config (see the module docstring). ``redact``: mask
    what the privacy rule matches in logged prompts."""

    def __init__(self, metrics: ServerMetrics, request_log: RequestLog | None,
                 table: EndpointTable, *, privacy: PrivacyRule | None = None,
                 redact: bool = True) -> None:
        self.metrics = metrics
        self.request_log = request_log
        self.log_prompts = request_log is not None and request_log.log_prompts
        self.table = table
        self.redact = privacy.redact if privacy is not None and redact else None

    def record(self, ticket: Ticket, latency_s: float, *, stream: bool,
               completion: Completion | None = None, status: int = 200,
               error: str | None = None, route: list[str] | None = None
               ) -> asyncio.Future[None] | None:
        """Count the request in /metrics and queue its log row. With ``storage.durable`` an
        answered request's row is committed before its response goes out: the caller awaits
        the future returned. Error rows are always batched (nothing was delivered)."""
        c = completion
        endpoint = ticket.endpoint or "-"
        route = c.route if c is not None else route or []
        self.metrics.observe(endpoint, c.model if c else None, status, latency_s,
                             c.cost_usd if c else 0.0,
                             c.usage.prompt_tokens if c else 0,
                             c.usage.completion_tokens if c else 0, escalated=len(route) > 1)
        if self.request_log is None:
            return None
        body = ticket.body
        baseline = self.table.strongest.get(endpoint)
        user = body.get("user")
        row = LogRow(ts=ticket.ts, endpoint=endpoint, model=c.model if c else None,
                     route=",".join(route), status=status, stream=stream, latency_s=latency_s,
                     error=error, baseline_model=baseline,
                     session=user if isinstance(user, str) else None,
                     request_id=ticket.request_id, key_name=ticket.key_name)
        if ticket.verdict is not None:
            row.excluded = ticket.verdict.header()
        if c is not None:
            u = c.usage
            row.prompt_tokens, row.completion_tokens = u.prompt_tokens, u.completion_tokens
            row.cached_tokens, row.reasoning_tokens = u.cached_tokens, u.reasoning_tokens
            row.usage_estimated, row.cost_usd, row.routing_s = u.estimated, c.cost_usd, c.routing_s
            row.trace = c.trace
            if baseline is not None:
                row.baseline_cost_usd = self.table.prices[baseline].cost_usd(u)
        if self.log_prompts and body:
            row.prompt = prompt_text(dict(body))
            if self.redact is not None:
                row.prompt = self.redact(row.prompt)
        if c is not None and self.request_log.durable:
            return self.request_log.write_durable(row)
        self.request_log.write(row)
        return None

    def failed(self, ticket: Ticket, e: RoutecastError) -> None:
        """Record a request answered with an error (server-side failures also go to the log)."""
        status = status_of(e)[0]
        if status >= 500:
            log.warning("%s: %s", ticket.endpoint or "-", e)
        self.record(ticket, time.perf_counter() - ticket.t0,
                    stream=bool(ticket.body.get("stream")), status=status, error=str(e),
                    route=[e.model] if isinstance(e, UpstreamError) else [])
