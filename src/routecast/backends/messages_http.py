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

from typing import Any

from routecast.backends.anthropic_wire import (
    MessagesToChat,
    chat_to_messages,
    messages_to_chat,
    usage_of,
)
from routecast.backends.base import Usage
from routecast.backends.native_http import NativeHTTPBackend

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
    stream_end = "message_stop"

    def from_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        return chat_to_messages(chat, self.upstream_model)

    def is_answer(self, data: dict[str, Any]) -> bool:
        return bool(data.get("type") == "message")

    def to_chat(self, data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        return messages_to_chat(data, self.model), usage_of(data.get("usage"))

    def stream_translator(self) -> MessagesToChat:
        return MessagesToChat(self.model)

    def stream_error(self, event: dict[str, Any]) -> str | None:
        if event.get("type") != "error":
            return None
        error = event.get("error") or {}
        return str(error.get("message", error))

    def final_usage(self, translator: MessagesToChat) -> Usage | None:
        return translator.usage if translator.ended else None

    def passthrough_event(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("type") == "message_start":
            event["message"] = {**event.get("message", {}), "model": self.model}
        return event
