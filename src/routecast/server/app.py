"""The OpenAI-compatible server: a Starlette app over the endpoint table.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON or SSE streams),
``GET /v1/models``, ``GET /health``, ``GET /metrics``. The request's ``model`` names an endpoint;
the answer's ``model`` is the model that really answered, and headers say what it took::

    x-routecast-model       the answering model
    x-routecast-route       every model asked, in order, comma-separated
    x-routecast-cost-usd    what the answer cost (non-streamed answers)
    x-routecast-latency-ms  arrival to answer, in milliseconds (non-streamed answers)

A stream carries the same facts, with cost and latency, in its last event as an extra top-level
``"routecast"`` object. Errors are OpenAI-shaped (``{"error": {"message", "type", "param",
"code"}}``) with a meaningful status: 400 bad JSON or fields, 404 unknown endpoint, 413 body
too large, 429 rate limited upstream, 502 upstream failed, 504 upstream timed out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from routecast.backends.base import Api, Backend, Chunk, Completion, Request, close_stream
from routecast.backends.routed import SESSION_HEADER, RoutedBackend
from routecast.errors import RequestError, RoutecastError, UpstreamError
from routecast.server.endpoints import EndpointTable, build_endpoints
from routecast.server.metrics import Gauge, ServerMetrics
from routecast.server.requestlog import LogRow, RequestLog, prompt_text
from routecast.server.wire import (
    DONE,
    check_chat,
    check_completions,
    dumps,
    error_body,
    parse_json,
    sse,
)

if TYPE_CHECKING:
    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.server.config import Config

log = logging.getLogger("routecast.server")

#: Status logged for a stream the client hung up on (nginx's convention).
CLIENT_CLOSED = 499


class RoutecastServer:
    """The server's state and request handlers; :attr:`app` is the ASGI app to run."""

    def __init__(self, config: Config, table: EndpointTable,
                 request_log: RequestLog | None = None) -> None:
        self.config = config
        self.table = table
        self.backends = table.backends
        self.max_body = config.limits.max_body_bytes
        self.max_messages = config.limits.max_messages
        self.request_log = request_log
        self.log_prompts = request_log is not None and request_log.log_prompts
        self.metrics = ServerMetrics()
        self._add_routing_metrics()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.render_metrics, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error, Exception: _unexpected},
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.request_log is not None:
            self.request_log.start()
        await self.table.start()
        try:
            yield
        finally:
            await self.table.aclose()
            if self.request_log is not None:
                self.request_log.close()

    # -- routes ----------------------------------------------------------------------------

    async def chat_completions(self, http: HTTPRequest) -> Response:
        return await self._answer(http, "chat")

    async def completions(self, http: HTTPRequest) -> Response:
        return await self._answer(http, "completions")

    async def list_models(self, http: HTTPRequest) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "routecast",
                 "models": list(backend.models)} for name, backend in self.backends.items()]
        return _json({"object": "list", "data": data})

    async def health(self, http: HTTPRequest) -> Response:
        return _json({"status": "ok", "endpoints": len(self.backends)})

    async def render_metrics(self, http: HTTPRequest) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    # -- one request -----------------------------------------------------------------------

    async def _answer(self, http: HTTPRequest, api: Api) -> Response:
        t0 = time.perf_counter()
        ts = time.time()
        endpoint = ""
        body: dict[str, Any] = {}
        self.metrics.in_flight += 1
        try:
            body = parse_json(await self._read_body(http))
            endpoint = (check_chat(body, self.max_messages) if api == "chat"
                        else check_completions(body))
            backend = self.backends.get(endpoint)
            if backend is None:
                raise self._unknown_endpoint(endpoint)
            request = Request(body, api, http.headers.get(SESSION_HEADER))
            if request.stream:
                return await self._start_stream(backend, request, endpoint, t0, ts)
            completion = await backend.complete(request)
        except RoutecastError as e:
            return self._error(e, endpoint, body, t0, ts)
        finally:
            self.metrics.in_flight -= 1
        latency_s = time.perf_counter() - t0
        self._record(endpoint, body, ts, latency_s, stream=False, completion=completion)
        return Response(dumps(completion.body), media_type="application/json", headers={
            "x-routecast-model": completion.model,
            "x-routecast-route": ",".join(completion.route),
            "x-routecast-cost-usd": f"{completion.cost_usd:.10g}",
            "x-routecast-latency-ms": f"{latency_s * 1000:.3f}",
        })

    async def _read_body(self, http: HTTPRequest) -> bytes:
        length = http.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        async for part in http.stream():
            size += len(part)
            if size > self.max_body:
                raise self._too_large()
            parts.append(part)
        return b"".join(parts)

    def _too_large(self) -> RequestError:
        return RequestError(f"the request body is larger than this server takes "
                            f"({self.max_body} bytes, limits.max_body_bytes)", status=413,
                            code="request_too_large")

    def _unknown_endpoint(self, endpoint: str) -> RequestError:
        names = list(self.backends)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        return RequestError(f"unknown model {endpoint!r}: this server's endpoints are {shown} "
                            "(GET /v1/models lists them)", status=404, param="model",
                            code="model_not_found")

    # -- streams ---------------------------------------------------------------------------

    async def _start_stream(self, backend: Backend, request: Request, endpoint: str,
                            t0: float, ts: float) -> Response:
        """Wait for the first chunk before answering, so that a failure before it still gets
        an error status (and a fallback model its turn) instead of a broken 200 stream."""
        chunks = backend.stream(request)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError(f"endpoint {endpoint!r} ended its stream without an answer",
                                model=endpoint) from None
        except BaseException:
            await close_stream(chunks)
            raise
        headers = {"x-routecast-model": first.model, "x-routecast-route": ",".join(first.route),
                   "cache-control": "no-cache", "x-accel-buffering": "no"}
        events = self._events(first, chunks, request, endpoint, t0, ts)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def _events(self, chunk: Chunk, chunks: AsyncIterator[Chunk], request: Request,
                      endpoint: str, t0: float, ts: float) -> AsyncIterator[bytes]:
        options = request.body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        final: Completion | None = None
        error: RoutecastError | None = None
        last: dict[str, Any] = {}
        self.metrics.in_flight += 1
        try:
            while True:
                if chunk.final is not None:
                    final = chunk.final
                    yield sse(self._final_event(chunk, final, last, request.api, wants_usage,
                                                t0))
                    break
                if chunk.data is not None:
                    last = chunk.data
                    yield sse(chunk.data)
                chunk = await anext(chunks)
            yield DONE
        except StopAsyncIteration:
            error = UpstreamError(f"endpoint {endpoint!r} ended its stream without a summary",
                                  model=endpoint)
            yield sse(error_body(str(error), 502, code="upstream_error"))
        except RoutecastError as e:  # mid-stream: the status is sent; say it in the stream
            error = e
            status, code = _status(e)
            yield sse(error_body(str(e), status, code=code))
        finally:
            self.metrics.in_flight -= 1
            await close_stream(chunks)
            latency_s = time.perf_counter() - t0
            if final is not None:
                self._record(endpoint, request.body, ts, latency_s, stream=True,
                             completion=final)
            else:
                status = _status(error)[0] if error is not None else CLIENT_CLOSED
                self._record(endpoint, request.body, ts, latency_s, stream=True,
                             status=status, error=str(error) if error else "client disconnected",
                             route=chunk.route)

    def _final_event(self, chunk: Chunk, final: Completion, last: Mapping[str, Any], api: Api,
                     wants_usage: bool, t0: float) -> dict[str, Any]:
        """The last event: the upstream's usage chunk (usage kept only if the client asked)
        or an empty-choices chunk like it, plus the ``routecast`` summary."""
        data = chunk.data
        if data is None:
            data = {"id": last.get("id", ""), "created": last.get("created", int(time.time())),
                    "object": last.get("object") or ("chat.completion.chunk" if api == "chat"
                                                      else "text_completion"),
                    "model": final.model, "choices": []}
        if wants_usage:
            data.setdefault("usage", {"prompt_tokens": final.usage.prompt_tokens,
                                      "completion_tokens": final.usage.completion_tokens,
                                      "total_tokens": final.usage.prompt_tokens
                                      + final.usage.completion_tokens})
        else:
            data.pop("usage", None)
        data["routecast"] = {
            "model": final.model, "route": final.route, "cost_usd": final.cost_usd,
            "latency_ms": (time.perf_counter() - t0) * 1000,
            "routing_ms": final.routing_s * 1000, "usage": final.usage.as_dict()}
        return data

    # -- errors, log, metrics --------------------------------------------------------------

    def _error(self, e: RoutecastError, endpoint: str, body: Mapping[str, Any], t0: float,
               ts: float) -> Response:
        status, code = _status(e)
        param = e.param if isinstance(e, RequestError) else None
        if status >= 500:
            log.warning("%s: %s", endpoint or "-", e)
        route = [e.model] if isinstance(e, UpstreamError) else []
        self._record(endpoint or "-", body, ts, time.perf_counter() - t0,
                     stream=bool(body.get("stream")), status=status, error=str(e), route=route)
        return _json(error_body(str(e), status, param=param, code=code), status)

    def _record(self, endpoint: str, body: Mapping[str, Any], ts: float, latency_s: float, *,
                stream: bool, completion: Completion | None = None, status: int = 200,
                error: str | None = None, route: list[str] | None = None) -> None:
        c = completion
        route = c.route if c is not None else route or []
        self.metrics.observe(endpoint, c.model if c else None, status, latency_s,
                             c.cost_usd if c else 0.0,
                             c.usage.prompt_tokens if c else 0,
                             c.usage.completion_tokens if c else 0, escalated=len(route) > 1)
        if self.request_log is None:
            return
        baseline = self.table.strongest.get(endpoint)
        user = body.get("user")
        row = LogRow(ts=ts, endpoint=endpoint, model=c.model if c else None,
                     route=",".join(route), status=status, stream=stream, latency_s=latency_s,
                     error=error, baseline_model=baseline,
                     session=user if isinstance(user, str) else None)
        if c is not None:
            u = c.usage
            row.prompt_tokens, row.completion_tokens = u.prompt_tokens, u.completion_tokens
            row.cached_tokens, row.reasoning_tokens = u.cached_tokens, u.reasoning_tokens
            row.usage_estimated, row.cost_usd, row.routing_s = u.estimated, c.cost_usd, c.routing_s
            if baseline is not None:
                row.baseline_cost_usd = self.table.prices[baseline].cost_usd(u)
        if self.log_prompts and body:
            row.prompt = prompt_text(dict(body))
        self.request_log.write(row)

    def _add_routing_metrics(self) -> None:
        routed = {n: b for n, b in self.backends.items() if isinstance(b, RoutedBackend)}
        if not routed:
            return
        self.metrics.extra += [
            Gauge("routecast_routing_seconds_total", "Seconds spent inside router.route().",
                  ("endpoint",), lambda: [((n,), b.batcher.seconds_total)
                                          for n, b in routed.items()], kind="counter"),
            Gauge("routecast_routing_cpu_seconds_total",
                  "CPU seconds of the event-loop thread inside router.route().", ("endpoint",),
                  lambda: [((n,), b.batcher.cpu_seconds_total) for n, b in routed.items()],
                  kind="counter"),
            Gauge("routecast_routed_prompts_total", "Prompts routed.", ("endpoint",),
                  lambda: [((n,), b.batcher.prompts_total) for n, b in routed.items()],
                  kind="counter"),
            Gauge("routecast_routing_batches_total", "router.route() calls (batches).",
                  ("endpoint",), lambda: [((n,), b.batcher.batches_total)
                                          for n, b in routed.items()], kind="counter"),
            Gauge("routecast_pinned_sessions", "Sessions pinned to a model.", ("endpoint",),
                  lambda: [((n,), len(b.pins)) for n, b in routed.items()]),
        ]


