"""Metrics on hand-worked examples: every expected value below is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from routecast import metrics


def test_hull_drops_dominated_and_concave_points() -> None:
    cost = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.0])
    quality = np.array([0.5, 0.6, 0.9, 0.95, 0.8, 0.4])
    hull = metrics.nondecreasing_hull(cost, quality)
    # (2, .6) lies under the chord from (1, .5) to (3, .9); (5, .8) is worse than (4, .95);
    # (2, .4) is dominated at equal cost.
    assert hull.tolist() == [[1.0, 0.5], [3.0, 0.9], [4.0, 0.95]]


def test_hull_keeps_best_quality_at_equal_cost() -> None:
    hull = metrics.nondecreasing_hull(np.array([1.0, 1.0]), np.array([0.2, 0.7]))
    assert hull.tolist() == [[1.0, 0.7]]


def test_aiq_of_two_points_is_trapezoid_plus_flat_extension() -> None:
    # Hull from (1, .5) to (3, .9), then flat at .9 until 5.
    value = metrics.aiq(np.array([1.0, 3.0]), np.array([0.5, 0.9]), 1.0, 5.0)
    expected = ((0.5 + 0.9) / 2 * 2 + 0.9 * 2) / 4
    assert value == pytest.approx(expected)


def test_aiq_clips_to_range_and_extends_flat_to_the_left() -> None:
    value = metrics.aiq(np.array([2.0, 4.0]), np.array([0.4, 0.8]), 1.0, 3.0)
    # Flat 0.4 on [1, 2], then linear 0.4 -> 0.6 on [2, 3].
    assert value == pytest.approx((0.4 * 1 + 0.5 * 1) / 2)


def test_aiq_rejects_empty_range() -> None:
    with pytest.raises(ValueError, match="empty cost range"):
        metrics.aiq(np.array([1.0]), np.array([0.5]), 2.0, 2.0)


def test_cost_to_reach_interpolates_on_the_hull() -> None:
    cost, quality = np.array([1.0, 3.0]), np.array([0.5, 0.9])
    assert metrics.cost_to_reach(cost, quality, 0.7) == pytest.approx(2.0)
    assert metrics.cost_to_reach(cost, quality, 0.4) == pytest.approx(1.0)
    assert metrics.cost_to_reach(cost, quality, 0.95) is None


def test_savings_relative_to_best_single_cost() -> None:
    cost, quality = np.array([1.0, 3.0]), np.array([0.5, 0.9])
    # 95% of 0.8 = 0.76 is reached at cost 1 + (0.26 / 0.4) * 2 = 2.3; best costs 4.
    assert metrics.savings_at(cost, quality, 0.95, 0.8, 4.0) == pytest.approx(1 - 2.3 / 4)
    assert metrics.savings_at(cost, quality, 1.0, 0.95, 4.0) is None


def test_oracle_choice_prefers_cheapest_among_best() -> None:
    quality = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    cost = np.array([[3.0, 1.0, 0.5], [2.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
    assert metrics.oracle_choice(quality, cost).tolist() == [1, 1, 2]


def test_oracle_gap_is_quality_left_at_oracle_cost() -> None:
    gap = metrics.oracle_gap(np.array([1.0, 3.0]), np.array([0.5, 0.9]), 0.95, 2.0)
    assert gap == pytest.approx(0.95 - 0.7)


def test_pgr_apgr_cpt_on_a_hand_curve() -> None:
    q_weak, q_strong = 0.6, 0.8
    share = np.array([0.25, 0.5])
    quality = np.array([0.7, 0.76])  # PGR 0.5 at 25 % strong calls, 0.8 at 50 %
    np.testing.assert_allclose(metrics.pgr(quality, q_weak, q_strong), [0.5, 0.8])
    # Trapezoids over (0,0) (.25,.5) (.5,.8) (1,1).
    expected = 0.25 * 0.25 + 0.25 * 0.65 + 0.5 * 0.9
    assert metrics.apgr(share, quality, q_weak, q_strong) == pytest.approx(expected)
    assert metrics.cpt(share, quality, q_weak, q_strong, 0.5) == pytest.approx(0.25)
    assert metrics.cpt(share, quality, q_weak, q_strong, 0.8) == pytest.approx(0.5)
    assert metrics.cpt(share, quality, q_weak, q_strong, 0.9) == pytest.approx(1.0)


def test_random_routing_has_apgr_one_half() -> None:
    # Mixing weak and strong at random recovers the gap linearly: PGR(s) = s, APGR = 1/2.
    share = np.linspace(0, 1, 11)
    quality = 0.6 + 0.2 * share
    assert metrics.apgr(share, quality, 0.6, 0.8) == pytest.approx(0.5)


def test_pgr_undefined_for_tied_pair() -> None:
    with pytest.raises(ValueError, match="tie"):
        metrics.pgr(0.5, 0.7, 0.7)


def test_percentile_interval_needs_enough_defined_draws() -> None:
    values = [float(v) for v in range(101)]
    assert metrics.percentile_interval(values, n_draws=101) == pytest.approx([2.5, 97.5])
    assert metrics.percentile_interval(values[:40], n_draws=101) is None


def _envelope(cost: np.ndarray, quality: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The non-decreasing concave envelope by brute force, from its definition: at cost x,
    the best quality of any randomisation of two points whose mean cost is at most x."""
    out = np.full(len(grid), np.nan)
    for i in range(len(cost)):
        for j in range(len(cost)):
            lo, hi = min(cost[i], cost[j]), max(cost[i], cost[j])
            qa, qb = (quality[i], quality[j]) if cost[i] <= cost[j] else (quality[j], quality[i])
            t = np.clip((grid - lo) / (hi - lo), 0, 1) if hi > lo else (grid >= lo) * 1.0
            val = np.where(grid >= lo, qa + t * (qb - qa), np.nan)
            out = np.fmax(out, val)
    return np.fmax.accumulate(out)  # spending more never has to lower quality


