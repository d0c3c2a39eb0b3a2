"""The client's own request, for upstreams that speak the client's API natively.

When a client speaks the Messages or Responses API, the server translates its body to chat for
the composites (routing, fallbacks, cascades) and puts the original here, in a context
variable of the request's task. A backend whose upstream speaks that same API
(:class:`routecast.backends.messages_http.MessagesHTTPBackend`) then sends the original instead
of translating chat back: no lossy round trip, so fields chat has no words for (``thinking``,
``cache_control``, ``top_k``, signatures) survive. It does so only while the chat body it is
asked with is the very dict the server made (``request.body is chat``): a composite that
changes the request (a cascade's probe, a judge's samples) gets the translated path.

A native answer travels back inside the chat completion's body under :data:`NATIVE_KEY`, for
the server's dialect to send as it is.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

#: Where a chat completion body carries the upstream's native answer.
NATIVE_KEY = "routecast_native"

NativeApi = Literal["messages", "responses"]


@dataclass(frozen=True, slots=True)
class NativeRequest:
    api: NativeApi
    body: dict[str, Any]   # the client's body, as sent
    chat: dict[str, Any]   # the chat body made from it

    def serves(self, api: NativeApi, chat: dict[str, Any]) -> bool:
        """Whether a backend speaking ``api``, asked with ``chat``, may send the original."""
        return self.api == api and chat is self.chat


native_request: ContextVar[NativeRequest | None] = ContextVar("native_request", default=None)
