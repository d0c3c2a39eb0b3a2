"""One model behind OpenAI's Responses API (``POST {base_url}/responses``).

Configured with ``api: responses`` on a model. A request that came in through routecast's own
``/v1/responses`` reaches it as the client sent it, except that a ``previous_response_id`` is
expanded into the stored conversation (routecast keeps conversations itself) and ``store`` is
false upstream; the answer goes back as the upstream gave it, with routecast's response id
(see :mod:`routecast.backends.native`). Any other request is translated
(:mod:`routecast.backends.responses_wire`). Retries, the circuit breaker and errors are
:class:`~routecast.backends.openai_http.OpenAIHTTPBackend`'s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from routecast.backends.base import Chunk, Completion, Request, Usage
from routecast.backends.native_http import NativeHTTPBackend
from routecast.backends.responses_wire import (
    ResponsesToChat,
    chat_to_responses,
    responses_to_chat,
    usage_of,
)
from routecast.backends.transport import json_dumps, json_loads
from routecast.errors import UpstreamError, UpstreamTimeoutError


class ResponsesHTTPBackend(NativeHTTPBackend):
    """See the module docstring; takes :class:`OpenAIHTTPBackend`'s arguments."""

    def __repr__(self) -> str:
        return f"ResponsesHTTPBackend({self.model!r}, {self.base_url!r})"

    api = "responses"
    path = "/responses"
    # routecast keeps the conversation itself (previous_response_id is expanded here).
    passthrough_fields: ClassVar[dict[str, Any]] = {"store": False}
    answer_name = "a response object"

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        return chat_to_responses(chat, self.upstream_model)

    def is_answer(self, data: dict[str, Any]) -> bool:
        return bool(data.get("object") == "response")

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        return responses_to_chat(data, self.model), usage_of(data.get("usage"))

    async def _stream(self, request: Request, t0: float) -> AsyncIterator[Chunk]:
        body, passthrough = self._body(request, stream=True)
        resp = await self._call(self.base_url + self.path, json_dumps(body),
                                read_body=False)
        assert not isinstance(resp, bytes)
        route = [self.model]
        state = ResponsesToChat(self.model)
        try:
            async for line in resp.lines():
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                try:
                    event = json_loads(line[5:].strip())
                except (ValueError, RecursionError):
                    raise UpstreamError(f"{self._where()} sent a stream event that is not JSON",
                                        model=self.model, code="upstream_bad_response") from None
                if not isinstance(event, dict):
                    continue
                if event.get("type") in ("error", "response.failed"):
                    error = event.get("error") or (event.get("response") or {}).get("error")
                    message = error.get("message") if isinstance(error, dict) else error
                    raise UpstreamError(f"{self._where()} failed mid-stream: "
                                        f"{self._scrub(str(message))}", model=self.model)
                chunk = state.chunk(event)
                if passthrough:
                    name = str(event.get("type", "")).encode()
                    raw = b"event: " + name + b"\ndata: " + json_dumps(event) + b"\n\n"
                    yield Chunk(chunk, self.model, route, raw=raw)
                elif chunk is not None:
                    yield Chunk(chunk, self.model, route)
                if state.response is not None:
                    break
        except TimeoutError as e:
            raise UpstreamTimeoutError(f"{self._where()}: {e}", model=self.model, status=504,
                                       code="upstream_timeout") from None
        except ConnectionError as e:
            raise UpstreamError(f"{self._where()}: the stream broke: {e}", model=self.model,
                                code="upstream_unreachable") from None
        finally:
            resp.release()
        if state.response is None:
            raise UpstreamError(f"{self._where()}: the stream broke off before "
                                "response.completed", model=self.model,
                                code="upstream_unreachable")
        usage = usage_of(state.response.get("usage"))
        final = Completion({}, self.model, usage, self.price.cost_usd(usage),
                           time.perf_counter() - t0, route)
        yield Chunk(None, self.model, route, final)
