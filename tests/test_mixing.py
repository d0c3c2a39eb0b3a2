"""Do no harm: policies that mix two arms, and calibration that falls back to single models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.mixing import hull_vertices, zero_router_path
from routecast.policy import Policy
from routecast.routers.base import FloatArray, Router
from tests.test_policy import TableRouter
from tests.toy import toy_dataset


class NoiseRouter(Router):
    """Estimates that carry no information: seeded noise in [0, 1]."""

    name = "noise-for-tests"

    def _fit(self, dataset: Dataset) -> None:
        self.mean_q_ = dataset.mean_quality()

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        rng = np.random.default_rng(len(prompts))
        return rng.uniform(0.0, 1.0, (len(prompts), len(self.mean_q_)))


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset(600, seed=3)


def test_a_mix_sends_a_seeded_share_of_prompts_to_the_second_arm() -> None:
    prompts = [f"prompt {i}" for i in range(2000)]
    q = np.tile([0.2, 0.9], (2000, 1))
    c = np.tile([1.0, 5.0], (2000, 1))
    policy = Policy(model="a", mix_model="b", mix_share=0.3, seed=7)
    pick = policy.choose(q, c, models=("a", "b"), prompts=prompts)
    assert abs(pick.mean() - 0.3) < 0.03
    # The same prompt goes the same way alone, in another batch, in another order.
    again = policy.choose(q[:5], c[:5], models=("a", "b"), prompts=prompts[:5][::-1])
    assert again.tolist() == pick[:5][::-1].tolist()
    other_seed = Policy(model="a", mix_model="b", mix_share=0.3, seed=8)
    assert (other_seed.choose(q, c, models=("a", "b"), prompts=prompts) != pick).any()
    # Router arm mixed with a model: the router's own choice on the rest.
    router_mix = Policy(0.0, mix_model="a", mix_share=0.5, seed=1)
    picks = router_mix.choose(q, c, models=("a", "b"), prompts=prompts)
    assert set(picks.tolist()) == {0, 1}


def test_mixed_policies_reject_bad_arms() -> None:
    with pytest.raises(ConfigError, match="needs a second arm"):
        Policy(mix_share=0.5)
    with pytest.raises(ConfigError, match="not both"):
        Policy(mix_weight=1.0, mix_model="a", mix_share=0.5)
    with pytest.raises(ConfigError, match="not among the router's models"):
        Policy(model="gone").choose(np.zeros((1, 2)), np.ones((1, 2)), models=("a", "b"))
    with pytest.raises(ConfigError, match="malformed"):
        Policy.from_dict({"cost_weight": "cheap"})


def test_zero_router_path_walks_the_hull_from_the_best_model_down() -> None:
    q = np.array([0.3, 0.5, 0.45, 0.9])
    c = np.array([1.0, 2.0, 3.0, 10.0])  # model 2 lies below the hull
    assert hull_vertices(q, c) == [0, 1, 3]
    path = zero_router_path(q, c)
    assert path[0] == (3, 1, 0.0) and path[-1] == (0, 0, 0.0)
    assert {a for a, _, _ in path} | {b for _, b, _ in path} == {0, 1, 3}


def test_uninformative_router_falls_back_to_single_models(data: Dataset) -> None:
    train, val = data.subset("train"), data.subset("validation")
    noise = NoiseRouter().fit(train)
    means = train.mean_quality().tolist()
    policy = Policy.for_quality(noise, val, 0.95, mean_quality=means)
    assert Policy.for_quality(noise, val, 0.95, confidence=0.9,
                              mean_quality=means).fallback is not None
    assert policy.fallback is not None and not policy.uses_router
    assert policy.model in data.models
    assert "fallback" in policy.describe()
    # An informative router (it knows the outcomes) is used, and is cheaper.
    table = TableRouter().fit(val)
    routed = Policy.for_quality(table, val, 0.95)
    assert routed.fallback is None and routed.uses_router
    assert routed.calibration is not None and policy.calibration is not None
    assert routed.calibration.cost_usd < policy.calibration.cost_usd


def test_guaranteed_calibration_is_costlier_and_reports_its_bound(data: Dataset) -> None:
    val = data.subset("validation")
    table = TableRouter().fit(val)
    plain = Policy.for_quality(table, val, 0.95)
    sure = Policy.for_quality(table, val, 0.95, confidence=0.9)
    assert plain.calibration is not None and sure.calibration is not None
    assert sure.calibration.confidence == 0.9 and sure.calibration.method == "wsr"
    bound = sure.calibration.quality_bound
    assert bound is not None and bound < sure.calibration.quality
    assert sure.calibration.cost_usd >= plain.calibration.cost_usd


def test_a_saved_mixed_policy_routes_the_same_after_loading(data: Dataset,
                                                            tmp_path: Path) -> None:
    from routecast.routers import make_router
    from routecast.routers.persist import load_router, save_router

    router = make_router("best-single").fit(data.subset("train"))
    policy = Policy(model=data.models[2], mix_model=data.models[0], mix_share=0.4, seed=3,
                    fallback="test")
    save_router(router, tmp_path / "r", policy=policy)
    loaded, again = load_router(tmp_path / "r")
    assert again == policy
    prompts = list(data.prompts[:50])
    assert loaded.route(prompts, again) == router.route(prompts, policy)
    assert set(router.route(prompts, policy)) == {data.models[0], data.models[2]}


def test_policies_round_trip_through_json_with_infinite_weights() -> None:
    import json

    for policy in (Policy(float("inf")), Policy(0.5, mix_weight=float("inf"), mix_share=0.2),
                   Policy(model="a", mix_model="b", mix_share=0.3, seed=2, fallback="why")):
        text = json.dumps(policy.to_dict(), allow_nan=False)
        assert Policy.from_dict(json.loads(text)) == policy


def test_cascade_and_cascade_routing_have_certified_calibration() -> None:
    from routecast.cascades.routing import CascadeRouting
    from routecast.cascades.tuning import certify_cascade, tune_cascade
    from routecast.errors import CalibrationError

    data = toy_dataset(900, seed=5)
    train, val = data.subset("train"), data.subset("validation")
    # A signal that knows the outcome, softened: the cheap model's answer is trusted iff right.
    def scores(d: Dataset) -> FloatArray:
        return np.asarray(0.1 + 0.8 * d.quality, dtype=np.float64)

    sure = certify_cascade(train, scores(train), val, scores(val), fraction=0.95,
                           confidence=0.9)
    plain = tune_cascade(val, scores(val), min_quality=0.95 * float(val.mean_quality().max()))
    assert sure.models[-1] == "large" and plain.models[-1] == "large"
    with pytest.raises(CalibrationError, match="certified"):
        certify_cascade(train, scores(train), val, scores(val), fraction=1.2, confidence=0.9)
    ex_ante = np.tile(train.mean_quality(), (val.n_prompts, 1))
    cost = np.tile(train.mean_cost_usd(), (val.n_prompts, 1))
    rule = CascadeRouting(gamma=0.5)
    point = rule.for_quality(val, ex_ante, cost, scores(val), 0.95)
    certified = rule.for_quality(val, ex_ante, cost, scores(val), 0.95, confidence=0.9)
    # Certification asks for more evidence: never cheaper on the calibration data.
    def spend(r: CascadeRouting) -> float:
        return r.replay(val, ex_ante, cost, scores(val)).mean_cost_usd

    assert spend(certified) >= spend(point)
    assert certified.replay(val, ex_ante, cost, scores(val)).mean_quality >= 0.95 * float(
        val.mean_quality().max())
