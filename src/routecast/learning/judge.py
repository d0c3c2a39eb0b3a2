"""The rubric judge: a configured model asked to score an answer, and its verdict parsed.

The judge sees the prompt (the routing text: the last user turn) and the answer, tagged
``<question>...</question>`` and ``<answer>...</answer>`` (the layout graders and the replay
fleet's judge read), and a rubric, and replies with one number from 0 to ``scale`` (10 for the
default rubric; 1 for a judge that replies with a probability, such as the replay fleet's);
the label is that number over ``scale``. A reply without a number in range is no verdict (no
label), never a guess. The judge call is a plain,
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

_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)")


def judge_messages(question: str, answer: str, rubric: str = RUBRIC) -> list[dict[str, str]]:
    """The chat messages of one judge call."""
    return [{"role": "system", "content": rubric},
            {"role": "user", "content": f"<question>\n{question}\n</question>\n\n<answer>\n"
                                        f"{answer}\n</answer>\n\nScore:"}]


def parse_score(reply: str, scale: float = 10.0) -> float | None:
    """The judge's score in [0, 1]: the first number in its reply over ``scale``, or ``None``
    when there is none or it lies outside 0..``scale``."""
    match = _NUMBER.search(reply)
    if match is None:
        return None
    value = float(match.group(1))
    return value / scale if value <= scale else None
