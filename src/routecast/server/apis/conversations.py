"""Cascades decide per conversation too: a conversation that escalated stays escalated.

A cascade judges each turn afresh; in an agent's conversation that means asking the cheap
model again on every turn of a task it already failed (and agents' tool-call turns cannot be
judged, so they escalate anyway), paying for it and breaking the strong model's prompt cache.
So for the Messages and Responses APIs, a cascade endpoint remembers, per conversation key
(:mod:`routecast.server.apis.common`), the step its latest turn was answered at, and starts the
next turn there: the conversation can escalate further, never back down. A new conversation
starts at the first step. Memory is a bounded LRU per endpoint, like routed endpoints' pins;
replicas sharing Redis (:mod:`routecast.state`) keep the step there instead
(:meth:`~routecast.state.base.SharedState.raise_step`: it only ever grows), so a conversation
stays escalated whatever replica its next turn lands on.
The response header ``x-routecast-route-reason`` reads ``conversation-escalated`` when a turn
started past the first step, ``conversation-first-step`` when it started at the first.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from routecast.backends.base import Backend, Chunk, Completion, Request, close_stream
from routecast.backends.cascade import CascadeBackend
from routecast.backends.routed import SessionPins
from routecast.cascades.cascade import Cascade

if TYPE_CHECKING:
    from routecast.state.base import SharedState


class _Entry:
    """One cascade endpoint's conversations and its cascades from each step on."""

    def __init__(self, backend: CascadeBackend, max_sessions: int,
                 shared: SharedState | None) -> None:
        self.pins = SessionPins(max_sessions)
        self.shared = shared
        #: The scope of this endpoint's steps in the shared state.
        self.scope = f"cascade:{backend.name}"
        cascade = backend.cascade
        models = dict(zip(cascade.models, backend.members, strict=True))
        self.suffixes: list[Backend] = [backend]
        for k in range(1, len(cascade.models)):
            tail = Cascade(cascade.models[k:], cascade.thresholds[k:], cascade.signal)
            self.suffixes.append(CascadeBackend(tail, models, name=backend.name,
                                                summary=backend.summary, judge=backend.judge))
        self.steps = {m: k for k, m in enumerate(cascade.models)}


class ConversationCascades:
    """Hands out, per request, the cascade to run for its conversation; ``shared`` is the
    state replicas share (``None``: this process remembers)."""

    def __init__(self, max_sessions: int = 10_000, shared: SharedState | None = None) -> None:
        self.max_sessions = max_sessions
        self.shared = shared
        self._entries: weakref.WeakKeyDictionary[CascadeBackend, _Entry] = (
            weakref.WeakKeyDictionary())

    async def backend_for(self, backend: Backend, key: str | None
                          ) -> tuple[Backend, int | None]:
        """(what to ask, the step the conversation starts at); ``(backend, None)`` for
        anything but a cascade, or without a key."""
        if key is None or not isinstance(backend, CascadeBackend):
            return backend, None
        entry = self._entries.get(backend)
        if entry is None:
            entry = self._entries[backend] = _Entry(backend, self.max_sessions, self.shared)
        shared = entry.shared
        step = (entry.pins.get(key) if shared is None
                else await shared.get_pin(entry.scope, key))
        start = min(int(step), len(entry.suffixes) - 1) if step and step.isdigit() else 0
        return _Remember(entry.suffixes[start], entry, key, start), start


class _Remember(Backend):
    """Runs ``inner`` and remembers the step that answered for the conversation ``key``."""

    def __init__(self, inner: Backend, entry: _Entry, key: str, start: int) -> None:
        self.inner, self.entry, self.key, self.first = inner, entry, key, start
        self.name, self.models = inner.name, inner.models

    def usable(self, request: Request) -> bool:
        return self.inner.usable(request)

    async def _note(self, model: str) -> None:
        step = max(self.entry.steps.get(model, self.first), self.first)
        shared = self.entry.shared
        if shared is None:
            self.entry.pins.set(self.key, str(step))
        else:  # before the answer goes out: the next turn may land on another replica
            await shared.raise_step(self.entry.scope, self.key, step)

    async def complete(self, request: Request) -> Completion:
        done = await self.inner.complete(request)
        await self._note(done.model)
        return done

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        chunks = self.inner.stream(request)
        try:
            async for chunk in chunks:
                if chunk.final is not None:
                    await self._note(chunk.final.model)
                yield chunk
        finally:
            await close_stream(chunks)
