"""The HTTP routes of the other APIs: Messages, Responses, embeddings.

``POST /v1/messages`` and ``POST /v1/responses`` run the server's one request path
(:meth:`routecast.server.app.RoutecastServer._answer`: auth, limits, privacy, routing,
fallbacks, cascades, deadline, budgets, request log) with a dialect that translates at both
ends. Auth takes the client key from ``Authorization: Bearer`` or, as Anthropic's clients send
it, ``x-api-key``.

``POST /v1/embeddings`` is passed through as it is to the one model an endpoint names (a plain
endpoint or a bare model): embedding a text is not a choice between models, so routed and
cascade endpoints refuse it. ``POST /v1/messages/count_tokens`` answers an estimate (see
:func:`routecast.server.apis.anthropic.count_tokens`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from routecast.backends.base import Completion, Usage
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.transport import json_dumps, json_loads
from routecast.errors import RequestError, RoutecastError
from routecast.server.apis import anthropic
from routecast.server.apis.anthropic import MessagesDialect
from routecast.server.apis.conversations import ConversationCascades
from routecast.server.apis.responses import ResponsesDialect
from routecast.server.apis.store import ResponseStore
from routecast.server.asgi import error_response, json_response
from routecast.server.recording import status_of
from routecast.server.wire import error_body, parse_json

if TYPE_CHECKING:
    from routecast.server.app import RoutecastServer


def client_headers(http: HTTPRequest) -> dict[str, str]:
    """The request's headers (lower-case names, first value wins), with an ``x-api-key``
    turned into the ``Authorization: Bearer`` the key store reads."""
    headers: dict[str, str] = {}
    for name, value in http.headers.items():
        headers.setdefault(name, value)
    key = headers.get("x-api-key")
    if key and "authorization" not in headers:
        headers["authorization"] = f"Bearer {key}"
    return headers


class ApiRoutes:
    """The routes above, over one :class:`RoutecastServer`."""

    def __init__(self, server: RoutecastServer) -> None:
        self.server = server
        apis = server.config.apis
        self.store = ResponseStore(server.database, apis.response_retention_days)
        state = server.state
        self.cascades = ConversationCascades(shared=state if state.shared else None)

    @property
    def pin(self) -> bool:
        return self.server.config.apis.pin_conversations

    def routes(self) -> list[Route]:
        return [Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/responses/{response_id}", self.get_response, methods=["GET"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"])]

    def close(self) -> None:
        self.store.close()

    async def messages(self, http: HTTPRequest) -> Response:
        return await self.server._answer(client_headers(http), http.stream(), "chat",
                                         MessagesDialect(self.pin, self.cascades))

    async def _owner(self, headers: Mapping[str, str]) -> str | None:
        """The id of the request's client key (``None`` without auth); raises a 401."""
        keys = self.server.keys
        return (None if keys is None
                else (await keys.authenticate(headers.get("authorization"))).id)

    async def responses(self, http: HTTPRequest) -> Response:
        headers = client_headers(http)
        try:
            owner = await self._owner(headers)
        except RoutecastError:
            owner = None  # the request path answers the 401 as for any request
        return await self.server._answer(headers, http.stream(), "chat", ResponsesDialect(
            self.store, self.pin, self.cascades, owner))

    async def _body(self, http: HTTPRequest, headers: Mapping[str, str]) -> dict[str, Any]:
        server = self.server
        if server.keys is not None:
            await server.keys.authenticate(headers.get("authorization"))
        return parse_json(await server.admission.read_body(headers, http.stream()))

    async def count_tokens(self, http: HTTPRequest) -> Response:
        try:
            body = await self._body(http, client_headers(http))
            endpoint = anthropic.check_model(body)
            if endpoint not in self.server.backends:
                raise self.server.admission.unknown_endpoint(endpoint)
            return json_response({"input_tokens": anthropic.count_tokens(body)})
        except RoutecastError as e:
            status = status_of(e)[0]
            return json_response(anthropic.error_body(status, str(e)), status)

    async def get_response(self, http: HTTPRequest) -> Response:
        try:
            owner = await self._owner(client_headers(http))
        except RoutecastError as e:
            status, code = status_of(e)
            return json_response(error_body(str(e), status, code=code), status)
        response_id = http.path_params["response_id"]
        stored = await self.store.get(response_id, owner)
        if stored is None:
            return json_response(error_body(
                f"no stored response {response_id!r} (never stored, store: false, made with "
                "another API key, or older than apis.response_retention_days)", 404,
                param="response_id",
                code="response_not_found"), 404)
        return json_response(stored.response)

    async def embeddings(self, http: HTTPRequest) -> Response:
        server = self.server
        # Not a chat request, but logged like one: the ticket's api is only read by admission,
        # which embeddings do not pass through.
        ticket = server.ticket("chat")
        recorder = server.recorder
        t0 = ticket.t0
        try:
            headers = client_headers(http)
            body = ticket.body = await self._body(http, headers)
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise RequestError("`model` is required: an endpoint naming one embedding model",
                                   param="model", code="missing_model")
            endpoint = ticket.endpoint = model
            text = body.get("input")
            if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
                raise RequestError("`input` is required: a string or a non-empty list of "
                                   "strings (or of token lists)", param="input",
                                   code="missing_input")
            backend = server.backends.get(endpoint)
            if backend is None:
                raise server.admission.unknown_endpoint(endpoint)
            leaf = server.backends.get(backend.models[0]) if len(backend.models) == 1 else None
            if not isinstance(leaf, OpenAIHTTPBackend):
                raise RequestError(f"endpoint {endpoint!r} chooses among several models; "
                                   "embeddings go to one model. Fix: ask a plain endpoint or a "
                                   "model by name", param="model", code="not_an_embedding_model")
            if not leaf.breaker.available:
                raise RequestError(f"model {leaf.model!r} is failing (circuit open)",
                                   status=503, code="upstream_circuit_open")
            raw = await leaf._call(leaf.base_url + "/embeddings",
                                   json_dumps({**body, "model": leaf.upstream_model}),
                                   read_body=True)
            assert isinstance(raw, bytes)
            data = json_loads(raw)
            usage = Usage.from_openai(data.get("usage") if isinstance(data, dict) else None)
            usage = usage or Usage()
            completion = Completion({}, leaf.model, usage, leaf.price.cost_usd(usage),
                                    time.perf_counter() - t0, [leaf.model])
        except RoutecastError as e:
            recorder.failed(ticket, e)
            return error_response(e, ticket.request_id)
        ticket.body = {}  # the input is not a prompt: an answered request logs none
        recorder.record(ticket, time.perf_counter() - t0, stream=False, completion=completion)
        if isinstance(data, dict):
            data["model"] = leaf.model
        return Response(json_dumps(data), media_type="application/json",
                        headers={"x-routecast-model": leaf.model,
                                 "x-routecast-request-id": ticket.request_id or ""})

