"""Signals computed live from a model's response: pure functions, no fitting, no I/O.

The server calls these after it gets a response (with ``logprobs`` / ``top_logprobs``
requested, or ``k`` samples, or ``k`` self-verification answers) and hands the score to
:meth:`routecast.cascades.cascade.Cascade.accepts`. Each returns a score in [0, 1] that the
answer is acceptable.

* :func:`summarize_logprobs` - model-intrinsic confidence from token log-probabilities:
  ``mean`` = ``exp(mean log p)`` (the geometric-mean token probability), ``min`` = the least
  likely token's probability, ``first`` = the first token's probability (the answer letter of
  a multiple-choice reply; what the cascade data set records), ``margin`` = the first token's
  top-1 minus top-2 probability (how sure the model was between its two best starts),
  ``mean_prob`` = ``(1/T) sum_t exp(log p_t)`` (the arithmetic-mean token probability: what
  ``routecast collect`` records as ``confidence``, so thresholds tuned on its outcomes hold live).
* :func:`agreement` - answer consistency of ``k`` samples: the share that agree with the most
  common (normalised) answer.
* :func:`self_verification_score` - AutoMix's self-verification (Aggarwal et al., 2023): the
  model judges its own answer ``k`` times; the share of votes that say "correct".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from routecast.errors import ConfigError

LogprobSummary = Literal["mean", "min", "first", "margin", "mean_prob"]
#: Rounding slack above 0 tolerated in a log-probability.
_SLACK = 1e-6

#: One position's alternatives: ``{token: logprob}`` (legacy completions), a list of
#: ``{"token": ..., "logprob": ...}`` (chat completions) or a plain list of logprobs.
TopLogprobs = Mapping[str, float] | Sequence[Mapping[str, object]] | Sequence[float]


def summarize_logprobs(token_logprobs: Sequence[float],
                       top_logprobs: Sequence[TopLogprobs] | None = None,
                       method: LogprobSummary = "mean") -> float:
    """Confidence in [0, 1] from a response's token log-probabilities (see module docstring).

    ``top_logprobs[i]`` are the alternatives at position ``i``; only ``margin`` reads them
    (position 0), so request ``top_logprobs >= 2`` for it. ``-inf`` log-probs count as
    probability 0.
    """
    values = [_check_logprob(x, f"token_logprobs[{i}]") for i, x in enumerate(token_logprobs)]
    if not values:
        raise ConfigError("no token log-probabilities: the response is empty or was requested "
                          "without logprobs; request `logprobs: true`")
    if method == "mean":
        return _prob(math.fsum(values) / len(values))
    if method == "mean_prob":
        return min(1.0, math.fsum(_prob(v) for v in values) / len(values))
    if method == "min":
        return _prob(min(values))
    if method == "first":
        return _prob(values[0])
    if method == "margin":
        if not top_logprobs:
            raise ConfigError("the 'margin' summary needs top_logprobs; request "
                              "`top_logprobs: 2` (or more) with the completion")
        alts = sorted(_alternatives(top_logprobs[0]), reverse=True)
        if not alts:
            # No alternatives recorded: the sampled token is all we know.
            return _prob(values[0])
        second = alts[1] if len(alts) > 1 else -math.inf
        return min(1.0, max(0.0, _prob(alts[0]) - _prob(second)))
    raise ConfigError(f"unknown log-prob summary {method!r}; use mean, min, first, margin "
                      "or mean_prob")


def _check_logprob(x: object, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or math.isnan(x):
        raise ConfigError(f"{where} is {x!r}, not a log-probability (a number <= 0)")
    if x > _SLACK:
        raise ConfigError(f"{where} is {x}, above 0: pass log-probabilities, not probabilities")
    return min(float(x), 0.0)


def _alternatives(top: TopLogprobs) -> list[float]:
    if isinstance(top, Mapping):
        raw: list[object] = list(top.values())
    else:
        raw = [t.get("logprob") if isinstance(t, Mapping) else t for t in top]
    return [_check_logprob(x, "top_logprobs[0]") for x in raw]


def _prob(logprob: float) -> float:
    return math.exp(logprob) if logprob > -math.inf else 0.0


_FINAL = re.compile(r"####\s*(.+)$", re.DOTALL)
_OPTION = re.compile(r"^\(?([a-z])\)?[.):]?$")
_STRIP = " \t\n\r.,;:!?\"'`*$()[]{}"


def normalize_answer(text: str | None) -> str:
    """A canonical form for comparing answers: the part after a final ``####`` (GSM8K style)
    if any, lower-cased, whitespace collapsed, surrounding punctuation and ``$`` removed,
    thousands separators dropped, and ``(B)`` / ``B)`` / ``b.`` reduced to ``b``."""
    if not text:
        return ""
    s = text
    final = _FINAL.search(s)
    if final:
        s = final[1]
    s = " ".join(s.lower().split()).strip(_STRIP)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    option = _OPTION.match(s)
    return option[1] if option else s


def agreement(answers: Sequence[str | None],
              normalize: Callable[[str | None], str] = normalize_answer) -> float:
    """Share of ``answers`` equal (after ``normalize``) to the most common non-empty answer.

    One answer agrees with itself (1.0); empty answers never count as agreeing.
    """
    if isinstance(answers, str):
        raise ConfigError("agreement takes a list of sampled answers, not one str")
    if not answers:
        raise ConfigError("agreement needs at least one answer; sample k >= 2 for a signal")
    keys = [normalize(a) for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return 0.0
    return counts.most_common(1)[0][1] / len(keys)


def self_verification_score(votes: Sequence[bool | None]) -> float:
    """Share of ``k`` self-verification votes that judged the answer correct.

    A vote of ``None`` (a verdict that could not be parsed, see :func:`parse_verdict`) counts
    as "not verified": a cascade should escalate on doubt, not accept.
    """
    if not votes:
        raise ConfigError("self-verification needs at least one vote; sample k >= 1 verdicts")
    return sum(1 for v in votes if v is True) / len(votes)


_VERDICT = re.compile(
    r"\b(does not support|doesn't support|not supported|not correct|incorrect|wrong|false|no|"
    r"supports|supported|correct|right|true|yes)\b")
_NEGATIVE = {"does not support", "doesn't support", "not supported", "not correct",
             "incorrect", "wrong", "false", "no"}


def parse_verdict(text: str | None) -> bool | None:
    """The verdict of a self-verification reply: True (correct), False, or None if absent.

    The last verdict word wins, since verifiers reason first and conclude last (AutoMix asks
    for "Evaluation: The context supports the answer" / "does not support").
    """
    if not text:
        return None
    found = _VERDICT.findall(text.lower())
    if not found:
        return None
    return found[-1] not in _NEGATIVE
