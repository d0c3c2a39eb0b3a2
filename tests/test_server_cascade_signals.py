"""Cascade endpoints judged live by agreement, self-verification and a learned scorer, against
the stub upstream (scripted so the judges' own calls answer what each test needs)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openai
import pytest
from starlette.requests import Request as StarletteRequest

from routecast.backends.cascade import CascadeBackend
from routecast.backends.judges import LearnedJudge
from routecast.cascades.cascade import Cascade
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.server.config import parse_config
from routecast.server.endpoints import build_endpoints
from routecast.signals.persist import save_scorer
from tests.routecast_live import PRICES, make_config, model_entry, serve
from tests.stub_upstream import Received, Step, StubUpstream
from tests.toy import toy_dataset

if TYPE_CHECKING:
    from routecast.signals.learned import LearnedScorer

QUESTION = "what is two plus two"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]
VERIFY_MARK = "Is the proposed answer correct?"
EASY = "question 1001: hello weather greeting thanks"
HARD = "question 1002: integral theorem proof matrix"


def new_scorer(**params: Any) -> LearnedScorer:
    """An unfitted learned scorer, imported only now: importing its module registers the
    signal, and the registry keeps the order of first imports, which other tests read."""
    from routecast.signals.learned import LearnedScorer

    return LearnedScorer(**params)


class Scripted(StubUpstream):
    """The stub, with scripted answers to the judges' own calls: a request with a ``seed`` is
    a sample (answered ``samples[model][seed - 1]``), one that asks whether a proposed answer
    is correct a verification (answered ``verdict[model]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[str, list[str]] = {}
        self.verdict: dict[str, str] = {}
        self._body: dict[str, Any] = {}

    async def _begin(self, request: StarletteRequest
                     ) -> tuple[dict[str, Any], Step, Any]:
        body, step, failed = await super()._begin(request)
        # The stub picks the answer right after this returns, with no await in between, so
        # concurrent requests cannot swap bodies.
        self._body = body
        return body, step, failed

    def answer_words(self, model: str, text: str) -> list[str]:  # type: ignore[override]
        body = self._body
        if VERIFY_MARK in json.dumps(body) and model in self.verdict:
            return self.verdict[model].split()
        if "seed" in body and model in self.samples:
            return self.samples[model][int(body["seed"]) - 1].split()
        return StubUpstream.answer_words(model, text)


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    price_in, price_out, _ = PRICES.get(model, (1.0, 2.0, None))
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


def answer_cost(model: str, body: dict[str, Any], answer: str) -> float:
    """What the stub bills for answering ``body`` with ``answer`` (one token per word)."""
    return cost(model, StubUpstream.prompt_tokens(body), len(answer.split()))


def greedy(model: str, question: str = QUESTION) -> str:
    return " ".join(StubUpstream.answer_words(model, question))


def plain_cost(model: str, question: str = QUESTION) -> float:
    return answer_cost(model, {"messages": [{"role": "user", "content": question}]},
                       greedy(model, question))


def with_responses(data: Dataset) -> Dataset:
    """The toy data with the answers the stub gives (so a scorer sees live-like text)."""
    responses = np.array([[greedy(m, p) for m in data.models] for p in data.prompts],
                         dtype=object)
    return replace(data, responses=responses)


def confidence_data() -> Dataset:
    """Small is right on a coin flip, whatever the prompt, and its confidence says when."""
    data = with_responses(toy_dataset(240, seed=1))
    rng = np.random.default_rng(1)
    right = rng.random(data.n_prompts) < 0.5
    quality = data.quality.copy()
    quality[:, 0] = right
    confidence = np.full(quality.shape, 0.5)
    confidence[:, 0] = np.where(right, 0.9, 0.1) + rng.uniform(-0.05, 0.05, data.n_prompts)
    return replace(data, quality=quality, confidence=confidence)


@pytest.fixture(scope="module")
def stub() -> Iterator[Scripted]:
    s = Scripted()
    with s:
        yield s


@pytest.fixture(scope="module")
def scorer() -> LearnedScorer:
    """Knows from the words that small fails hard prompts (toy data); no confidence."""
    return new_scorer(use_confidence=False).fit(with_responses(toy_dataset(240)))


@pytest.fixture(scope="module")
def client(stub: Scripted, scorer: LearnedScorer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[openai.OpenAI]:
    tuned = tmp_path_factory.mktemp("tuned")  # as `routecast tune-cascade` writes it
    (tuned / "cascade.json").write_text(json.dumps(
        Cascade(("small", "large"), (0.5,), "learned").to_dict()))
    save_scorer(scorer, tuned)
    by_confidence = save_scorer(new_scorer().fit(confidence_data()),
                                tmp_path_factory.mktemp("conf-scorer"))
    config = make_config(stub.url, None, models={
        "basic": model_entry(stub.url, "basic", kind="base")}, endpoints={
        "agree": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.9],
                  "signal": "agreement", "samples": 2, "temperature": 0.5},
        "verify": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.5],
                   "signal": "self-verification", "votes": 3},
        "verify-base": {"type": "cascade", "models": ["basic", "large"], "thresholds": [0.5],
                        "signal": "self-verification"},
        "learned": {"type": "cascade", "file": str(tuned)},
        "learned-conf": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.5],
                         "signal": "learned", "scorer": str(by_confidence),
                         "logprobs": "mean"},
    })
    with serve(config) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def ask(client: openai.OpenAI, endpoint: str, question: str = QUESTION, **extra: Any
        ) -> tuple[Any, list[str], float]:
    """(reply, route, cost) of one non-streamed request."""
    raw = client.chat.completions.with_raw_response.create(
        model=endpoint, messages=[{"role": "user", "content": question}], **extra)
    return (raw.parse(), raw.headers["x-routecast-route"].split(","),
            float(raw.headers["x-routecast-cost-usd"]))


