"""A cascade that learns its thresholds: the tuning on weighted rows, the sampler's pacing,
the learner's refit and swap rule, and the whole loop through a real routecast server over the
replay fleet of the cascade set (recorded answers, log-prob confidences and a judge that gives
the recorded quality), asked through the official ``openai`` client."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from routecast.cascades.cascade import Cascade
from routecast.errors import DataFormatError
from routecast.fleet import RunningFleet
from routecast.learning.cascade import (
    MISSED,
    NEVER,
    CascadeLearner,
    CascadeLearnerSettings,
    Goal,
    RowSampler,
    replay_thresholds,
    tune_thresholds,
    validation_loss,
)
from routecast.server.cascade_learning import thresholds_from_payload, thresholds_payload
from routecast.server.config import parse_config
from tests.routecast_live import serve
from tests.test_learning_server import wait_for

# -- tuning --------------------------------------------------------------------------------


def world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A two-step chain: the cheap step is right exactly when its score is above 0.6 (60 % of
    prompts), the dear step is always right; costs 1 and 10."""
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    quality = np.column_stack([(s > 0.4).astype(float), np.ones(n)])
    scores = np.column_stack([s, np.full(n, np.nan)])
    cost = np.column_stack([np.ones(n), np.full(n, 10.0)])
    return scores, quality, cost


def test_tuning_finds_the_threshold_that_separates_right_from_wrong() -> None:
    scores, quality, cost = world(2000)
    t = tune_thresholds(scores, quality, cost, np.ones(2000), Goal(1.0, z=0.0), n_levels=64)
    q, c = replay_thresholds(t, scores, quality, cost, np.ones(2000))
    assert q == pytest.approx(1.0)  # every kept cheap answer is right
    assert 0.38 < t[0] <= 0.42  # the first level above the cut
    assert c < 1 + 0.45 * 10  # ~40 % escalated, not all


def test_the_margin_makes_a_small_sample_tune_safer() -> None:
    """Half the cheap answers right at random, whatever the score: on 60 rows the point
    estimate finds thresholds that "reach" 75 % of the dear step by luck; z = 1 standard
    error of margin keeps more prompts on the dear step."""
    rng = np.random.default_rng(3)
    n = 60
    quality = np.column_stack([(rng.random(n) < 0.5).astype(float), np.ones(n)])
    scores = np.column_stack([rng.random(n), np.full(n, np.nan)])
    cost = np.column_stack([np.ones(n), np.full(n, 10.0)])
    w = np.ones(n)
    bare = tune_thresholds(scores, quality, cost, w, Goal(0.75, z=0.0))
    safe = tune_thresholds(scores, quality, cost, w, Goal(0.75, z=1.0))
    assert replay_thresholds(safe, scores, quality, cost, w)[1] > replay_thresholds(
        bare, scores, quality, cost, w)[1]


def test_weights_stand_for_the_rows_that_were_not_sampled() -> None:
    """Rows kept with probability p and weighted 1/p tune like the whole traffic: here the
    prompts the cheap step gets wrong were sampled 5x less often; unweighted, the tuning
    thinks the cheap step is better than it is."""
    scores, quality, cost = world(3000, seed=1)
    full = tune_thresholds(scores, quality, cost, np.ones(3000), Goal(0.9, z=0.0))
    wrong = quality[:, 0] == 0
    keep = ~wrong | (np.random.default_rng(2).random(3000) < 0.2)
    w = np.where(wrong, 5.0, 1.0)[keep]
    sub = (scores[keep], quality[keep], cost[keep])
    weighted = tune_thresholds(*sub, w, Goal(0.9, z=0.0))
    unweighted = tune_thresholds(*sub, np.ones(int(keep.sum())), Goal(0.9, z=0.0))
    q_w, _ = replay_thresholds(weighted, scores, quality, cost, np.ones(3000))
    q_u, _ = replay_thresholds(unweighted, scores, quality, cost, np.ones(3000))
    assert q_w >= 0.9 - 0.01 > q_u  # on all the traffic: weighted meets it, unweighted not
    # The weighted sample estimates the traffic's quality of a cascade; the plain one not.
    truth = replay_thresholds(full, scores, quality, cost, np.ones(3000))[0]
    assert replay_thresholds(full, *sub, w)[0] == pytest.approx(truth, abs=0.01)
    assert replay_thresholds(full, *sub, np.ones(len(w)))[0] > truth + 0.03


