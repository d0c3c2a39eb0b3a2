"""A stub OpenAI-compatible server for tests: a real uvicorn on 127.0.0.1, on a free port.

It answers ``/v1/chat/completions`` and ``/v1/completions`` (plain and SSE) deterministically:
the answer is ``"<model> says: <last user text>"`` and every word of it is one token (and one
stream chunk), so streamed and non-streamed usage agree. Behaviour is scripted per request
(:meth:`StubUpstream.then`): an error status, ``Retry-After``, a delay, a stream cut short.
Every request it receives is recorded, headers and body, for assertions.

:class:`LiveServer` runs any ASGI app the same way (the routecast server in the tests).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp


class LiveServer:
    """Run an ASGI app with uvicorn in a background thread on ``127.0.0.1:<free port>``."""

    def __init__(self, app: ASGIApp, lifespan: Literal["on", "off"] = "on") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Without TCP_NODELAY every request waits ~40 ms: the response leaves in two writes
        # (headers, body), Nagle holds the second until the first is ACKed, and the client
        # delays its ACK. asyncio sets it on accepted sockets only when they say IPPROTO_TCP,
        # which a socket made as here does not; Linux copies it from the listening socket to
        # every socket accepted from it (test_stub_upstream checks that).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False,
                                loop="asyncio", http="h11", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class Step:
    """What the stub does with one request; the default is a normal answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    #: For a stream: send this many content chunks, then drop the connection.
    cut_after: int | None = None
    #: For a stream: wait this long before each chunk.
    chunk_delay_s: float = 0.0
    #: The error message of a failing step, and its ``param`` and ``code``.
    message: str | None = None
    param: str | None = None
    code: str | None = None


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class StubUpstream:
    """See the module docstring. ``cached_tokens`` / ``reasoning_tokens`` go into the usage
    details of every answer."""

    def __init__(self, *, cached_tokens: int = 0, reasoning_tokens: int = 0,
                 send_usage: bool = True) -> None:
        #: The log-probability of every token, per model (default -0.1), when asked for.
        self.logprob: dict[str, float] = {}
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.send_usage = send_usage
        self.received: list[Received] = []
        #: What each model refuses, as a real upstream would (400): more prompt tokens than
        #: its window (code context_length_exceeded), image parts, tools, json_schema.
        self.windows: dict[str, int] = {}
        self.text_only: set[str] = set()
        self.no_tools: set[str] = set()
        self.no_json_schema: set[str] = set()
        self._steps: deque[Step] = deque()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            # llama.cpp's tokenizer (one token per word here) and llama-cpp-python's.
            Route("/tokenize", self._tokenize, methods=["POST"]),
            Route("/extras/tokenize/count", self._tokenize, methods=["POST"]),
        ])
        self._live = LiveServer(self.app, lifespan="off")

    @property
    def url(self) -> str:
        return f"{self._live.url}/v1"

    def then(self, *steps: Step) -> StubUpstream:
        """Script the next requests, one step each (then back to normal answers)."""
        self._steps.extend(steps)
        return self

    def __enter__(self) -> StubUpstream:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def answer_words(model: str, text: str) -> list[str]:
        return [f"{model}", "says:", *text.split()]

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        if "messages" in body:
            return sum(3 + len(_text(m.get("content")).split()) for m in body["messages"])
        return len(str(body.get("prompt", "")).split())

    def usage(self, body: dict[str, Any], n_words: int) -> dict[str, Any]:
        prompt = self.prompt_tokens(body)
        return {"prompt_tokens": prompt, "completion_tokens": n_words,
                "total_tokens": prompt + n_words,
                "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt)},
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Step, Response | None]:
        body = await request.json()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        step = self._steps.popleft() if self._steps else Step()
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.status != 200:
            message = step.message or f"stub says {step.status}"
            error = {"error": {"message": message, "type": "stub",
                               "param": step.param, "code": step.code}}
            return body, step, JSONResponse(error, step.status, headers=step.headers)
        refused = self._refuse(body)
        if refused is not None:
            return body, step, refused
        return body, step, None

    def _refuse(self, body: dict[str, Any]) -> Response | None:
        """A 400 in OpenAI's shape for what the model cannot serve, else ``None``."""
        model = body.get("model", "")
        window = self.windows.get(model)
        tokens = self.prompt_tokens(body)
        message = code = None
        if window is not None and tokens > window:
            message = (f"This model's maximum context length is {window} tokens. However, your "
                       f"messages resulted in {tokens} tokens. Please reduce the length of the "
                       "messages.")
            code = "context_length_exceeded"
        elif model in self.text_only and any(
                isinstance(m.get("content"), list) and any(
                    p.get("type") == "image_url" for p in m["content"])
                for m in body.get("messages", [])):
            message = f"{model} does not support image input"
        elif model in self.no_tools and body.get("tools"):
            message = f"{model} does not support tools"
        elif model in self.no_json_schema and (body.get("response_format") or {}).get(
                "type") == "json_schema":
            message = f"{model} does not support response_format json_schema"
        if message is None:
            return None
        error = {"error": {"message": message, "type": "invalid_request_error",
                           "param": "messages", "code": code}}
        return JSONResponse(error, 400)

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        if request.url.path.endswith("/count"):
            return JSONResponse({"count": len(str(body.get("input", "")).split())})
        return JSONResponse({"tokens": list(range(len(str(body.get("content", "")).split())))})

    async def _chat(self, request: Request) -> Response:
        body, step, failed = await self._begin(request)
        if failed is not None:
            return failed
        model = body["model"]
        last_user: dict[str, Any] = next(
            (m for m in reversed(body["messages"]) if m["role"] == "user"), {})
        words = self.answer_words(model, _text(last_user.get("content")))
        tool_calls = None
        if body.get("tools"):
            fn = body["tools"][0]["function"]["name"]
            tool_calls = [{"id": "call_1", "type": "function",
                           "function": {"name": fn, "arguments": json.dumps({"city": "Paris"})}}]
        if body.get("stream"):
            return self._stream_chat(body, step, model, words, tool_calls)
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words),
                                   "refusal": None}
        if tool_calls:
            message = {"role": "assistant", "content": None, "refusal": None,
                       "tool_calls": tool_calls}
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                                  "finish_reason": "tool_calls" if tool_calls else "stop"}
        if body.get("logprobs"):
            lp = self.logprob.get(model, -0.1)
            choice["logprobs"] = {"content": [{"token": w, "logprob": lp, "bytes": None,
                                               "top_logprobs": []} for w in words]}
        out: dict[str, Any] = {"id": "chatcmpl-stub", "object": "chat.completion",
                               "created": 1700000000, "model": f"upstream-{model}",
                               "choices": [choice], "system_fingerprint": "stub"}
        if self.send_usage:
            out["usage"] = self.usage(body, len(words))
        return JSONResponse(out)

    def _stream_chat(self, body: dict[str, Any], step: Step, model: str, words: list[str],
                     tool_calls: list[dict[str, Any]] | None) -> Response:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": "chatcmpl-stub", "object": "chat.completion.chunk",
                "created": 1700000000, "model": f"upstream-{model}",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if include_usage:  # as OpenAI does: `null` on every chunk but the usage one
                out["usage"] = None
            return out

        async def events() -> AsyncIterator[bytes]:
            deltas: list[dict[str, Any]]
            if tool_calls:
                deltas = [{"role": "assistant", "tool_calls": [{**tool_calls[0], "index": 0}]}]
            else:
                deltas = [{"role": "assistant", "content": words[0]},
                          *({"content": " " + w} for w in words[1:])]
            for i, delta in enumerate(deltas):
                if step.chunk_delay_s:
                    await asyncio.sleep(step.chunk_delay_s)
                if step.cut_after is not None and i >= step.cut_after:
                    raise ConnectionResetError("stub cut the stream")
                last = i == len(deltas) - 1
                finish = ("tool_calls" if tool_calls else "stop") if last else None
                yield f"data: {json.dumps(chunk(delta, finish))}\n\n".encode()
            if include_usage and self.send_usage:
                usage_chunk = {**chunk({}, None), "choices": [],
                               "usage": self.usage(body, len(words))}
                yield f"data: {json.dumps(usage_chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _completions(self, request: Request) -> Response:
        body, _, failed = await self._begin(request)
        if failed is not None:
            return failed
        model = body["model"]
        words = self.answer_words(model, str(body.get("prompt", "")).split("\n")[-1])[:6]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            async def events() -> AsyncIterator[bytes]:
                for i, w in enumerate(words):
                    data: dict[str, Any] = {
                        "id": "cmpl-stub", "object": "text_completion", "created": 1700000000,
                        "model": model,
                        "choices": [{"index": 0, "text": (" " if i else "") + w,
                                     "finish_reason": "stop" if i == len(words) - 1 else None,
                                     "logprobs": None}]}
                    if include_usage:  # as vLLM does (and OpenAI for chat)
                        data["usage"] = None
                    yield f"data: {json.dumps(data)}\n\n".encode()
                if include_usage:
                    data = {"id": "cmpl-stub", "object": "text_completion",
                            "created": 1700000000, "model": model, "choices": [],
                            "usage": self.usage(body, len(words))}
                    yield f"data: {json.dumps(data)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        logprobs = None
        if body.get("logprobs") is not None:  # the legacy shape: parallel lists
            lp = self.logprob.get(model, -0.1)
            tokens = [(" " if i else "") + w for i, w in enumerate(words)]
            offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
            logprobs = {"tokens": tokens, "token_logprobs": [lp] * len(tokens),
                        "top_logprobs": [{t: lp} for t in tokens], "text_offset": offsets}
        out = {"id": "cmpl-stub", "object": "text_completion", "created": 1700000000,
               "model": model, "choices": [{"index": 0, "text": " ".join(words),
                                            "finish_reason": "stop", "logprobs": logprobs}],
               "usage": self.usage(body, len(words))}
        return JSONResponse(out)


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def closed_port() -> int:
    """A local port with nothing listening (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def iter_sse(raw: bytes) -> Iterator[dict[str, Any]]:
    """The JSON events of a raw SSE body (``[DONE]`` skipped)."""
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])
