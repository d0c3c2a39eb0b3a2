"""One contract, every registered router (scikit-learn style; see routers/base.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from routecast import metrics
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.policy import Policy, choose, weight_grid
from routecast.routers import Router, make_router, router_names
from routecast.routers.base import FloatArray
from routecast.routers.baselines import BestSingleRouter
from routecast.testing import check_router
from tests.toy import toy_dataset

ALL = router_names()


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset(240)


def test_builtins_are_registered() -> None:
    assert {"random", "best-single", "cheapest", "oracle", "knn", "linear"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_router_keeps_the_contract(name: str, data: Dataset) -> None:
    check_router(make_router(name), data)


class _Broken(BestSingleRouter):
    """Breaks one rule of the contract per ``how`` (the checker must catch each)."""

    name = "broken"

    def __init__(self, how: str = "") -> None:
        self.how = how
        if how == "init-learns":
            self.learned_ = 1

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        q = super().predict(prompts)
        if self.how == "out-of-range":
            return q + 1.0
        if self.how == "batch-differs" and len(prompts) > 1:
            return q * 0.5
        return q


@pytest.mark.parametrize(("how", "message"), [
    ("init-learns", "must only store its arguments"),
    ("out-of-range", r"in \[0, 1\]"),
    ("batch-differs", "batch and single predictions differ"),
])
def test_check_router_catches_a_broken_router(how: str, message: str, data: Dataset) -> None:
    with pytest.raises(AssertionError, match=message):
        check_router(_Broken(how), data)


def _aiq_on_test(router: Router, data: Dataset) -> float:
    test = data.subset("test")
    q, c = router.predict(test.prompts), router.predict_cost(test.prompts)
    rows = np.arange(test.n_prompts)
    points = [(test.cost_usd[rows, p].mean(), test.quality[rows, p].mean())
              for p in (choose(q, c, float(w)) for w in weight_grid(c))]
    cost, quality = np.array(points).T
    models_c = test.mean_cost_usd()
    return metrics.aiq(cost, quality, float(models_c.min()), float(models_c.max()))


@pytest.mark.parametrize("name", ["knn", "linear"])
def test_learned_routers_beat_the_zero_router_on_learnable_data(name: str,
                                                                data: Dataset) -> None:
    test = data.subset("test")
    qm, cm = test.mean_quality(), test.mean_cost_usd()
    zero = metrics.aiq(cm, qm, float(cm.min()), float(cm.max()))
    learned = _aiq_on_test(make_router(name).fit(data.subset("train")), data)
    assert learned > zero + 0.02


def test_cheapest_always_picks_the_cheapest_model(data: Dataset) -> None:
    router = make_router("cheapest").fit(data.subset("train"))
    for w in (0.0, 1.0, float("inf")):
        assert set(router.route(data.subset("test").prompts, Policy(w))) == {"small"}


def test_oracle_picks_cheapest_correct(data: Dataset) -> None:
    test = data.subset("test")
    router = make_router("oracle").fit(test)
    routed = router.route(test.prompts, Policy(0.0))
    want = metrics.oracle_choice(test.quality, test.cost_usd)
    assert routed == [test.models[j] for j in want]
    with pytest.raises(ConfigError, match="evaluation only"):
        router.predict(["a prompt it never saw"])


def test_unknown_router_and_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="known routers"):
        make_router("nosuch")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_router("knn", nosuch=1)
