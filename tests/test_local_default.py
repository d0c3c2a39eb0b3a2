"""The embedded default: its config, what is tuned on the shipped outcomes, and `routecast serve`
with no config on the two real local models, asked through the official openai client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast.backends.cascade import CascadeBackend
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.prompt_format import PromptFormat
from routecast.backends.routed import RoutedBackend
from routecast.cascades.cascade import Cascade
from routecast.errors import ConfigError
from routecast.local import outcomes
from routecast.local.default import (
    CASCADE_ENDPOINT,
    PLAIN_ENDPOINTS,
    ROUTED_ENDPOINT,
    default_config,
    gemma_format,
    tuned,
)
from routecast.local.demo import Server
from routecast.local.llamacpp import free_port
from routecast.local.models import BUILTIN, GEMMA_TEMPLATE
from routecast.local.outcomes import LARGE, SMALL
from routecast.server.endpoints import build_endpoints
from routecast.signals.live import summarize_logprobs

URLS = {SMALL: "http://127.0.0.1:9", LARGE: "http://127.0.0.1:10"}


@pytest.fixture(scope="module")
def shipped() -> outcomes.LocalOutcomes:
    return outcomes.load()


def test_gemma_format_writes_the_template_collect_used() -> None:
    fmt = PromptFormat(**{**gemma_format().model_dump(), "stop": ("\n",)})
    question = "What is the capital of Peru? Answer with the city name only."
    rendered = fmt.render([{"role": "user", "content": question}])
    assert rendered == GEMMA_TEMPLATE.replace("{prompt}", question)
    assert gemma_format().stop == list(BUILTIN[LARGE].stop)


def test_default_config_serves_four_endpoints_over_two_local_models() -> None:
    cascade = Cascade((SMALL, LARGE), (0.7,))
    config = default_config(URLS, cascade)
    assert set(config.models) == {SMALL, LARGE}
    assert all(m.local for m in config.models.values())
    assert config.models[LARGE].kind == "base" and config.models[SMALL].kind == "chat"
    assert config.models[SMALL].base_url == URLS[SMALL] + "/v1"
    assert config.storage.db is None  # the embedded default writes no files
    router, policy = tuned()[1:]
    table = build_endpoints(config, routers={ROUTED_ENDPOINT: (router, policy)})
    for name, model in PLAIN_ENDPOINTS.items():
        backend = table.backends[name]
        assert isinstance(backend, OpenAIHTTPBackend) and backend.model == model
    gemma = table.backends["gemma3"]
    assert isinstance(gemma, OpenAIHTTPBackend) and gemma.kind == "base"
    assert isinstance(table.backends[ROUTED_ENDPOINT], RoutedBackend)
    live = table.backends[CASCADE_ENDPOINT]
    assert isinstance(live, CascadeBackend)
    assert live.cascade == cascade and live.summary == "mean_prob"


def test_default_config_serves_the_learned_cascade_with_the_fitted_scorer() -> None:
    tuned_cascade, router, policy = tuned()
    config = default_config(URLS, tuned_cascade.cascade)
    spec = config.endpoints[CASCADE_ENDPOINT]
    assert getattr(spec, "signal", None) == "learned"
    with pytest.raises(ConfigError, match="scorer"):  # a learned cascade needs its scorer
        build_endpoints(config, routers={ROUTED_ENDPOINT: (router, policy)})
    assert tuned_cascade.scorer is not None
    table = build_endpoints(config, routers={ROUTED_ENDPOINT: (router, policy)},
                            scorers={CASCADE_ENDPOINT: tuned_cascade.scorer})
    live = table.backends[CASCADE_ENDPOINT]
    assert isinstance(live, CascadeBackend) and live.cascade == tuned_cascade.cascade
    assert live.judge.name == "learned"


def test_the_cascade_scores_answers_as_collect_recorded_them() -> None:
    # collect's confidence is the arithmetic mean token probability; the live cascade must
    # compute the same number, or the tuned threshold would mean something else live.
    live = CascadeBackend(Cascade((SMALL, LARGE), (0.5,)), {
        m: OpenAIHTTPBackend(m, URLS[m]) for m in (SMALL, LARGE)}, summary="mean_prob")
    logprobs = [-0.01, -2.0, -0.5]
    body = {"choices": [{"logprobs": {"content": [{"logprob": x} for x in logprobs]}}]}
    expected = float(np.mean(np.exp(logprobs)))
    assert live.score(body, "chat") == pytest.approx(expected)
    assert summarize_logprobs(logprobs, method="mean") < expected  # the geometric mean is lower


def test_served_costs_log_probs_only_for_the_first_step(shipped: outcomes.LocalOutcomes) -> None:
    plain = outcomes.served(shipped)
    first = outcomes.served(shipped, first=SMALL)
    s, g = plain.model_index(SMALL), plain.model_index(LARGE)
    # the first step pays for log-probs (llama-cpp-python sorts the vocabulary per token) ...
    assert (first.cost_usd[:, s] > plain.cost_usd[:, s]).all()
    assert first.confidence is not None and not np.isnan(first.confidence[:, s]).any()
    # ... and the step after it is asked as it would be alone
    np.testing.assert_array_equal(first.cost_usd[:, g], plain.cost_usd[:, g])
    assert plain.confidence is not None and np.isnan(plain.confidence).all()
    # answers are greedy: the two runs agree on (almost) every grade
    agree = (shipped.plain.quality == shipped.logprobs.quality).mean()
    assert agree > 0.9


def test_tuned_confidence_cascade_is_at_least_as_accurate_as_either_model_on_its_tuning_data(
        shipped: outcomes.LocalOutcomes) -> None:
    tuned_cascade = outcomes.tune_cascade(shipped, (SMALL, LARGE), signal="confidence")
    cascade = tuned_cascade.cascade
    assert cascade.models == (SMALL, LARGE) and len(cascade.thresholds) == 1
    assert tuned_cascade.scorer is None and cascade.signal == "confidence"
    data = outcomes.served(shipped, first=SMALL)
    tuning = data.take(np.isin(data.split, ("train", "validation")))
    assert tuning.confidence is not None
    replay = cascade.replay(tuning, tuning.confidence)
    slack = 1 / tuning.n_prompts
    for model in (SMALL, LARGE):
        alone = outcomes.single(tuning, model).mean_quality
        assert replay.mean_quality >= alone - slack - 1e-12
    # and it is not one of the degenerate thresholds that never or always escalate
    assert 0 < replay.escalation_rate < 1


def test_served_cascade_starts_with_the_cheaper_model_and_needs_no_log_probs(
        shipped: outcomes.LocalOutcomes) -> None:
    tuned_cascade = outcomes.tune_cascade(shipped)
    cascade, scorer = tuned_cascade.cascade, tuned_cascade.scorer
    plain = outcomes.served(shipped)
    first, second = (plain.model_index(m) for m in cascade.models)
    # "cheaper" as measured: the first step's answers cost less energy on every split
    assert plain.cost_usd[:, first].mean() < plain.cost_usd[:, second].mean()
    assert cascade.signal == "learned" and scorer is not None
    assert not scorer.uses_confidence_  # judged on text only: no log-probs are asked for
    data = tuned_cascade.data(shipped)
    assert data.confidence is not None and np.isnan(data.confidence).all()
    np.testing.assert_array_equal(data.cost_usd, plain.cost_usd)
    tuning = data.take(np.isin(data.split, ("train", "validation")))
    replay = cascade.replay(tuning, tuned_cascade.scores(tuning))
    # escalating on the scorer's doubt beats the first model alone on the tuning prompts
    assert replay.mean_quality > outcomes.single(tuning, cascade.models[0]).mean_quality
    assert 0 < replay.escalation_rate < 1


def test_held_out_report_covers_the_four_ways(shipped: outcomes.LocalOutcomes) -> None:
    cascade, router, policy = tuned()
    rows = outcomes.held_out_report(shipped, cascade, router, policy)
    assert [r.name.split()[0] for r in rows] == ["always", "always", "cascade", "routed"]
    test = outcomes.served(shipped).subset("test")
    assert rows[0].accuracy == pytest.approx(test.quality[:, test.model_index(SMALL)].mean())
    assert rows[1].answered_by_small == 0 and rows[0].answered_by_small == 1
    assert all(r.energy_j > 0 and r.latency_s > 0 for r in rows)


# -- the real thing ------------------------------------------------------------------------------


def _trusted_and_doubted(shipped: outcomes.LocalOutcomes, tuned_cascade: outcomes.TunedCascade
                         ) -> tuple[str, str]:
    """The held-out prompts whose recorded first-step answers the scorer rates highest and
    lowest (answers are greedy, so the live ones are the recorded ones)."""
    data = tuned_cascade.data(shipped).subset("test")
    col = tuned_cascade.scores(data)[:, data.model_index(tuned_cascade.cascade.models[0])]
    hi, lo = int(np.argmax(col)), int(np.argmin(col))
    threshold = tuned_cascade.cascade.thresholds[0]
    assert col[hi] > threshold > col[lo]  # else the prompts would not test the threshold
    return data.prompts[hi], data.prompts[lo]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(free_port())
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.mark.needs_local
def test_serve_without_config_answers_on_every_endpoint(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} >= {*PLAIN_ENDPOINTS, ROUTED_ENDPOINT,
                                                    CASCADE_ENDPOINT}
    question = "What is the capital of France? Answer with the city name only."
    for endpoint, allowed in [("smollm2", {SMALL}), ("gemma3", {LARGE}),
                              (ROUTED_ENDPOINT, {SMALL, LARGE}),
                              (CASCADE_ENDPOINT, {SMALL, LARGE})]:
        answer = client.chat.completions.create(
            model=endpoint, messages=[{"role": "user", "content": question}], max_tokens=8,
            temperature=0)
        assert answer.model in allowed, endpoint
        assert (answer.choices[0].message.content or "").strip(), endpoint
    # the base model answers on one line: the template's stop at the end of the line held
    gemma = client.chat.completions.create(
        model="gemma3", messages=[{"role": "user", "content": question}], max_tokens=8,
        temperature=0)
    assert "\n" not in (gemma.choices[0].message.content or "").strip()


@pytest.mark.needs_local
def test_cascade_escalates_on_doubt_and_not_on_trust(
        server: Server, shipped: outcomes.LocalOutcomes) -> None:
    import openai

    tuned_cascade = tuned()[0]
    first, second = tuned_cascade.cascade.models
    sure, doubtful = _trusted_and_doubted(shipped, tuned_cascade)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    def route(prompt: str) -> list[str]:
        raw = client.chat.completions.with_raw_response.create(
            model=CASCADE_ENDPOINT, messages=[{"role": "user", "content": prompt}],
            max_tokens=32, temperature=0)
        assert raw.parse().choices[0].logprobs is None
        return raw.headers["x-routecast-route"].split(",")

    assert route(sure) == [first]
    assert route(doubtful) == [first, second]


def test_default_declares_text_only_models_with_their_served_windows() -> None:
    config = default_config(URLS, tuned()[0].cascade)
    for model in (SMALL, LARGE):
        caps = config.models[model].capabilities
        assert (caps.input, caps.tools, caps.structured_output) == (["text"], False, [])
        assert caps.tokenize_url == f"{URLS[model]}/extras/tokenize/count"
    # llama.cpp serves a 2,048-token context; Gemma's prompts also carry the few-shot template
    assert config.models[SMALL].capabilities.context_window == 2048
    assert 1800 < (config.models[LARGE].capabilities.context_window or 0) < 2048


@pytest.mark.needs_local
def test_default_refuses_what_its_models_cannot_serve_and_counts_near_the_window(
        server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    image: Any = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=ROUTED_ENDPOINT,
                                       messages=[{"role": "user", "content": image}])
    assert "image input" in str(caught.value)
    assert f"{SMALL} (no image input)" in str(caught.value)
    assert f"{LARGE} (no image input)" in str(caught.value)
    # ~2,500 tokens by the estimate, ~1,500 by SmolLM2's own tokenizer (asked through the
    # llama.cpp server): it fits the 2,048-token window, and SmolLM2 answers.
    near = " ".join(["hello"] * 1500)
    answer = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": near}], max_tokens=1)
    assert answer.model == SMALL
    assert 1400 < (answer.usage.prompt_tokens if answer.usage else 0) < 2048
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": f"{near} {near}"}])
    assert "window 2048" in str(caught.value)


@pytest.mark.needs_local
def test_model_servers_stop_with_serve(server: Server) -> None:
    # runs last of the tests on the shared server: it stops it
    pids = server.model_pids()
    assert set(pids) == {SMALL, LARGE}
    server.stop()  # SIGTERM, as a service manager would send
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{p}").exists() for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids.values() if Path(f"/proc/{p}").exists()]


def test_serve_without_config_names_the_install_when_llama_cpp_is_missing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from routecast.cli import main
    from routecast.local.models import CMAKE_ARGS

    real = importlib.util.find_spec  # what llamacpp.launch asks before it starts a server
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", str(free_port())])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "routecast[local]" in err and CMAKE_ARGS in err
