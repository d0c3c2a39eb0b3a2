"""One model behind Anthropic's Messages API (``POST {base_url}/messages``).

Configured with ``api: messages`` on a model. A request that came in through routecast's own
``/v1/messages`` reaches it as the client sent it (``model`` swapped for the upstream's name),
and its answer goes back as the upstream sent it, streamed or not (see
:mod:`routecast.backends.native`); any other request (chat, Responses, a cascade's probe) is
translated (:mod:`routecast.backends.anthropic_wire`). Retries, the circuit breaker and error
handling are :class:`~routecast.backends.openai_http.OpenAIHTTPBackend`'s; the key goes in
``x-api-key`` with ``anthropic-version``, as Anthropic's API expects.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from routecast.backends.anthropic_wire import (
    MessagesToChat,
    chat_to_messages,
    messages_to_chat,
    usage_of,
)
from routecast.backends.base import Chunk, Completion, Request, Usage
from routecast.backends.native_http import NativeHTTPBackend
from routecast.backends.transport import json_dumps, json_loads
from routecast.errors import UpstreamError, UpstreamTimeoutError

ANTHROPIC_VERSION = "2023-06-01"


class MessagesHTTPBackend(NativeHTTPBackend):
    """See the module docstring; takes :class:`OpenAIHTTPBackend`'s arguments."""

    def __init__(self, model: str, base_url: str, **kwargs: Any) -> None:
        super().__init__(model, base_url, **kwargs)
        self._headers.pop("Authorization", None)
        self._headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        if self._api_key:
            self._headers["x-api-key"] = self._api_key

    def __repr__(self) -> str:
        return f"MessagesHTTPBackend({self.model!r}, {self.base_url!r})"

    api = "messages"
    path = "/messages"
    answer_name = "a Messages answer"

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        return chat_to_messages(chat, self.upstream_model)

    def is_answer(self, data: dict[str, Any]) -> bool:
        return bool(data.get("type") == "message")

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        return messages_to_chat(data, self.model), usage_of(data.get("usage"))

    async def _stream(self, request: Request, t0: float) -> AsyncIterator[Chunk]:
        body, passthrough = self._body(request, stream=True)
        resp = await self._call(self.base_url + self.path, json_dumps(body), read_body=False)
        assert not isinstance(resp, bytes)
        route = [self.model]
        state = MessagesToChat(self.model)
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
                if event.get("type") == "error":
                    error = event.get("error") or {}
                    raise UpstreamError(f"{self._where()} failed mid-stream: "
                                        f"{self._scrub(str(error.get('message', error)))}",
                                        model=self.model)
                chunk = state.chunk(event)
                if passthrough:
                    if event.get("type") == "message_start":
                        event["message"] = {**event.get("message", {}), "model": self.model}
                    name = str(event.get("type", "")).encode()
                    raw = b"event: " + name + b"\ndata: " + json_dumps(event) + b"\n\n"
                    yield Chunk(chunk, self.model, route, raw=raw)
                elif chunk is not None:
                    yield Chunk(chunk, self.model, route)
                if state.ended:
                    break
        except TimeoutError as e:
            raise UpstreamTimeoutError(f"{self._where()}: {e}", model=self.model, status=504,
                                       code="upstream_timeout") from None
        except ConnectionError as e:
            raise UpstreamError(f"{self._where()}: the stream broke: {e}", model=self.model,
                                code="upstream_unreachable") from None
        finally:
            resp.release()
        if not state.ended:
            raise UpstreamError(f"{self._where()}: the stream broke off before message_stop",
                                model=self.model, code="upstream_unreachable")
        usage = state.usage
        final = Completion({}, self.model, usage, self.price.cost_usd(usage),
                           time.perf_counter() - t0, route)
        yield Chunk(None, self.model, route, final)
