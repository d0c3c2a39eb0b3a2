"""Graders: turn a model's response to a task into a quality in {0, 1}.

Four kinds, named by :attr:`Task.grader`:

* ``exact``: a short answer. The response's first non-empty line and every accepted answer are
  normalised (lower case, accents and punctuation dropped, articles removed, spaces collapsed);
  the task is right when an answer equals that line or appears in it as a whole-word phrase.
  The phrase rule accepts "The capital of France is Paris." -- small chat models rarely answer
  in one word -- and still rejects "Parisian" or a wrong city.
* ``number``: the number in the response's first non-empty line, compared to the gold number
  (relative tolerance 1e-6). Which number: the first one after the last "=" / "answer is" /
  "answer:" marker if there is one, else the last (or first, by choice) number on the line.
  Thousands separators ("1,000"), decimals and signs are understood; the words zero..twenty
  only where the line has no digits.
* ``choice``: a letter A-D, read from "B", "(B)", "B)", "B.", "Answer: B", "B is ..." at the start
  or after an answer marker; failing that, the one option whose text the first line names.
* ``judge``: a model is asked whether the response matches the gold answer and replies Y or N
  (:class:`Judge`; it talks through the same ``ask`` interface as ``collect``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.local.client import Answer, Endpoint
    from routecast.local.tasks import Task

_ARTICLES = {"a", "an", "the"}
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen", "twenty")
_NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS)}
# "1,234.5" (comma groups of three), "12.5", "7"; the sign is checked apart so that "5-3" reads
# as 5 and 3, not 5 and -3. Number words are a fallback only: "100 centimetres in one metre" is 100.
_DIGITS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_SPELLED = re.compile(r"\b(?:" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_MARKER = re.compile(r"=|\banswer\s+is\b|\banswer\s*:", re.IGNORECASE)
_LETTER_PATTERNS = (
    re.compile(r"^\s*\(?([A-D])\)?\s*(?:[.):,]|$)"),                  # "B", "(B)", "B)", "B."
    re.compile(r"^\s*([A-D])\s+is\b"),                                # "B is the mammal"
    re.compile(r"\b(?:answer|option)\s*(?:is|:)?\s*\(?([A-Da-d])\b\)?", re.IGNORECASE),
    re.compile(r"\(([A-D])\)"),                                       # "... (B) ..."
)
_OPTION_LINE = re.compile(r"^\s*([A-D])\)\s*(.+?)\s*$", re.MULTILINE)


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (``""`` if there is none)."""
    return next((line for line in text.splitlines() if line.strip()), "")


def normalize(text: str) -> str:
    """Lower case, accents and punctuation dropped, articles removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    words = re.sub(r"[^\w\s]|_", " ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def exact_match(response: str, answers: Sequence[str]) -> float:
    """1.0 when an accepted answer is the response's first line or a whole-word phrase in it."""
    line = f" {normalize(first_line(response))} "
    for answer in answers:
        norm = normalize(answer)
        if norm and f" {norm} " in line:
            return 1.0
    return 0.0


def extract_number(text: str, which: Literal["first", "last"] = "last") -> float | None:
    """The number a response gives, read from its first non-empty line (see module doc)."""
    line = first_line(text)
    markers = list(_MARKER.finditer(line))
    if markers and (found := _find(line[markers[-1].end():], "first")) is not None:
        return found
    return _find(line, which)


def _find(text: str, which: Literal["first", "last"]) -> float | None:
    for pattern in (_DIGITS, _SPELLED):
        matches = list(pattern.finditer(text))
        if matches:
            return _value(text, matches[-1] if which == "last" else matches[0])
    return None


def _value(text: str, m: re.Match[str]) -> float:
    token = m.group(0)
    value = float(_NUMBER_WORDS[token.lower()]) if token[0].isalpha() else \
        float(token.replace(",", ""))
    # A minus counts only where it cannot be a subtraction: "-3", "is -3", "(-3)", not "5-3".
    start = m.start()
    if start > 0 and text[start - 1] == "-" and (start == 1 or not text[start - 2].isalnum()):
        value = -value
    return value


def number_match(response: str, gold: str, which: Literal["first", "last"] = "last") -> float:
    """1.0 when the response's number equals ``gold`` (relative tolerance 1e-6)."""
    try:
        target = float(gold.replace(",", ""))
    except ValueError:
        raise ConfigError(f"gold answer {gold!r} of a 'number' task is not a number; "
                          "fix the task file or grade the task with 'exact'") from None
    got = extract_number(response, which)
    return float(got is not None and math.isclose(got, target, rel_tol=1e-6, abs_tol=1e-9))


def options_of(prompt: str) -> dict[str, str]:
    """The ``{"A": text, ...}`` options written as ``A) text`` lines in a prompt."""
    return {m.group(1): m.group(2) for m in _OPTION_LINE.finditer(prompt)}


def choice_letter(response: str, options: dict[str, str] | None = None) -> str | None:
    """The option letter a response picks, or ``None`` when it names none or several."""
    line = first_line(response)
    for pattern in _LETTER_PATTERNS:
        if (m := pattern.search(line)) is not None:
            return m.group(1).upper()
    if options:
        named = [k for k, text in options.items() if exact_match(line, [text])]
        if len(named) == 1:
            return named[0]
    return None


def choice_match(response: str, gold: str, prompt: str = "") -> float:
    """1.0 when the letter the response picks is ``gold``; ``prompt`` supplies option texts."""
    return float(choice_letter(response, options_of(prompt)) == gold.strip().upper())


def grade(task: Task, response: str) -> float:
    """Quality of ``response`` to ``task`` by its (deterministic) grader, in {0.0, 1.0}."""
    if task.grader == "exact":
        return exact_match(response, task.answers)
    if task.grader == "number":
        return number_match(response, task.gold)
    if task.grader == "choice":
        return choice_match(response, task.gold, task.prompt)
    raise ConfigError(f"task {task.id!r} is graded by a judge; pass a judge model "
                      "(`routecast collect --judge MODEL`)")


AskFn = Callable[["Endpoint", str], Awaitable["Answer"]]

JUDGE_PROMPT = """You are grading an answer to a question.
Question: {question}
Reference answer: {gold}
Given answer: {response}
Does the given answer mean the same as the reference answer? Reply with Y or N only."""


class Judge:
    """Grade by asking a model "is this answer right? Y/N" (LLM-as-a-judge).

    ``ask`` is the same interface ``collect`` talks through, so any configured model can judge.
    A reply that starts with neither Y nor N (nor yes / no) counts as N: an unsure judge must
    not pass answers.
    """

    def __init__(self, ask: AskFn, endpoint: Endpoint):
        self.ask = ask
        self.endpoint = endpoint

    async def __call__(self, task: Task, response: str) -> float:
        return (await self.verdict(task, response))[0]

    async def verdict(self, task: Task, response: str) -> tuple[float, str]:
        """The grade, and the judge's reply it was read from (kept for audits)."""
        prompt = JUDGE_PROMPT.format(question=task.prompt, gold=" / ".join(task.answers),
                                     response=first_line(response) or "(no answer)")
        answer = await self.ask(self.endpoint, prompt)
        return parse_verdict(answer.text), answer.text


def parse_verdict(text: str) -> float:
    """1.0 for a reply that starts with Y / yes, 0.0 for N / no and for anything else."""
    words = normalize(text).split()
    return float(bool(words) and words[0] in {"y", "yes"})
