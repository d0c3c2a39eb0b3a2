"""The replay fleet over the real recorded data sets, through real HTTP and the openai client."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openai
import pytest

from routecast.backends.judges import confidence_score
from routecast.data.dataset import Dataset
from routecast.fleet import RunningFleet, load_fleet, prompt_key, serve_fleet, spawn_fleet
from routecast.fleet.logprobs import token_logprob
from routecast.signals.live import LogprobSummary, summarize_logprobs

ALL_SUMMARIES: tuple[LogprobSummary, ...] = ("mean", "min", "first", "margin", "mean_prob")


class Reply:
    def __init__(self, status_code: int, raw: bytes) -> None:
        self.status_code = status_code
        self.raw = raw

    def json(self) -> Any:
        return json.loads(self.raw)


def http(method: str, url: str, payload: Any = None, content: bytes | None = None) -> Reply:
    """One plain HTTP call (no client library in the way of the raw status and body)."""
    data = content if content is not None else (
        None if payload is None else json.dumps(payload).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return Reply(r.status, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read())


def texts(data: Dataset) -> npt.NDArray[np.object_]:
    assert data.responses is not None
    return data.responses


def client(fleet: RunningFleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.base_url, api_key="unused", max_retries=0)


def half_token_usd(fleet: RunningFleet, model: str) -> float:
    """The most one answer's billed cost may differ from the recorded one (token rounding)."""
    price = fleet.prices[model]
    return max(price.input_usd_per_mtok, price.output_usd_per_mtok) / 2e6 + 1e-15


def billed(fleet: RunningFleet, model: str, usage: openai.types.CompletionUsage) -> float:
    price = fleet.prices[model]
    return (usage.prompt_tokens * price.input_usd_per_mtok
            + usage.completion_tokens * price.output_usd_per_mtok) / 1e6


def test_answers_are_the_recorded_text_at_the_recorded_cost(
        routerbench_fleet: RunningFleet) -> None:
    fleet = routerbench_fleet.fleet
    assert fleet is not None
    data = fleet.data
    c = client(routerbench_fleet)
    rows = fleet.served_rows()[::400]
    for row in rows:
        for j in (0, 4, 10):  # gpt-3.5, gpt-4, mistral-7b
            model = data.models[j]
            # Re-wrapped white space still finds the prompt; a system prompt is ignored.
            asked = "  " + data.prompts[row].replace("\n", " \n ") + "\n"
            r = c.chat.completions.create(model=model, messages=[
                {"role": "system", "content": "be brief"}, {"role": "user", "content": asked}])
            assert r.choices[0].message.content == texts(data)[row, j]
            assert r.model == model
            assert r.usage is not None
            assert abs(billed(routerbench_fleet, model, r.usage) - data.cost_usd[row, j]) \
                <= half_token_usd(routerbench_fleet, model)


def test_mean_billed_cost_matches_the_recorded_mean(routerbench_fleet: RunningFleet) -> None:
    """Rounding to whole tokens is unbiased: over many answers the means agree closely."""
    fleet = routerbench_fleet.fleet
    assert fleet is not None
    for model in ("gpt-4-1106-preview", "mistralai/mistral-7b-chat"):
        j = fleet.data.model_index(model)
        rows = fleet.served_rows()
        served = [fleet.answer(model, fleet.data.prompts[i]).cost_usd for i in rows]
        recorded = fleet.data.cost_usd[rows, j]
        assert abs(np.mean(served) / recorded.mean() - 1) < 1e-3


def test_routellm_prices_and_tokens_are_the_recorded_ones(shared_data: Path) -> None:
    fleet = load_fleet(shared_data / "routellm-evals", tasks=["gsm8k"])
    data = fleet.data
    assert {p.how for p in fleet.prices.values()} == {"recorded"}
    assert fleet.prices["gpt-4-1106-preview"].output_usd_per_mtok == 30.0
    row = fleet.served_rows()[5]
    j = data.model_index("gpt-4-1106-preview")
    answer = fleet.answer("gpt-4-1106-preview", data.prompts[row])
    assert data.tokens_in is not None and data.tokens_out is not None
    assert (answer.prompt_tokens, answer.completion_tokens) == (data.tokens_in[row, j],
                                                                data.tokens_out[row, j])
    assert answer.cost_usd == pytest.approx(data.cost_usd[row, j], rel=1e-12)
    # MMLU rows record no response: not served.
    everything = load_fleet(shared_data / "routellm-evals")
    mmlu = next(i for i, t in enumerate(everything.data.task or ()) if t.startswith("mmlu"))
    assert everything.row_of(everything.data.prompts[mmlu]) is None
    assert everything.n_prompts == len({
        prompt_key(everything.data.prompts[i]) for i in range(everything.data.n_prompts)
        if any(isinstance(r, str) for r in texts(everything.data)[i])})


