"""The policy: argmax of quality minus weighted cost, and its calibration on validation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from routecast.data.dataset import Dataset
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import Policy, choose, weight_grid
from routecast.routers.base import FloatArray, Router
from tests.toy import toy_dataset


def test_choose_trades_quality_for_cost() -> None:
    q = np.array([[0.5, 0.9]])
    c = np.array([[1.0, 3.0]])
    assert choose(q, c, 0.0).tolist() == [1]
    assert choose(q, c, 0.1).tolist() == [1]  # 0.9 - 0.3 > 0.5 - 0.1
    assert choose(q, c, 0.3).tolist() == [0]  # 0.9 - 0.9 < 0.5 - 0.3


def test_choose_ties_go_to_the_cheaper_model() -> None:
    q = np.array([[0.8, 0.8, 0.8]])
    c = np.array([[3.0, 1.0, 2.0]])
    assert choose(q, c, 0.0).tolist() == [1]


def test_infinite_weight_takes_cheapest_then_best() -> None:
    q = np.array([[0.1, 0.9, 0.5]])
    c = np.array([[1.0, 1.0, 0.5]])
    assert choose(q, c, np.inf).tolist() == [2]
    c2 = np.array([[1.0, 1.0, 2.0]])
    assert choose(q, c2, np.inf).tolist() == [1]  # equal cheapest: the better one


def test_choose_rejects_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="must both be"):
        choose(np.zeros((2, 3)), np.zeros((2, 2)), 0.0)


def test_policy_rejects_negative_or_nan_weight() -> None:
    with pytest.raises(ConfigError):
        Policy(-1.0)
    with pytest.raises(ConfigError):
        Policy(float("nan"))


def test_weight_grid_spans_zero_to_infinity() -> None:
    grid = weight_grid(np.array([[0.001, 0.01]]))
    assert grid[0] == 0 and np.isinf(grid[-1])
    assert np.all(np.diff(grid) > 0)


class TableRouter(Router):
    """Predicts the true outcomes of whatever dataset it is fitted on (for calibration)."""

    name = "table-for-tests"

    def _fit(self, dataset: Dataset) -> None:
        self.table_ = {p: i for i, p in enumerate(dataset.prompts)}
        self.q_ = dataset.quality
        self.c_ = dataset.cost_usd

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        return self.q_[[self.table_[p] for p in prompts]]

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        return self.c_[[self.table_[p] for p in prompts]]


@pytest.fixture
def data() -> Dataset:
    return toy_dataset(200)


def _realised(router: Router, policy: Policy, data: Dataset) -> tuple[float, float]:
    pick = policy.choose(router.predict(data.prompts), router.predict_cost(data.prompts))
    rows = np.arange(data.n_prompts)
    return float(data.quality[rows, pick].mean()), float(data.cost_usd[rows, pick].mean())


def test_for_budget_meets_budget_and_spends_it_well(data: Dataset) -> None:
    router = TableRouter().fit(data)
    budget = float(data.cost_usd[:, 1].mean())  # what always using `medium` would cost
    policy = Policy.for_budget(router, data, budget)
    q, c = _realised(router, policy, data)
    assert c <= budget * (1 + 1e-9)
    # An oracle-quality router within the medium model's budget beats the medium model.
    assert q > data.quality[:, 1].mean()


def test_for_quality_reaches_target_at_lower_cost(data: Dataset) -> None:
    router = TableRouter().fit(data)
    policy = Policy.for_quality(router, data, 0.95)
    q, c = _realised(router, policy, data)
    best = int(np.argmax(data.mean_quality()))
    assert q >= 0.95 * data.mean_quality()[best]
    assert c < data.mean_cost_usd()[best]


def test_for_quality_uses_only_the_data_it_is_given() -> None:
    """Calibrating on two datasets that differ only in outcomes gives different weights."""
    a = toy_dataset(200, seed=1)
    flipped = a.quality.copy()
    flipped[:, 0] = 1 - flipped[:, 0]  # the cheap model is now right where it was wrong
    b = Dataset(name="b", models=a.models, ids=a.ids, prompts=a.prompts, quality=flipped,
                cost_usd=a.cost_usd, split=a.split)
    wa = Policy.for_quality(TableRouter().fit(a), a, 0.9).cost_weight
    wb = Policy.for_quality(TableRouter().fit(b), b, 0.9).cost_weight
    assert wa != wb


def test_unreachable_targets_raise_calibration_error(data: Dataset) -> None:
    router = TableRouter().fit(data)
    with pytest.raises(CalibrationError, match="raise the budget"):
        Policy.for_budget(router, data, 1e-9)
    with pytest.raises(CalibrationError, match="most it reaches"):
        Policy.for_quality(router, data, 1.4)


def test_calibration_data_must_have_the_router_models(data: Dataset) -> None:
    router = TableRouter().fit(data)
    with pytest.raises(ConfigError, match="same models"):
        Policy.for_quality(router, data.select_models(["large", "small"]), 0.9)