def test_aiq_routerbench_matches_a_recomputation_from_its_definition() -> None:
    """RouterBench's evaluation/AIQ.py: from the hull's first point to the largest cost, flat
    after the last vertex, divided by the largest cost; recomputed by brute force."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        cost = rng.uniform(0.1, 5.0, 12)
        quality = rng.uniform(0.2, 0.9, 12)
        c_max = 6.0
        grid = np.linspace(cost.min(), c_max, 20001)
        env = _envelope(cost, quality, grid)
        expected = float(np.sum((grid[1:] - grid[:-1]) * (env[1:] + env[:-1]) / 2)) / c_max
        assert metrics.aiq_routerbench(cost, quality, c_max) == pytest.approx(expected, abs=1e-4)
        # The range convention on the same hull: [c_min, c_max] divided by its width.
        inner = np.linspace(cost.min(), cost.max(), 20001)
        env = _envelope(cost, quality, inner)
        area = float(np.sum((inner[1:] - inner[:-1]) * (env[1:] + env[:-1]) / 2))
        assert metrics.aiq(cost, quality, cost.min(), cost.max()) == pytest.approx(
            area / (cost.max() - cost.min()), abs=1e-4)


def test_aiq_conventions_by_hand() -> None:
    cost, quality = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.8, 0.9])
    # Area from 1 to 4: 1 x 0.65 + 2 x 0.85 = 2.35.
    assert metrics.aiq_routerbench(cost, quality, 4.0) == pytest.approx(2.35 / 4)
    assert metrics.aiq(cost, quality, 1.0, 4.0) == pytest.approx(2.35 / 3)
    # A larger c_max extends the last quality flat: + 1 x 0.9.
    assert metrics.aiq_routerbench(cost, quality, 5.0) == pytest.approx(3.25 / 5)
    with pytest.raises(ValueError, match="below the hull"):
        metrics.aiq_routerbench(cost, quality, 3.0)


def test_delta_ibc_lives_in_metrics() -> None:
    assert metrics.delta_ibc(0.7, 3.0, (0.5, 1.0), (0.9, 5.0)) == pytest.approx(0.0)
    assert metrics.delta_ibc(0.8, 3.0, (0.5, 1.0), (0.9, 5.0)) == pytest.approx(0.5)
