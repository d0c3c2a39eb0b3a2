"""The minimal OpenAI-compatible client, against a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from routecast.cli import main
from routecast.data.canonical import load
from routecast.errors import UpstreamError, UpstreamTimeoutError
from routecast.local.client import Answer, Client, Endpoint, parse_answer
from routecast.local.llamacpp import free_port
from routecast.local.tasks import Task
from tests.task_files import save_tasks

CHAT = {"choices": [{"message": {"content": "Paris"},
                     "logprobs": {"content": [{"token": "Par", "logprob": -0.1},
                                              {"token": "is", "logprob": -0.2}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
COMPLETION = {"choices": [{"text": " 15", "logprobs": {"token_logprobs": [-0.5, -0.01]}}],
              "usage": {"prompt_tokens": 120, "completion_tokens": 2}}


def test_endpoint_bodies() -> None:
    chat = Endpoint("m", "http://h:1/v1/", max_tokens=5, stop=("\n",))
    assert chat.url == "http://h:1/v1/chat/completions"
    body = chat.body("Hi?")
    assert body["messages"] == [{"role": "user", "content": "Hi?"}]
    assert body["logprobs"] is True and body["top_logprobs"] == 1
    assert (body["max_tokens"], body["stop"], body["temperature"], body["model"]) == \
        (5, ["\n"], 0.0, "m")
    base = Endpoint("m", "http://h:1", api="completion", api_model="gguf",
                    template="Q: {prompt}\nA:", logprobs=False)
    assert base.url == "http://h:1/v1/completions"
    body = base.body("Hi?")
    assert body["prompt"] == "Q: Hi?\nA:" and body["model"] == "gguf" and "logprobs" not in body


def test_parse_chat_and_completion() -> None:
    a = parse_answer(Endpoint("m", "http://h"), CHAT, 0.5)
    assert a == Answer("Paris", 9, 2, 0.5, (-0.1, -0.2))
    b = parse_answer(Endpoint("m", "http://h", api="completion"), COMPLETION, 0.2)
    assert b == Answer(" 15", 120, 2, 0.2, (-0.5, -0.01))
    no_lp = {"choices": [{"message": {"content": "x"}, "logprobs": None}], "usage": {}}
    c = parse_answer(Endpoint("m", "http://h"), no_lp, 0.1)
    assert c.token_logprobs is None and c.tokens_in == 0 and c.tokens_out == 0
    with pytest.raises(UpstreamError, match="without choices"):
        parse_answer(Endpoint("m", "http://h"), {"error": "bad"}, 0.1)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def with_server(handler: Handler, endpoint_kw: dict[str, Any], prompt: str = "Q") -> Answer:
    """Serve ``handler`` on a free loopback port and ask it once."""
    async def go() -> Answer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with Client() as client:
                return await client.ask(Endpoint("m", f"http://127.0.0.1:{port}", **endpoint_kw),
                                        prompt)
        finally:
            await runner.cleanup()
    return asyncio.run(go())


def test_ask_posts_the_body_and_reads_the_answer() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({"body": await request.json(), "auth": request.headers.get("Authorization")})
        return web.json_response(CHAT)

    answer = with_server(handler, {"api_key": "sk-test", "max_tokens": 3}, "Capital of France?")
    assert answer.text == "Paris" and answer.token_logprobs == (-0.1, -0.2)
    assert answer.latency_s > 0
    assert seen[0]["body"]["messages"][0]["content"] == "Capital of France?"
    assert seen[0]["body"]["max_tokens"] == 3 and seen[0]["auth"] == "Bearer sk-test"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
def test_http_errors_become_upstream_errors(status: int, retryable: bool) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=json.dumps({"error": "nope"}))

    with pytest.raises(UpstreamError, match=f"answered {status}") as info:
        with_server(handler, {})
    assert info.value.retryable is retryable and info.value.upstream_status == status


def test_timeout_is_an_upstream_timeout() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.8)
        return web.json_response(CHAT)

    with pytest.raises(UpstreamTimeoutError, match=r"within 0\.2s") as info:
        with_server(handler, {"timeout_s": 0.2})
    assert info.value.retryable


def test_unreachable_server_says_so() -> None:
    async def go() -> Answer:
        async with Client() as client:
            # port 1 on loopback: nothing listens there
            return await client.ask(Endpoint("m", "http://127.0.0.1:1"), "Q")
    with pytest.raises(UpstreamError, match="is the server running") as info:
        asyncio.run(go())
    assert info.value.retryable


def test_collect_cli_with_a_running_priced_server(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``-m NAME=URL`` + ``--prices`` + ``--tasks FILE``: the path for servers we do not start."""
    async def handler(request: web.Request) -> web.Response:
        question = (await request.json())["messages"][0]["content"]
        reply = "4" if "2 + 2" in question else "Lyon"
        return web.json_response({"choices": [{"message": {"content": reply}}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 10}})

    loop = asyncio.new_event_loop()
    port = free_port()
    ready = threading.Event()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def thread_main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        tasks = save_tasks([Task("a", "What is 2 + 2?", "4", "number"),
                            Task("b", "What is the capital of France?", "Paris", "exact")],
                           tmp_path / "tasks.jsonl")
        prices = tmp_path / "prices.json"
        prices.write_text(json.dumps({"fake": {"input_usd_per_mtok": 1.0,
                                               "output_usd_per_mtok": 3.0}}))
        out = tmp_path / "out.jsonl"
        main(["collect", str(out), "-m", f"fake=http://127.0.0.1:{port}/v1", "--tasks",
              str(tasks), "--prices", str(prices)])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    ds = load(out)
    assert ds.models == ("fake",) and ds.quality[:, 0].tolist() == [1.0, 0.0]
    assert ds.cost_usd[:, 0].tolist() == pytest.approx([(100 * 1.0 + 10 * 3.0) / 1e6] * 2)
    assert ds.confidence is not None and np.isnan(ds.confidence).all()  # no log-probs sent
    assert "(0 pairs from the journal, 2 asked)" in capsys.readouterr().out


def test_collect_cli_errors_are_one_line_with_a_fix(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in [
            (["-m", "other=http://127.0.0.1:1"], "no price known for model 'other'"),
            (["-m", "gpt-9"], "unknown local model 'gpt-9'"),
            (["-m", "=http://x"], "give a built-in local model or NAME=URL")]:
        with pytest.raises(SystemExit) as info:
            main(["collect", str(tmp_path / "o.jsonl"), *args])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path / "o.csv")])
    assert "must end in .jsonl" in capsys.readouterr().err
