"""A chat SSE stream turned into the Messages API's named events, as it goes.

The sequence a client gets (Anthropic's streaming reference)::

    message_start, ping,
    per content block: content_block_start, content_block_delta..., content_block_stop,
    message_delta (stop_reason, usage), message_stop

Text deltas become ``text_delta`` events of a ``text`` block, tool-call deltas ``tool_use``
blocks with ``input_json_delta`` events, ``reasoning_content`` deltas ``thinking`` blocks with
``thinking_delta``. The server's last chat event (its ``routecast`` summary, with usage) closes
the message. An error event of the chat stream (the upstream died midway, the deadline passed)
becomes Anthropic's ``error`` event, and the stream ends there.
"""

from __future__ import annotations

from typing import Any

from routecast.server.apis.anthropic import STOP_REASONS, error_body
from routecast.server.apis.common import event, new_id

NATIVE_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_delta", "message_stop", "ping"})


class MessagesStream:
    """The state of one translated stream; :meth:`translate` is fed each piece's events."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.started = False
        self.index = -1            # the open content block, -1 before the first
        self.block: str | None = None  # its type
        self.tools: dict[int, int] = {}  # chat tool-call index -> content block index
        self.finish: str | None = None
        self.ended = False
        self.native = False

    def translate(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if self.ended:
                break
            if "error" in chunk and "choices" not in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                status = {"rate_limit_error": 429, "upstream_error": 502,
                          "server_error": 500}.get(str(error.get("type")), 500)
                if error.get("code") == "deadline_exceeded":
                    status = 504
                out.append(event("error", error_body(status, str(error.get("message")))))
                self.ended = True
                break
            kind = chunk.get("type")
            if kind in NATIVE_EVENTS:  # from an upstream that speaks Messages: as it is
                self.started = self.native = True
                out.append(event(str(kind), chunk))
                continue
            if self.native:  # the server's summary: the native events said it all
                self.ended = "routecast" in chunk
                continue
            if not self.started:
                self._start(chunk, out)
            for choice in chunk.get("choices") or ():
                self._choice(choice, out)
            if "routecast" in chunk:
                self._finish(chunk["routecast"], out)
        return b"".join(out)

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self.started = True
        message = {"id": self.message_id, "type": "message", "role": "assistant",
                   "model": chunk.get("model", ""), "content": [], "stop_reason": None,
                   "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        out.append(event("message_start", {"type": "message_start", "message": message}))
        out.append(event("ping", {"type": "ping"}))

    def _open(self, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self.index += 1
        self.block = block["type"]
        out.append(event("content_block_start", {"type": "content_block_start",
                                                 "index": self.index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self.block is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop",
                                                    "index": self.index}))
            self.block = None

    def _delta(self, delta: dict[str, Any], out: list[bytes], index: int | None = None
               ) -> None:
        out.append(event("content_block_delta", {
            "type": "content_block_delta", "index": self.index if index is None else index,
            "delta": delta}))

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self.block != "thinking":
                self._open({"type": "thinking", "thinking": "", "signature": ""}, out)
            self._delta({"type": "thinking_delta", "thinking": reasoning}, out)
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.block != "text":
                self._open({"type": "text", "text": ""}, out)
            self._delta({"type": "text_delta", "text": text}, out)
        for call in delta.get("tool_calls") or ():
            position = call.get("index", 0)
            function = call.get("function") or {}
            if position not in self.tools:
                self._open({"type": "tool_use", "id": call.get("id") or new_id("toolu"),
                            "name": function.get("name", ""), "input": {}}, out)
                self.tools[position] = self.index
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                self._delta({"type": "input_json_delta", "partial_json": arguments}, out,
                            self.tools[position])
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]

    def _finish(self, summary: dict[str, Any], out: list[bytes]) -> None:
        if not self.started:
            self._start({"model": summary.get("model", "")}, out)
        self._close(out)
        usage = summary.get("usage") or {}
        prompt, cached = usage.get("prompt_tokens", 0), usage.get("cached_tokens", 0)
        reason = "tool_use" if self.tools else STOP_REASONS.get(self.finish or "stop",
                                                                 "end_turn")
        out.append(event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"input_tokens": prompt - min(cached, prompt),
                      "output_tokens": usage.get("completion_tokens", 0),
                      "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": min(cached, prompt)}}))
        out.append(event("message_stop", {"type": "message_stop"}))
        self.ended = True
