"""The fleet's judge: what a judge request asks, and the seeded noise of its verdicts.

A judge request names a question and an answer in one of three shapes (the first that fits):

1. tags anywhere in the last user message: ``<question>...</question>`` and
   ``<answer>...</answer>`` (a rubric prompt wraps them in its own instructions);
2. MT-Bench's single-answer layout in the last user message: ``[Question]`` ... then the answer
   between ``[The Start of Assistant's Answer]`` and ``[The End of Assistant's Answer]``;
3. the conversation being judged: the last ``assistant`` message is the answer and the last
   ``user`` message before it the question (a rubric may sit in a ``system`` message or in a
   ``user`` message after the answer).

For ``/v1/completions`` only shapes 1 and 2 apply, to the prompt.

Noise: with ``judge_noise = p`` the verdict on an answer is flipped (quality ``q`` becomes
``1 - q``) when a hash of (seed, prompt id, answer) falls below ``p``: a fraction ``p`` of
answers in expectation, independent of the order and concurrency of calls, and the same
verdict every time the same answer is judged again (a consistent, not a random, judge).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routecast.backends.prompt_format import message_text
from routecast.errors import RequestError

_TAGGED_Q = re.compile(r"<question>(.*?)</question>", re.DOTALL | re.IGNORECASE)
_TAGGED_A = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_MT_BENCH = re.compile(r"\[Question\]\s*(.*?)\s*\[The Start of Assistant's Answer\]\s*(.*?)\s*"
                       r"\[The End of Assistant's Answer\]", re.DOTALL)

HOW_TO_ASK = ("send the question and the answer as <question>...</question> and "
              "<answer>...</answer> in the last user message, or as a conversation whose last "
              "assistant message is the answer to the user message before it")


@dataclass(frozen=True, slots=True)
class JudgeAsk:
    """What one judge request asks about."""

    question: str
    answer: str


def read_chat(messages: Sequence[Mapping[str, Any]]) -> JudgeAsk:
    """The question and answer of a chat judge request (see the module docstring)."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if users:
        found = read_text(message_text(messages[users[-1]]))
        if found is not None:
            return found
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if answers:
        asked = [i for i in users if i < answers[-1]]
        if asked:
            return JudgeAsk(message_text(messages[asked[-1]]),
                            message_text(messages[answers[-1]]))
    raise RequestError(f"the judge cannot tell what to judge: {HOW_TO_ASK}",
                       param="messages", code="judge_request_unreadable")


def read_prompt(prompt: str) -> JudgeAsk:
    """The question and answer of a ``/v1/completions`` judge request."""
    found = read_text(prompt)
    if found is None:
        raise RequestError("the judge cannot tell what to judge: send the question and the "
                           "answer as <question>...</question> and <answer>...</answer> in "
                           "the prompt", param="prompt", code="judge_request_unreadable")
    return found


def read_text(text: str) -> JudgeAsk | None:
    """Shapes 1 and 2 of the module docstring, in ``text``; ``None`` when neither fits."""
    q, a = _TAGGED_Q.search(text), _TAGGED_A.search(text)
    if q is not None and a is not None:
        return JudgeAsk(q[1], a[1])
    mt = _MT_BENCH.search(text)
    if mt is not None:
        return JudgeAsk(mt[1], mt[2])
    return None


def flipped(seed: int, prompt_id: str, answer_key: str, noise: float) -> bool:
    """Whether the verdict on this answer is flipped (see the module docstring)."""
    if noise <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\x00{prompt_id}\x00{answer_key}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < noise
