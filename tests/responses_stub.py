"""A stand-in for an upstream that speaks OpenAI's Responses API, on 127.0.0.1.

A fake, because the real one is on the internet: it answers ``POST /v1/responses`` in the
reference's shapes, plain and streamed, as ``"<model> native: <last user text>"``; with
``reasoning`` asked it first gives a ``reasoning`` item with ``encrypted_content`` (which only a
request passed through untouched gets back), and with tools offered (and no call output yet)
a ``function_call`` item. Every request is recorded.
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


def _said(body: dict[str, Any]) -> str:
    items = body["input"]
    if isinstance(items, str):
        return items
    last = items[-1]
    if last.get("type") == "function_call_output":
        return str(last["output"])
    content = last["content"]
    return content if isinstance(content, str) else " ".join(p["text"] for p in content)


class ResponsesStub:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._live = LiveServer(Starlette(routes=[
            Route("/v1/responses", self._responses, methods=["POST"])]), lifespan="off")

    @property
    def url(self) -> str:
        return f"{self._live.url}/v1"

    def __enter__(self) -> ResponsesStub:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    def output(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if body.get("reasoning"):
            out.append({"type": "reasoning", "id": "rs_1", "summary": [],
                        "encrypted_content": "enc-xyz"})
        answered = not isinstance(body["input"], str) and any(
            i.get("type") == "function_call_output" for i in body["input"])
        if body.get("tools") and not answered:
            out.append({"type": "function_call", "id": "fc_1", "call_id": "call_up",
                        "name": body["tools"][0]["name"], "arguments": '{"city": "Paris"}',
                        "status": "completed"})
        else:
            out.append({"type": "message", "id": "msg_up", "status": "completed",
                        "role": "assistant", "content": [{
                            "type": "output_text", "annotations": [],
                            "text": f"{body['model']} native: {_said(body)}"}]})
        return out

    async def _responses(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        output = self.output(body)
        response = {"id": "resp_upstream", "object": "response", "created_at": 1700000000,
                    "status": "completed", "error": None, "incomplete_details": None,
                    "model": body["model"], "output": output, "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": body.get("tools", []),
                    "usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
                              "input_tokens_details": {"cached_tokens": 2,
                                                       "cache_write_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 1}}}
        if not body.get("stream"):
            return JSONResponse(response)

        async def events() -> AsyncIterator[bytes]:
            seq = 0

            def ev(data: dict[str, Any]) -> bytes:
                nonlocal seq
                data = {**data, "sequence_number": seq}
                seq += 1
                return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

            started = {**response, "status": "in_progress", "output": [], "usage": None}
            yield ev({"type": "response.created", "response": started})
            yield ev({"type": "response.in_progress", "response": started})
            for i, item in enumerate(output):
                yield ev({"type": "response.output_item.added", "output_index": i,
                          "item": item})
                if item["type"] == "message":
                    text = item["content"][0]["text"]
                    yield ev({"type": "response.output_text.delta", "item_id": item["id"],
                              "output_index": i, "content_index": 0, "delta": text,
                              "logprobs": []})
                yield ev({"type": "response.output_item.done", "output_index": i,
                          "item": item})
            yield ev({"type": "response.completed", "response": response})

        return StreamingResponse(events(), media_type="text/event-stream")
