"""One contract, every registered router (scikit-learn style; see routers/base.py)."""

from __future__ import annotations

import numpy as np
import pytest

from routecast import metrics
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError, NotFittedError
from routecast.policy import Policy, choose, weight_grid
from routecast.routers import Router, make_router, router_names
from tests.toy import toy_dataset

ALL = router_names()


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset(240)


def _prompts(router: Router, data: Dataset) -> list[str]:
    # The oracle only knows the prompts it was fitted on; the others see unseen test prompts.
    part = data.subset("train") if router.evaluation_only else data.subset("test")
    return list(part.prompts)


def test_builtins_are_registered() -> None:
    assert {"random", "best-single", "cheapest", "oracle", "knn", "linear"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_init_only_stores_parameters(name: str) -> None:
    router = make_router(name)
    assert not [k for k in vars(router) if k.endswith("_")]
    clone = type(router)(**router.get_params())
    assert clone.get_params() == router.get_params()


@pytest.mark.parametrize("name", ALL)
def test_use_before_fit_raises(name: str) -> None:
    with pytest.raises(NotFittedError):
        make_router(name).predict(["hello"])


@pytest.mark.parametrize("name", ALL)
def test_fit_predict_route_contract(name: str, data: Dataset) -> None:
    train = data.subset("train")
    router = make_router(name)
    assert router.fit(train) is router
    assert router.models_ == data.models
    prompts = _prompts(router, data)
    q = router.predict(prompts)
    c = router.predict_cost(prompts)
    assert q.shape == c.shape == (len(prompts), data.n_models)
    assert np.all(np.isfinite(q)) and q.min() >= 0 and q.max() <= 1
    assert np.all(c >= 0)
    routed = router.route(prompts, Policy(10.0))
    assert len(routed) == len(prompts) and set(routed) <= set(data.models)
    assert router.route(prompts[0], Policy(0.0)) == router.route(prompts[:1], Policy(0.0))
    assert router.predict([]).shape == (0, data.n_models)


@pytest.mark.parametrize("name", ALL)
def test_batch_and_single_predictions_agree(name: str, data: Dataset) -> None:
    router = make_router(name).fit(data.subset("train"))
    prompts = _prompts(router, data)[:12]
    batch = router.predict(prompts)
    singles = np.vstack([router.predict([p]) for p in prompts])
    np.testing.assert_allclose(batch, singles, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_fitting_is_deterministic(name: str, data: Dataset) -> None:
    a = make_router(name).fit(data.subset("train"))
    b = make_router(name).fit(data.subset("train"))
    prompts = _prompts(a, data)
    np.testing.assert_array_equal(a.predict(prompts), b.predict(prompts))


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
