"""Signals that travel across tasks: answer-form features, pair steps scored by the agreement
of two models' answers, per-task calibration, and the learned scorer's text features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from routecast.cascades.cascade import Cascade
from routecast.data import load_dataset
from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.signals import available_signals, make_signal
from routecast.signals.answers import (
    FEATURE_NAMES,
    answer_features,
    answer_similarity,
    conforms,
    expected_format,
)
from routecast.signals.calibration import apply_tasks, fit_tasks, platt
from routecast.signals.cross_agreement import add_pairs, cheap_pairs, split_pair
from routecast.signals.persist import load_scorer, save_scorer
from tests.toy import toy_with_answers

MCQ = ('Answer by outputting "A", "B", "C", or "D".\n\nQuestion: 2+2?\n\nChoices:\nA: 3\nB: 4\n'
       "C: 5\nD: 6\n\nAnswer:")
MATH = "Solve it step by step and end with '#### x'.\n\nProblem: 2+2?"
TRIVIA = "Question: Who wrote Hamlet?\n\nAnswer:"


def test_the_expected_format_is_read_from_the_prompt() -> None:
    assert expected_format(MCQ) == "choice"
    assert expected_format(MATH) == "number"
    assert expected_format(TRIVIA) == "text"
    assert conforms("B", "choice") and conforms("(b).", "choice")
    assert not conforms("The answer is B because 2+2=4", "choice")
    assert conforms("2+2 = 4\n#### 4", "number") and conforms("4", "number")
    assert not conforms("four, I believe", "number")
    assert conforms("Shakespeare", "text") and not conforms("", "text")


def test_answer_features_flag_hedging_refusal_and_format() -> None:
    feats = answer_features([TRIVIA, TRIVIA, MCQ, MCQ, MATH],
                            ["Shakespeare", "I think it was probably Marlowe",
                             "As an AI I cannot answer that", None, "so\n#### 4"])
    col = {n: feats[:, k] for k, n in enumerate(FEATURE_NAMES)}
    assert feats.shape == (5, len(FEATURE_NAMES))
    assert ((feats >= 0) & (feats <= 1)).all()
    assert col["hedging"].tolist() == [0, 1, 0, 0, 0]
    assert col["refusal"].tolist() == [0, 0, 1, 0, 0]
    assert col["empty"].tolist() == [0, 0, 0, 1, 0]
    assert col["expects_choice"].tolist() == [0, 0, 1, 1, 0]
    assert col["expects_number"].tolist() == [0, 0, 0, 0, 1]
    assert col["format_ok"].tolist() == [1, 1, 0, 0, 1]
    assert col["log_length"][1] > col["log_length"][0] > 0


def test_answer_similarity_normalises_letters_numbers_and_text() -> None:
    assert answer_similarity("B", "(b)") == (1.0, 1.0)
    assert answer_similarity("so 1,200\n#### 1,200", "#### 1200") == (1.0, 1.0)
    assert answer_similarity("A", "B") == (0.0, 0.0)
    equal, overlap = answer_similarity("light and its properties", "light and vision")
    assert equal == 0.0 and overlap == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert answer_similarity("", "A") == (0.0, 0.0)
    assert answer_similarity(None, None) == (0.0, 0.0)


def test_a_pair_column_pays_for_both_calls_and_keeps_the_answerers_answer() -> None:
    data = toy_with_answers(40)
    paired = add_pairs(data, [("small", "medium")])
    assert paired.models == ("small", "medium", "large", "small+medium")
    assert split_pair("small+medium", paired.models) == ("small", "medium")
    assert split_pair("large", paired.models) is None
    assert data.latency_s is not None and paired.latency_s is not None
    assert data.tokens_in is not None and paired.tokens_in is not None
    np.testing.assert_allclose(paired.cost_usd[:, 3], data.cost_usd[:, 0] + data.cost_usd[:, 1])
    np.testing.assert_allclose(paired.latency_s[:, 3],
                               np.maximum(data.latency_s[:, 0], data.latency_s[:, 1]))
    np.testing.assert_allclose(paired.tokens_in[:, 3], data.tokens_in[:, :2].sum(axis=1))
    np.testing.assert_array_equal(paired.quality[:, 3], data.quality[:, 1])
    assert list(paired.responses[:, 3]) == list(data.responses[:, 1])  # type: ignore[index]
    np.testing.assert_array_equal(paired.quality[:, :3], data.quality)
    # A cascade whose first step is the pair pays both models on every prompt.
    replay = Cascade(("small+medium", "large"), (2.0,)).replay(paired, np.zeros((40, 4)))
    np.testing.assert_allclose(replay.cost_usd, data.cost_usd.sum(axis=1))


def test_cheap_pairs_are_the_cheapest_models_answered_by_the_better_one() -> None:
    data = toy_with_answers(60)  # small < medium < large in cost and in quality
    assert cheap_pairs(data, 2) == [("small", "medium")]
    assert cheap_pairs(data, 3) == [("small", "medium"), ("small", "large"),
                                    ("medium", "large")]
    with pytest.raises(ConfigError, match="n_cheap must be >= 2"):
        cheap_pairs(data, 1)
    with pytest.raises(ConfigError, match="need recorded answers"):
        add_pairs(replace(data, responses=None), [("small", "medium")])


def test_cross_agreement_is_offered_where_answers_are_recorded() -> None:
    data = toy_with_answers(60)
    assert "cross-agreement" in available_signals(data)
    assert "cross-agreement" not in available_signals(replace(data, responses=None))


def test_platt_is_pulled_to_the_identity_and_fits_a_shift_with_enough_data() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    q = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(float)
    a, b = platt(z, q, strength=1.0)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)
    assert platt(z[:40], q[:40], strength=1e6) == pytest.approx((1.0, 0.0), abs=1e-3)
    table = fit_tasks(z, q, ["t"] * 4000, strength=1.0)
    assert set(table) == {"t"}
    out = apply_tasks(z[:3], ["t", "unseen", "t"], table)
    assert out[1] == z[1] and out[0] == pytest.approx(table["t"][0] * z[0] + table["t"][1])
    assert fit_tasks(z[:10], q[:10], ["t"] * 10, strength=1.0) == {}  # too few prompts


def test_per_task_calibration_fixes_a_task_whose_confidence_means_less() -> None:
    """Two tasks: on ``a`` the confidence is honest, on ``b`` everyone is wrong half the time
    whatever it says. Per-task scaling learns that; an unseen task gets the global fit."""
    rng = np.random.default_rng(1)
    n = 1200
    task = np.where(np.arange(n) % 2 == 0, "a", "b")
    conf = rng.uniform(0.05, 0.95, (n, 2))
    right = np.where(task[:, None] == "a", rng.random((n, 2)) < conf, rng.random((n, 2)) < 0.5)
    data = Dataset(name="tasks", models=("x", "y"), ids=tuple(map(str, range(n))),
                   prompts=tuple(f"p{i}" for i in range(n)), quality=right.astype(float),
                   cost_usd=np.tile([1.0, 2.0], (n, 1)), split=np.array(["train"] * n),
                   task=tuple(task), confidence=conf,
                   responses=np.full((n, 2), "an answer", dtype=object))
    train, test = data.take(np.arange(n) < 800), data.take(np.arange(n) >= 800)
    per_task = make_signal("confidence", per_task=True).fit(train)
    plain = make_signal("confidence").fit(train)

    def loss(p: np.ndarray, q: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-(q * np.log(p) + (1 - q) * np.log(1 - p)).mean())

    on_b = np.asarray(test.task) == "b"
    s_task, s_plain = per_task.score(test), plain.score(test)
    assert loss(s_task[on_b], test.quality[on_b]) < loss(s_plain[on_b], test.quality[on_b]) - 0.02
    assert s_task[on_b].std() < 0.8 * s_plain[on_b].std()  # b's scores flatten out
    unseen = replace(test, task=tuple("c" for _ in range(test.n_prompts)))
    np.testing.assert_allclose(per_task.score(unseen), plain.score(unseen))
    for name in ("cross-agreement",):  # the agreement scorer calibrates per task the same way
        scorer = make_signal(name, per_task=True).fit(train)
        fallback = make_signal(name).fit(train)
        assert not np.allclose(scorer.score(test), fallback.score(test))
        np.testing.assert_allclose(scorer.score(unseen), fallback.score(unseen))


@pytest.fixture(scope="module")
def cascades(shared_data: Path) -> Dataset:
    return load_dataset(shared_data / "llm-cascades-zellinger")


def test_agreement_of_two_cheap_models_predicts_correctness_on_an_unseen_task(
        cascades: Dataset) -> None:
    """Fitted without GSM8K, the pair step (llama3.2-3b + llama3.1-8b) tells right from wrong
    8b answers on GSM8K better than the same features without the companion's answer."""
    tasks = np.asarray(cascades.task)
    data = add_pairs(cascades, [("llama3.2-3b", "llama3.1-8b")])
    train, held = data.take((tasks != "gsm8k") & (data.split == "train")), data.take(
        tasks == "gsm8k")
    scores = make_signal("cross-agreement").fit(train).score(held)
    j_pair, j_single = held.model_index("llama3.2-3b+llama3.1-8b"), held.model_index(
        "llama3.1-8b")
    q = held.quality[:, j_single]
    auc_pair = roc_auc_score(q, scores[:, j_pair])
    auc_single = roc_auc_score(q, scores[:, j_single])
    assert auc_pair > auc_single + 0.05, (auc_pair, auc_single)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_the_learned_scorer_keeps_its_text_features_when_saved(tmp_path: Path) -> None:
    data = toy_with_answers(120)
    train, test = data.subset("train"), data.subset("test")
    scorer = make_signal("learned").fit(train)
    plain = make_signal("learned", text_features=False).fit(train)
    assert scorer.get_params()["text_features"] is True
    assert not np.allclose(scorer.score(test), plain.score(test))
    save_scorer(scorer, tmp_path / "s")  # type: ignore[arg-type]
    np.testing.assert_allclose(load_scorer(tmp_path / "s").score(test), scorer.score(test))


def test_a_scorer_saved_before_text_features_loads_as_it_was_fitted(tmp_path: Path) -> None:
    import json

    data = toy_with_answers(120)
    old = make_signal("learned", text_features=False).fit(data.subset("train"))
    save_scorer(old, tmp_path / "s")  # type: ignore[arg-type]
    meta_path = tmp_path / "s" / "scorer.json"
    meta = json.loads(meta_path.read_text())
    del meta["params"]["text_features"]  # what an older routecast wrote
    meta_path.write_text(json.dumps(meta))
    test = data.subset("test")
    np.testing.assert_allclose(load_scorer(tmp_path / "s").score(test), old.score(test))