def since(stub: StubUpstream, n: int) -> list[Received]:
    return stub.received[n:]


# -- agreement -----------------------------------------------------------------------------------


def test_agreeing_samples_keep_the_answer_and_are_paid(client: openai.OpenAI,
                                                       stub: Scripted) -> None:
    stub.samples["small"] = [greedy("small"), greedy("small").upper() + "."]  # same, normalised
    n = len(stub.received)
    reply, route, paid = ask(client, "agree")
    assert reply.model == "small" and route == ["small"]
    calls = since(stub, n)
    assert [c.body["model"] for c in calls] == ["small"] * 3
    samples = [c.body for c in calls[1:]]
    assert sorted(b["seed"] for b in samples) == [1, 2]
    assert all(b["temperature"] == 0.5 and not b.get("stream") and "logprobs" not in b
               for b in samples)
    assert "logprobs" not in calls[0].body  # agreement reads no log-probs
    assert paid == pytest.approx(plain_cost("small") * 3)


def test_disagreeing_samples_escalate_and_every_call_is_paid(client: openai.OpenAI,
                                                             stub: Scripted) -> None:
    stub.samples["small"] = ["4", greedy("small")]  # 2 of 3 answers agree: 0.67 < 0.9
    reply, route, paid = ask(client, "agree")
    assert reply.model == "large" and route == ["small", "large"]
    assert reply.choices[0].message.content == greedy("large")
    body = {"messages": MESSAGES}
    expected = (plain_cost("small") * 2 + answer_cost("small", body, "4") + plain_cost("large"))
    assert paid == pytest.approx(expected)


def test_a_failed_sample_escalates_and_the_rest_is_still_paid(client: openai.OpenAI,
                                                              stub: Scripted) -> None:
    stub.samples["small"] = [greedy("small"), greedy("small")]
    # the answer, then one sample rejected as invalid (never retried), the other answered
    stub.then(Step(), Step(status=400))
    _, route, paid = ask(client, "agree")
    assert route == ["small", "large"]
    assert paid == pytest.approx(plain_cost("small") * 2 + plain_cost("large"))


def test_a_tool_call_cannot_be_judged_and_escalates_without_samples(
        client: openai.OpenAI, stub: Scripted) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "weather", "parameters": {"type": "object", "properties": {}}}}]
    n = len(stub.received)
    reply, route, _ = ask(client, "agree", tools=tools)
    assert route == ["small", "large"] and reply.choices[0].message.tool_calls
    assert [c.body["model"] for c in since(stub, n)] == ["small", "large"]


