"""Agreement and self-verification cascades on the real local models (SmolLM2-135M, a chat model,
then Gemma 3 270M, a base model), through the routecast server and the official openai client.

Only prompt tokens are priced here, so what each call costs is known before it is made (sampled
answers vary in length): the cost header then tells exactly how many calls each model got.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from routecast.backends.judges import VERIFY_MAX_TOKENS, VERIFY_PROMPT
from routecast.local import llamacpp
from routecast.local.default import gemma_format
from routecast.local.models import BUILTIN
from routecast.local.outcomes import LARGE, SMALL
from routecast.server.config import parse_config
from routecast.signals.live import parse_verdict
from tests.routecast_live import serve

QUESTION = "What is the capital of France? Answer with the city name only."
#: USD per million prompt tokens; answers are free (see the module docstring).
PRICE_IN = {SMALL: 1.0, LARGE: 3.0}


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    # No log-probs (llama-cpp-python's logits_all): neither judge reads them.
    servers = llamacpp.start([BUILTIN[SMALL], BUILTIN[LARGE]], n_threads=1, logprobs=False)
    try:
        models: dict[str, Any] = {m: {"base_url": f"{s.base_url}/v1", "local": True,
                                      "input_usd_per_mtok": PRICE_IN[m], "max_retries": 0}
                                  for m, s in servers.items()}
        models[LARGE] |= {"kind": "base", "prompt_format": gemma_format().model_dump()}
        config = parse_config({"models": models, "storage": {"db": None}, "endpoints": {
            "agree": {"type": "cascade", "models": [SMALL, LARGE], "thresholds": [0.9],
                      "signal": "agreement", "samples": 2, "temperature": 0.7},
            "verify": {"type": "cascade", "models": [SMALL, LARGE], "thresholds": [0.5],
                       "signal": "self-verification"},
            "verify-base": {"type": "cascade", "models": [LARGE, SMALL], "thresholds": [0.5],
                            "signal": "self-verification"}}})
        with serve(config) as url:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    finally:
        for s in servers.values():
            s.stop()


def ask(client: openai.OpenAI, model: str, content: str, max_tokens: int = 16
        ) -> tuple[str, list[str], float]:
    """(answer, route, cost) of one greedy request."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
        temperature=0)
    return (raw.parse().choices[0].message.content or "",
            raw.headers["x-routecast-route"].split(","),
            float(raw.headers["x-routecast-cost-usd"]))


def prompt_cost(client: openai.OpenAI, model: str, content: str) -> float:
    """What asking ``model`` ``content`` costs here, whatever it answers."""
    return ask(client, model, content, max_tokens=1)[2]


@pytest.mark.needs_local
def test_agreement_pays_two_samples_beside_the_answer(client: openai.OpenAI) -> None:
    small, large = prompt_cost(client, SMALL, QUESTION), prompt_cost(client, LARGE, QUESTION)
    assert small > 0 and large > 0
    _, route, paid = ask(client, "agree", QUESTION)
    assert route in ([SMALL], [SMALL, LARGE])
    assert paid == pytest.approx(3 * small + (large if route[-1] == LARGE else 0.0), rel=1e-6)


@pytest.mark.parametrize(("endpoint", "first", "second"), [("verify", SMALL, LARGE),
                                                           ("verify-base", LARGE, SMALL)])
@pytest.mark.needs_local
def test_self_verification_keeps_what_the_model_itself_accepts(
        client: openai.OpenAI, endpoint: str, first: str, second: str) -> None:
    # The first step asked alone, greedily: the answer the cascade judges, and its verdict.
    answer, _, asked = ask(client, first, QUESTION)
    check = VERIFY_PROMPT.format(question=QUESTION, answer=answer.strip())
    reply, _, verifying = ask(client, first, check, max_tokens=VERIFY_MAX_TOKENS)
    accepted = parse_verdict(reply) is True
    text, route, paid = ask(client, endpoint, QUESTION)
    assert route == ([first] if accepted else [first, second])
    escalated = 0.0 if accepted else prompt_cost(client, second, QUESTION)
    assert paid == pytest.approx(asked + verifying + escalated, rel=1e-6)
    if accepted:
        assert text == answer


@pytest.mark.needs_local
def test_a_stream_sends_the_answer_of_one_model(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="verify", messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
        temperature=0, stream=True))
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert {c.model for c in chunks} == {summary["route"][-1]}
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() == ask(client, summary["route"][-1], QUESTION)[0].strip()
