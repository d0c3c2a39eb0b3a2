"""Streamed answers: the SSE response of the server, as a mixin of its request handler.

The first chunk is awaited before the response starts, so a failure before it still gets an
error status (and a fallback model its turn). After that, however the stream ends, the client
gets a well-formed ending: ``[DONE]`` after the last chunk (which carries the summary; see
:func:`_ending`) and the usage chunk if asked for, or one OpenAI-shaped error event
(the upstream died, the deadline passed, a bug) and then the connection closes. Every wait for
the upstream is bounded by the request's deadline, so nothing can leave a client hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from routecast.backends.base import Api, Backend, Chunk, Completion, Request, close_stream
from routecast.backends.transport import json_loads
from routecast.errors import RequestError, RoutecastError, UpstreamError, UpstreamTimeoutError
from routecast.server.wire import DONE, error_body, sse

if TYPE_CHECKING:
    from routecast.server.keys import ClientKey, KeyStore
    from routecast.server.prometheus import ServerMetrics

log = logging.getLogger("routecast.server")

#: Status logged for a stream the client hung up on (nginx's convention).
CLIENT_CLOSED = 499


def status_of(e: RoutecastError) -> tuple[int, str]:
    """The HTTP status and error code a routecast error is answered with."""
    if isinstance(e, (RequestError, UpstreamError)):
        return e.status, e.code or "invalid_request"
    return 500, "internal_error"


class StreamMixin:
    """The streaming half of :class:`routecast.server.app.RoutecastServer`."""

    deadline_s: float
    metrics: ServerMetrics
    keys: KeyStore | None

    def _deadline(self, endpoint: str) -> UpstreamTimeoutError:
        raise NotImplementedError

    def _record(self, endpoint: str, body: Mapping[str, Any], ts: float, latency_s: float, *,
                stream: bool, completion: Completion | None = None, status: int = 200,
                error: str | None = None, route: list[str] | None = None,
                request_id: str | None = None, key_name: str | None = None
                ) -> asyncio.Future[None] | None:
        raise NotImplementedError

    async def _start_stream(self, backend: Backend, request: Request, endpoint: str,
                            t0: float, ts: float, key: ClientKey | None,
                            request_id: str | None = None, key_name: str | None = None
                            ) -> Response:
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        chunks = backend.stream(request)
        try:
            async with asyncio.timeout_at(deadline):
                first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError(f"endpoint {endpoint!r} ended its stream without an answer",
                                model=endpoint) from None
        except TimeoutError:
            await close_stream(chunks)
            raise self._deadline(endpoint) from None
        except BaseException:
            await close_stream(chunks)
            raise
        headers = {"x-routecast-model": first.model, "x-routecast-route": ",".join(first.route),
                   "cache-control": "no-cache", "x-accel-buffering": "no"}
        if request_id is not None:
            headers["x-routecast-request-id"] = request_id
        ids = (request_id, key_name)
        events = self._events(first, chunks, request, endpoint, t0, ts, deadline, key, ids)
        return EventStream(events, headers)

    async def _events(self, chunk: Chunk, chunks: AsyncIterator[Chunk], request: Request,
                      endpoint: str, t0: float, ts: float, deadline: float,
                      key: ClientKey | None, ids: tuple[str | None, str | None]
                      ) -> AsyncIterator[bytes]:
        options = request.body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        final: Completion | None = None
        error: RoutecastError | None = None
        recorded = False
        last: dict[str, Any] = {}
        # A piece whose last event has a finish_reason is held back until the next one comes:
        # if the stream ends there, it carries the summary (see `_ending`).
        held: Chunk | None = None
        self.metrics.in_flight += 1
        try:
            while True:
                if chunk.final is not None:
                    final = chunk.final
                    ending = _ending(chunk, held, final, last, request.api, wants_usage, t0)
                    held = None
                    break
                if chunk.data is not None:
                    last = chunk.data
                piece = _flush(held)
                held = None
                if _finishes(chunk.data):
                    held = chunk
                else:
                    piece += _piece(chunk)
                if piece:
                    yield piece
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            # Log (durably, if asked) before [DONE]: a client that saw the end is logged.
            recorded = True
            committed = self._record(endpoint, request.body, ts, time.perf_counter() - t0,
                                     stream=True, completion=final, request_id=ids[0],
                                     key_name=ids[1])
            if committed is None:
                yield ending + DONE  # one write for the two
            else:
                yield ending
                await committed
                yield DONE
        except StopAsyncIteration:
            error = UpstreamError(f"endpoint {endpoint!r} ended its stream without a summary",
                                  model=endpoint)
            yield _flush(held) + sse(error_body(str(error), 502, code="upstream_error"))
        except TimeoutError:
            error = self._deadline(endpoint)
            yield _flush(held) + sse(error_body(str(error), 504, code="deadline_exceeded"))
        except RoutecastError as e:  # mid-stream: the status is sent; say it in the stream
            error = e
            status, code = status_of(e)
            yield _flush(held) + sse(error_body(str(e), status, code=code))
        except Exception as e:  # a bug: still end the stream in a way clients understand
            log.exception("stream of %s failed", endpoint, exc_info=e)
            error = RoutecastError(f"internal error ({type(e).__name__}); see the server log")
            yield _flush(held) + sse(error_body(str(error), 500, code="internal_error"))
        finally:
            self.metrics.in_flight -= 1
            if key is not None and self.keys is not None:
                self.keys.settle(key, final.cost_usd if final is not None else 0.0)
            await close_stream(chunks)
            latency_s = time.perf_counter() - t0
            if recorded:
                pass
            elif final is not None:
                self._record(endpoint, request.body, ts, latency_s, stream=True,
                             completion=final, request_id=ids[0], key_name=ids[1])
            else:
                status = status_of(error)[0] if error is not None else CLIENT_CLOSED
                self._record(endpoint, request.body, ts, latency_s, stream=True,
                             status=status, error=str(error) if error else "client disconnected",
                             route=chunk.route, request_id=ids[0], key_name=ids[1])


def _piece(chunk: Chunk) -> bytes:
    """What the client receives for ``chunk``."""
    if chunk.raw is not None:
        return chunk.raw
    return sse(chunk.data) if chunk.data is not None else b""


def _flush(held: Chunk | None) -> bytes:
    return _piece(held) if held is not None else b""


def _finishes(data: Mapping[str, Any] | None) -> bool:
    """Whether a chunk ends one of its choices (has a ``finish_reason``)."""
    if data is None:
        return False
    for choice in data.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return True
    return False


def _cut_last(raw: bytes) -> tuple[bytes, bytes]:
    """``raw`` (server-sent events, framed as backends frame them: ``data: {...}`` and a blank
    line each) as (every event but the last, the last event's JSON)."""
    at = raw.rfind(b"\n\ndata: ")
    start = 0 if at < 0 else at + 2
    return raw[:start], raw[start + 6:].strip()


def _ending(chunk: Chunk, held: Chunk | None, final: Completion, last: Mapping[str, Any],
            api: Api, wants_usage: bool, t0: float) -> bytes:
    """The events that end a stream, before ``[DONE]``.

    The ``routecast`` summary rides, as an extra field, on the stream's last chunk with a
    ``finish_reason``: every client reads past an unknown field, while an extra chunk with
    empty ``choices`` breaks the usual ``chunk.choices[0]`` loop. OpenAI sends that chunk only
    when the client asks for it (``stream_options.include_usage``), and then exactly once,
    carrying ``usage``; so does routecast. A stream with no finish_reason at all (a broken
    upstream's) has the summary on its usage chunk, if asked, else only in the headers and
    the log.
    """
    summary = {"model": final.model, "route": final.route, "cost_usd": final.cost_usd,
               "latency_ms": (time.perf_counter() - t0) * 1000,
               "routing_ms": final.routing_s * 1000, "usage": final.usage.as_dict()}
    held_piece = _flush(held)
    tail = chunk.raw or b""  # events that came with the end, after the held piece
    placed = True
    tail_last: Any = None
    if tail:
        tail_before, tail_json = _cut_last(tail)
        try:
            tail_last = json_loads(tail_json)
        except (ValueError, RecursionError):
            tail_last = None
    if isinstance(tail_last, dict) and _finishes(tail_last):
        out = held_piece + tail_before + sse({**tail_last, "routecast": summary})
    elif held is not None and held.data is not None:
        out = _cut_last(held_piece)[0] + sse({**held.data, "routecast": summary}) + tail
    else:
        out = held_piece + tail
        placed = False
    if wants_usage:
        data = chunk.data
        if data is None:
            data = {"id": last.get("id", ""),
                    "created": last.get("created", int(time.time())),
                    "object": last.get("object") or ("chat.completion.chunk" if api == "chat"
                                                      else "text_completion"),
                    "model": final.model, "choices": []}
        data = {**data, "choices": []}
        data.setdefault("usage", {"prompt_tokens": final.usage.prompt_tokens,
                                  "completion_tokens": final.usage.completion_tokens,
                                  "total_tokens": final.usage.prompt_tokens
                                  + final.usage.completion_tokens})
        if not placed:
            data["routecast"] = summary
        out += sse(data)
    return out


class EventStream(Response):
    """A server-sent event stream: one ASGI message per piece the iterator yields; a piece
    ending in ``data: [DONE]`` ends the response.

    Starlette's ``StreamingResponse`` does the same through an anyio task group (for ASGI
    servers older than spec 2.4, uvicorn included), which costs more CPU than the rest of a
    short stream; here one plain task watches for the client leaving and cancels the stream
    when it does, so the upstream is released and the request logged as a client hang-up
    (499), as before.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watch = _Watch(task)
        watcher = asyncio.get_running_loop().create_task(watch.run(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            ended = False
            async for piece in self.events:
                # [DONE] ends an OpenAI stream: the piece carrying it also ends the response,
                # in one write with the chunked encoding's terminator.
                ended = piece.endswith(DONE)
                watch.finished = ended
                await send({"type": "http.response.body", "body": piece, "more_body": not ended})
            if not ended:
                watch.finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # Our own cancellation (the client left) ends the response quietly; any other
            # (the server shutting down) goes on up.
            if not watch.left or task.uncancel() > 0:
                raise
        finally:
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()  # the stream's own clean-up: release the upstream, log


class _Watch:
    """Cancels ``task`` when the client disconnects before the stream is finished."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.finished = False
        self.left = False

    async def run(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.left = True
            self.task.cancel()