def test_logprobs_reproduce_the_recorded_confidence(cascades_fleet: RunningFleet) -> None:
    fleet = cascades_fleet.fleet
    assert fleet is not None
    data = fleet.data
    assert data.confidence is not None
    c = client(cascades_fleet)
    for row in fleet.served_rows()[::150]:
        for j, model in enumerate(data.models):
            r = c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": data.prompts[row]}],
                logprobs=True, top_logprobs=2)
            body = r.model_dump()
            recorded = float(data.confidence[row, j])
            for summary in ALL_SUMMARIES:
                got = confidence_score(body, summary)
                # The recorded value or a few units of its last place up, never below it.
                assert recorded <= got <= recorded * (1 + 1e-12), (model, summary)
            text = "".join(t["token"] for t in body["choices"][0]["logprobs"]["content"])
            assert text == texts(data)[row, j]


@pytest.mark.parametrize("confidence", [1e-300, 1e-9, 0.00731, 0.3, 0.5, 0.999999, 1.0])
@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_token_logprob_never_undershoots(confidence: float, n: int) -> None:
    x = token_logprob(confidence, n)
    for summary in ALL_SUMMARIES[:3] + ALL_SUMMARIES[4:]:  # margin needs alternatives
        got = summarize_logprobs([x] * n, None, summary)
        assert confidence <= got <= confidence * (1 + 1e-12)


def test_no_confidence_in_the_data_means_no_logprobs(routerbench_fleet: RunningFleet) -> None:
    fleet = routerbench_fleet.fleet
    assert fleet is not None
    prompt = fleet.data.prompts[fleet.served_rows()[0]]
    r = client(routerbench_fleet).chat.completions.create(
        model="claude-v2", messages=[{"role": "user", "content": prompt}], logprobs=True)
    assert r.choices[0].logprobs is None


def test_streams_and_completions_carry_the_same_answer(cascades_fleet: RunningFleet) -> None:
    fleet = cascades_fleet.fleet
    assert fleet is not None
    data = fleet.data
    row, model = fleet.served_rows()[3], "gpt-4o"
    j = data.model_index(model)
    c = client(cascades_fleet)
    chunks = list(c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": data.prompts[row]}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == texts(data)[row, j]
    assert len([ch for ch in chunks if ch.choices]) > 1
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert abs(billed(cascades_fleet, model, usage) - data.cost_usd[row, j]) \
        <= half_token_usd(cascades_fleet, model)
    plain = c.completions.create(model=model, prompt=data.prompts[row], logprobs=1)
    assert plain.choices[0].text == texts(data)[row, j]
    lp = plain.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None and data.confidence is not None
    assert math.exp(lp.token_logprobs[0]) == pytest.approx(data.confidence[row, j])
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=model, prompt=data.prompts[row], stream=True) if ch.choices)
    assert streamed == texts(data)[row, j]


