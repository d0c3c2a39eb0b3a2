"""Sparse outcomes and the learning loop's core: data model, routers on sparse labels,
calibration, the explorer's budget, and refits that validate worse staying out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from routecast import Policy, make_router
from routecast.data.canonical import load, save
from routecast.data.dataset import Dataset, FloatArray
from routecast.errors import DataError, DataFormatError
from routecast.learning import ActiveExplorer, Candidate, Learner, LearnerSettings, SpendMeter
from routecast.learning.calibrate import calibrate
from routecast.learning.judge import parse_score
from routecast.learning.learner import DebiasedRouter, debias, shrink
from routecast.routers.base import Router
from tests.toy import toy_dataset


def sparse_toy(keep: float = 0.4, seed: int = 1) -> tuple[Dataset, Dataset]:
    """The toy train split with a random ``keep`` share of its pairs labelled, and the full one."""
    full = toy_dataset().subset("train")
    mask = np.random.default_rng(seed).random(full.quality.shape) < keep
    mask[:, 0] |= ~mask.any(axis=1)  # every prompt keeps at least one label
    return replace(full, quality=np.where(mask, full.quality, np.nan),
                   cost_usd=np.where(mask, full.cost_usd, np.nan), sparse=True), full


def test_a_dataset_takes_nan_only_when_sparse_and_evaluation_refuses_it() -> None:
    data, full = sparse_toy()
    with pytest.raises(DataError, match="sparse=True"):
        replace(data, sparse=False)
    labelled = data.labelled
    expected = [full.quality[labelled[:, j], j].mean() for j in range(3)]
    np.testing.assert_allclose(data.mean_quality(), expected)
    assert not data.is_complete() and full.is_complete()
    with pytest.raises(DataError, match="evaluation needs every model"):
        data.require_complete("evaluation")


def test_the_canonical_format_round_trips_sparse_outcomes(tmp_path: Path) -> None:
    data, _ = sparse_toy()
    path = save(data, tmp_path / "labels.jsonl")
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["sparse"] is True
    first = json.loads(lines[1])
    assert set(first["outcomes"]) == {m for j, m in enumerate(data.models)
                                      if data.labelled[0, j]}
    back = load(path)
    assert back.sparse
    np.testing.assert_array_equal(back.labelled, data.labelled)
    np.testing.assert_allclose(back.quality[back.labelled], data.quality[data.labelled])
    # Without the header's flag a missing model is still an error, and says how to allow it.
    dense = tmp_path / "dense.jsonl"
    head = json.loads(lines[0])
    del head["sparse"]
    dense.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    with pytest.raises(DataFormatError, match='"sparse": true'):
        load(dense)


@pytest.mark.parametrize("name", ["linear", "knn", "mf", "best-single"])
def test_routers_fit_sparse_labels_on_the_labelled_pairs_only(name: str) -> None:
    data, _ = sparse_toy()
    # `large` labelled on a fifth of the prompts, always right there: a router that read the
    # missing pairs as failures would predict about 0.2 for it.
    rows = np.arange(data.n_prompts) % 5 == 0
    q = data.quality.copy()
    q[:, 2] = np.where(rows, 1.0, np.nan)
    c = data.cost_usd.copy()
    c[:, 2] = np.where(rows, 0.02, np.nan)
    sparse = replace(data, quality=q, cost_usd=c)
    router = make_router(name).fit(sparse)
    pred = router.predict(list(toy_dataset().subset("test").prompts))
    assert np.isfinite(pred).all()
    assert pred[:, 2].mean() > 0.8
    assert router.mean_cost_usd_[2] == pytest.approx(0.02)


def test_a_router_that_cannot_fit_sparse_labels_says_which_can() -> None:
    data, _ = sparse_toy()
    with pytest.raises(DataError, match=r"cannot fit on sparse outcomes.*linear"):
        make_router("mlp").fit(data)


def test_sparse_linear_fit_learns_the_words_from_few_labels() -> None:
    data, _ = sparse_toy(keep=0.3)
    test = toy_dataset().subset("test")
    router = make_router("linear").fit(data)
    pred = router.predict(list(test.prompts))
    hard = np.asarray(test.task) == "hard"
    # small is right on easy prompts only: the sparse fit sees that.
    assert pred[~hard, 0].mean() - pred[hard, 0].mean() > 0.3


def test_calibration_on_complete_labels_matches_the_policys_own() -> None:
    toy = toy_dataset()
    router = make_router("linear").fit(toy.subset("train"))
    val = toy.subset("validation")
    mine = calibrate(router, val, quality_fraction=0.9)
    assert mine.cost_weight == Policy.for_quality(router, val, 0.9).cost_weight


def test_the_active_explorer_stays_within_the_allowance_and_prefers_cheap_uncertain() -> None:
    meter = SpendMeter(budget_usd=1.0, spend_fraction=None)
    explorer = ActiveExplorer(max_labels=3, warmup=0)
    cands = [
        Candidate("served", True, 0.9, 0.02, 50.0, 0.001, 100),   # well known: little to learn
        Candidate("cheap", False, 0.6, 0.001, 0.0, 0.002, 100),   # uncertain and cheap
        Candidate("dear", False, 0.6, 0.5, 0.0, 0.5, 100),        # uncertain, dear
        Candidate("bad", False, 0.05, 0.4, 50.0, 0.4, 100),       # confidently dominated
    ]
    chosen = [c.model for c in explorer.plan(cands, meter)]
    assert chosen[0] == "cheap" and "bad" not in chosen
    meter.charge(0.9985, "shadow")  # almost all spent: only what fits is bought
    assert [c.model for c in explorer.plan(cands, meter)] == ["served"]
    meter.charge(0.001, "judge")
    assert explorer.plan(cands, meter) == []


def test_the_meter_paces_spend_against_the_strongest_models_cost() -> None:
    meter = SpendMeter(budget_usd=10.0, spend_fraction=0.2)
    assert meter.allowance() == 0.0  # nothing watched, nothing to spend
    meter.watch(1.0)
    assert meter.allowance() == pytest.approx(0.2)
    meter.charge(0.15, "shadow")
    assert meter.allowance() == pytest.approx(0.05)
    assert meter.spent_usd == pytest.approx(0.15)


def test_a_refit_that_validates_worse_is_not_swapped_in() -> None:
    toy = toy_dataset(n=600)
    prior = make_router("linear").fit(toy_dataset(n=40, seed=5))  # other prompts, a few
    settings = LearnerSettings(first_refit=10, min_holdout_labels=10, holdout_fraction=0.3)
    learner = Learner(toy.models, [0.001, 0.004, 0.02], settings, prior=prior)
    before = learner.current
    rng = np.random.default_rng(0)
    for i, prompt in enumerate(toy.prompts):
        holdout = learner.labels.is_holdout(prompt)
        for j, model in enumerate(toy.models):
            # Training labels are coin flips; held-out ones are the truth.
            q = toy.quality[i, j] if holdout else float(rng.random() < 0.5)
            learner.record(prompt, model, q, toy.cost_usd[i, j])
    report = learner.refit()
    assert not report.swapped
    assert report.scores["current"] < report.scores["linear"]
    assert learner.current.router is before.router and learner.current.version == 1
    # ...while truthful training labels are swapped in.
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            learner.record(prompt, model, toy.quality[i, j], toy.cost_usd[i, j])
    assert learner.refit().swapped


def test_a_cold_learner_serves_the_strongest_model_then_learns_to_save() -> None:
    toy = toy_dataset(n=600)
    learner = Learner(toy.models, [0.001, 0.004, 0.02],
                      LearnerSettings(first_refit=30, min_holdout_labels=20))
    assert set(learner.route(list(toy.prompts[:5]))) == {"large"}
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            learner.record(prompt, model, toy.quality[i, j], toy.cost_usd[i, j])
        if learner.due():
            learner.refit()
    tasks = toy.task or ()
    easy = [p for p, t in zip(toy.prompts, tasks, strict=True) if t == "easy"][:40]
    hard = [p for p, t in zip(toy.prompts, tasks, strict=True) if t == "hard"][:40]
    assert learner.current.kind == "linear"
    # small (always wrong on hard prompts) now answers many easy ones, and no hard one.
    assert learner.route(easy).count("small") >= 15
    assert learner.route(hard).count("small") == 0


@pytest.mark.parametrize(("reply", "scale", "score"), [
    ("9", 10, 0.9), ("10", 10, 1.0), ("Score: 7.", 10, 0.7), ("7.5/10", 10, 0.75),
    ("0", 10, 0.0), ("no idea", 10, None), ("42", 10, None), ("0.25", 1, 0.25),
    ("1", 1, 1.0), ("2", 1, None)])
def test_the_judges_verdict_is_its_first_number_over_its_scale(reply: str, scale: float,
                                                               score: float | None) -> None:
    assert parse_score(reply, scale) == score


def test_a_model_with_too_few_labels_is_explored_but_not_routed_to() -> None:
    toy = toy_dataset(n=400)
    learner = Learner(toy.models, [0.001, 0.004, 0.02],
                      LearnerSettings(first_refit=50, min_holdout_labels=10,
                                      min_model_labels=30, prompt_cost=False))
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            if model != "medium" or i < 10:  # medium: ten labels, all of them good
                learner.record(prompt, model, 1.0 if model == "medium" else toy.quality[i, j],
                               toy.cost_usd[i, j])
    learner.refit()
    hard = [p for p, t in zip(toy.prompts, toy.task or (), strict=True) if t == "hard"][:30]
    assert "medium" not in learner.route(hard)
    # The explorer still sees its fitted prediction, so it keeps asking about it.
    cands = learner.candidates("a new theorem proof question", None, judge_usd=0.0)
    assert next(c for c in cands if c.model == "medium").quality > 0.5


def test_the_cold_starts_model_stays_routable_with_few_labels() -> None:
    # The dearest model served the cold start; a few of its labels, then it stopped serving:
    # masked, it would never be served (and cheaply labelled) again.
    toy = toy_dataset(n=400)
    learner = Learner(toy.models, [0.001, 0.004, 0.02],
                      LearnerSettings(first_refit=50, min_holdout_labels=10,
                                      min_model_labels=30, prompt_cost=False))
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            if model != "large" or i < 12:
                learner.record(prompt, model, toy.quality[i, j], toy.cost_usd[i, j])
    assert learner.labels.counts()[2] < 30
    learner.refit()
    hard = [p for p, t in zip(toy.prompts, toy.task or (), strict=True) if t == "hard"][:30]
    assert "large" in learner.route(hard)


class _Squeezed(Router):
    """What a router fitted on a judge that flips a share ``p`` of verdicts predicts:
    ``p + (1 - 2p) q`` for the true quality ``q`` ``inner`` predicts."""

    name = "squeezed"

    def __init__(self, inner: Router, p: float) -> None:
        self.inner, self.p = inner, p

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> _Squeezed:
        self.models_, self.mean_cost_usd_ = self.inner.models_, self.inner.mean_cost_usd_
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        return self.p + (1 - 2 * self.p) * self.inner.predict(prompts)


def test_debiasing_undoes_a_flipping_judge_and_calibration_meets_the_true_target() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random(200_000) < 0.7).astype(float)
    seen = np.where(rng.random(truth.size) < 0.1, 1 - truth, truth)
    assert seen.mean() == pytest.approx(0.1 + 0.8 * 0.7, abs=0.005)  # squeezed to 0.5
    assert debias(seen, 0.1).mean() == pytest.approx(0.7, abs=0.005)
    toy = toy_dataset(n=600)
    router = make_router("linear").fit(toy.subset("train"))
    val = toy.subset("validation")
    p = 0.2
    noisy = replace(val, quality=p + (1 - 2 * p) * val.quality)  # the judge's mean verdicts
    squeezed = _Squeezed(router, p).ready()
    np.testing.assert_allclose(DebiasedRouter(squeezed, p).ready().predict(list(val.prompts)),
                               router.predict(list(val.prompts)))
    truthful = calibrate(router, val, quality_fraction=0.9)
    told = calibrate(DebiasedRouter(squeezed, p).ready(), noisy, quality_fraction=0.9,
                     labels=debias(noisy.quality, p))
    assert told.cost_weight == pytest.approx(truthful.cost_weight)
    # Not told, 90 % of a squeezed best model is a lower bar: a cheaper, worse point.
    blind = calibrate(squeezed, noisy, quality_fraction=0.9)
    rows = np.arange(val.n_prompts)
    q = [val.quality[rows, [val.models.index(m) for m in r.route(list(val.prompts), pol)]]
         .mean() for r, pol in ((router, truthful), (squeezed, blind))]
    assert q[0] >= 0.9 * val.mean_quality().max() - 1e-9
    assert q[1] < q[0]


def test_a_model_whose_cost_was_never_seen_gets_its_price_not_the_dearest() -> None:
    toy = toy_dataset(n=400)
    learner = Learner(toy.models, [0.001, 0.004, 0.02],
                      LearnerSettings(first_refit=50, min_model_labels=1, prompt_cost=False))
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            # small's answers are labelled without a cost (feedback carries none).
            learner.record(prompt, model, toy.quality[i, j],
                           None if model == "small" else toy.cost_usd[i, j])
    learner.refit()
    cost = learner.current.fitted.predict_cost(["an easy question"])[0]
    # Scaled like the others' recorded costs to their prices (about 1:1 here), not 0.02.
    assert cost[0] == pytest.approx(0.001, rel=0.1)
    assert cost[0] < cost[1] < cost[2]


def test_the_learner_predicts_cost_per_prompt_from_the_labels_recorded_costs() -> None:
    toy = toy_dataset(n=600)
    # Hard prompts get answers three times as long: every model costs 3x on them.
    factor = np.where(np.asarray(toy.task) == "hard", 3.0, 1.0)[:, None]
    learner = Learner(toy.models, [0.001, 0.004, 0.02], LearnerSettings(first_refit=100))
    rng = np.random.default_rng(0)
    for i, prompt in enumerate(toy.prompts):
        for j, model in enumerate(toy.models):
            if rng.random() < 0.4:  # sparse: each prompt has some models' costs
                learner.record(prompt, model, toy.quality[i, j], toy.cost_usd[i, j] * factor[i, 0])
    learner.refit()
    tasks = toy.task or ()
    easy = [p for p, t in zip(toy.prompts, tasks, strict=True) if t == "easy"][:50]
    hard = [p for p, t in zip(toy.prompts, tasks, strict=True) if t == "hard"][:50]
    router = learner.current.router
    ratio = router.predict_cost(hard).mean(axis=0) / router.predict_cost(easy).mean(axis=0)
    assert np.all(ratio > 2.0) and np.all(ratio < 4.0)
    # The fitted router alone (mean cost per model) cannot tell them apart.
    plain = learner.current.fitted
    np.testing.assert_allclose(plain.predict_cost(hard[:1]), plain.predict_cost(easy[:1]))


def test_shrinkage_keeps_the_predictions_that_hold_out_of_fold_and_flattens_noise() -> None:
    toy = toy_dataset(n=600)
    train = toy.subset("train")
    rng = np.random.default_rng(4)
    # medium's labels are coin flips that have nothing to do with the prompt.
    noisy = train.quality.copy()
    noisy[:, 1] = (rng.random(train.n_prompts) < 0.5).astype(float)
    data = replace(train, quality=noisy)
    fitted = make_router("linear").fit(data)
    shrunk = shrink("linear", {}, data, fitted)
    assert shrunk.slope[0] > 0.5 and shrunk.slope[2] > 0.3  # small and large: the words tell
    assert shrunk.slope[1] < 0.3
    pred = shrunk.predict(list(toy.subset("test").prompts))
    assert pred[:, 1].std() < 0.5 * fitted.predict(list(toy.subset("test").prompts))[:, 1].std()
    assert pred[:, 1].mean() == pytest.approx(noisy[:, 1].mean(), abs=0.05)


def test_weighted_calibration_is_calibration_on_the_weighted_prompts() -> None:
    toy = toy_dataset(n=600)
    router = make_router("linear").fit(toy.subset("train"))
    val = toy.subset("validation")
    hard = np.asarray(val.task) == "hard"
    on_hard = calibrate(router, val.take(np.flatnonzero(hard)), quality_fraction=0.9)
    weighted = calibrate(router, val, quality_fraction=0.9, weights=hard.astype(float))
    assert weighted.cost_weight == pytest.approx(on_hard.cost_weight, rel=1e-9)
    # The hard prompts alone need the dear model: a lower cost weight than the mix.
    assert on_hard.cost_weight < calibrate(router, val, quality_fraction=0.9).cost_weight
    with pytest.raises(ValueError, match="weights"):
        calibrate(router, val, weights=np.zeros(val.n_prompts))


def test_mix_weights_follow_the_recent_prompts() -> None:
    from routecast.encoders import make_encoder
    from routecast.learning.calibrate import mix_weights

    toy = toy_dataset(n=400)
    hard = np.asarray(toy.task) == "hard"
    enc = make_encoder("tfidf").fit(toy.prompts)
    later_hard = [p for p, h in zip(toy.prompts[200:], hard[200:], strict=True) if h]
    pool, recent_hard, recent_mix = (enc.transform(list(toy.prompts[:200])),
                                     enc.transform(later_hard),
                                     enc.transform(list(toy.prompts[200:])))
    w = mix_weights(recent_hard, pool)
    assert w.sum() == pytest.approx(1.0)
    assert w[hard[:200]].sum() > 0.9  # equal weights: 0.5
    w = mix_weights(recent_mix, pool)
    assert 0.35 < w[hard[:200]].sum() < 0.65


def test_the_calibration_follows_a_shift_in_the_mix() -> None:
    """Easy prompts for a long time, then hard ones only: the policy recalibrated soon after
    the shift meets the target on the hard prompts, because the window's few hard held-out
    prompts stand for the recent traffic; with every window prompt weighing the same
    (``calibration_recent=0``), the easy prompts that fill the window keep the cost weight
    of the old mix, and the hard prompts go to models that fail them."""
    toy = toy_dataset(n=1600, seed=2)
    hard = np.asarray(toy.task) == "hard"
    order = np.r_[np.flatnonzero(~hard)[:700], np.flatnonzero(hard)[:100]]
    test_hard = [p for p, h in zip(toy.prompts, hard, strict=True) if h][500:800]
    truth = {p: toy.quality[i] for i, p in enumerate(toy.prompts)}
    quality = {}
    for recent in (0, 100):
        learner = Learner(toy.models, [0.001, 0.004, 0.02],
                          LearnerSettings(first_refit=300, refit_every=600,
                                          calibration_window=200, calibration_recent=recent,
                                          min_model_labels=1, shrink_folds=0,
                                          prompt_cost=False))
        for i in order:
            for j, model in enumerate(toy.models):
                learner.record(toy.prompts[i], model, toy.quality[i, j], toy.cost_usd[i, j])
            if learner.due():
                learner.refit()
        learner.refit()
        picks = learner.route(test_hard)
        quality[recent] = float(np.mean([truth[p][toy.models.index(m)]
                                         for p, m in zip(test_hard, picks, strict=True)]))
    target = 0.95 * float(toy.quality[hard].mean(axis=0).max())
    assert quality[100] >= target - 0.03
    assert quality[0] < target - 0.1


def test_a_refit_worse_only_within_noise_is_swapped_in() -> None:
    from routecast.learning.learner import worse

    rng = np.random.default_rng(0)
    current = rng.random(400) * 0.3
    noise = rng.normal(0.0, 0.05, 400)
    slightly = current + noise - noise.mean() + 0.001  # worse by 0.001, spread 0.05
    assert worse(slightly, current, 0.0)
    assert not worse(slightly, current, 1.0)
    assert worse(current + 0.02 + noise * 0.1, current, 1.0)
    assert not worse(current - 0.01, current, 0.0)


def test_the_cold_starts_model_is_explored_first_until_its_anchor_labels() -> None:
    toy = toy_dataset(n=200)
    learner = Learner(toy.models, [0.001, 0.004, 0.02], LearnerSettings(anchor_labels=40))
    for i in range(30):
        for j, model in enumerate(toy.models):
            learner.record(toy.prompts[i], model, toy.quality[i, j], toy.cost_usd[i, j])
    cands = learner.candidates(toy.prompts[100], "small", judge_usd=0.0001)
    assert {c.model: c.floor for c in cands} == {"small": 0, "medium": 0, "large": 40}
    meter = SpendMeter(budget_usd=1.0, spend_fraction=None)
    # large's label is worth little and dear; above the warmup (10) only its floor buys it.
    low = [replace(c, nearby=1e6) if c.model == "large" else c for c in cands]
    assert "large" in [c.model for c in ActiveExplorer(warmup=10, max_labels=1).plan(low, meter)]
    unanchored = [replace(c, floor=0) for c in low]
    assert "large" not in [c.model for c in
                           ActiveExplorer(warmup=10, max_labels=1).plan(unanchored, meter)]
