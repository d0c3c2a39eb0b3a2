"""The OpenAI-compatible server: a Starlette app over the endpoint table.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON or SSE streams),
``GET /v1/models`` and ``GET /v1/models/{id}``, ``GET /health`` (liveness), ``GET /ready``
(readiness: :mod:`routecast.server.readiness`), ``GET /metrics``;
Anthropic's Messages and OpenAI's Responses APIs and embeddings through
:mod:`routecast.server.apis`; the dashboard at ``/ui`` (:mod:`routecast.server.ui`). The
request's ``model`` names an endpoint; the answer's ``model`` is the model that really
answered, and headers say what it took::

    x-routecast-model       the answering model
    x-routecast-route       every model asked, in order, comma-separated
    x-routecast-cost-usd    what the answer cost (non-streamed answers)
    x-routecast-latency-ms  arrival to answer, in milliseconds (non-streamed answers)
    x-routecast-excluded    models that cannot serve the request, and why (only when any;
                            :mod:`routecast.server.capability_check`)

A stream carries the same facts, with cost and latency, as an extra top-level ``"routecast"``
object on its last chunk with a ``finish_reason`` (see :mod:`routecast.server.streaming`).
Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) with a
meaningful status: 400 bad JSON or fields, 404 unknown endpoint, 413 body too large, 429 rate
limited upstream (with its ``Retry-After``), 502 upstream failed, 504 upstream timed out. An
upstream's ``param`` and ``code`` reach the client; its address never does (it is logged).

Reliability and security (see docs in each module): every request has a deadline
(``limits.deadline_s``, 504 past it, streams included); each model has a circuit breaker that
composites read (:mod:`routecast.backends.health`); a stream whose upstream dies midway ends with
an OpenAI-shaped error event, never a hung connection; with ``auth.required`` clients need a key
(:mod:`routecast.server.keys`: 401 without, 429 past its budget or rate); the privacy rule keeps
sensitive prompts on local models and out of the log (:mod:`routecast.server.privacy`);
``storage.durable`` commits each row before its response is sent; SIGHUP re-reads the config
file (new requests see the new endpoints, requests in flight finish on the old ones).
Replicas share key admission, session pins and breaker hints through Redis
(``state.redis_url``, :mod:`routecast.state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from routecast.backends.base import Api, Backend
from routecast.errors import ConfigError, RequestError, RoutecastError
from routecast.server.admission import Admission, Ticket
from routecast.server.apis.routes import ApiRoutes
from routecast.server.asgi import FastPath, error_response, http_error, json_response, unexpected
from routecast.server.capability_check import EXCLUDED_HEADER, CapabilityCheck
from routecast.server.endpoints import EndpointTable, build_endpoints
from routecast.server.gauges import (
    breaker_gauges,
    key_gauges,
    learning_gauges,
    request_log_gauges,
    routing_gauges,
    state_gauges,
)
from routecast.server.keys import KeyStore
from routecast.server.learning import LearningService
from routecast.server.openapi import openapi_schema
from routecast.server.privacy import PrivacyRule
from routecast.server.prometheus import ServerMetrics
from routecast.server.readiness import Readiness
from routecast.server.recording import Recorder
from routecast.server.requestlog import RequestLog
from routecast.server.streaming import deadline_error, start_stream
from routecast.server.wire import dumps, parse_json
from routecast.server.worker_metrics import FLUSH_S, SharedMetrics
from routecast.state import (
    RedisState,
    SharedState,
    check_reachable,
    check_shared_state,
    make_state,
)
from routecast.storage.database import Database

if TYPE_CHECKING:
    from pathlib import Path

    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.server.apis.common import Dialect
    from routecast.server.config import Config

log = logging.getLogger("routecast.server")

class RoutecastServer:
    """The server's state and request handlers; :attr:`app` is the ASGI app to run.

    A completion request passes two collaborators, both built per config by :meth:`_apply`
    (a reload builds new ones; a request keeps those it started with): :attr:`admission`
    (auth, limits, endpoint, privacy, capability check, key budgets:
    :mod:`routecast.server.admission`) and :attr:`recorder` (metrics and the request log:
    :mod:`routecast.server.recording`). A :class:`~routecast.server.admission.Ticket` carries
    what they learn about the request (its id, key name, verdict) from one to the other.
    :meth:`_answer` composes them with a backend (and a dialect, for the other APIs); streams
    get them as arguments (:func:`routecast.server.streaming.start_stream`).

    :attr:`app` is :class:`~routecast.server.asgi.FastPath` around :attr:`starlette`, a plain
    Starlette app with the routes below. A new route is a ``Route`` in that list and a handler
    method; one that answers completions calls :meth:`_answer` (or composes
    ``self.admission`` and ``self.recorder`` itself), and goes into
    :data:`routecast.server.asgi.FAST_ROUTES` to skip Starlette's routing.
    """

    def __init__(self, config: Config, table: EndpointTable,
                 request_log: RequestLog | None = None, *, config_path: Path | None = None,
                 env: Mapping[str, str] | None = None, database: Database | None = None
                 ) -> None:
        # The storage everything below shares (request log, keys, learning, Responses).
        self.database = database
        self.request_log = request_log
        self.log_prompts = request_log is not None and request_log.log_prompts
        self.config_path = config_path
        self.env = env
        #: The state replicas share (Redis), or this process's own (routecast.state).
        self.state: SharedState = make_state(config, env)
        self.keys: KeyStore | None = None
        if config.auth.required:
            if database is None:
                raise ConfigError("auth.required needs storage: client keys are stored "
                                  "there. Fix: set storage.db or storage.url (and add keys "
                                  "with `routecast keys add NAME --config FILE`)")
            self.keys = KeyStore(database)
            self.keys.state = self.state if self.state.shared else None
        self.readiness = Readiness(self.state, database)
        self.metrics = ServerMetrics()
        # Under `routecast serve --workers N`, /metrics describes every worker.
        self.metrics.share = SharedMetrics.from_env()
        self.learning: LearningService | None = None
        self._apply(config, table)
        self.metrics.extra += [*routing_gauges(lambda: self.table),
                               *breaker_gauges(lambda: self.table),
                               *learning_gauges(lambda: self.learning)]
        if isinstance(self.state, RedisState):
            self.metrics.extra += state_gauges(self.state)
        if request_log is not None:
            self.metrics.extra += request_log_gauges(request_log)
        if self.keys is not None:
            self.metrics.extra += key_gauges(self.keys)
        self._tasks: set[asyncio.Task[None]] = set()
        self.reloads_total = 0
        # Request ids: a random per-process prefix and a counter (unique across restarts and
        # replicas, and cheaper than random bytes per request).
        #: This process's id: in /health and /ready, and the prefix of its request ids.
        self.replica_id = secrets.token_hex(4)
        self._id_prefix = f"req-{self.replica_id}-"
        self._ids = itertools.count(1)
        self.apis = ApiRoutes(self)  # Messages, Responses, embeddings
        routes = [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.retrieve_model, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.render_metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *self.apis.routes(),
            Route("/v1/feedback", self.feedback, methods=["POST"]),
        ]
        if config.ui.enabled:
            from routecast.server.ui.views import Dashboard

            routes += Dashboard(self).routes()
        self.starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Exception: unexpected},
            lifespan=self._lifespan,
        )
        self.app: ASGIApp = FastPath(self.starlette, self._answer)

    def _apply(self, config: Config, table: EndpointTable) -> None:
        """Take a config and its endpoint table into use (at start-up and on reload)."""
        self.config = config
        self.table = table
        self.backends = table.backends
        self.state.attach(table)
        self.deadline_s = config.limits.deadline_s
        local = [name for name, m in config.models.items() if m.local]
        self.privacy = (PrivacyRule(config.privacy.patterns, local)
                        if config.privacy.patterns else None)
        self.capability = CapabilityCheck.from_config(config)
        self.admission = Admission(table.backends, max_body_bytes=config.limits.max_body_bytes,
                                   max_messages=config.limits.max_messages,
                                   capability=self.capability, privacy=self.privacy,
                                   keys=self.keys)
        self.recorder = Recorder(self.metrics, self.request_log, table, privacy=self.privacy,
                                 redact=config.privacy.redact_log)
        # Learning endpoints (routecast.server.learning); started in the lifespan.
        learning = LearningService(config, table, self.database, self.privacy)
        self._learning_next = learning if learning else None

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.state.start()  # first: nothing to undo when Redis is unreachable
        except ConfigError as e:
            log.error("cannot start: %s", e)
            raise
        if self.request_log is not None:
            self.request_log.start()
        if self.keys is not None:
            self.keys.open()
            self._spawn(self._flush_keys())
        await self.table.start()
        await self._start_learning()
        hup = self._install_sighup()
        unwatch = self.readiness.watch_sigterm()
        share = self.metrics.share
        if share is not None:
            self._spawn(self._share_metrics(share))
        try:
            yield
        finally:
            self.readiness.draining = True
            if unwatch is not None:
                unwatch()
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            for task in list(self._tasks):
                task.cancel()
            if share is not None:  # requests have drained: the final counts
                share.write(self.metrics.families())
            if self.learning is not None:
                await self.learning.aclose()
            await self.table.aclose()
            await self.capability.aclose()
            if self.keys is not None:
                self.keys.close()
            await self.state.aclose()
            if self.request_log is not None:
                self.request_log.close()
            self.apis.close()
            if self.database is not None:
                self.database.close()  # the pool's connections; reopened if used again

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_keys(self) -> None:
        assert self.keys is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.keys.flush_async()  # the database's side in a worker thread
                await self.keys.refresh()  # revoked keys stop working within a second
            except Exception as e:  # a locked or full disk: keep serving, say so
                log.error("cannot record key spend: %s", e)

    async def _share_metrics(self, share: SharedMetrics) -> None:
        """This worker's snapshot for the others' scrapes (:mod:`.worker_metrics`)."""
        while True:
            try:
                share.write(self.metrics.families())
            except OSError as e:  # a full disk: keep serving, say so
                log.error("cannot write the metrics snapshot to %s: %s", share.folder, e)
            await asyncio.sleep(FLUSH_S)

    def _install_sighup(self) -> bool:
        """Reload on SIGHUP when serving a config file from the main thread (uvicorn's CLI);
        a server run in another thread (tests, embedding) leaves signals to its host."""
        if (self.config_path is None or not hasattr(signal, "SIGHUP")
                or threading.current_thread() is not threading.main_thread()):
            return False
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: self._spawn(self.reload()))
        return True

    async def reload(self) -> None:
        """Re-read the config file and swap in its endpoints without dropping a request:
        requests in flight hold their backends and finish on the old table, which is closed
        once they can no longer be running (after ``limits.deadline_s``). Storage, state
        and auth settings keep their start-up values; circuit breakers start closed."""
        from routecast.server.config import load_config

        assert self.config_path is not None
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            config.state = self.config.state  # replicas as `--workers` set them at start-up
            table = await asyncio.to_thread(build_endpoints, config, env=self.env)
            await table.start()
        except RoutecastError as e:
            log.error("reload of %s failed, still serving the old config: %s",
                      self.config_path, e)
            return
        old, old_deadline, old_capability = self.table, self.deadline_s, self.capability
        old_learning = self.learning
        self._apply(config, table)
        await self._start_learning()
        if old_learning is not None:
            await old_learning.aclose()
        if self.keys is not None:
            await self.keys.reload_async()
        self.reloads_total += 1
        log.warning("reloaded %s: %d endpoints", self.config_path, len(self.backends))

        async def close_later() -> None:
            await asyncio.sleep(old_deadline + 1.0)
            await old.aclose()
            await old_capability.aclose()  # its requests (through the old admission) are done

        self._spawn(close_later())

    # -- routes ----------------------------------------------------------------------------

    async def _start_learning(self) -> None:
        self.learning, self._learning_next = self._learning_next, None
        if self.learning is not None:
            await self.learning.start()

    async def feedback(self, http: HTTPRequest) -> Response:
        """``POST /v1/feedback``: a client's score of an answer (see server/learning.py)."""
        try:
            key = (await self.keys.authenticate(http.headers.get("authorization"))
                   if self.keys is not None else None)
            body = parse_json(await self.admission.read_body(http.headers, http.stream()))
            if self.learning is None:
                raise RequestError("no endpoint of this server learns from feedback; add a "
                                   "`learning:` block to a routed endpoint", status=404,
                                   code="feedback_not_enabled")
            return json_response(await self.learning.feedback(body, key.name if key else None))
        except RoutecastError as e:
            return error_response(e)

    async def chat_completions(self, http: HTTPRequest) -> Response:
        return await self._answer(http.headers, http.stream(), "chat")

    async def completions(self, http: HTTPRequest) -> Response:
        return await self._answer(http.headers, http.stream(), "completions")

    async def list_models(self, http: HTTPRequest) -> Response:
        data = [_model_object(name, backend) for name, backend in self.backends.items()]
        return json_response({"object": "list", "data": data})

    async def retrieve_model(self, http: HTTPRequest) -> Response:
        """``GET /v1/models/{id}``: one endpoint (ids may hold ``/``), or an OpenAI-shaped 404."""
        name = http.path_params["model"]
        backend = self.backends.get(name)
        if backend is None:
            return error_response(self.admission.unknown_endpoint(name))
        return json_response(_model_object(name, backend))

    async def health(self, http: HTTPRequest) -> Response:
        """Liveness: the process answers (whatever its database or Redis do)."""
        return json_response({"status": "ok", "endpoints": len(self.backends),
                              "replica": self.replica_id})

    async def ready(self, http: HTTPRequest) -> Response:
        """Readiness (:mod:`.readiness`): 200, or 503 naming what is wrong, while draining or
        while the database or Redis does not answer (asked at most once a second)."""
        problems = await self.readiness.problems()
        if problems:
            return json_response({"status": "not ready", "replica": self.replica_id,
                                  "problems": problems}, 503)
        return json_response({"status": "ready", "replica": self.replica_id})

    async def render_metrics(self, http: HTTPRequest) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, http: HTTPRequest) -> Response:
        return json_response(openapi_schema(list(self.backends)))

    # -- one request -----------------------------------------------------------------------

    async def _answer(self, headers: Mapping[str, str], body_parts: AsyncIterator[bytes],
                      api: Api, dialect: Dialect | None = None) -> Response:
        """One completion request: ``headers`` as a mapping with lower-case names,
        ``body_parts`` the body as it arrives; a ``dialect`` translates another API (Messages,
        Responses) to chat and back (:mod:`routecast.server.apis`)."""
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        ticket = Ticket(api, request_id)
        admission, recorder = self.admission, self.recorder  # one config for the request
        deadline_s = self.deadline_s
        settle, cost_usd = True, 0.0
        self.metrics.in_flight += 1
        try:
            backend, request = await admission.admit(ticket, headers, body_parts, dialect)
            if request.stream:
                response = await start_stream(backend, request, ticket, deadline_s=deadline_s,
                                              admission=admission, recorder=recorder,
                                              learning=self.learning)
                settle = False  # the stream settles the key when it ends
                return response if dialect is None else dialect.stream(response)
            try:
                async with asyncio.timeout(deadline_s):
                    completion = await backend.complete(request)
            except TimeoutError:
                raise deadline_error(ticket.endpoint, deadline_s) from None
            cost_usd = completion.cost_usd
        except RoutecastError as e:
            recorder.failed(ticket, e)
            response = error_response(e, request_id)
            return response if dialect is None else dialect.error(response)
        finally:
            self.metrics.in_flight -= 1
            if settle and ticket.key is not None:
                admission.settle(ticket, cost_usd)
        # Logged (durably, if asked) before it goes out. (Inline, not a helper: one coroutine
        # less on the hot path.)
        latency_s = time.perf_counter() - ticket.t0
        committed = recorder.record(ticket, latency_s, stream=False, completion=completion)
        if committed is not None:
            await committed
        out, extra = (completion.body, None) if dialect is None else (
            await dialect.answer(completion))
        headers = {
            "x-routecast-request-id": request_id,
            "x-routecast-model": completion.model,
            "x-routecast-route": ",".join(completion.route),
            "x-routecast-cost-usd": f"{completion.cost_usd:.10g}",
            "x-routecast-latency-ms": f"{latency_s * 1000:.3f}",
            **(extra or {}),
        }
        learning = self.learning
        if learning is not None:  # queued for the background loop; never waits
            learning.observe(ticket.endpoint, request, completion, ticket.key_name,
                             request_id)
        if ticket.verdict is not None:
            headers[EXCLUDED_HEADER] = ticket.verdict.header()
        return Response(dumps(out), media_type="application/json", headers=headers)

    def ticket(self, api: Api) -> Ticket:
        """A new request's ticket, with this server's next request id (for routes that
        compose the collaborators themselves)."""
        return Ticket(api, f"{self._id_prefix}{next(self._ids):x}")


