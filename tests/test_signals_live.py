"""The pure live-signal functions the server calls on responses."""

from __future__ import annotations

import math

import pytest

from routecast.errors import ConfigError
from routecast.signals import (
    agreement,
    normalize_answer,
    parse_verdict,
    self_verification_score,
    summarize_logprobs,
)

LOGPROBS = [math.log(0.9), math.log(0.5), math.log(0.8)]


def test_logprob_summaries() -> None:
    assert summarize_logprobs(LOGPROBS) == pytest.approx((0.9 * 0.5 * 0.8) ** (1 / 3))
    assert summarize_logprobs(LOGPROBS, method="min") == pytest.approx(0.5)
    assert summarize_logprobs(LOGPROBS, method="first") == pytest.approx(0.9)
    assert summarize_logprobs([-math.inf, 0.0], method="min") == 0.0
    assert summarize_logprobs([0.0]) == 1.0


@pytest.mark.parametrize("top", [
    {"A": math.log(0.7), "B": math.log(0.2), "C": math.log(0.1)},             # legacy
    [{"token": "B", "logprob": math.log(0.2)}, {"token": "A", "logprob": math.log(0.7)}],
    [math.log(0.2), math.log(0.7)],                                              # plain
])
def test_first_token_margin_reads_every_top_logprobs_shape(top: object) -> None:
    margin = summarize_logprobs([math.log(0.7)], [top], method="margin")  # type: ignore[list-item]
    assert margin == pytest.approx(0.5)


def test_margin_with_one_alternative_is_its_probability() -> None:
    assert summarize_logprobs([math.log(0.6)], [[math.log(0.6)]], "margin") == pytest.approx(0.6)


@pytest.mark.parametrize(("args", "match"), [
    (([],), "no token log-probabilities"),
    (([0.5],), "above 0"),
    (([float("nan")],), "not a log-probability"),
    (([-0.1], None, "margin"), "needs top_logprobs"),
    (([-0.1], None, "median"), "unknown log-prob summary"),
])
def test_bad_logprobs_say_how_to_fix(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        summarize_logprobs(*args)  # type: ignore[arg-type]


def test_agreement_of_samples() -> None:
    assert agreement(["42", "Final: #### 42", "41"]) == pytest.approx(2 / 3)
    assert agreement(["(B)", "b.", "B)", "A"]) == pytest.approx(3 / 4)
    assert agreement(["1,000 apples", "1000 apples"]) == 1.0
    assert agreement(["Paris"]) == 1.0
    assert agreement(["", None, "x"]) == pytest.approx(1 / 3)  # empty never agrees
    assert agreement(["", None]) == 0.0
    with pytest.raises(ConfigError, match="at least one"):
        agreement([])
    with pytest.raises(ConfigError, match="not one str"):
        agreement("abc")


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Answer\nis Paris. ") == "the answer is paris"
    assert normalize_answer("reasoning...\n#### $1,250") == "1250"
    assert normalize_answer("(c)") == "c"
    assert normalize_answer(None) == ""


def test_self_verification() -> None:
    assert self_verification_score([True, None, False, True]) == 0.5
    assert self_verification_score([True]) == 1.0
    with pytest.raises(ConfigError, match="at least one vote"):
        self_verification_score([])
    assert parse_verdict("Evaluation: The context supports the answer.") is True
    assert parse_verdict("The context does not support the answer.") is False
    assert parse_verdict("It looked correct at first, but it is wrong") is False
    assert parse_verdict("no verdict here") is False  # "no" is a verdict word
    assert parse_verdict("hmm") is None
    assert parse_verdict(None) is None


def test_no_submodule_shadows_the_agreement_function() -> None:
    # A module named signals/agreement.py once replaced this function on the package as soon
    # as anything imported it, and the tests that ran after it saw a module, not a function.
    import routecast.signals.cross_agreement  # noqa: F401
    from routecast import signals

    assert callable(signals.agreement)
