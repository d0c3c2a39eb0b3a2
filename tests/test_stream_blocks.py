"""Streams go through the backend one network read at a time, not one event at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from routecast.backends import Chunk, OpenAIHTTPBackend, Request

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def event(data: Mapping[str, Any] | str) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "s", "object": "chat.completion.chunk", "created": 7, "model": "upstream",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


class BlockResponse:
    """An open 200 stream whose body arrives in the given reads."""

    status = 200

    def __init__(self, reads: list[bytes]) -> None:
        self.headers: dict[str, str] = {}
        self.reads = reads
        self.released = False

    async def read(self) -> bytes:
        raise AssertionError("a stream is not read whole")

    async def lines(self) -> AsyncIterator[bytes]:
        raise AssertionError("blocks() is preferred when offered")
        yield b""  # pragma: no cover

    async def blocks(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            yield data

    def release(self) -> None:
        self.released = True


class OneAnswer:
    def __init__(self, response: BlockResponse) -> None:
        self.response = response
        self.sent: list[dict[str, Any]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> BlockResponse:
        self.sent.append(json.loads(body))
        return self.response

    async def aclose(self) -> None:
        pass


def stream(reads: list[bytes], **kw: Any) -> tuple[list[Chunk], BlockResponse]:
    response = BlockResponse(reads)
    backend = OpenAIHTTPBackend("m", "http://upstream/v1", transport=OneAnswer(response), **kw)
    request = Request({"model": "e", "stream": True, "messages": [{"role": "user",
                                                                    "content": "hi"}]})

    async def collect() -> list[Chunk]:
        return [c async for c in backend.stream(request)]

    return asyncio.run(collect()), response


def events_of(raw: bytes | None) -> list[dict[str, Any]]:
    assert raw is not None and raw.endswith(b"\n\n")
    return [json.loads(e[len(b"data: "):]) for e in raw.split(b"\n\n") if e]


def test_each_read_is_one_chunk_and_the_end_comes_with_the_summary() -> None:
    chunks, response = stream([
        event(delta("a")) + event(delta("b")),
        event(delta("c", "stop")) + event({"id": "s", "choices": [], "usage": USAGE})
        + event("[DONE]")])
    assert len(chunks) == 2
    first, last = chunks
    assert [e["choices"][0]["delta"]["content"] for e in events_of(first.raw)] == ["a", "b"]
    assert first.data == events_of(first.raw)[-1]  # the last event, for reading
    assert {e["model"] for e in events_of(first.raw)} == {"m"}  # routecast's name
    # The read that carried [DONE]: its events wait for the end and go out with the summary;
    # the usage chunk is the final chunk's data, not among the events.
    assert last.final is not None and last.final.usage.completion_tokens == 3
    assert [e["choices"][0]["delta"]["content"] for e in events_of(last.raw)] == ["c"]
    assert last.data is not None and last.data["usage"] == USAGE and last.data["model"] == "m"
    assert response.released


def test_without_a_usage_chunk_the_last_events_go_first_on_their_own() -> None:
    chunks, _ = stream([event(delta("a")) + event(delta("b", "stop")) + event("[DONE]")],
                       stream_usage=False)
    assert [c.final is None for c in chunks] == [True, False]
    assert [e["choices"][0]["delta"]["content"] for e in events_of(chunks[0].raw)] == ["a", "b"]
    assert chunks[1].raw is None and chunks[1].data is None  # the server builds the summary
    final = chunks[1].final
    assert final is not None and final.usage.estimated and final.usage.completion_tokens == 2
