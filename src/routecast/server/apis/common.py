"""What every dialect shares: the interface the server calls, conversation keys, SSE framing.

**Conversation keys.** An agent re-sends its whole conversation every turn; routing each turn
afresh would switch models mid-task (changing tone and throwing away the upstream's prompt
cache). So a routed endpoint decides once per conversation: the dialect derives a key and the
server's usual session pinning (:class:`routecast.backends.routed.SessionPins`) keeps every
later turn on the model the first turn was routed to. The key is, first match wins:

1. the ``x-routecast-session`` header (as for chat);
2. the client's own end-user id: Messages ``metadata.user_id`` (Claude Code puts its session id
   there), Responses ``user``;
3. Responses only: ``prompt_cache_key`` (Codex CLI sends its conversation id), else the first
   response of a ``previous_response_id`` chain;
4. a hash of the system prompt / instructions and the first user turn: stable across the turns
   of one conversation, different between conversations.

Keys of kind 3 and 4 are sent upstream as the chat ``user`` field (an opaque id, the use
OpenAI documents for it), which is also what the request log's ``session`` column records. The
response headers say what happened: ``x-routecast-conversation`` (the key) and
``x-routecast-route-reason`` (routed endpoints: ``conversation-first-turn`` or
``conversation-pinned``; cascades: ``conversation-first-step`` or ``conversation-escalated``,
see :mod:`routecast.server.apis.conversations`; else ``per-request``). With
``apis.pin_conversations: false`` no key is derived and every turn is routed on its own.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from routecast.backends.transport import json_dumps

if TYPE_CHECKING:
    from starlette.responses import Response

    from routecast.backends.base import Backend, Completion, Request
    from routecast.server.apis.conversations import ConversationCascades
    from routecast.state.base import SharedState

__all__ = ["Conversation", "Dialect", "conversation_hash", "event", "new_id", "parse_events",
           "route_reason"]


class Dialect(Protocol):
    """One request in a non-chat API, as :meth:`RoutecastServer._answer` drives it."""

    async def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat request for the client's ``body``; raises ``RequestError`` on bad input."""

    async def before(self, backend: Backend, request: Request) -> Backend:
        """Called once the endpoint's backend is known: what to ask instead (a cascade started
        where the conversation got to), noting why in the headers."""

    async def answer(self, completion: Completion) -> tuple[dict[str, Any], dict[str, str]]:
        """The client's answer body and extra headers for a finished chat completion."""

    def stream(self, response: Response) -> Response:
        """The client's event stream in place of the chat SSE ``response``."""

    def error(self, response: Response) -> Response:
        """The client's error answer in place of an OpenAI-shaped one."""


def new_id(prefix: str) -> str:
    """A fresh opaque id, e.g. ``msg_3f2a...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def conversation_hash(*parts: Any) -> str:
    """A short stable key for a conversation, from its opening parts (JSON-encoded)."""
    digest = hashlib.sha256(b"\x00".join(json_dumps(p) for p in parts)).hexdigest()
    return f"conv_{digest[:24]}"


class Conversation:
    """The conversation-routing half every dialect shares: ``key`` (set by ``to_chat``),
    ``headers`` for the answer, and :meth:`before`."""

    def __init__(self, cascades: ConversationCascades | None) -> None:
        self.cascades = cascades
        self.key: str | None = None
        self.headers: dict[str, str] = {}

    async def before(self, backend: Backend, request: Request) -> Backend:
        key = request.session or self.key
        reason = await route_reason(backend, key)
        if self.cascades is not None:
            backend, start = await self.cascades.backend_for(backend, key)
            if start is not None:  # a cascade, in a conversation
                reason = "conversation-escalated" if start else "conversation-first-step"
        self.headers["x-routecast-route-reason"] = reason
        if key is not None:
            self.headers["x-routecast-conversation"] = key
        return backend


async def route_reason(backend: Backend, key: str | None) -> str:
    """Why this turn goes where it goes: pinned to its conversation's model, the conversation's
    first turn (routing decides now and pins), or routed on its own. Replicas sharing pins
    (:mod:`routecast.state`) ask the shared state when their own view has no pin yet."""
    pins = getattr(backend, "pins", None)
    if key is None or pins is None:
        return "per-request"
    pinned = pins.get(key)
    shared: SharedState | None = getattr(backend, "shared_pins", None)
    if pinned is None and shared is not None:
        pinned = await shared.get_pin(backend.name, key)
    return "conversation-pinned" if pinned is not None else "conversation-first-turn"


def event(name: str, data: Mapping[str, Any]) -> bytes:
    """One named server-sent event (``event: NAME`` then its JSON ``data``)."""
    return b"event: " + name.encode() + b"\ndata: " + json_dumps(data) + b"\n\n"


def parse_events(piece: bytes) -> list[dict[str, Any]]:
    """The JSON objects of the ``data:`` lines of some server-sent events (``[DONE]`` and
    anything that is not an object skipped)."""
    from routecast.backends.transport import json_loads

    out: list[dict[str, Any]] = []
    for line in piece.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                data = json_loads(payload)
                if isinstance(data, dict):
                    out.append(data)
    return out


async def translated(events: AsyncIterator[bytes], translate: Any) -> AsyncIterator[bytes]:
    """The chat SSE ``events`` of the server, each piece run through ``translate`` (a callable
    from the chat event objects of one piece to the client's bytes); empty pieces dropped.
    Closing this closes ``events``, which logs and releases the upstream."""
    try:
        async for piece in events:
            out = translate(parse_events(piece))
            if out:
                yield out
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def error_parts(response: Response) -> tuple[int, str, str | None, str | None]:
    """(status, message, param, code) of one of the server's OpenAI-shaped error answers."""
    from routecast.backends.transport import json_loads

    status = response.status_code
    try:
        error = json_loads(bytes(response.body)).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    return (status, str(error.get("message") or "error"), error.get("param"),
            error.get("code"))


def copy_headers(old: Response, new: Response) -> Response:
    """Carry the headers routecast set on ``old`` (retry-after, x-routecast-*) to ``new``."""
    for name, value in old.headers.items():
        if name == "retry-after" or name.startswith("x-routecast-"):
            new.headers[name] = value
    return new
