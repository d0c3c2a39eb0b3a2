"""What the backends of upstreams speaking another API share: building the body to send (the
client's own, or a translation of chat) and reading a whole answer back into chat.

:class:`~routecast.backends.messages_http.MessagesHTTPBackend` and
:class:`~routecast.backends.responses_http.ResponsesHTTPBackend` set the class attributes and
the three translation hooks; each keeps its own stream reader, since the two APIs' events
differ.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from routecast.backends.base import Completion, Request, Usage
from routecast.backends.native import NATIVE_KEY, NativeApi, native_request
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.transport import json_dumps, json_loads
from routecast.errors import UpstreamError


class NativeHTTPBackend(OpenAIHTTPBackend):
    """An upstream speaking ``api`` at ``{base_url}{path}``; see the module docstring."""

    api: ClassVar[NativeApi]
    path: ClassVar[str]
    #: Set on the client's own body when it is passed through (e.g. ``store: false``).
    passthrough_fields: ClassVar[dict[str, Any]] = {}
    #: The answer's name in error messages (``"a Messages answer"``).
    answer_name: ClassVar[str]

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        """The upstream's body for a chat body (translated)."""
        raise NotImplementedError

    def is_answer(self, data: dict[str, Any]) -> bool:
        """Whether a decoded answer has the upstream API's shape."""
        raise NotImplementedError

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """A whole answer as a chat completion body, and its usage."""
        raise NotImplementedError

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
