"""Admission: what a completion request must pass before any backend is asked.

In order: the client's key (``auth.required``: 401 without a valid one), the body's size
(413), its JSON (400), a dialect's translation to chat (Messages, Responses), the fields
routecast acts on (400), the endpoint (404), the privacy rule (403: a sensitive prompt needs an
endpoint with a local model), the capability check (400 when no model of the endpoint can
serve the request; :mod:`routecast.server.capability_check`), a dialect's choice of what to ask
instead, then the key's budget and rate (429). :class:`Admission` does all of it for one
config; the server builds a new one when it reloads, and a request keeps the one it was
admitted by.

A :class:`Ticket` follows one request from arrival to its log row. Admission fills it in as it
gets further, so a refused request is logged and answered with what was known (the endpoint,
the body, the key's name); once the key's budget has admitted it, the ticket holds the key
until :meth:`Admission.settle` charges it, exactly once, whoever finishes the request.

Replicas sharing Redis (:mod:`routecast.state`) admit a key with a budget or a rate limit
there (one round trip; a 503 when Redis cannot answer); every other request, and every request
of a server without Redis, is admitted in-process without an ``await``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from routecast.backends.base import Api, Backend, Request
from routecast.backends.routed import SESSION_HEADER
from routecast.errors import RequestError
from routecast.server.wire import check_chat, check_completions, parse_json

if TYPE_CHECKING:
    from routecast.server.apis.common import Dialect
    from routecast.server.capability_check import CapabilityCheck, Verdict
    from routecast.server.keys import ClientKey, KeyStore
    from routecast.server.privacy import PrivacyRule


class Ticket:
    """One completion request: its route (``api``), its ``request_id`` (the
    ``x-routecast-request-id`` of its answer and its log row), arrival (``t0`` on the
    performance clock, ``ts`` as a timestamp), and, once known, its ``body`` (in chat form),
    ``endpoint``, the client key's name (``key_name``), the capability check's ``verdict``
    (set only when it ruled a model out) and the ``key`` it was admitted against (``None`` once
    settled, or without auth), with its ``reservation`` in the shared state (replicas sharing
    Redis; else ``None``)."""

    __slots__ = ("api", "body", "endpoint", "key", "key_name", "request_id", "reservation",
                 "t0", "ts", "verdict")

    def __init__(self, api: Api, request_id: str | None = None) -> None:
        self.api = api
        self.request_id = request_id
        self.t0 = time.perf_counter()
        self.ts = time.time()
        self.body: dict[str, Any] = {}
        self.endpoint = ""
        self.key_name: str | None = None
        self.verdict: Verdict | None = None
        self.key: ClientKey | None = None
        self.reservation: str | None = None


class Admission:
    """The checks of the module docstring, for one config: ``backends`` are its endpoints,
    ``max_body_bytes`` and ``max_messages`` its limits, ``capability`` its capability check;
    ``privacy`` and ``keys`` are optional (no privacy patterns, no auth)."""

    def __init__(self, backends: Mapping[str, Backend], *, max_body_bytes: int,
                 max_messages: int, capability: CapabilityCheck,
                 privacy: PrivacyRule | None = None, keys: KeyStore | None = None) -> None:
        self.backends = backends
        self.max_body = max_body_bytes
        self.max_messages = max_messages
        self.capability = capability
        self.privacy = privacy
        self.keys = keys

    async def admit(self, ticket: Ticket, headers: Mapping[str, str],
                    body_parts: AsyncIterator[bytes], dialect: Dialect | None = None
                    ) -> tuple[Backend, Request]:
        """The backend to ask and the request to ask it, or a :class:`RequestError` (a 413 as
        soon as the body is known to be too large). ``headers`` have lower-case names;
        ``body_parts`` is the body as it arrives; a ``dialect`` translates another API's body
        to chat and may choose what to ask instead of the endpoint's backend."""
        keys = self.keys
        client = None
        if keys is not None:
            authorization = headers.get("authorization")
            # A loaded key without an await; an unknown id waits for a paced read (keys.py).
            client = keys.cached(authorization) or await keys.authenticate(authorization)
            ticket.key_name = client.name
        # The body is read here, not through read_body: one coroutine less per request.
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        async for part in body_parts:
            size += len(part)
            if size > self.max_body:
                raise self._too_large()
            parts.append(part)
        body = ticket.body = parse_json(b"".join(parts))
        if dialect is not None:
            body = ticket.body = await dialect.to_chat(body)
        endpoint = ticket.endpoint = (check_chat(body, self.max_messages)
                                      if ticket.api == "chat" else check_completions(body))
        backend = self.backends.get(endpoint)
        if backend is None:
            raise self.unknown_endpoint(endpoint)
        allowed = self.privacy.allowed(body) if self.privacy is not None else None
        if allowed is not None and not any(m in allowed for m in backend.models):
            raise RequestError(
                f"this prompt matches a privacy pattern and endpoint {endpoint!r} has no "
                "model marked `local: true`; ask an endpoint with a local model",
                status=403, param="messages", code="privacy_rule")
        allowed, ticket.verdict = await self.capability.check(body, ticket.api, backend.models,
                                                              allowed, endpoint)
        request = Request(body, ticket.api, headers.get(SESSION_HEADER), allowed)
        if dialect is not None:
            backend = await dialect.before(backend, request)
        if keys is not None and client is not None:
            # Last: a request refused above takes nothing from the key. Shared across
            # replicas (Redis) only when the key has a budget or a rate limit to share.
            state = keys.state
            if state is not None and (client.budget_usd is not None or client.rpm):
                ticket.reservation = await state.admit_key(client)
            else:
                keys.admit(client)
            ticket.key = client
        return backend, request

    def settle(self, ticket: Ticket, cost_usd: float) -> None:
        """Charge what the request cost to its key (nothing if it has none, or was settled)."""
        key = ticket.key
        if key is not None and self.keys is not None:
            ticket.key = None
            reservation, ticket.reservation = ticket.reservation, None
            self.keys.settle(key, cost_usd, reservation)

    async def read_body(self, headers: Mapping[str, str], body_parts: AsyncIterator[bytes]
                        ) -> bytes:
        """A body no larger than ``limits.max_body_bytes`` (else a 413), for routes that read
        one outside :meth:`admit` (feedback, embeddings, token counts)."""
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        async for part in body_parts:
            size += len(part)
            if size > self.max_body:
                raise self._too_large()
            parts.append(part)
        return b"".join(parts)

    def _too_large(self) -> RequestError:
        return RequestError(f"the request body is larger than this server takes "
                            f"({self.max_body} bytes, limits.max_body_bytes)", status=413,
                            code="request_too_large")

    def unknown_endpoint(self, endpoint: str) -> RequestError:
        """The 404 for an endpoint this config does not serve, listing those it does."""
        names = list(self.backends)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        return RequestError(f"unknown model {endpoint!r}: this server's endpoints are {shown} "
                            "(GET /v1/models lists them)", status=404, param="model",
                            code="model_not_found")