def test_a_budget_buys_the_best_quality_within_it() -> None:
    scores, quality, cost = world(2000)
    w = np.ones(2000)
    t = tune_thresholds(scores, quality, cost, w, Goal(None, budget_usd=3.0, z=0.0))
    q, c = replay_thresholds(t, scores, quality, cost, w)
    assert c <= 3.0 + 1e-9 and q > 0.6
    never = replay_thresholds((NEVER,), scores, quality, cost, w)
    assert never == pytest.approx((1.0, 11.0))  # "never accept": every prompt pays both steps


def test_a_cascade_that_surely_misses_loses_to_any_that_may_meet() -> None:
    scores, quality, cost = world(500)
    w = np.ones(500)
    cheap_only = (0.0,)  # keeps every cheap answer: 60 % right, target 95 %
    assert validation_loss(cheap_only, scores, quality, cost, w) >= MISSED
    assert validation_loss((NEVER,), scores, quality, cost, w) == pytest.approx(1.1)
    assert validation_loss((0.41,), scores, quality, cost, w) < 1.1  # right answers, cheaper


def test_a_failed_signal_never_keeps_an_answer() -> None:
    learner = CascadeLearner(Cascade(("a", "b"), (0.5,)))
    learner.record("p", "a", 1.0, 1.0, score=math.nan, scored=True, weight=1.0)
    learner.record("p", "b", 1.0, 2.0, weight=1.0)
    assert learner.rows.score[0, 0] == -math.inf and learner.complete_rows() == 1
    assert replay_thresholds((-1e9,), learner.rows.score[:1], learner.rows.quality[:1],
                             learner.rows.cost[:1], np.ones(1)) == (1.0, 3.0)


# -- the sampler -----------------------------------------------------------------------------


def test_the_sampler_spends_the_pace_and_prefers_cheap_rows() -> None:
    rng = np.random.default_rng(0)
    sampler = RowSampler(seed=1)
    costs = np.where(rng.random(4000) < 0.3, 10.0, 0.5)  # dear rows (shadows) and cheap ones
    spent = 0.0
    for c in costs:
        p = sampler.probability(float(c), 1.0)
        if sampler.draw(p):
            spent += c
    assert spent / len(costs) == pytest.approx(1.0, rel=0.15)
    cheap, dear = sampler.probability(0.5, 1.0), sampler.probability(10.0, 1.0)
    assert 1 > cheap > dear > 0
    assert cheap / dear == pytest.approx(math.sqrt(20), rel=0.02)
    assert RowSampler().probability(5.0, math.inf) == 1.0
    assert RowSampler().probability(5.0, 0.0) == 0.0


# -- the learner -----------------------------------------------------------------------------


def feed(learner: CascadeLearner, scores: np.ndarray, quality: np.ndarray, cost: np.ndarray,
         *, holdout_flip: bool = False) -> None:
    for i in range(len(quality)):
        prompt = f"prompt {i}"
        q = quality[i].copy()
        if holdout_flip and learner.is_holdout(prompt):
            q[0] = 1.0 - q[0]  # held-out prompts say the cheap step is wrong where it is right
        learner.record(prompt, "a", float(q[0]), float(cost[i, 0]),
                       score=float(scores[i, 0]), scored=True, weight=1.0)
        learner.record(prompt, "b", float(q[1]), float(cost[i, 1]), weight=1.0)


def test_a_cold_learner_escalates_everything_then_swaps_in_validated_thresholds() -> None:
    learner = CascadeLearner(Cascade(("a", "b"), (0.5,)), CascadeLearnerSettings(
        first_refit=100, holdout_fraction=0.3), cold=True)
    assert learner.current.cascade.thresholds == (NEVER,) and learner.current.kind == "cold"
    scores, quality, cost = world(400)
    feed(learner, scores, quality, cost)
    assert learner.due()
    report = learner.refit()
    assert report.swapped and learner.current.kind == "tuned"
    assert report.scores["tuned"] < report.scores["current"] == pytest.approx(1.1, rel=0.05)
    assert 0.3 < learner.current.cascade.thresholds[0] < 0.6
    assert not learner.due()  # the next refit waits for more rows


def test_a_budget_endpoint_swaps_in_thresholds_within_its_budget() -> None:
    """``budget_usd_per_query`` 4 (never keeping an early answer costs 11): the tuned
    thresholds keep enough cheap answers to fit it, with a standard error to spare."""
    learner = CascadeLearner(Cascade(("a", "b"), (0.5,)), CascadeLearnerSettings(
        first_refit=100, holdout_fraction=0.3, quality_fraction=None,
        budget_usd_per_query=4.0), cold=True)
    scores, quality, cost = world(400)
    feed(learner, scores, quality, cost)
    report = learner.refit()
    assert report.swapped and report.scores["current"] >= MISSED  # 11 > 4: cold misses
    q, c = replay_thresholds(learner.current.cascade.thresholds, scores, quality, cost,
                             np.ones(400))
    assert c < 4.0 and q > 0.8  # the budget holds on all rows, and buys dear answers


