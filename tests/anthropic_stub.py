"""A stand-in for an upstream that speaks Anthropic's Messages API, on 127.0.0.1.

A fake, because the real one is on the internet: it answers ``POST /v1/messages`` in the
reference's shapes, plain and streamed, as ``"<model> native: <last user text>"``; with
``thinking`` asked it first gives a thinking block carrying a ``signature`` (which only a
request passed through untouched gets back whole), and with tools offered (and no tool result
yet) a ``tool_use`` block. Every request is recorded, headers and body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.stub_upstream import LiveServer, Received


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return str(content)


class AnthropicStub:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._live = LiveServer(Starlette(routes=[
            Route("/v1/messages", self._messages, methods=["POST"])]), lifespan="off")

    @property
    def url(self) -> str:
        return f"{self._live.url}/v1"

    def __enter__(self) -> AnthropicStub:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    def blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        last = body["messages"][-1]
        results = [b for b in last["content"] if isinstance(b, dict)
                   and b.get("type") == "tool_result"] if isinstance(last["content"], list) else []
        out: list[dict[str, Any]] = []
        if body.get("thinking", {}).get("type") == "enabled":
            out.append({"type": "thinking", "thinking": "let me think",
                        "signature": "sig-abc123"})
        if body.get("tools") and not results:
            out.append({"type": "tool_use", "id": "toolu_stub1",
                        "name": body["tools"][0]["name"], "input": {"city": "Paris"}})
        else:
            said = _text(results[0]["content"]) if results else _text(last["content"])
            out.append({"type": "text", "text": f"{body['model']} native: {said}"})
        return out

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        blocks = self.blocks(body)
        stop = "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"
        usage = {"input_tokens": 20, "output_tokens": 6, "cache_read_input_tokens": 5,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_stub", "type": "message", "role": "assistant",
                   "model": body["model"], "content": blocks, "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return JSONResponse(message)

        def ev(data: dict[str, Any]) -> bytes:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            yield ev({"type": "message_start", "message": {
                **message, "content": [], "stop_reason": None,
                "usage": {**usage, "output_tokens": 1}}})
            yield ev({"type": "ping"})
            for i, block in enumerate(blocks):
                kind = block["type"]
                empties: dict[str, dict[str, Any]] = {
                    "text": {"text": ""}, "thinking": {"thinking": "", "signature": ""},
                    "tool_use": {"input": {}}}
                empty = empties[kind]
                yield ev({"type": "content_block_start", "index": i,
                          "content_block": {**block, **empty}})
                if kind == "text":
                    for j, word in enumerate(block["text"].split(" ")):
                        yield ev({"type": "content_block_delta", "index": i, "delta": {
                            "type": "text_delta", "text": (" " if j else "") + word}})
                elif kind == "thinking":
                    yield ev({"type": "content_block_delta", "index": i, "delta": {
                        "type": "thinking_delta", "thinking": block["thinking"]}})
                    yield ev({"type": "content_block_delta", "index": i, "delta": {
                        "type": "signature_delta", "signature": block["signature"]}})
                else:
                    yield ev({"type": "content_block_delta", "index": i, "delta": {
                        "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
                yield ev({"type": "content_block_stop", "index": i})
            yield ev({"type": "message_delta", "delta": {"stop_reason": stop,
                                                         "stop_sequence": None},
                      "usage": {"output_tokens": 6}})
            yield ev({"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")
