"""A live cascade endpoint: cheap model first, escalation on low log-prob confidence."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from routecast.cascades.cascade import Cascade
from tests.routecast_live import PRICES, make_config, model_entry, serve
from tests.stub_upstream import StubUpstream, closed_port

QUESTION = "what is two plus two"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def client(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[openai.OpenAI]:
    saved = tmp_path_factory.mktemp("cascade") / "cascade.json"
    saved.write_text(json.dumps(Cascade(("medium", "large"), (0.95,)).to_dict()))
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    config = make_config(stub.url, None, models={"dead": model_entry(dead, "dead",
                                                                     max_retries=0)},
                         endpoints={
        "smart": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.8]},
        "from-file": {"type": "cascade", "file": str(saved)},
        "shaky": {"type": "cascade", "models": ["dead", "large"], "thresholds": [0.5]},
    })
    with serve(config) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def cost(model: str, prompt: int, completion: int) -> float:
    price_in, price_out, _ = PRICES[model]
    return (prompt * price_in + completion * price_out) / 1e6


def stub_cost(model: str) -> float:
    """What the stub's answer to MESSAGES costs at ``model``'s prices."""
    words = len(StubUpstream.answer_words(model, QUESTION))
    return cost(model, StubUpstream.prompt_tokens({"messages": MESSAGES}), words)


def test_a_confident_cheap_answer_is_kept(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.logprob["small"] = -0.1  # confidence exp(-0.1) = 0.90 >= 0.8
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
    reply = raw.parse()
    assert reply.model == "small"
    assert raw.headers["x-routecast-route"] == "small"
    assert stub.received[-1].body["logprobs"] is True  # the cascade asked for them
    assert reply.choices[0].logprobs is None  # ... the client did not get them
    assert float(raw.headers["x-routecast-cost-usd"]) == pytest.approx(stub_cost("small"))


def test_an_unsure_answer_escalates_and_both_steps_are_paid(client: openai.OpenAI,
                                                             stub: StubUpstream) -> None:
    stub.logprob["small"] = -1.0  # confidence 0.37 < 0.8
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
    reply = raw.parse()
    assert reply.model == "large"
    assert reply.choices[0].message.content == "large says: what is two plus two"
    assert raw.headers["x-routecast-route"] == "small,large"
    assert "logprobs" not in stub.received[-1].body  # the last step gets the request as sent
    paid = stub_cost("small") + stub_cost("large")
    assert float(raw.headers["x-routecast-cost-usd"]) == pytest.approx(paid)

    chunks = list(client.chat.completions.create(model="smart", messages=MESSAGES,
                                                 stream=True))
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert summary["route"] == ["small", "large"]
    assert summary["cost_usd"] == pytest.approx(paid)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content


def test_a_kept_answer_streams_as_one_chunk(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.logprob["small"] = -0.01
    chunks = list(client.chat.completions.create(model="smart", messages=MESSAGES,
                                                 stream=True))
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert content == ["small says: what is two plus two"]
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert summary["route"] == ["small"]
    assert summary["cost_usd"] == pytest.approx(stub_cost("small"))


def test_cascade_from_a_saved_file(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.logprob["medium"] = math.log(0.9)  # below the file's 0.95
    assert client.chat.completions.create(model="from-file", messages=MESSAGES).model == "large"
    stub.logprob["medium"] = math.log(0.99)
    assert client.chat.completions.create(model="from-file", messages=MESSAGES).model == "medium"


def test_a_failing_step_escalates(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="shaky", messages=MESSAGES)
    assert raw.parse().model == "large"
    assert raw.headers["x-routecast-route"] == "dead,large"


def test_client_logprobs_are_kept(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.logprob["small"] = -0.1
    reply = client.chat.completions.create(model="smart", messages=MESSAGES, logprobs=True)
    assert reply.model == "small"
    assert reply.choices[0].logprobs is not None