def _model_object(name: str, backend: Backend) -> dict[str, Any]:
    """An endpoint as OpenAI's ``Model`` object, plus the models it may answer with."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "routecast",
            "models": list(backend.models)}


def create_app(config: Config, *, env: Mapping[str, str] | None = None,
               routers: Mapping[str, tuple[Router, Policy]] | None = None,
               table: EndpointTable | None = None, config_path: Path | None = None
               ) -> ASGIApp:
    """The ASGI app for ``config`` (run it with uvicorn). Routers load here, so config and
    router problems surface before the server binds its port. ``routers`` and ``table``
    replace what the config would load (for tests and library use); ``config_path`` is the
    file SIGHUP re-reads. A config that needs shared state it cannot have (``state.replicas``
    above 1 without Redis, or a Redis nobody answers at) is refused here, with a
    :class:`ConfigError` that says what to fix."""
    redis_url = check_shared_state(config, env)
    table = table or build_endpoints(config, env=env, routers=routers)
    if redis_url is not None:
        check_reachable(redis_url, config.state.timeout_s * 4)
    storage = config.storage
    # Opened (and migrated to the newest schema) here, so an unreachable database stops the
    # server before it binds its port.
    url = storage.database_url(env)
    database = None if url is None else Database.open(url)
    request_log = None if database is None else RequestLog(
        database, log_prompts=storage.log_prompts, batch_rows=storage.batch_rows,
        batch_ms=storage.batch_ms, durable=storage.durable)
    return RoutecastServer(config, table, request_log, config_path=config_path, env=env,
                           database=database).app
