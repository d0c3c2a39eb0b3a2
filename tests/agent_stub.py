"""A scripted upstream for agent CLIs (Claude Code, Codex CLI): a real chat-completions server
on 127.0.0.1 that answers an agent's turns the way a model that finishes at once would.

Agents send big system prompts and many tools; a general stub would call a tool with made-up
arguments. This one acts like a model that does one sensible thing: when the user's turn names
a file (an absolute path ending in ``.txt``) it calls the agent's own file-reading tool on it
(Claude Code's ``Read``, Codex's ``exec_command`` with ``cat``); a turn that ends with a tool's
result gets ``"<MARKER> the tool said: <result>"``; any other turn ``"<MARKER> <last user
words>"``. So a test sees the prompt go through routecast, the agent run a real tool, and the
answer come back. Streamed and plain, with usage. Every request body is recorded.
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

    def answer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """(the text, or a tool call ``{"name", "arguments"}`` to make instead)."""
        last = body["messages"][-1]
        if last["role"] == "tool":
            said = " ".join(_text(last.get("content")).split())[:300]
            return f"{MARKER} the tool said: {said}", None
        user: dict[str, Any] = next(
            (m for m in reversed(body["messages"]) if m["role"] == "user"), {})
        words = [w for w in _text(user.get("content")).split() if not w.startswith("<")]
        path = next((w.strip("?.,'\"") for w in words if w.startswith("/")
                     and w.strip("?.,'\"").endswith(".txt")), None)
        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        if path is not None and "Read" in tools:
            return "", {"name": "Read", "arguments": json.dumps({"file_path": path})}
        if path is not None and "exec_command" in tools:
            return "", {"name": "exec_command", "arguments": json.dumps({"cmd": f"cat {path}"})}
        return f"{MARKER} {' '.join(words[-8:])}", None

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        text, call = self.answer(body)
        usage = {"prompt_tokens": 100, "completion_tokens": len(text.split()) + 1,
                 "total_tokens": 101 + len(text.split())}
        base = {"id": "chatcmpl-agent", "created": 1700000000, "model": body["model"]}
        calls = None if call is None else [{"id": f"call_{len(self.received)}",
                                            "type": "function", "function": call}]
        finish = "stop" if calls is None else "tool_calls"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse({**base, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": message}]})

        async def events() -> AsyncIterator[bytes]:
            deltas: list[dict[str, Any]]
            if calls is not None:
                deltas = [{"role": "assistant", "tool_calls": [{**calls[0], "index": 0}]}]
            else:
                words = text.split(" ")
                deltas = [{"role": "assistant", "content": words[0]},
                          *({"content": " " + w} for w in words[1:])]
            for i, delta in enumerate(deltas):
                chunk = {**base, "object": "chat.completion.chunk", "choices": [{
                    "index": 0, "delta": delta,
                    "finish_reason": finish if i == len(deltas) - 1 else None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage"):
                chunk = {**base, "object": "chat.completion.chunk", "choices": [],
                         "usage": usage}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
