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

from typing import Any, ClassVar

from routecast.backends.base import Usage
from routecast.backends.native_http import NativeHTTPBackend
from routecast.backends.responses_wire import (
    ResponsesToChat,
    chat_to_responses,
    responses_to_chat,
    usage_of,
)


class ResponsesHTTPBackend(NativeHTTPBackend):
    """See the module docstring; takes :class:`OpenAIHTTPBackend`'s arguments."""

    def __repr__(self) -> str:
        return f"ResponsesHTTPBackend({self.model!r}, {self.base_url!r})"

    api = "responses"
    path = "/responses"
    # routecast keeps the conversation itself (previous_response_id is expanded here).
    passthrough_fields: ClassVar[dict[str, Any]] = {"store": False}
    answer_name = "a response object"
    stream_end = "response.completed"

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        return chat_to_responses(chat, self.upstream_model)

    def is_answer(self, data: dict[str, Any]) -> bool:
        return bool(data.get("object") == "response")

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        return responses_to_chat(data, self.model), usage_of(data.get("usage"))

    def stream_translator(self) -> ResponsesToChat:
        return ResponsesToChat(self.model)

    def stream_error(self, event: dict[str, Any]) -> str | None:
        if event.get("type") not in ("error", "response.failed"):
            return None
        error = event.get("error") or (event.get("response") or {}).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)

    def final_usage(self, translator: ResponsesToChat) -> Usage | None:
        response = translator.response
        return None if response is None else usage_of(response.get("usage"))
