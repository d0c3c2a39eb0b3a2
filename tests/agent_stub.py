"""A scripted upstream for agent CLIs (Claude Code, Codex CLI): a real chat-completions server
on 127.0.0.1 that answers an agent's turns the way a model that finishes at once would.

Agents send big system prompts and many tools; a general stub would call a tool with made-up
arguments. This one answers in words: a turn that ends with a tool's result gets
``"Tool said: <result>"``, any other turn ``"<MARKER> <last user words>"``, so a test can see that
the agent's prompt went through routecast and the answer came back. Streamed and plain, with
usage. Every request body is recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.stub_upstream import LiveServer

MARKER = "ROUTECAST-AGENT-OK"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class AgentStub:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._live = LiveServer(Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"])]), lifespan="off")

    @property
    def url(self) -> str:
        return f"{self._live.url}/v1"

    def __enter__(self) -> AgentStub:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    def answer(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return f"Tool said: {_text(last.get('content'))[:200]}"
        user = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {})
        words = [w for w in _text(user.get("content")).split() if not w.startswith("<")]
        return f"{MARKER} {' '.join(words[-8:])}"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        text = self.answer(body)
        usage = {"prompt_tokens": 100, "completion_tokens": len(text.split()),
                 "total_tokens": 100 + len(text.split())}
        base = {"id": "chatcmpl-agent", "created": 1700000000, "model": body["model"]}
        if not body.get("stream"):
            return JSONResponse({**base, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                     "role": "assistant", "content": text}}]})

        async def events() -> AsyncIterator[bytes]:
            words = text.split(" ")
            for i, word in enumerate(words):
                delta = {"role": "assistant", "content": word} if i == 0 else {
                    "content": " " + word}
                chunk = {**base, "object": "chat.completion.chunk", "choices": [{
                    "index": 0, "delta": delta,
                    "finish_reason": "stop" if i == len(words) - 1 else None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage"):
                chunk = {**base, "object": "chat.completion.chunk", "choices": [],
                         "usage": usage}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
