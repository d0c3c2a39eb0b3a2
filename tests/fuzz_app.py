"""A routecast app over in-process echo backends, for fuzzing the server's own code: no
network and no upstream quirks, so any 5xx is routecast's fault."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp

from routecast.backends.base import Backend, Chunk, Completion, Price, Request, Usage
from routecast.server.app import create_app
from routecast.server.config import parse_config
from routecast.server.endpoints import EndpointTable


class Echo(Backend):
    """Answers every request with ``ok``, at once; a stream in ``chunks`` content chunks
    (``ok`` each)."""

    def __init__(self, model: str, chunks: int = 1) -> None:
        self.name = model
        self.models = (model,)
        self.chunks = chunks

    async def complete(self, request: Request) -> Completion:
        body = {"id": "x", "object": "chat.completion", "created": 0, "model": self.name,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}]}
        return Completion(body, self.name, Usage(1, 1), 0.0, 0.0, [self.name])

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        route = [self.name]
        for i in range(self.chunks, 0, -1):
            yield Chunk({"id": "x", "object": "chat.completion.chunk", "created": 0,
                         "model": self.name, "choices": [{
                             "index": 0, "delta": {"content": "ok"},
                             "finish_reason": "stop" if i == 1 else None}]},
                        self.name, route)
        yield Chunk(None, self.name, route, Completion({}, self.name, Usage(1, 1), 0.0, 0.0,
                                                       route))


def fuzz_app(**config: Any) -> ASGIApp:
    """``small`` and ``large`` as echo backends; ``config`` adds top-level config keys."""
    doc = {"models": {m: {"base_url": "http://127.0.0.1:9/v1"} for m in ("small", "large")},
           "storage": {"db": None}, "limits": {"max_body_bytes": 65536, "max_messages": 64},
           **config}
    cfg = parse_config(doc)
    backends: dict[str, Backend] = {m: Echo(m) for m in cfg.models}
    table = EndpointTable(backends, {m: Price() for m in backends},
                          {m: m for m in backends}, list(backends.values()))
    return create_app(cfg, table=table)
