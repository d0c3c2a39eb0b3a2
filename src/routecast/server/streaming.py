"""Streamed answers: the SSE response of the server.

The first chunk is awaited before the response starts, so a failure before it still gets an
error status (and a fallback model its turn). After that, however the stream ends, the client
gets a well-formed ending: ``[DONE]`` after the last chunk (which carries the summary; see
:func:`_ending`) and the usage chunk if asked for, or one OpenAI-shaped error event
(the upstream died, the deadline passed, a bug) and then the connection closes. Every wait for
the upstream is bounded by the request's deadline, so nothing can leave a client hanging.

:func:`start_stream` takes the request's collaborators as arguments: the
:class:`~routecast.server.admission.Admission` that admitted it (whose key the stream settles
when it ends) and the :class:`~routecast.server.recording.Recorder` that logs it, and the
:class:`~routecast.server.learning.LearningService`, if any: a stream to an endpoint that learns
keeps its chunks as they pass (one list append each, in the loop that forwards them) and, once
it has ended normally (the upstream's summary came) and the client has had ``[DONE]``, hands
them to the service, which assembles the whole answer (:mod:`routecast.server.stream_answer`)
off the request's path, and only for a request it learns from; a stream the client or the
upstream cut short is not learned from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from routecast.backends.base import Api, Backend, Chunk, Completion, Request, close_stream
from routecast.backends.transport import json_loads
from routecast.errors import RoutecastError, UpstreamError, UpstreamTimeoutError
from routecast.server.capability_check import EXCLUDED_HEADER
from routecast.server.recording import status_of
from routecast.server.wire import DONE, error_body, sse

if TYPE_CHECKING:
    from routecast.server.admission import Admission, Ticket
    from routecast.server.learning import LearningService
    from routecast.server.recording import Recorder

log = logging.getLogger("routecast.server")

#: Status logged for a stream the client hung up on (nginx's convention).
CLIENT_CLOSED = 499


def deadline_error(endpoint: str, deadline_s: float) -> UpstreamTimeoutError:
    """The 504 of a request that ran past ``limits.deadline_s``."""
    return UpstreamTimeoutError(
        f"endpoint {endpoint!r} did not answer within this server's deadline "
        f"({deadline_s:g} s, limits.deadline_s)", model=endpoint, status=504,
        code="deadline_exceeded")


async def start_stream(backend: Backend, request: Request, ticket: Ticket, *,
                       deadline_s: float, admission: Admission, recorder: Recorder,
                       learning: LearningService | None = None) -> Response:
    """The SSE response to ``request``, once ``backend``'s first chunk has come (errors
    before it raise, for the caller to answer with a status). From then on the stream owns
    the ticket: it settles the key and records the request however it ends."""
    deadline = asyncio.get_running_loop().time() + deadline_s
    endpoint = ticket.endpoint
    chunks = backend.stream(request)
    try:
        async with asyncio.timeout_at(deadline):
            first = await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError(f"endpoint {endpoint!r} ended its stream without an answer",
                            model=endpoint) from None
    except TimeoutError:
        await close_stream(chunks)
        raise deadline_error(endpoint, deadline_s) from None
    except BaseException:
        await close_stream(chunks)
        raise
    headers = {"x-routecast-model": first.model, "x-routecast-route": ",".join(first.route),
               "cache-control": "no-cache", "x-accel-buffering": "no"}
    if ticket.request_id is not None:
        headers["x-routecast-request-id"] = ticket.request_id
    if ticket.verdict is not None:
        headers[EXCLUDED_HEADER] = ticket.verdict.header()
    learn: _Learn | None = None
    if (learning is not None and endpoint in learning.endpoints
            and ticket.request_id is not None):
        # Chosen once per stream: only a stream that learns keeps its chunks.
        learn = learning, [first]
    events = _events(first, chunks, request, ticket, deadline, deadline_s, admission, recorder,
                     learn)
    # A response never sent (the client left first) never runs the generator: settle then.
    on_close = (lambda: admission.settle(ticket, 0.0)) if ticket.key is not None else None
    return EventStream(events, headers, on_close=on_close)


async def _events(chunk: Chunk, chunks: AsyncIterator[Chunk], request: Request,
                  ticket: Ticket, deadline: float, deadline_s: float, admission: Admission,
                  recorder: Recorder, learn: _Learn | None) -> AsyncIterator[bytes]:
    options = request.body.get("stream_options") or {}
    wants_usage = bool(options.get("include_usage"))
    endpoint, t0 = ticket.endpoint, ticket.t0
    final: Completion | None = None
    error: RoutecastError | None = None
    recorded = False
    last: dict[str, Any] = {}
    # A piece whose last event has a finish_reason is held back until the next one comes:
    # if the stream ends there, it carries the summary (see `_ending`).
    held: Chunk | None = None
    metrics = recorder.metrics
    seen = learn[1] if learn is not None else None
    metrics.in_flight += 1
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
            if seen is not None:
                seen.append(chunk)
        # Log (durably, if asked) before [DONE]: a client that saw the end is logged.
        recorded = True
        committed = recorder.record(ticket, time.perf_counter() - t0, stream=True,
                                    completion=final)
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
        error = deadline_error(endpoint, deadline_s)
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
        metrics.in_flight -= 1
        if ticket.key is not None:
            admission.settle(ticket, final.cost_usd if final is not None else 0.0)
        await close_stream(chunks)
        latency_s = time.perf_counter() - t0
        if recorded:
            pass
        elif final is not None:
            recorder.record(ticket, latency_s, stream=True, completion=final)
        else:
            status = status_of(error)[0] if error is not None else CLIENT_CLOSED
            recorder.record(ticket, latency_s, stream=True, status=status,
                            error=str(error) if error else "client disconnected",
                            route=chunk.route)
        if learn is not None and recorded and final is not None and ticket.request_id:
            # The upstream finished (and the client had the whole answer): after [DONE].
            # The answer's text is assembled by the service's intake, not here.
            learn[0].observe(endpoint, request, final, ticket.key_name, ticket.request_id,
                             chunks=learn[1])


#: A stream that learns: the service, and the chunks kept for it.
_Learn = tuple["LearningService", list[Chunk]]


def _piece(chunk: Chunk) -> bytes:
    """What the client receives for ``chunk``."""
    if chunk.raw is not None:
        return chunk.raw
    return sse(chunk.data) if chunk.data is not None else b""


def _flush(held: Chunk | None) -> bytes:
    return _piece(held) if held is not None else b""


def _parsed(event_json: bytes) -> dict[str, Any]:
    """One event's JSON object, or ``{}`` when it is not one."""
    try:
        value = json_loads(event_json)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


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
    the log. A native upstream's last event (Messages, Responses) is passed on as it came.
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
    held_before, held_last = _cut_last(held_piece) if held_piece else (b"", b"")
    if isinstance(tail_last, dict) and _finishes(tail_last):
        out = held_piece + tail_before + sse({**tail_last, "routecast": summary})
    elif held_piece and _finishes(_parsed(held_last)):
        # The held piece's last event is the chat chunk that finished (a native upstream's
        # last event, in its own API's shape, is passed on untouched instead).
        out = held_before + sse({**_parsed(held_last), "routecast": summary}) + tail
    else:
        out = held_piece + tail
        placed = False
    native = chunk.data if chunk.data is not None and "choices" not in chunk.data else None
    if native is not None:
        # An upstream that speaks another API (Messages, Responses) ends with its own last
        # event, not a chat usage chunk: it goes on as it is, with the summary if still due.
        out += sse(native if placed else {**native, "routecast": summary})
        placed = True
    elif wants_usage:
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

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str], *,
                 on_close: Callable[[], None] | None = None) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.on_close = on_close
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
            if self.on_close is not None:
                self.on_close()


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