def test_errors_are_openai_shaped(routerbench_fleet: RunningFleet) -> None:
    url = routerbench_fleet.base_url
    fleet = routerbench_fleet.fleet
    assert fleet is not None
    unknown = http("POST", f"{url}/chat/completions", {
        "model": "gpt-4-1106-preview", "messages": [{"role": "user", "content": "hi there"}]})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["code"] == "prompt_not_found" and "hi there" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    prompt = fleet.data.prompts[0]
    no_model = http("POST", f"{url}/chat/completions", {
        "model": "gpt-5", "messages": [{"role": "user", "content": prompt}]})
    assert no_model.status_code == 404 and no_model.json()["error"]["code"] == "model_not_found"
    bad = http("POST", f"{url}/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError, match="prompt not found"):
        client(routerbench_fleet).completions.create(model="claude-v1", prompt="nothing")
    models = http("GET", f"{url}/models").json()["data"]
    assert [m["id"] for m in models] == [*fleet.models, "judge"]
    assert all(m["input_usd_per_mtok"] > 0 for m in models)


def test_the_judge_scores_recorded_answers(routerbench_fleet: RunningFleet) -> None:
    fleet = routerbench_fleet.fleet
    assert fleet is not None
    data = fleet.data
    c = client(routerbench_fleet)
    row = next(i for i in fleet.served_rows() if len(set(data.quality[i])) == 2
               and data.task is not None and data.task[i] == "mbpp")
    for j in range(data.n_models):
        question, answer = data.prompts[row], str(texts(data)[row, j])
        turns = c.chat.completions.create(model="judge", messages=[
            {"role": "system", "content": "Rate the answer 0 or 1."},
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}])
        assert float(turns.choices[0].message.content or "nan") == data.quality[row, j]
        tagged = c.chat.completions.create(model="judge", messages=[{"role": "user", "content":
            f"Judge it.\n<question>{question}</question>\n<answer>{answer}</answer>"}])
        assert float(tagged.choices[0].message.content or "nan") == data.quality[row, j]
        info = (tagged.model_extra or {})["fleet_judge"]
        assert data.models[j] in info["models"] and info["matched"] == "exact"
    mt = c.completions.create(model="judge", prompt=(
        f"[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
        "[The End of Assistant's Answer]"))
    assert float(mt.choices[0].text) == data.quality[row, data.n_models - 1]
    with pytest.raises(openai.UnprocessableEntityError, match="matches none"):
        c.chat.completions.create(model="judge", messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": "def f(): return 42  # never recorded"}])
    with pytest.raises(openai.BadRequestError, match="cannot tell what to judge"):
        c.chat.completions.create(model="judge", messages=[{"role": "user", "content": "hm"}])


def test_the_judge_falls_back_to_the_final_answer(cascades_fleet: RunningFleet) -> None:
    """A GSM8K answer worded differently but with a recorded final answer gets that verdict."""
    fleet = cascades_fleet.fleet
    assert fleet is not None
    data = fleet.data
    from routecast.fleet.judge import JudgeAsk
    from routecast.signals.live import normalize_answer

    row = next(i for i in fleet.served_rows() if data.task is not None
               and data.task[i] == "gsm8k" and data.quality[i].min() < data.quality[i].max())
    j = int(np.argmax(data.quality[row]))
    final = normalize_answer(str(texts(data)[row, j]))
    verdict = fleet.judge(JudgeAsk(data.prompts[row], f"Let me think again. #### {final}"))
    assert verdict.matched == "normalized" and verdict.score == 1.0


def test_judge_noise_flips_a_seeded_fraction(shared_data: Path) -> None:
    from routecast.fleet.judge import JudgeAsk

    def verdicts(noise: float, seed: int) -> tuple[npt.NDArray[np.float64],
                                                   npt.NDArray[np.float64]]:
        fleet = load_fleet(shared_data / "routerbench-subset", split="test",
                           judge_noise=noise, seed=seed)
        data = fleet.data
        rows = fleet.served_rows()[:300]
        return np.array([[fleet.judge(JudgeAsk(data.prompts[i], str(texts(data)[i, j]))).score
                          for j in (0, 4)] for i in rows]), data.quality[rows][:, [0, 4]]

    clean, quality = verdicts(0.0, 0)
    assert (clean == quality).all()
    noisy, _ = verdicts(0.2, 0)
    share = float((noisy != quality).mean())
    assert 0.15 < share < 0.25
    again, _ = verdicts(0.2, 0)
    assert (again == noisy).all()  # seeded: the same verdicts again
    other, _ = verdicts(0.2, 1)
    assert (other != noisy).any()


def test_speed_scales_the_recorded_latency(shared_data: Path) -> None:
    fleet = load_fleet(shared_data / "llm-cascades-zellinger", split="test", speed=0.25)
    data = fleet.data
    assert data.latency_s is not None
    j = data.model_index("gpt-4o")
    row = min(fleet.served_rows(), key=lambda i: abs(data.latency_s[i, j] - 2.0))  # type: ignore[index]
    expected = 0.25 * float(data.latency_s[row, j])
    with serve_fleet(fleet) as running:
        c = client(running)
        t0 = time.perf_counter()
        c.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": data.prompts[row]}])
        took = time.perf_counter() - t0
    assert expected <= took < expected + 0.5


def test_the_command_serves_and_writes_a_config(shared_data: Path, tmp_path: Path) -> None:
    from routecast.server.config import load_config

    with spawn_fleet(shared_data / "routerbench-subset", split="test",
                     judge_model="grader") as running:
        assert running.process is not None and running.judge_model == "grader"
        config_path = tmp_path / "fleet.yaml"
        config_path.write_text(json.dumps({"models": running.models_config()}))
        config = load_config(config_path)
        assert set(config.models) == {*running.models, "grader"}
        r = http("POST", f"{running.base_url}/chat/completions", {
            "model": "grader", "messages": [{"role": "user", "content": "x"},
                                            {"role": "assistant", "content": "y"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "prompt_not_found"
    assert running.process.poll() is not None  # stopped at the end of the block


def test_bad_input_is_refused_clearly(shared_data: Path) -> None:
    from routecast.errors import ConfigError, DataError

    with pytest.raises(DataError, match="no response text"):
        load_fleet(shared_data / "llmrouter-9model")
    with pytest.raises(ConfigError, match="unknown tasks"):
        load_fleet(shared_data / "routerbench-subset", tasks=["gsm8k"])
    with pytest.raises(ConfigError, match="judge noise"):
        load_fleet(shared_data / "routerbench-subset", judge_noise=1.5)


def test_a_served_cascade_escalates_as_its_replay(cascades_fleet: RunningFleet,
                                                  tmp_path: Path) -> None:
    """routecast serve over the fleet, a confidence cascade whose thresholds are recorded
    confidences (ties included): every prompt stops at the step the replay says, and costs
    what the replay says up to whole-token rounding, streamed or not."""
    from routecast.cascades.cascade import Cascade
    from routecast.server.config import parse_config
    from tests.routecast_live import serve

    fleet = cascades_fleet.fleet
    assert fleet is not None and fleet.data.confidence is not None
    rows = fleet.served_rows()[:40]
    data = fleet.data.take(rows)
    assert data.confidence is not None
    steps = ["llama3.2-1b", "llama3.1-70b", "gpt-4o"]
    thresholds = [float(np.quantile(data.confidence[:, data.model_index(m)], 0.5,
                                    method="lower")) for m in steps[:2]]
    cascade = Cascade(tuple(steps), tuple(thresholds))
    replay = cascade.replay(data, data.confidence)
    config = parse_config({"models": cascades_fleet.models_config(judge=False),
                           "endpoints": {"c": {"type": "cascade", "models": steps,
                                               "thresholds": thresholds}},
                           "storage": {"db": str(tmp_path / "log.db")}})
    with serve(config) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for i in range(data.n_prompts):
            chat: list[Any] = [{"role": "user", "content": data.prompts[i]}]
            raw = c.chat.completions.with_raw_response.create(model="c", messages=chat)
            expected = data.models[replay.answered[i]]
            assert raw.headers["x-routecast-model"] == expected, data.ids[i]
            assert raw.parse().choices[0].message.content == texts(data)[i, replay.answered[i]]
            visited = [m for m in steps if replay.visited[i, data.model_index(m)]]
            assert raw.headers["x-routecast-route"].split(",") == visited
            tolerance = sum(half_token_usd(cascades_fleet, m) for m in visited)
            assert abs(float(raw.headers["x-routecast-cost-usd"]) - replay.cost_usd[i]) \
                <= tolerance
            if i % 4 == 0:
                streamed = "".join(ch.choices[0].delta.content or "" for ch in
                                   c.chat.completions.create(model="c", messages=chat,
                                                             stream=True) if ch.choices)
                assert streamed == texts(data)[i, replay.answered[i]]
    assert 0 < replay.escalation_rate < 1  # both ways were exercised
