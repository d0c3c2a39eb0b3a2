"""Deferral signals: one contract over every registered signal, and each signal's behaviour."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError, DataError
from routecast.routers import make_router
from routecast.signals import (
    SIGNALS,
    available_signals,
    live_signal_names,
    make_signal,
    signal_names,
)
from routecast.signals.base import FloatArray
from routecast.signals.confidence import RecordedConfidence
from routecast.testing import check_signal
from tests.toy import toy_dataset, toy_with_answers

#: Signals fitted on recorded outcomes (the live-only ones refuse, see below).
ALL = [n for n in signal_names() if SIGNALS.load(n).offline]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_with_answers(300)


def test_builtins_are_registered() -> None:
    assert {"confidence", "learned", "router"} <= set(ALL)
    # Each live judge is declared by its signal: the names are listed once.
    assert live_signal_names() == ["confidence", "learned", "agreement", "self-verification"]


@pytest.mark.parametrize("name", ["agreement", "self-verification"])
def test_live_only_signals_refuse_recorded_outcomes(name: str, data: Dataset) -> None:
    assert name in signal_names() and name not in ALL
    assert name not in available_signals(data, include_ex_ante=True)
    with pytest.raises(ConfigError, match="computed live only"):
        make_signal(name).fit(data)


@pytest.mark.parametrize("name", signal_names())
def test_every_signal_keeps_the_contract(name: str, data: Dataset) -> None:
    check_signal(make_signal(name), data)


class _PeekingConfidence(RecordedConfidence):
    """Scores with the outcomes it was fitted on, and "cross-fits" in sample: the contract's
    out-of-fold check must catch it."""

    name = "peeking"

    def _fit(self, dataset: Dataset) -> None:
        super()._fit(dataset)
        self.seen_ = dict(zip(dataset.prompts, dataset.quality.tolist(), strict=True))

    def _score(self, dataset: Dataset) -> FloatArray:
        out = super()._score(dataset)
        for i, p in enumerate(dataset.prompts):
            if p in self.seen_:
                out[i] = self.seen_[p]
        return out

    def cross_fit(self, dataset: Dataset, folds: int = 3, seed: int = 0) -> FloatArray:
        return type(self)(**self.get_params()).fit(dataset).score(dataset)


def test_check_signal_catches_a_leaking_signal(data: Dataset) -> None:
    with pytest.raises(AssertionError, match="with its own outcomes"):
        check_signal(_PeekingConfidence(), data)


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
