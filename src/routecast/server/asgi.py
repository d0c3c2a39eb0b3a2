"""The ASGI side of the server: the short way in, and the last-resort answers.

:class:`FastPath` wraps the server's plain Starlette app and sends the completion routes
straight to their handler (see the class). Errors that no handler answers (Starlette's 404/405,
bugs) get OpenAI-shaped answers here, and so do routecast's own errors (:func:`error_response`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from routecast.backends.base import Api
from routecast.errors import RequestError, RoutecastError, UpstreamError
from routecast.server.recording import status_of
from routecast.server.wire import dumps, error_body

log = logging.getLogger("routecast.server")

#: The handler of the completion routes: (headers with lower-case names, the body as it
#: arrives, which route) -> the response.
Answer = Callable[[Mapping[str, str], AsyncIterator[bytes], Api], Awaitable[Response]]

#: The routes that take the short way in, and the API each one speaks.
FAST_ROUTES: Final[Mapping[str, Api]] = {"/v1/chat/completions": "chat",
                                          "/v1/completions": "completions"}


class FastPath:
    """An ASGI app: ``POST`` to a path of :data:`FAST_ROUTES` goes straight to ``answer``,
    everything else (other routes, lifespan) to ``app``, a plain Starlette app.

    Starlette's route matching, its two exception middlewares (which wrap every ASGI message)
    and its ``Request`` object cost ~10-15 us a request, ~5 % of all the proxy spends on one.
    The handler answers every error it knows itself; anything else gets the same 500 answer and
    log line as through Starlette's handler. Wrapping (as middleware wraps an app) rather than
    overriding Starlette's ``__call__`` keeps the app a plain one: routes, handlers and
    lifespan are all Starlette's own.
    """

    def __init__(self, app: ASGIApp, answer: Answer) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = FAST_ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if api is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # ASGI names are lower case; the first one wins
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        sent = False

        async def send_tracked(message: Any) -> None:
            nonlocal sent
            sent = True
            await send(message)

        try:
            response = await self.answer(headers, _body(receive), api)
            await response(scope, receive, send_tracked)
        except Exception as e:
            log.exception("unexpected error on POST %s", scope["path"], exc_info=e)
            if not sent:
                await internal_error(e)(scope, receive, send)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """A request's body as it arrives (Starlette's ``Request.stream()``, without the rest)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def json_response(data: Any, status: int = 200) -> Response:
    """``data`` as a JSON response."""
    return Response(dumps(data), status_code=status, media_type="application/json")


def error_response(e: RoutecastError, request_id: str | None = None) -> Response:
    """A routecast error as OpenAI answers errors: its status, ``param`` and ``code`` (an
    upstream's own, when it gave them), ``Retry-After`` when a wait is known, and the
    request's id when it has one."""
    status, code = status_of(e)
    param = e.param if isinstance(e, (RequestError, UpstreamError)) else None
    if isinstance(e, UpstreamError) and e.upstream_code:
        code = e.upstream_code  # the upstream's own reason, which clients may act on
    response = json_response(error_body(str(e), status, param=param, code=code), status)
    # Upstream errors and a key's rate limit (server.keys.RateLimitedError) know the wait.
    wait = getattr(e, "retry_after_s", None)
    if wait is not None:
        response.headers["retry-after"] = str(max(1, math.ceil(wait)))
    if request_id is not None:
        response.headers["x-routecast-request-id"] = request_id
    return response


async def http_error(http: HTTPRequest, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed), OpenAI-shaped."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    # The path is the client's text: shown as repr, cut short, so it cannot forge log lines
    # or pad the answer.
    path = http.url.path
    shown = repr(path if len(path) <= 200 else path[:200] + "...")
    message = (f"no route {http.method} {shown}; this server serves POST "
               "/v1/chat/completions, POST /v1/completions, GET /v1/models, GET "
               "/v1/models/{id}, GET /health, GET /metrics and GET /openapi.json"
               ) if status in (404, 405) else str(exc)
    return json_response(error_body(message, status,
                                    code="not_found" if status == 404 else None), status)


async def unexpected(http: HTTPRequest, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered with an OpenAI-shaped 500."""
    log.exception("unexpected error on %s %s", http.method, http.url.path, exc_info=exc)
    return internal_error(exc)


def internal_error(exc: Exception) -> Response:
    """The answer to a bug."""
    return json_response(error_body(f"internal error ({type(exc).__name__}); see the server "
                                    "log", 500, code="internal_error"), 500)
