"""The rubric judge: a configured model asked to score an answer, and its verdict parsed.

The judge sees the prompt (the routing text: the last user turn), the answer, and a rubric,
and replies with one number from 0 to 10; the label is that number over 10. A reply without a
number in range is no verdict (no label), never a guess. The judge call is a plain,
non-streamed chat completion at temperature 0 through the judge model's own backend, so its
cost comes back in its usage like any answer's.
"""

from __future__ import annotations

import re

#: The default rubric; ``learning.judge.rubric`` replaces it.
RUBRIC = ("You are grading an AI assistant's answer. Judge only whether the answer is correct "
          "and complete for the question. Reply with a single integer from 0 (wrong or "
          "useless) to 10 (fully correct), and nothing else.")

#: Enough for "10"; a few more in case the judge adds a full stop.
JUDGE_MAX_TOKENS = 4

_NUMBER = re.compile(r"(?<![\d.])(10|\d)(?:\.\d+)?(?![\d])")


def judge_messages(question: str, answer: str, rubric: str = RUBRIC) -> list[dict[str, str]]:
    """The chat messages of one judge call."""
    return [{"role": "system", "content": rubric},
            {"role": "user", "content": f"Question:\n{question}\n\nAnswer:\n{answer}\n\n"
                                        "Score (0-10):"}]


def parse_score(reply: str) -> float | None:
    """The judge's score in [0, 1] (its first integer 0-10, over 10), or ``None``."""
    match = _NUMBER.search(reply)
    if match is None:
        return None
    return int(match.group(1)) / 10.0
