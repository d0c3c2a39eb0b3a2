"""Task-agnostic features of an answer's text: pure functions, no fitting.

Why these and not a bag of words: a scorer fitted on some tasks and used on another (a new
kind of traffic) can only carry over what means the same on every task. The words of a
prompt or an answer mostly say *which task* it is, so a TF-IDF scorer learns "MMLU answers
are right 80 % of the time" and has nothing to say about a task it never saw. What does carry
over is the answer's *form*:

* **length** (log characters): rambling or truncated answers are more often wrong;
* **hedging**: "I think", "probably", "not sure", "it depends" - a model that doubts in words;
* **refusal**: "I cannot", "as an AI", "I don't know" - an answer that is no answer;
* **format conformity**: the prompt asks for a bare choice letter ("Output A, B, C or D") or
  a final number ("#### x") and the answer is (or is not) exactly that; a model that cannot
  follow the format is often also wrong on the content;
* **agreement** of two models' answers (:func:`answer_similarity`), after
  :func:`~routecast.signals.live.normalize_answer`: equal letters or numbers, or, for short
  free text, the token F1 of the two answers (as SQuAD scores answer overlap).

What a prompt expects is read from the prompt itself (:func:`expected_format`), so the
features need no task label.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from routecast.signals.live import normalize_answer

FloatArray = npt.NDArray[np.float64]
Format = Literal["choice", "number", "text"]

#: Column names of :func:`answer_features`, in order.
FEATURE_NAMES = ("log_length", "empty", "hedging", "refusal", "expects_choice",
                 "expects_number", "format_ok")

_CHOICE_PROMPT = re.compile(
    r"(\b[A-D]\s*[:.)]\s*\S.*\n.*\b[B-E]\s*[:.)]\s*\S)|(\"?A\"?,\s*\"?B\"?,\s*(\"?C\"?,?\s*)?"
    r"(or\s+)?\"?[CD]\"?)", re.IGNORECASE | re.DOTALL)
_NUMBER_PROMPT = re.compile(r"####|numerical answer|final answer as a number", re.IGNORECASE)
_NUMBER = re.compile(r"^-?\$?\d[\d,]*(\.\d+)?%?$")
_FINAL_NUMBER = re.compile(r"####\s*-?\$?\d[\d,]*(\.\d+)?\s*\S{0,3}\s*$")
_HEDGES = re.compile(
    r"\b(i think|i believe|probably|possibly|perhaps|maybe|might be|may be|likely|unclear|"
    r"not sure|uncertain|it depends|depends on|approximately|roughly|it is possible|"
    r"could be|i'm not certain|not certain|hard to say|difficult to say)\b", re.IGNORECASE)
_REFUSALS = re.compile(
    r"\b(i cannot|i can't|i can not|i am unable|i'm unable|as an ai|i don't know|i do not know|"
    r"no one knows|nobody knows|cannot be determined|can't be determined|"
    r"i have no comment|no comment|not enough information|unknown)\b", re.IGNORECASE)
_TOKEN = re.compile(r"\w+")


def expected_format(prompt: str) -> Format:
    """What the prompt asks for: ``"choice"`` (a letter among listed options), ``"number"``
    (a final number, e.g. GSM8K's ``#### x``) or ``"text"``."""
    if _NUMBER_PROMPT.search(prompt):
        return "number"
    if _CHOICE_PROMPT.search(prompt):
        return "choice"
    return "text"


def conforms(answer: str | None, expected: Format) -> bool:
    """Whether ``answer`` has the form ``expected`` asks for: a bare option letter
    (``B``, ``(b)``, ``B.``), a final ``#### <number>`` line or a bare number, or, for free
    text, anything non-empty of at most 60 words (a direct answer rather than an essay)."""
    text = (answer or "").strip()
    if not text:
        return False
    if expected == "choice":
        return len(normalize_answer(text)) == 1 and normalize_answer(text).isalpha()
    if expected == "number":
        return bool(_FINAL_NUMBER.search(text) or _NUMBER.match(normalize_answer(text)))
    return len(text.split()) <= 60


def answer_features(prompts: Sequence[str], answers: Sequence[str | None]) -> FloatArray:
    """One row of :data:`FEATURE_NAMES` per (prompt, answer) pair, shape ``(n, 7)``; each
    feature lies in [0, 1] (the log length is divided by 8, ~3,000 characters)."""
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        text = answer if isinstance(answer, str) else ""
        expected = expected_format(prompt)
        rows.append((
            min(1.0, math.log1p(len(text)) / 8.0),
            0.0 if text.strip() else 1.0,
            1.0 if _HEDGES.search(text) else 0.0,
            1.0 if _REFUSALS.search(text) else 0.0,
            1.0 if expected == "choice" else 0.0,
            1.0 if expected == "number" else 0.0,
            1.0 if conforms(text, expected) else 0.0,
        ))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def answer_similarity(a: str | None, b: str | None) -> tuple[float, float]:
    """``(equal, overlap)`` of two answers: 1.0 if their normalised forms are equal (0.0 if
    either is empty), and the token F1 of the normalised forms (1.0 when equal)."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if not na or not nb:
        return 0.0, 0.0
    if na == nb:
        return 1.0, 1.0
    ta, tb = Counter(_TOKEN.findall(na)), Counter(_TOKEN.findall(nb))
    common = sum((ta & tb).values())
    if common == 0:
        return 0.0, 0.0
    precision, recall = common / sum(ta.values()), common / sum(tb.values())
    return 0.0, 2 * precision * recall / (precision + recall)