def test_a_stream_sends_one_models_answer_judged_before_the_first_byte(
        client: openai.OpenAI, stub: Scripted) -> None:
    stub.samples["small"] = ["4", "5"]
    n = len(stub.received)
    chunks = list(client.chat.completions.create(model="agree", messages=MESSAGES,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy("large")  # nothing of small's answer reached the client
    calls = since(stub, n)
    # the samples were all answered before the last step's stream was asked for
    assert [(c.body["model"], bool(c.body.get("stream"))) for c in calls] == [
        ("small", False)] * 3 + [("large", True)]
    summary = (chunks[-1].model_extra or {})["routecast"]
    assert summary["route"] == ["small", "large"]
    body = {"messages": MESSAGES}
    assert summary["cost_usd"] == pytest.approx(
        plain_cost("small") + answer_cost("small", body, "4") + answer_cost("small", body, "5")
        + plain_cost("large"))

    stub.samples["small"] = [greedy("small")] * 2
    chunks = list(client.chat.completions.create(model="agree", messages=MESSAGES,
                                                 stream=True))
    assert [c.choices[0].delta.content for c in chunks if c.choices] == [greedy("small")]
    assert (chunks[-1].model_extra or {})["routecast"]["route"] == ["small"]


# -- self-verification ---------------------------------------------------------------------------


def verify_calls(calls: list[Received]) -> list[Received]:
    return [c for c in calls if VERIFY_MARK in json.dumps(c.body)]


def test_a_verified_answer_is_kept_and_each_vote_is_paid(client: openai.OpenAI,
                                                         stub: Scripted) -> None:
    stub.verdict["small"] = "Yes, it is correct."
    n = len(stub.received)
    reply, route, paid = ask(client, "verify")
    assert reply.model == "small" and route == ["small"]
    votes = verify_calls(since(stub, n))
    assert len(votes) == 3 and sorted(v.body["seed"] for v in votes) == [1, 2, 3]
    asked = votes[0].body["messages"][0]["content"]
    assert QUESTION in asked and f"Proposed answer: {greedy('small')}" in asked
    assert paid == pytest.approx(plain_cost("small") + sum(
        answer_cost("small", v.body, stub.verdict["small"]) for v in votes))


def test_a_rejected_answer_escalates(client: openai.OpenAI, stub: Scripted) -> None:
    stub.verdict["small"] = "No, that is wrong."
    reply, route, _ = ask(client, "verify")
    assert reply.model == "large" and route == ["small", "large"]
    stub.verdict["small"] = "I am not sure."  # no verdict: not verified
    assert ask(client, "verify")[1] == ["small", "large"]


def test_a_base_model_verifies_through_its_prompt_format(client: openai.OpenAI,
                                                         stub: Scripted) -> None:
    stub.verdict["basic"] = "yes"
    n = len(stub.received)
    reply, route, _ = ask(client, "verify-base")
    assert route == ["basic"] and reply.model == "basic"
    [vote] = verify_calls(since(stub, n))
    assert vote.path == "/v1/completions" and vote.body["temperature"] == 0.0
    assert vote.body["prompt"].startswith("<|im_start|>user\n")  # the chat turn, formatted
    stub.verdict["basic"] = "no"
    assert ask(client, "verify-base")[1] == ["basic", "large"]


def test_a_failed_verification_call_escalates(client: openai.OpenAI, stub: Scripted) -> None:
    stub.verdict["basic"] = "yes"
    stub.then(Step(), Step(status=400))  # the answer, then its verification rejected
    n = len(stub.received)
    reply, route, paid = ask(client, "verify-base")
    assert route == ["basic", "large"] and reply.model == "large"
    answered = stub.received[n]  # a base model answers "<model> says:" + the prompt's last line
    assert paid == pytest.approx(answer_cost("basic", answered.body, "basic says:")
                                 + plain_cost("large"))


# -- learned -------------------------------------------------------------------------------------


def test_the_learned_scorer_keeps_easy_answers_and_escalates_hard_ones(
        client: openai.OpenAI, stub: Scripted) -> None:
    n = len(stub.received)
    reply, route, paid = ask(client, "learned", EASY)
    assert route == ["small"] and reply.model == "small"
    assert paid == pytest.approx(plain_cost("small", EASY))  # scoring calls no model
    assert "logprobs" not in stub.received[n].body  # fitted without confidence
    reply, route, paid = ask(client, "learned", HARD)
    assert route == ["small", "large"]
    assert paid == pytest.approx(plain_cost("small", HARD) + plain_cost("large", HARD))


def test_a_scorer_fitted_with_confidence_reads_the_live_log_probs(
        client: openai.OpenAI, stub: Scripted) -> None:
    stub.logprob["small"] = -0.01  # every token sure
    n = len(stub.received)
    reply, route, _ = ask(client, "learned-conf", EASY)
    assert route == ["small"]
    assert stub.received[n].body["logprobs"] is True
    assert reply.choices[0].logprobs is None  # asked for the scorer, not for the client
    stub.logprob["small"] = -3.0  # unsure: confidence 0.05
    assert ask(client, "learned-conf", EASY)[1] == ["small", "large"]
    stub.logprob["small"] = -0.1


# -- config --------------------------------------------------------------------------------------


def cascade_config(spec: dict[str, Any]) -> Any:
    models = {m: {"base_url": "http://127.0.0.1:9/v1"} for m in ("small", "medium", "large")}
    return parse_config({"models": models, "endpoints": {"c": {"type": "cascade", **spec}}},
                        where="routecast.yaml")


def build_error(spec: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as e:
        build_endpoints(cascade_config(spec), env={}, **kwargs)
    return str(e.value)


def parse_error(spec: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        cascade_config(spec)
    return str(e.value)


PAIR = {"models": ["small", "large"], "thresholds": [0.5]}


def test_signal_parameters_are_checked_against_the_signal() -> None:
    message = parse_error({**PAIR, "samples": 3})
    assert "endpoints.c" in message and "`samples` is read only by signal agreement" in message
    assert "Fix: remove `samples`, or set `signal: agreement`" in message
    assert "`votes` is read only by signal self-verification" in parse_error(
        {**PAIR, "signal": "agreement", "votes": 2})
    assert "`scorer` is read only by signal learned" in parse_error(
        {**PAIR, "signal": "confidence", "scorer": "x"})
    assert "endpoints.c.samples" in parse_error({**PAIR, "signal": "agreement", "samples": 0})
    assert "`thresholds` come from the cascade `file`" in parse_error(
        {"file": "c.json", "thresholds": [0.5]})
    assert "endpoints.c.signal" in parse_error({**PAIR, "signal": "telepathy"})


def test_threshold_count_errors_name_the_key() -> None:
    message = build_error({"models": ["small", "medium", "large"], "thresholds": [0.5]})
    assert "needs 2 thresholds" in message and "got 1" in message
    assert "Fix: give endpoints.c.thresholds 2 number(s)" in message


def test_learned_needs_a_scorer_that_knows_the_models(tmp_path: Path,
                                                      scorer: LearnedScorer) -> None:
    message = build_error({**PAIR, "signal": "learned"})
    assert "endpoints.c.scorer" in message and "without a fitted scorer" in message
    assert "routecast tune-cascade --signal learned" in message
    assert "has no scorer.json" in build_error(
        {**PAIR, "signal": "learned", "scorer": str(tmp_path)})
    # a folder with a cascade but no scorer
    (tmp_path / "cascade.json").write_text(json.dumps(
        Cascade(("small", "large"), (0.5,), "learned").to_dict()))
    assert f"there is none in {tmp_path}" in build_error({"file": str(tmp_path)})
    other = new_scorer(use_confidence=False).fit(
        with_responses(toy_dataset(60)).select_models(["medium", "large"]))
    assert "cannot score ['small']" in build_error({**PAIR, "signal": "learned"},
                                                   scorers={"c": other})


def test_scorers_are_passed_by_endpoint_name(scorer: LearnedScorer) -> None:
    table = build_endpoints(cascade_config({**PAIR, "signal": "learned"}), env={},
                            scorers={"c": scorer})
    backend = table.backends["c"]
    assert isinstance(backend, CascadeBackend) and isinstance(backend.judge, LearnedJudge)
    assert backend.judge.scorer is scorer


def test_a_file_tuned_for_another_signal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(Cascade(("small", "large"), (0.5,), "confidence").to_dict()))
    message = build_error({"file": str(path), "signal": "agreement"})
    assert "endpoints.c.signal" in message and "tuned for the 'confidence' signal" in message
    path.write_text(json.dumps(Cascade(("small", "large"), (0.5,), "router").to_dict()))
    assert "signal 'router' cannot be computed live" in build_error({"file": str(path)})
    path.write_text(json.dumps(Cascade(("small", "large"), (0.5,), "agreement").to_dict()))
    assert "`logprobs` is read only by" in build_error({"file": str(path), "logprobs": "min"})
    table = build_endpoints(cascade_config({"file": str(path), "samples": 4}), env={})
    backend = table.backends["c"]
    assert isinstance(backend, CascadeBackend) and backend.cascade.signal == "agreement"
    assert getattr(backend.judge, "samples", None) == 4


def test_nan_never_accepts() -> None:
    # The rule every judge leans on when it cannot judge an answer.
    assert not Cascade(("small", "large"), (0.0,)).accepts(0, math.nan)


def test_a_config_file_serves_every_signal_with_paths_relative_to_it(
        tmp_path: Path, scorer: LearnedScorer) -> None:
    import yaml

    from routecast.backends.judges import AgreementJudge, SelfVerificationJudge
    from routecast.server.config import load_config

    save_scorer(scorer, tmp_path / "scorers" / "smart")
    models = {m: {"base_url": "http://127.0.0.1:9/v1"} for m in ("small", "large")}
    path = tmp_path / "routecast.yaml"
    path.write_text(yaml.safe_dump({"models": models, "endpoints": {
        "agree": {**PAIR, "type": "cascade", "signal": "agreement"},
        "verify": {**PAIR, "type": "cascade", "signal": "self-verification", "votes": 2},
        "learned": {**PAIR, "type": "cascade", "signal": "learned",
                    "scorer": "scorers/smart"}}}))
    backends = build_endpoints(load_config(path), env={}).backends
    judges = {name: getattr(backends[name], "judge", None) for name in ("agree", "verify",
                                                                        "learned")}
    assert isinstance(judges["agree"], AgreementJudge) and judges["agree"].samples == 2
    assert isinstance(judges["verify"], SelfVerificationJudge) and judges["verify"].votes == 2
    assert isinstance(judges["learned"], LearnedJudge)
    assert judges["learned"].scorer.models_ == scorer.models_
