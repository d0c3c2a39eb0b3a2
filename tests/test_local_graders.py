"""Graders: exact, number, choice and judge, on the kinds of answers small models give."""

from __future__ import annotations

import asyncio

import pytest

from routecast.errors import ConfigError
from routecast.local.client import Answer, Endpoint
from routecast.local.graders import (
    Judge,
    choice_letter,
    choice_match,
    exact_match,
    extract_number,
    grade,
    normalize,
    number_match,
    options_of,
    parse_verdict,
)
from routecast.local.tasks import Task


def test_normalize_drops_case_accents_punctuation_and_articles() -> None:
    assert normalize("  The Brasília, D.C.! ") == "brasilia d c"


@pytest.mark.parametrize(("response", "expected"), [
    ("Paris", 1.0),
    ("paris.", 1.0),
    ("The capital of France is Paris.", 1.0),
    ("**Paris**\nIt is a lovely city.", 1.0),
    ("Parisian food is great", 0.0),      # a whole-word phrase, not a substring
    ("Lyon", 0.0),
    ("", 0.0),
    ("It is Lyon.\nParis", 0.0),          # only the first line counts
])
def test_exact_match(response: str, expected: float) -> None:
    assert exact_match(response, ["Paris"]) == expected


def test_exact_match_accepts_aliases_and_multiword_answers() -> None:
    assert exact_match("CO2", ["carbon dioxide", "co2"]) == 1.0
    assert exact_match("It is carbon dioxide", ["carbon dioxide", "co2"]) == 1.0
    assert exact_match("carbon", ["carbon dioxide", "co2"]) == 0.0
    assert exact_match("Washington D.C.", ["Washington, D.C."]) == 1.0


@pytest.mark.parametrize(("text", "which", "expected"), [
    ("11", "last", 11.0),
    ("4 + 7 = 11", "last", 11.0),
    ("4 + 7 = 11", "first", 11.0),              # the marker wins over position
    ("The answer is 12 because 5 + 7", "last", 12.0),
    ("Answer: 1,000 grams", "last", 1000.0),
    ("3.5 km", "last", 3.5),
    ("It is -3.", "last", -3.0),
    ("5-3", "last", 3.0),                       # a subtraction, not minus three
    ("There are 100 centimetres in one metre.", "last", 100.0),  # digits beat number words
    ("Six legs.", "last", 6.0),
    ("8 apples, then 3 more", "first", 8.0),
    ("8 apples, then 3 more", "last", 3.0),
    ("no number here", "last", None),
    ("\n\n  42\n7", "last", 42.0),              # first non-empty line only
])
def test_extract_number(text: str, which: str, expected: float | None) -> None:
    assert extract_number(text, which) == expected  # type: ignore[arg-type]


def test_number_match() -> None:
    assert number_match("The total is 42.", "42") == 1.0
    assert number_match("42.0", "42") == 1.0
    assert number_match("41", "42") == 0.0
    assert number_match("none", "42") == 0.0
    with pytest.raises(ConfigError, match="not a number"):
        number_match("4", "four")


PROMPT = ("Which is a mammal?\nA) shark\nB) dolphin\nC) trout\nD) octopus\n"
          "Answer with the letter only.")


def test_options_of_reads_option_lines() -> None:
    assert options_of(PROMPT) == {"A": "shark", "B": "dolphin", "C": "trout", "D": "octopus"}


@pytest.mark.parametrize(("response", "letter"), [
    ("B", "B"), ("B)", "B"), ("(B)", "B"), ("B. dolphin", "B"), ("B is the mammal", "B"),
    ("The answer is B", "B"), ("answer: b", "B"), ("I pick (C) here", "C"),
    ("A dolphin is a mammal", "B"),   # the article "A" is not a letter; the option text decides
    ("dolphin", "B"),
    ("shark or dolphin", None),       # names two options
    ("I do not know", None),
])
def test_choice_letter(response: str, letter: str | None) -> None:
    assert choice_letter(response, options_of(PROMPT)) == letter


def test_choice_match_compares_with_gold() -> None:
    assert choice_match("B)", "B", PROMPT) == 1.0
    assert choice_match("A", "B", PROMPT) == 0.0
    assert choice_match("dolphin", "b", PROMPT) == 1.0


def test_grade_dispatches_on_the_task_grader() -> None:
    assert grade(Task("n", "2+2?", "4", "number"), "2 + 2 = 4") == 1.0
    assert grade(Task("e", "Capital of Peru?", "Lima", "exact"), "It is Lima") == 1.0
    assert grade(Task("c", PROMPT, "B", "choice"), "B") == 1.0
    with pytest.raises(ConfigError, match="--judge"):
        grade(Task("j", "Why?", "because", "judge"), "because")


@pytest.mark.parametrize(("reply", "verdict"), [
    ("Y", 1.0), ("yes, it is", 1.0), ("Yes.", 1.0), ("N", 0.0), ("No", 0.0),
    ("Maybe", 0.0), ("", 0.0), ("Yesterday", 0.0),
])
def test_parse_verdict(reply: str, verdict: float) -> None:
    assert parse_verdict(reply) == verdict


def test_judge_asks_through_the_backend_interface() -> None:
    seen: list[tuple[Endpoint, str]] = []

    async def ask(endpoint: Endpoint, prompt: str) -> Answer:
        seen.append((endpoint, prompt))
        # A fake judge that says Y only when the given answer names the reference.
        ok = "Given answer: Lima" in prompt
        return Answer("Y" if ok else "N", 10, 1, 0.01, None)

    endpoint = Endpoint("judge", "http://127.0.0.1:1")
    judge = Judge(ask, endpoint)
    task = Task("t", "What is the capital of Peru?", "Lima", "judge", aliases=("lima",))
    assert asyncio.run(judge(task, "Lima\nmore text")) == 1.0
    assert asyncio.run(judge(task, "Cusco")) == 0.0
    assert seen[0][0] is endpoint
    assert "What is the capital of Peru?" in seen[0][1]
    assert "Reference answer: Lima / lima" in seen[0][1]
