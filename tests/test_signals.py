"""Deferral signals: one contract over every registered signal, and each signal's behaviour."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError, DataError, NotFittedError
from routecast.routers import make_router
from routecast.signals import available_signals, make_signal, signal_names
from tests.test_cascade import toy_with_answers
from tests.toy import toy_dataset

ALL = signal_names()


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_with_answers(300)


def test_builtins_are_registered() -> None:
    assert {"confidence", "learned", "router"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_init_only_stores_parameters(name: str) -> None:
    signal = make_signal(name)
    assert not [k for k in vars(signal) if k.endswith("_")]
    assert type(signal)(**signal.get_params()).get_params() == signal.get_params()


@pytest.mark.parametrize("name", ALL)
def test_use_before_fit_raises(name: str, data: Dataset) -> None:
    with pytest.raises(NotFittedError):
        make_signal(name).score(data)


@pytest.mark.parametrize("name", ALL)
def test_fit_score_contract(name: str, data: Dataset) -> None:
    train, test = data.subset("train"), data.subset("test")
    signal = make_signal(name)
    assert signal.fit(train) is signal
    assert signal.models_ == data.models
    scores = signal.score(test)
    assert scores.shape == (test.n_prompts, test.n_models)
    assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1
    again = make_signal(name).fit(train).score(test)
    np.testing.assert_array_equal(scores, again)
    with pytest.raises(ConfigError, match="same models"):
        signal.score(test.select_models(["large", "small", "medium"]))


@pytest.mark.parametrize("name", ALL)
def test_cross_fit_scores_never_see_their_own_outcomes(name: str, data: Dataset) -> None:
    train = data.subset("train")
    signal = make_signal(name)
    oof = signal.cross_fit(train, folds=3, seed=0)
    assert oof.shape == (train.n_prompts, train.n_models)
    assert not hasattr(signal, "models_")  # self is left unfitted
    # Flip the outcomes of one prompt: its own out-of-fold scores must not move.
    flipped = replace(train, quality=train.quality.copy())
    flipped.quality[0] = 1.0 - flipped.quality[0]
    np.testing.assert_allclose(signal.cross_fit(flipped, folds=3, seed=0)[0], oof[0],
                               atol=1e-12)


def test_signals_name_what_they_need() -> None:
    plain = toy_dataset(60)
    assert available_signals(plain) == []
    assert available_signals(toy_with_answers(60)) == ["confidence", "learned",
                                                    "cross-agreement"]
    assert "router" in available_signals(plain, include_ex_ante=True)
    with pytest.raises(DataError, match="does not record confidence"):
        make_signal("confidence").fit(plain)
    with pytest.raises(ConfigError, match="unknown signal 'nope'"):
        make_signal("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_signal("learned", colour="red")


def test_confidence_is_calibrated_and_keeps_the_order(data: Dataset) -> None:
    train = data.subset("train")
    assert train.confidence is not None
    scores = make_signal("confidence").fit(train).score(train)
    for j in range(data.n_models):
        if np.all(train.quality[:, j] == train.quality[0, j]):
            continue  # constant quality: raw scores kept
        # Platt scaling fitted by maximum likelihood matches the mean outcome ...
        assert scores[:, j].mean() == pytest.approx(train.quality[:, j].mean(), abs=0.02)
        # ... and is monotone in the raw confidence.
        order = np.argsort(train.confidence[:, j])
        assert np.all(np.diff(scores[order, j]) >= -1e-12)
    raw = make_signal("confidence", calibrate=False).fit(train).score(train)
    np.testing.assert_array_equal(raw, train.confidence)


def test_learned_scorer_reads_the_answers(data: Dataset) -> None:
    train, test = data.subset("train"), data.subset("test")
    scorer = make_signal("learned", use_confidence=False).fit(train)
    scores = scorer.score(test)
    right = test.quality > 0.5
    col = 1  # "medium": right and wrong answers both common
    assert roc_auc_score(right[:, col], scores[:, col]) > 0.8
    # The live path gives the same numbers, one model at a time.
    assert test.responses is not None
    live = scorer.score_responses(list(test.prompts), "medium", list(test.responses[:, col]))  # type: ignore[attr-defined]
    np.testing.assert_allclose(live, scores[:, col])


def test_learned_scorer_uses_confidence_when_recorded(data: Dataset) -> None:
    train, test = data.subset("train"), data.subset("test")
    scorer = make_signal("learned").fit(train)
    assert scorer.uses_confidence_  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="has no confidence"):
        scorer.score(replace(test, confidence=None))
    with pytest.raises(ConfigError, match="unknown model"):
        scorer.score_responses(["p"], "nope", ["a"])  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="one response per prompt"):
        scorer.score_responses(["p", "q"], "small", ["a"])  # type: ignore[attr-defined]


def test_router_signal_is_the_routers_estimate(data: Dataset) -> None:
    train, test = data.subset("train"), data.subset("test")
    router = make_router("linear")
    signal = make_signal("router", router=router).fit(train)
    assert not hasattr(router, "models_")  # the caller's router is not fitted in place
    expected = make_router("linear").fit(train).predict(list(test.prompts))
    np.testing.assert_allclose(signal.score(test), expected)
    assert not type(signal).reads_answers
