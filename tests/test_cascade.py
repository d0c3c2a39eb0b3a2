"""The Cascade: its decision API and its offline replay, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from routecast.cascades.cascade import Cascade, Replay
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from tests.toy import toy_dataset


def _hand_data() -> Dataset:
    """3 prompts x 3 models with round numbers."""
    return Dataset(
        name="hand", models=("s", "m", "l"), ids=("a", "b", "c"), prompts=("p", "q", "r"),
        quality=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
        cost_usd=np.array([[1.0, 10.0, 100.0]] * 3),
        split=np.array(["test"] * 3),
        latency_s=np.array([[0.1, 1.0, 10.0]] * 3),
        tokens_in=np.array([[5.0, 5.0, 5.0]] * 3),
        tokens_out=np.array([[1.0, 2.0, 3.0]] * 3),
    )


def test_replay_sums_every_visited_step() -> None:
    data = _hand_data()
    cascade = Cascade(("s", "m", "l"), (0.5, 0.5))
    # prompt a: s accepts; b: s rejects, m accepts; c: both reject, l answers.
    scores = np.array([[0.9, 0.0, 0.0], [0.1, 0.7, 0.0], [0.2, 0.3, 0.9]])
    replay = cascade.replay(data, scores)
    assert replay.answered.tolist() == [0, 1, 2]
    assert replay.quality.tolist() == [1.0, 1.0, 0.0]
    assert replay.cost_usd.tolist() == [1.0, 11.0, 111.0]
    assert replay.latency_s is not None and replay.tokens_out is not None
    assert replay.latency_s.tolist() == pytest.approx([0.1, 1.1, 11.1])
    assert replay.tokens_out.tolist() == [1.0, 3.0, 6.0]
    assert replay.calls.tolist() == [1, 2, 3]
    assert replay.escalation_rate == pytest.approx(2 / 3)
    assert replay.mean_cost_usd == pytest.approx(123 / 3)
    assert replay.answer_shares(data.models) == pytest.approx({"s": 1 / 3, "m": 1 / 3,
                                                               "l": 1 / 3})
    summary = replay.summary()
    assert summary["latency_p50_s"] == pytest.approx(1.1)
    assert summary["quality"] == pytest.approx(2 / 3)


def test_replay_follows_the_cascade_order_not_the_column_order() -> None:
    data = _hand_data()
    cascade = Cascade(("l", "s"), (0.5,))
    replay = cascade.replay(data, np.array([[0.0, 0.0, 0.9], [0.0, 0.0, 0.1],
                                            [0.0, 0.0, 0.6]]))
    assert replay.answered.tolist() == [2, 0, 2]
    assert replay.cost_usd.tolist() == [100.0, 101.0, 100.0]
    assert not replay.visited[:, 1].any()


def test_stop_steps_agree_with_the_scalar_decision_the_server_uses() -> None:
    rng = np.random.default_rng(3)
    cascade = Cascade(("a", "b", "c", "d"), (0.3, 0.6, 0.9))
    scores = rng.random((500, 4))
    scores[::17, 1] = np.nan  # a failed signal
    stops = cascade.stop_steps(scores)
    for row, stop in zip(scores, stops, strict=True):
        live = next(k for k in range(4) if cascade.accepts(k, float(row[k])))
        assert live == stop


def test_accepts_thresholds_last_step_and_nan() -> None:
    cascade = Cascade(("a", "b"), (0.7,))
    assert cascade.accepts(0, 0.7) and not cascade.accepts(0, 0.69)
    assert not cascade.accepts(0, float("nan"))  # escalate on doubt
    assert cascade.accepts(1, 0.0) and cascade.accepts(1, float("nan"))
    with pytest.raises(ConfigError, match="outside"):
        cascade.accepts(2, 1.0)
    assert Cascade(("only",)).accepts(0, 0.0)


@pytest.mark.parametrize(("models", "thresholds", "match"), [
    ((), (), "at least one model"),
    (("a", "a"), (0.5,), "each model once"),
    (("a", "b"), (), "needs 1 thresholds"),
    (("a", "b"), (0.1, 0.2), "needs 1 thresholds"),
    (("a", "b"), (float("nan"),), "NaN"),
])
def test_bad_cascades_are_refused(models: tuple[str, ...], thresholds: tuple[float, ...],
                                  match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Cascade(models, thresholds)


def test_a_str_is_not_a_list_of_models() -> None:
    with pytest.raises(ConfigError, match="not one str"):
        Cascade("gpt-4o")  # type: ignore[arg-type]


def test_replay_checks_shapes_and_model_names() -> None:
    data = _hand_data()
    with pytest.raises(ConfigError, match="shape"):
        Cascade(("s", "m"), (0.5,)).replay(data, np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="unknown model 'x'"):
        Cascade(("s", "x"), (0.5,)).replay(data, np.zeros((3, 3)))


def test_replay_refuses_an_answer_from_an_unvisited_model() -> None:
    data = _hand_data()
    visited = np.zeros((3, 3), dtype=bool)
    visited[:, 0] = True
    with pytest.raises(ConfigError, match="visited"):
        Replay.from_visits(data, visited, np.array([0, 0, 1]))


def test_description_and_round_trip() -> None:
    cascade = Cascade(("a", "b", "c"), (0.25, 0.5), signal="learned")
    assert cascade.describe() == "a (>= 0.25) -> b (>= 0.5) -> c"
    assert Cascade.from_dict(cascade.to_dict()) == cascade
    with pytest.raises(ConfigError, match="not a cascade description"):
        Cascade.from_dict({"thresholds": [0.1]})


def test_replay_without_recorded_latency_reports_none() -> None:
    data = toy_dataset(30)
    replay = Cascade(("small", "large"), (0.5,)).replay(data, np.full((30, 3), 0.9))
    assert replay.latency_s is None
    assert replay.summary()["latency_p99_s"] is None
    np.testing.assert_array_equal(replay.cost_usd, data.cost_usd[:, 0])
