"""A chat SSE stream turned into the Responses API's typed events, as it goes.

The sequence a client gets (OpenAI's streaming reference), each event with its ``type`` as the
SSE event name and a ``sequence_number``::

    response.created, response.in_progress,
    for the text: response.output_item.added (message), response.content_part.added,
        response.output_text.delta..., response.output_text.done, response.content_part.done,
        response.output_item.done
    per tool call: response.output_item.added (function_call),
        response.function_call_arguments.delta..., response.function_call_arguments.done,
        response.output_item.done
    response.completed (or response.incomplete when max_output_tokens cut it short)

The completed response is stored (unless ``store: false``) before ``response.completed`` is
sent, so a client can continue from it as soon as it has seen it. An error event of the chat
stream becomes an ``error`` event followed by ``response.failed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from routecast.backends.base import Usage
from routecast.server.apis.common import event, new_id, parse_events
from routecast.server.apis.responses import call_item, message_item

if TYPE_CHECKING:
    from routecast.server.apis.responses import ResponsesDialect


class _Call:
    __slots__ = ("arguments", "call_id", "item_id", "name", "output_index")

    def __init__(self, item_id: str, call_id: str, name: str, output_index: int) -> None:
        self.item_id, self.call_id, self.name = item_id, call_id, name
        self.output_index = output_index
        self.arguments = ""


class ResponsesStream:
    """The state of one translated stream."""

    def __init__(self, dialect: ResponsesDialect) -> None:
        self.dialect = dialect
        self.seq = 0
        self.model = ""
        self.started = False
        self.output: list[dict[str, Any] | None] = []  # finished items, by output index
        self.text_item: str | None = None  # the open message item's id
        self.text_index = -1
        self.text = ""
        self.calls: dict[int, _Call] = {}
        self.open_call: _Call | None = None
        self.finish: str | None = None
        self.summary: dict[str, Any] | None = None
        self.failed = False
        self.native = False
        self.native_final: dict[str, Any] | None = None

    def _native(self, kind: str, chunk: dict[str, Any], out: list[bytes]) -> None:
        """An upstream's own event, passed on with routecast's response id and model; the
        final one is held until the response is stored."""
        self.started = self.native = True
        response = chunk.get("response")
        if isinstance(response, dict):
            self.model = self.model or str(response.get("model", ""))
            if kind in ("response.completed", "response.incomplete"):
                self.native_final = chunk
                return
            chunk = {**chunk, "response": {**response, "id": self.dialect.response_id}}
        out.append(event(kind, chunk))

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        data = {"type": name, "sequence_number": self.seq, **data}
        self.seq += 1
        return event(name, data)

    async def run(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The client's events for the server's chat ``events``; closing it closes them."""
        try:
            async for piece in events:
                out = self.translate(parse_events(piece))
                if self.native_final is not None:
                    final, self.native_final = self.native_final, None
                    response = await self.dialect.finish(self.model, [], None, None,
                                                         final["response"])
                    out += event(str(final["type"]), {**final, "response": response})
                    self.summary = None
                if self.summary is not None:
                    out += await self._complete(self.summary)
                    self.summary = None
                if out:
                    yield out
                if self.failed:
                    break
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def translate(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if "error" in chunk and "choices" not in chunk:
                self._fail(chunk["error"] if isinstance(chunk["error"], dict) else {}, out)
                break
            kind = chunk.get("type")
            if isinstance(kind, str) and kind.startswith("response.") and "choices" not in chunk:
                self._native(kind, chunk, out)  # from an upstream that speaks Responses
                continue
            if self.native:  # the server's summary: the native events said it all
                if "routecast" in chunk:
                    self.model = str(chunk["routecast"].get("model") or self.model)
                continue
            if not self.started:
                self._start(str(chunk.get("model", "")), out)
            for choice in chunk.get("choices") or ():
                self._choice(choice, out)
            if "routecast" in chunk:
                self._close_text(out)
                self._close_call(out)
                self.summary = chunk["routecast"]
        return b"".join(out)

    def _start(self, model: str, out: list[bytes]) -> None:
        self.started = True
        self.model = model
        response = self.dialect.response(model, [], None, "in_progress")
        out.append(self._event("response.created", {"response": response}))
        out.append(self._event("response.in_progress", {"response": response}))

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.text_item is None:
                self._close_call(out)
                self.text_item = new_id("msg")
                self.text_index = len(self.output)
                self.output.append(None)
                out.append(self._event("response.output_item.added", {
                    "output_index": self.text_index,
                    "item": message_item(self.text_item, "", "in_progress")}))
                out.append(self._event("response.content_part.added", {
                    "item_id": self.text_item, "output_index": self.text_index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [],
                             "logprobs": []}}))
            self.text += text
            out.append(self._event("response.output_text.delta", {
                "item_id": self.text_item, "output_index": self.text_index,
                "content_index": 0, "delta": text, "logprobs": []}))
        for tool_call in delta.get("tool_calls") or ():
            position = tool_call.get("index", 0)
            function = tool_call.get("function") or {}
            call = self.calls.get(position)
            if call is None:
                self._close_text(out)
                self._close_call(out)
                call = _Call(new_id("fc"), tool_call.get("id") or new_id("call"),
                             function.get("name", ""), len(self.output))
                self.output.append(None)
                self.calls[position] = self.open_call = call
                out.append(self._event("response.output_item.added", {
                    "output_index": call.output_index,
                    "item": call_item(call.item_id, call.call_id, call.name, "",
                                      "in_progress")}))
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                call.arguments += arguments
                out.append(self._event("response.function_call_arguments.delta", {
                    "item_id": call.item_id, "output_index": call.output_index,
                    "delta": arguments}))
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]

    def _close_text(self, out: list[bytes]) -> None:
        if self.text_item is None:
            return
        where = {"item_id": self.text_item, "output_index": self.text_index,
                 "content_index": 0}
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        out.append(self._event("response.output_text.done", {**where, "text": self.text,
                                                              "logprobs": []}))
        out.append(self._event("response.content_part.done", {**where, "part": part}))
        item = message_item(self.text_item, self.text)
        self.output[self.text_index] = item
        out.append(self._event("response.output_item.done", {
            "output_index": self.text_index, "item": item}))
        self.text_item = None
        self.text = ""

    def _close_call(self, out: list[bytes]) -> None:
        call = self.open_call
        if call is None:
            return
        arguments = call.arguments or "{}"
        out.append(self._event("response.function_call_arguments.done", {
            "item_id": call.item_id, "output_index": call.output_index, "name": call.name,
            "arguments": arguments}))
        item = call_item(call.item_id, call.call_id, call.name, arguments)
        self.output[call.output_index] = item
        out.append(self._event("response.output_item.done", {
            "output_index": call.output_index, "item": item}))
        self.open_call = None

    async def _complete(self, summary: dict[str, Any]) -> bytes:
        if not self.started:
            out: list[bytes] = []
            self._start(str(summary.get("model", "")), out)
        else:
            out = []
        u = summary.get("usage") or {}
        usage = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0),
                      u.get("cached_tokens", 0), u.get("reasoning_tokens", 0))
        output = [item for item in self.output if item is not None]
        response = await self.dialect.finish(str(summary.get("model") or self.model), output,
                                             usage, self.finish)
        name = "response.completed" if response["status"] == "completed" else (
            "response.incomplete")
        out.append(self._event(name, {"response": response}))
        return b"".join(out)

    def _fail(self, error: dict[str, Any], out: list[bytes]) -> None:
        if not self.started:
            self._start("", out)
        message = str(error.get("message") or "the upstream failed")
        code = error.get("code")
        out.append(self._event("error", {"code": code, "message": message, "param": None}))
        response = self.dialect.response(self.model, [i for i in self.output if i], None,
                                         "failed")
        response["error"] = {"code": "server_error", "message": message}
        out.append(self._event("response.failed", {"response": response}))
        self.failed = True
