"""One backend for every OpenAI-compatible server: OpenAI, vLLM, SGLang, llama.cpp, Ollama,
LM Studio, TGI.

The client's body is forwarded as sent (unknown fields included) with only ``model`` swapped for
the upstream's name; for streams, ``stream_options.include_usage`` is switched on so the final
usage chunk can be billed. Failures (429, 5xx, refused or broken connections, timeouts) are
retried with backoff (:mod:`routecast.backends.retry`) until the first byte of an answer
arrives; after that a stream cannot be retried without the client seeing it twice.

The API key is a constructor argument (the config layer reads it from the environment variable
the config names). It is sent only in the ``Authorization`` header: never logged, never in
``repr``, and scrubbed from upstream error text before that text reaches an error message.
Error messages name the model, never the upstream's address: they reach clients. The address
and the transport's own words go to the log (logger ``routecast.upstream``) instead.

A slow upstream must not hold a request past the point where a fallback could still answer it:
a stream's first chunk must arrive within ``first_token_timeout_s`` of the response starting,
and a whole answer's body must arrive at ``min_read_bytes_per_s`` at least (see
:class:`~routecast.backends.transport.AiohttpTransport`). Both fail as timeouts, which
fallbacks and cascades hand to their next model. Once the first chunk of a stream has been
passed on, only the read timeout applies: the client is already reading that model's answer.

Streams: the client's stream gets the upstream's chunks with routecast's model name; usage is
bookkeeping, so ``"usage": null`` fields are dropped and a usage-only chunk is held back for the
server (which sends it only to a client that asked, ``stream_options.include_usage``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from routecast.backends.base import (
    Backend,
    Chunk,
    Completion,
    Price,
    Request,
    Usage,
    close_stream,
)
from routecast.backends.health import CircuitBreaker
from routecast.backends.prompt_format import (
    PromptFormat,
    chat_to_completion_body,
    completion_chunk_to_chat,
    completion_to_chat,
    message_text,
)
from routecast.backends.retry import RETRY_STATUSES, RetryPolicy, retry_after_s, retry_timeouts
from routecast.backends.transport import (
    Transport,
    TransportResponse,
    json_dumps,
    json_loads,
    json_reader,
)
from routecast.errors import RequestError, UpstreamError, UpstreamTimeoutError

log = logging.getLogger("routecast.upstream")

#: Upstream statuses meaning "this request is invalid": passed on to the client as they are,
#: and neither retried nor sent to a fallback model (it would reject the request too).
REJECTED_STATUSES = frozenset({400, 413, 422})


class OpenAIHTTPBackend(Backend):
    """One model behind an OpenAI-compatible HTTP API.

    ``model`` is routecast's name for it (what clients and logs see); ``upstream_model`` the name
    the server knows (default: the same). ``kind="base"`` serves chat requests from a base
    model through ``/v1/completions`` with ``prompt_format``. ``stream_usage=False`` stops asking
    for the usage chunk, for old servers that reject ``stream_options``; their streams are then
    billed on estimated tokens.
    """

    def __init__(self, model: str, base_url: str, *, upstream_model: str | None = None,
                 api_key: str | None = None, price: Price | None = None,
                 kind: Literal["chat", "base"] = "chat",
                 prompt_format: PromptFormat | None = None,
                 retry: RetryPolicy | None = None, transport: Transport | None = None,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                 max_connections: int = 100, stream_usage: bool = True,
                 first_token_timeout_s: float | None = None,
                 min_read_bytes_per_s: float = 1024.0,
                 headers: Mapping[str, str] | None = None,
                 breaker: CircuitBreaker | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.name = model
        self.model = model
        self.models = (model,)
        self.base_url = base_url.rstrip("/")
        self.upstream_model = upstream_model or model
        self.price = price or Price()
        self.kind = kind
        if kind == "base" and prompt_format is None:
            from routecast.backends.prompt_format import FORMATS

            prompt_format = FORMATS["chatml"]
        self.prompt_format = prompt_format
        self.retry = retry or RetryPolicy()
        self.stream_usage = stream_usage
        if transport is None:
            from routecast.backends.transport import AiohttpTransport

            transport = AiohttpTransport(connect_timeout_s=connect_timeout_s,
                                       read_timeout_s=read_timeout_s,
                                       max_connections=max_connections,
                                       min_read_bytes_per_s=min_read_bytes_per_s)
        self.transport: Transport = transport
        #: The longest wait, once a stream's response has started, for its first chunk.
        self.first_token_timeout_s = first_token_timeout_s or read_timeout_s
        self._api_key = api_key or None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         **(headers or {})}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._sleep = sleep
        self.breaker = breaker or CircuitBreaker()

    def usable(self, request: Request) -> bool:
        return request.allows(self.model) and self.breaker.available

    def __repr__(self) -> str:
        return f"OpenAIHTTPBackend({self.model!r}, {self.base_url!r})"

    async def start(self) -> None:
        # Let a transport that has set-up to do (aiohttp's import and session: ~0.1-0.5 s)
        # do it now, so the first client does not pay for it; connections open on first use.
        opener = getattr(self.transport, "open", None)
        if opener is not None:
            opener()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # -- requests --------------------------------------------------------------------------

    def _upstream(self, request: Request, stream: bool) -> tuple[str, dict[str, Any], bool]:
        """(url, body, adapted): the body to send, and whether chat was mapped to completions."""
        body = request.body
        adapted = request.api == "chat" and self.kind == "base"
        if adapted:
            assert self.prompt_format is not None
            out = chat_to_completion_body(body, self.prompt_format, self.upstream_model)
            path = "/completions"
        else:
            out = {**body, "model": self.upstream_model}
            path = "/chat/completions" if request.api == "chat" else "/completions"
        if stream and self.stream_usage:
            options = out.get("stream_options")
            out["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                     "include_usage": True}
        return self.base_url + path, out, adapted

    def _admit(self, request: Request) -> None:
        """Refuse at once a model the request may not see, or one whose breaker is open."""
        if not request.allows(self.model):
            raise RequestError(f"model {self.model!r} may not receive this request: the "
                               "privacy rule keeps it on local models", status=403,
                               code="privacy_rule")
        if not self.breaker.acquire():
            raise UpstreamError(
                f"{self._where()} is failing; its circuit breaker is open for another "
                f"{self.breaker.retry_in_s():.1f} s (the request was not sent)",
                model=self.model, status=503, code="upstream_circuit_open")

    def _verdict(self, error: BaseException | None, t0: float) -> None:
        """Tell the breaker how a call went: only upstream failures count against health."""
        if error is None:
            self.breaker.success(time.perf_counter() - t0)
        elif isinstance(error, UpstreamError) and error.code not in (
                "upstream_rejected_request", "upstream_circuit_open"):
            self.breaker.failure()
        else:  # cancelled (client gone, deadline) or rejected as invalid: no verdict
            self.breaker.release()

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        self._admit(request)
        try:
            completion = await self._complete(request, t0)
        except BaseException as e:
            self._verdict(e, t0)
            raise
        self._verdict(None, t0)
        return completion

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        t0 = time.perf_counter()
        self._admit(request)
        chunks = self._stream(request, t0)
        error: BaseException | None = None
        finished = False
        try:
            async for chunk in chunks:
                finished = chunk.final is not None
                yield chunk
        except BaseException as e:
            error = e
            raise
        finally:
            await close_stream(chunks)
            # A finished stream is a success even if the consumer then closes it; one the
            # consumer left early (client gone) says nothing about the upstream.
            self._verdict(None if finished else error, t0)

    async def _complete(self, request: Request, t0: float) -> Completion:
        url, body, adapted = self._upstream(request, stream=False)
        raw = await self._call(url, json_dumps(body), read_body=True)
        assert isinstance(raw, bytes)
        try:
            data = json_loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(f"{self._where()} answered with something that is not a JSON "
                                f"object: {self._scrub(raw[:200].decode('utf-8', 'replace'))!r}",
                                model=self.model, code="upstream_bad_response")
        if adapted:
            data = completion_to_chat(data)
        data["model"] = self.model
        usage = Usage.from_openai(data.get("usage")) or _estimate(
            request, sum(len(_choice_text(c)) for c in data.get("choices") or ()) // 4)
        return Completion(data, self.model, usage, self.price.cost_usd(usage),
                          time.perf_counter() - t0, [self.model])

    async def _stream(self, request: Request, t0: float) -> AsyncIterator[Chunk]:
        url, body, adapted = self._upstream(request, stream=True)
        resp = await self._call(url, json_dumps(body), read_body=False)
        assert not isinstance(resp, bytes)
        route = [self.model]
        state = _StreamState(adapted)
        held: list[bytes] = []  # events that came with [DONE]: they go out with the summary
        try:
            # Each piece is what one network read brought: all its events go on as one Chunk
            # (``raw``), so the layers above pay their per-chunk cost once per read.
            blocks = getattr(resp, "blocks", None)
            pieces: AsyncIterator[bytes] = resp.lines() if blocks is None else blocks()
            first = await self._first_chunk(pieces, state, held, route)
            if first is not None:
                yield first
            async for piece in pieces:
                chunk = self._take(piece, state, held, route)
                if chunk is not None:
                    yield chunk
        except TimeoutError as e:
            log.warning("model %r at %s: %s", self.model, self.base_url, e)
            raise UpstreamTimeoutError(f"{self._where()}: {e}", model=self.model, status=504,
                                       code="upstream_timeout") from None
        except ConnectionError as e:
            log.warning("model %r at %s: the stream broke: %s", self.model, self.base_url, e)
            raise UpstreamError(f"{self._where()}: the stream broke (the connection closed or "
                                "was reset)", model=self.model,
                                code="upstream_unreachable") from None
        finally:
            resp.release()
        if not state.ended:
            raise UpstreamError(f"{self._where()}: the stream broke off (the connection closed "
                                "before [DONE] or a finish_reason)", model=self.model,
                                code="upstream_unreachable")
        usage = state.usage or _estimate(request, state.n_chunks)  # ~one token per chunk
        usage_chunk = state.usage_chunk
        if usage_chunk is not None:
            usage_chunk["model"] = self.model
            if adapted:
                usage_chunk["object"] = "chat.completion.chunk"
        elif held and state.held_last is not None:
            # No usage chunk: the server builds the summary from the last event, so that
            # event goes first, as a chunk of its own.
            yield Chunk(state.held_last, self.model, route, raw=_sse(held))
            held = []
        final = Completion({}, self.model, usage, self.price.cost_usd(usage),
                           time.perf_counter() - t0, route)
        yield Chunk(usage_chunk, self.model, route, final, raw=_sse(held) if held else None)

    async def _first_chunk(self, pieces: AsyncIterator[bytes], state: _StreamState,
                           held: list[bytes], route: list[str]) -> Chunk | None:
        """The stream's first chunk, within ``first_token_timeout_s`` (a trickling or silent
        upstream fails here, while a fallback still has time); ``None`` if none came."""
        budget = self.first_token_timeout_s
        try:
            # One piece at a time: the rest of the stream is read from the same iterator,
            # outside the budget.
            async with asyncio.timeout(budget):
                while True:
                    piece = await anext(pieces)
                    chunk = self._take(piece, state, held, route)
                    if chunk is not None or state.done:
                        return chunk
        except StopAsyncIteration:
            return None
        except TimeoutError as e:
            if e.args:  # the transport's own read timeout, with its words
                raise
            raise TimeoutError(f"no stream chunk within {budget:g} s of the response starting "
                               "(first_token_timeout_s)") from None

    def _take(self, piece: bytes, state: _StreamState, held: list[bytes], route: list[str]
              ) -> Chunk | None:
        """The chunk one piece of the stream makes, if any (see :meth:`_stream`)."""
        events, last = self._read_events(piece, state)
        if state.done:
            # After [DONE] only the end of the body can follow (read on to it, so the
            # connection goes back to the pool): what came with it goes out with the
            # summary, in one write instead of two.
            held += events
            state.held_last = last or state.held_last
            return None
        if last is None:
            return None
        return Chunk(last, self.model, route, raw=_sse(events))

    def _read_events(self, piece: bytes, state: _StreamState
                     ) -> tuple[list[bytes], dict[str, Any] | None]:
        """The events of one piece of a stream, ready to send, and the last of them."""
        events: list[bytes] = []
        last: dict[str, Any] | None = None
        loads = json_reader(piece)
        for line in piece.split(b"\n"):
            # Server-sent events: only `data:` lines matter (comments are keep-alives).
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                state.ended = state.done = True
                continue
            try:
                chunk = loads(payload)
            except (ValueError, RecursionError):
                raise UpstreamError(f"{self._where()} sent a stream chunk that is not JSON",
                                    model=self.model, code="upstream_bad_response") from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise UpstreamError(f"{self._where()} failed mid-stream: "
                                    f"{self._scrub(_error_text(chunk))}", model=self.model)
            if "usage" in chunk:
                # Usage is bookkeeping: kept for billing, sent on only in the one usage chunk
                # the server sends a client that asked for it (never `null`, never on a chunk
                # with choices: OpenAI's schemas have neither for completions).
                reported = chunk.pop("usage")
                found = Usage.from_openai(reported)
                if found is not None:
                    state.usage = found
                    if not chunk.get("choices"):
                        chunk["usage"] = reported
                        state.usage_chunk = chunk  # held back: the server sends it last
                        continue
            if not state.ended:
                for choice in chunk.get("choices") or ():
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        state.ended = True
                        break
            if state.adapted:
                chunk = completion_chunk_to_chat(chunk, first=state.n_chunks == 0)
            chunk["model"] = self.model
            state.n_chunks += 1
            events.append(json_dumps(chunk))
            last = chunk
        return events, last

    # -- the call, with retries ------------------------------------------------------------

    async def _call(self, url: str, body: bytes, *, read_body: bool
                    ) -> bytes | TransportResponse:
        """POST with retries; the body (``read_body``) or the open 200 response."""
        retry = 0
        while True:
            wait: float | None = None
            detail = ""
            try:
                resp = await self.transport.post(url, body, self._headers)
                if resp.status == 200:
                    return await resp.read() if read_body else resp
                raw = await resp.read()
                wait = retry_after_s(resp.headers)
                error = self._status_error(resp.status, raw, wait)
                detail = f"answered HTTP {resp.status}"
            except TimeoutError as e:
                error = UpstreamTimeoutError(f"{self._where()}: {e}", model=self.model,
                                             status=504, retryable=True, code="upstream_timeout")
                detail = str(e)
            except ConnectionError as e:
                # The transport's words name the host and port: they go to the log only.
                error = UpstreamError(f"{self._where()} could not be reached (connection "
                                      "refused, reset or closed)", model=self.model,
                                      retryable=True, code="upstream_unreachable")
                detail = f"could not be reached: {e}"
            delay = self.retry.delay_s(retry, wait) if error.retryable else None
            if isinstance(error, UpstreamTimeoutError) and not retry_timeouts():
                delay = None  # the next model takes over, while there is time left for it
            if delay is None:
                if retry:
                    error.args = (f"{error.args[0]} (after {retry + 1} attempts)",)
                log.warning("model %r at %s: %s (%d attempt(s))", self.model, self.base_url,
                            detail, retry + 1)
                raise error
            await self._sleep(delay)
            retry += 1

    def _status_error(self, status: int, raw: bytes, retry_after: float | None = None
                      ) -> UpstreamError:
        """The error for an upstream's non-200 answer. A rejected request (400/413/422) or a
        rate limit (429) keeps the upstream's ``param`` and ``code``, which clients act on
        (OpenAI's SDKs expose them), and a 429 its ``Retry-After``."""
        text = self._scrub(_error_text(raw))
        where = f"{self._where()} answered HTTP {status}: {text}"
        if status in REJECTED_STATUSES or status == 429:
            param, code = _error_fields(raw)
            if status == 429:
                return UpstreamError(where, model=self.model, status=429,
                                     upstream_status=status, retryable=True,
                                     code="upstream_rate_limited", param=param,
                                     upstream_code=code, retry_after_s=retry_after)
            return UpstreamError(where, model=self.model, status=status, upstream_status=status,
                                 code="upstream_rejected_request", param=param,
                                 upstream_code=code)
        if status in (401, 403):
            return UpstreamError(f"{where}. Fix: check the API key (the model's api_key_env) "
                                 "and the account's access to this model", model=self.model,
                                 upstream_status=status, code="upstream_auth")
        if status == 404:
            return UpstreamError(f"{where}. Fix: check the model's base_url (usually ends in "
                                 f"/v1) and its upstream name {self.upstream_model!r}",
                                 model=self.model, upstream_status=status)
        return UpstreamError(where, model=self.model, upstream_status=status,
                             retryable=status in RETRY_STATUSES or status >= 500)

    def _where(self) -> str:
        # Only the model's name: this text reaches clients (the address goes to the log).
        return f"model {self.model!r}"

    def _scrub(self, text: str) -> str:
        # Some servers echo the credentials they were given; never pass the key on.
        return text.replace(self._api_key, "***") if self._api_key else text


class _StreamState:
    """What a stream has said so far (see ``OpenAIHTTPBackend._stream``)."""

    __slots__ = ("adapted", "done", "ended", "held_last", "n_chunks", "usage", "usage_chunk")

    def __init__(self, adapted: bool) -> None:
        self.adapted = adapted  # a base model's completion chunks, mapped to chat chunks
        self.usage: Usage | None = None
        self.usage_chunk: dict[str, Any] | None = None
        self.n_chunks = 0
        # Whether the stream said it was complete ([DONE], or a finish_reason): a connection
        # that closes (or is reset) without either is a broken stream, not a short answer.
        self.ended = False
        self.done = False  # [DONE] came
        self.held_last: dict[str, Any] | None = None


def _sse(events: list[bytes]) -> bytes:
    """Server-sent events, one per JSON document."""
    return b"data: " + b"\n\ndata: ".join(events) + b"\n\n"


def _error_text(raw: bytes | Mapping[str, Any]) -> str:
    """The message of an OpenAI-shaped error body, else the body's start."""
    data: Any = raw
    if isinstance(raw, bytes):
        try:
            data = json.loads(raw)
        except ValueError:
            return raw[:300].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, Mapping):
        error = data.get("error", data)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    return json.dumps(data)[:300]


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """``(param, code)`` of an OpenAI-shaped error body (strings only, cut short)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None, None
    error = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(error, Mapping):
        return None, None
    param, code = error.get("param"), error.get("code")
    return (param[:200] if isinstance(param, str) else None,
            code[:200] if isinstance(code, str) else None)


def _choice_text(choice: Any) -> str:
    if not isinstance(choice, Mapping):
        return ""
    message = choice.get("message")
    if isinstance(message, Mapping):
        return message_text(message)
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _estimate(request: Request, completion_tokens: int) -> Usage:
    """Usage guessed at ~4 characters per token, for upstreams that report none."""
    body = request.body
    if request.api == "chat":
        messages = body.get("messages") or []
        chars = sum(len(message_text(m)) for m in messages if isinstance(m, Mapping))
    else:
        prompt = body.get("prompt")
        chars = len(prompt) if isinstance(prompt, str) else len(json.dumps(prompt))
    return Usage(prompt_tokens=chars // 4, completion_tokens=completion_tokens, estimated=True)