def test_a_refit_that_validates_worse_is_not_swapped_in() -> None:
    learner = CascadeLearner(Cascade(("a", "b"), (0.5,)), CascadeLearnerSettings(
        first_refit=100, holdout_fraction=0.3), cold=True)
    scores, quality, cost = world(400)
    feed(learner, scores, quality, cost, holdout_flip=True)
    report = learner.refit()
    assert not report.swapped and learner.current.cascade.thresholds == (NEVER,)
    assert report.scores["tuned"] >= MISSED > report.scores["current"]


def test_published_thresholds_round_trip_and_bad_ones_are_refused() -> None:
    payload = thresholds_payload((0.25, NEVER), 40)
    assert thresholds_from_payload(payload, 3) == ((0.25, NEVER), 40)
    assert b"Infinity" not in payload  # plain JSON
    with pytest.raises(DataFormatError, match="3 steps"):
        thresholds_from_payload(payload, 4)
    with pytest.raises(DataFormatError, match="cannot read"):
        thresholds_from_payload(b'{"format": "other"}', 3)


def test_config_needs_a_judge_and_may_omit_thresholds() -> None:
    models = {m: {"base_url": "http://127.0.0.1:9/v1"} for m in ("a", "b", "g")}
    cfg = parse_config({"models": models, "endpoints": {"c": {
        "type": "cascade", "models": ["a", "b"], "learning": {"judge": {"model": "g"}}}}},
        where="t")
    from routecast.server.endpoints import build_endpoints

    table = build_endpoints(cfg)
    assert table.cascade_learners["c"].current.cascade.thresholds == (NEVER,)
    with pytest.raises(Exception, match="judge"):
        parse_config({"models": models, "endpoints": {"c": {
            "type": "cascade", "models": ["a", "b"], "learning": {}}}}, where="t")
    with pytest.raises(Exception, match="unknown model 'nope'"):
        parse_config({"models": models, "endpoints": {"c": {
            "type": "cascade", "models": ["a", "b"],
            "learning": {"judge": {"model": "nope"}}}}}, where="t")


# -- end to end over the fleet ----------------------------------------------------------------


def fleet_config(fleet: RunningFleet, db: Path, models: list[str],
                 thresholds: list[float] | None = None, **learning: Any) -> Any:
    spec: dict[str, Any] = {"type": "cascade", "models": models, "learning": {
        "judge": {"model": fleet.judge_model, "scale": 1}, "spend_fraction": None,
        "first_refit": 12, "refit_every": 12, "min_holdout_rows": 4, "holdout_fraction": 0.3,
        "max_learned_per_s": 0, "timeout_s": 10, **learning}}
    if thresholds is not None:
        spec["thresholds"] = thresholds
    return parse_config({"models": fleet.models_config(), "endpoints": {"smart": spec},
                         "storage": {"db": str(db), "batch_ms": 20}}, where="test config")


