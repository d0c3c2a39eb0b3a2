"""The two built-in models on real llama.cpp servers (127.0.0.1): asked, with log-probs.

These need the ``local`` extra (``make local``), which ``make test`` installs; nothing is
skipped without it -- a missing install fails with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest

from routecast.local import llamacpp
from routecast.local.client import Answer, Client, Endpoint
from routecast.local.models import BUILTIN, LocalModel

SMOL, GEMMA = BUILTIN["smollm2-135m"], BUILTIN["gemma3-270m"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, llamacpp.LlamaServer]]:
    with llamacpp.serving([SMOL, GEMMA]) as running:
        yield running


def ask(endpoint: Endpoint, prompt: str) -> Answer:
    async def go() -> Answer:
        async with Client() as client:
            return await client.ask(endpoint, prompt)
    return asyncio.run(go())


@pytest.mark.needs_local
@pytest.mark.parametrize("model", [SMOL, GEMMA], ids=lambda m: m.name)
def test_gguf_is_found_through_its_package(model: LocalModel) -> None:
    path = model.gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"


@pytest.mark.needs_local
def test_smollm2_answers_a_chat_question_with_logprobs(
        servers: dict[str, llamacpp.LlamaServer]) -> None:
    endpoint = SMOL.endpoint(servers[SMOL.name].base_url, max_tokens=12)
    answer = ask(endpoint, "What is the capital of France? Answer with the city name only.")
    assert answer.text.strip()
    assert answer.tokens_in > 10 and 1 <= answer.tokens_out <= 12
    assert answer.token_logprobs is not None
    assert len(answer.token_logprobs) == answer.tokens_out
    assert all(lp <= 0 for lp in answer.token_logprobs)
    assert 0 < answer.latency_s < 30


@pytest.mark.needs_local
def test_gemma_base_model_answers_completion_style(
        servers: dict[str, llamacpp.LlamaServer]) -> None:
    endpoint = GEMMA.endpoint(servers[GEMMA.name].base_url, max_tokens=12)
    assert endpoint.api == "completion"
    answer = ask(endpoint, "What is the capital of Spain? Answer with the city name only.")
    assert answer.text.strip() and "\n" not in answer.text  # stopped at the end of the line
    assert answer.tokens_in > 100  # the few-shot template went along
    assert answer.token_logprobs and all(lp <= 0 for lp in answer.token_logprobs)
    # greedy decoding: the same question gets the same answer
    assert ask(endpoint, "What is the capital of Spain? Answer with the city name only."
               ).text == answer.text


@pytest.mark.needs_local
def test_servers_listen_only_on_loopback_and_name_their_model(
        servers: dict[str, llamacpp.LlamaServer]) -> None:
    for name, server in servers.items():
        assert server.alive() and server.ready_s > 0
        with urllib.request.urlopen(f"{server.base_url}/v1/models", timeout=5) as r:
            assert name.encode() in r.read()


@pytest.mark.parametrize("model", [SMOL, GEMMA], ids=lambda m: m.name)
def test_profile_prices_logprobs_and_tokens(model: LocalModel) -> None:
    p = model.profile
    assert p.cpu_s(10, logprobs=True) > p.cpu_s(10, logprobs=False) > p.cpu_s(1, logprobs=False)
    assert p.cpu_s(0, logprobs=False) == p.base_s