def create_app(config: Config, *, env: Mapping[str, str] | None = None,
               routers: Mapping[str, tuple[Router, Policy]] | None = None,
               table: EndpointTable | None = None) -> Starlette:
    """The ASGI app for ``config`` (run it with uvicorn). Routers load here, so config and
    router problems surface before the server binds its port. ``routers`` and ``table``
    replace what the config would load (for tests and library use)."""
    table = table or build_endpoints(config, env=env, routers=routers)
    storage = config.storage
    request_log = None if storage.db is None else RequestLog(
        storage.db, log_prompts=storage.log_prompts, batch_rows=storage.batch_rows,
        batch_ms=storage.batch_ms)
    return RoutecastServer(config, table, request_log).app


def _status(e: RoutecastError) -> tuple[int, str]:
    if isinstance(e, (RequestError, UpstreamError)):
        return e.status, e.code or "invalid_request"
    return 500, "internal_error"


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


async def _http_error(http: HTTPRequest, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = (f"no route {http.method} {http.url.path}; this server serves POST "
               "/v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health and "
               "GET /metrics") if status in (404, 405) else str(exc)
    return _json(error_body(message, status, code="not_found" if status == 404 else None),
                 status)


async def _unexpected(http: HTTPRequest, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", http.method, http.url.path, exc_info=exc)
    return _json(error_body(f"internal error ({type(exc).__name__}); see the server log", 500,
                            code="internal_error"), 500)
