"""A streamed answer, kept for learning: the whole answer the chunks of a stream make.

A stream's final :class:`~routecast.backends.base.Completion` has an empty body (its text went
to the client piece by piece), while a judge needs the answer's text. A stream to an endpoint
that learns therefore keeps every chunk as it forwards it (one list append each, in the loop of
:func:`routecast.server.streaming.start_stream`: nothing is parsed on the way) and, once the
stream has ended normally, hands them to the learning service, whose intake calls
:func:`answered` (off the request's path, and only for a request it learns from) to assemble
choice 0's text into the body a non-streamed answer would have had. Streams to other endpoints
keep nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from routecast.backends.base import Api, Chunk, Completion
from routecast.backends.transport import json_reader


def answered(final: Completion, seen: Iterable[Chunk], api: Api) -> Completion:
    """``final`` (a stream's summary, whose body is empty) with the body of the same answer
    not streamed: choice 0's text, assembled from the chunks ``seen`` (chat's
    ``message.content``, or a completion's ``text``; ``None`` content when the answer had no
    text, only tool calls). Only what learning reads is rebuilt: no log-probs, no tool calls."""
    parts: list[str] = []
    for chunk in seen:
        raw = chunk.raw
        events: Iterable[dict[str, Any]]
        # ``data`` is the last event of ``raw``; a block of several events (what one network
        # read brought) is read in full, and so is a final chunk's (its ``data`` is the usage
        # chunk, its ``raw`` the events that came with the end).
        if raw is not None and (chunk.final is not None or raw.count(b"\n\n") > 1):
            events = _events(raw)
        elif chunk.data is not None:
            events = (chunk.data,)
        else:
            continue
        for event in events:  # (inline, and dict rather than Mapping: once per chunk)
            choices = event.get("choices")
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str) and text:
                    parts.append(text)
    whole = "".join(parts)
    first: dict[str, Any] = ({"index": 0, "message": {
        "role": "assistant", "content": whole if parts else None}} if api == "chat"
        else {"index": 0, "text": whole})
    return replace(final, body={"model": final.model, "choices": [first]})


def _events(raw: bytes) -> Iterable[dict[str, Any]]:
    """The JSON objects of a block of server-sent events (others skipped)."""
    loads = json_reader(raw)
    for line in raw.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            event = loads(line[5:].strip())
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield event