def table(db: Path, name: str) -> list[dict[str, Any]]:
    """Every row of table ``name`` of the server's SQLite database, oldest first."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM {name} ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def at_least(n: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return rows if len(rows) >= n else None


def labels(db: Path) -> list[dict[str, Any]]:
    return table(db, "labels")


def _refits(db: Path) -> list[dict[str, Any]]:
    return table(db, "learning_refits")


def ask(client: openai.OpenAI, prompt: str, *, stream: bool = False) -> tuple[str, str]:
    """(the answering model, the answer's text), through the official client."""
    messages: Any = [{"role": "user", "content": prompt}]
    if stream:
        parts, model = [], ""
        with client.chat.completions.with_streaming_response.create(
                model="smart", messages=messages, stream=True) as raw:
            model = raw.headers.get("x-routecast-model", "")
            for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
        return model, "".join(parts)
    raw_reply = client.chat.completions.with_raw_response.create(model="smart",
                                                               messages=messages)
    reply = raw_reply.parse()
    return raw_reply.headers["x-routecast-model"], reply.choices[0].message.content or ""


def test_a_cold_cascade_learns_thresholds_from_judged_rows(
        cascades_fleet: RunningFleet, tmp_path: Path) -> None:
    fleet = cascades_fleet.fleet
    assert fleet is not None
    data = fleet.data
    confidence = data.confidence
    assert confidence is not None
    chain = ["llama3.1-8b", "llama3.1-405b"]
    cols = [data.models.index(m) for m in chain]
    rows = [int(i) for i in np.flatnonzero(data.split == "train")[:60]]
    db = tmp_path / "log.db"
    # A target the cheap step can share on a few dozen rows (95 % of the best needs hundreds
    # of rows before tuned thresholds validate: see benchmarks/cascade_learning.py).
    config = fleet_config(cascades_fleet, db, chain, quality_fraction=0.8, first_refit=20,
                          refit_every=20, min_holdout_rows=6)
    with serve(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        # Cold (fewer rows than the first refit needs): every answer is the last step's,
        # streamed or not, and every step's answer is at hand to be judged.
        for n, i in enumerate(rows[:10]):
            model, text = ask(client, data.prompts[i], stream=n % 3 == 0)
            assert model == chain[-1] and text
        first = wait_for(lambda: at_least(20, labels(db)), timeout_s=30)
        assert {r["source"] for r in first} == {"judge"}
        for n, i in enumerate(rows[10:]):  # a refit may swap thresholds in meanwhile
            assert ask(client, data.prompts[i], stream=n % 3 == 0)[1]
        got = wait_for(lambda: at_least(2 * len(rows), labels(db)), timeout_s=30)
        by = {(r["prompt"], r["model"]): r for r in got}
        for i in rows:
            for j, m in zip(cols, chain, strict=True):
                label = by[(data.prompts[i], m)]
                # The fleet's judge gives the recorded quality; the cheap step's score is
                # its recorded confidence (from the fleet's log-probs); unpaced, weight 1.
                assert label["quality"] == data.quality[i, j]
                assert label["weight"] == 1.0
                if m == chain[0]:
                    assert label["score"] == pytest.approx(confidence[i, j], abs=2e-3)
                else:
                    assert label["score"] is None
        swapped = wait_for(lambda: [r for r in _refits(db) if r["swapped"]], timeout_s=30)
        assert all(r["router"].startswith("thresholds ") for r in _refits(db))
        threshold = float(swapped[-1]["router"].split()[1])
        # Tuned: a prompt whose cheap answer scores above the threshold is answered by it.
        fresh = [int(i) for i in np.flatnonzero(data.split == "validation")]
        above = next(i for i in fresh if confidence[i, cols[0]] >= threshold + 0.01)
        below = next(i for i in fresh if confidence[i, cols[0]] < threshold - 0.01)
        assert ask(client, data.prompts[above])[0] == chain[0]
        assert ask(client, data.prompts[below])[0] == chain[-1]
    # A restart resumes from the stored rows: nothing is asked again to know them.
    with serve(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        n_before = len(labels(db))
        ask(client, data.prompts[rows[0]])  # a prompt with a row already: nothing bought
        time.sleep(0.5)
        assert len(labels(db)) == n_before


def test_steps_the_request_did_not_reach_are_shadowed_and_scored(
        cascades_fleet: RunningFleet, tmp_path: Path) -> None:
    """Thresholds that keep every first answer: the later steps are asked in the background
    (the middle one with log-probs, as the cascade would ask it) and graded."""
    fleet = cascades_fleet.fleet
    assert fleet is not None
    data = fleet.data
    confidence = data.confidence
    assert confidence is not None
    chain = ["llama3.1-8b", "llama3.1-70b", "llama3.1-405b"]
    cols = [data.models.index(m) for m in chain]
    rows = [int(i) for i in np.flatnonzero(data.split == "train")[100:106]]
    db = tmp_path / "log.db"
    with serve(fleet_config(cascades_fleet, db, chain, [0.0, 0.0], first_refit=1000)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for i in rows:
            assert ask(client, data.prompts[i])[0] == chain[0]
        got = wait_for(lambda: at_least(18, labels(db)), timeout_s=30)
    by = {(r["prompt"], r["model"]): r for r in got}
    for i in rows:
        first, middle, last = (by[(data.prompts[i], m)] for m in chain)
        assert first["source"] == "judge" and middle["source"] == last["source"] == "shadow"
        assert middle["score"] == pytest.approx(confidence[i, cols[1]], abs=2e-3)
        assert last["score"] is None
        assert [r["quality"] for r in (first, middle, last)] == [data.quality[i, j]
                                                                 for j in cols]
        assert middle["cost_usd"] == pytest.approx(data.cost_usd[i, cols[1]], rel=0.05)


def test_thresholds_show_as_plain_json_in_the_trace() -> None:
    from routecast.backends.trace import Step

    step = Step("a", threshold=NEVER, score=0.3, body={"x": 1})
    assert json.loads(json.dumps(step.as_dict()))["threshold"] is None
    assert "body" not in step.as_dict()
