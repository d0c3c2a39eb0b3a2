"""What the backends of upstreams speaking another API share: building the body to send (the
client's own, or a translation of chat) and reading a whole answer back into chat.

:class:`~routecast.backends.messages_http.MessagesHTTPBackend` and
:class:`~routecast.backends.responses_http.ResponsesHTTPBackend` set the class attributes and
the translation hooks: three for whole answers, and four that tell the one stream reader
(:meth:`NativeHTTPBackend._stream`) how the API's events say a stream failed, ended and what
it used.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Protocol

from routecast.backends.base import Chunk, Completion, Request, Usage
from routecast.backends.native import NATIVE_KEY, NativeApi, native_request
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.transport import json_dumps, json_loads
from routecast.errors import UpstreamError, UpstreamTimeoutError


class StreamTranslator(Protocol):
    """Reads one stream's events in order; :meth:`chunk` is each one's chat chunk, if any."""

    def chunk(self, event: Mapping[str, Any]) -> dict[str, Any] | None: ...


class NativeHTTPBackend(OpenAIHTTPBackend):
    """An upstream speaking ``api`` at ``{base_url}{path}``; see the module docstring."""

    api: ClassVar[NativeApi]
    path: ClassVar[str]
    #: Set on the client's own body when it is passed through (e.g. ``store: false``).
    passthrough_fields: ClassVar[dict[str, Any]] = {}
    #: The answer's name in error messages (``"a Messages answer"``).
    answer_name: ClassVar[str]
    #: The event a whole stream ends with, for the error when one breaks off before it.
    stream_end: ClassVar[str]

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        """The upstream's body for a chat body (translated)."""
        raise NotImplementedError

    def is_answer(self, data: dict[str, Any]) -> bool:
        """Whether a decoded answer has the upstream API's shape."""
        raise NotImplementedError

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """A whole answer as a chat completion body, and its usage."""
        raise NotImplementedError

    def stream_translator(self) -> StreamTranslator:
        """A new reader of one stream's events."""
        raise NotImplementedError

    def stream_error(self, event: dict[str, Any]) -> str | None:
        """The upstream's message when ``event`` reports that the stream failed."""
        raise NotImplementedError

    def final_usage(self, translator: Any) -> Usage | None:
        """What the stream used, once ``translator`` has read its end event (``None`` before)."""
        raise NotImplementedError

    def passthrough_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event as the client gets it when its own body was passed through."""
        return event

    def _body(self, request: Request, stream: bool) -> tuple[dict[str, Any], bool]:
        """(the body to send, whether it is the client's own)."""
        native = native_request.get()
        if native is not None and native.serves(self.api, request.body):
            body = {**native.body, "model": self.upstream_model, **self.passthrough_fields}
            passthrough = True
        else:
            body = self.from_chat(request.body)
            passthrough = False
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body, passthrough

    async def _complete(self, request: Request, t0: float) -> Completion:
        body, passthrough = self._body(request, stream=False)
        raw = await self._call(self.base_url + self.path, json_dumps(body), read_body=True)
        assert isinstance(raw, bytes)
        try:
            data = json_loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or not self.is_answer(data):
            start = self._scrub(raw[:200].decode("utf-8", "replace"))
            raise UpstreamError(f"{self._where()} answered with something that is not "
                                f"{self.answer_name}: {start!r}", model=self.model,
                                code="upstream_bad_response")
        chat, usage = self.to_chat(data)
        if passthrough:
            chat[NATIVE_KEY] = {**data, "model": self.model}
        return Completion(chat, self.model, usage, self.price.cost_usd(usage),
                          time.perf_counter() - t0, [self.model])

    async def _stream(self, request: Request, t0: float) -> AsyncIterator[Chunk]:
        body, passthrough = self._body(request, stream=True)
        resp = await self._call(self.base_url + self.path, json_dumps(body), read_body=False)
        assert not isinstance(resp, bytes)
        route = [self.model]
        translator = self.stream_translator()
        usage: Usage | None = None
        try:
            async for line in resp.lines():
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # `event:` names repeat the data's type
                try:
                    event = json_loads(line[5:].strip())
                except (ValueError, RecursionError):
                    raise UpstreamError(f"{self._where()} sent a stream event that is not JSON",
                                        model=self.model, code="upstream_bad_response") from None
                if not isinstance(event, dict):
                    continue
                message = self.stream_error(event)
                if message is not None:
                    raise UpstreamError(f"{self._where()} failed mid-stream: "
                                        f"{self._scrub(message)}", model=self.model)
                chunk = translator.chunk(event)
                if passthrough:
                    event = self.passthrough_event(event)
                    name = str(event.get("type", "")).encode()
                    raw = b"event: " + name + b"\ndata: " + json_dumps(event) + b"\n\n"
                    yield Chunk(chunk, self.model, route, raw=raw)
                elif chunk is not None:
                    yield Chunk(chunk, self.model, route)
                usage = self.final_usage(translator)
                if usage is not None:
                    break
        except TimeoutError as e:
            raise UpstreamTimeoutError(f"{self._where()}: {e}", model=self.model, status=504,
                                       code="upstream_timeout") from None
        except ConnectionError as e:
            raise UpstreamError(f"{self._where()}: the stream broke: {e}", model=self.model,
                                code="upstream_unreachable") from None
        finally:
            resp.release()
        if usage is None:
            raise UpstreamError(f"{self._where()}: the stream broke off before "
                                f"{self.stream_end}", model=self.model,
                                code="upstream_unreachable")
        final = Completion({}, self.model, usage, self.price.cost_usd(usage),
                           time.perf_counter() - t0, route)
        yield Chunk(None, self.model, route, final)
