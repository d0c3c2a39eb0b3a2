"""Token pieces and synthesised log-probs of a replayed answer.

A recorded answer has no tokens, only text; the fleet cuts it into *pieces* (a word with the
white space before it) that join back to the exact text, and sends one piece per stream chunk
and per log-prob entry. So the entries do not match ``usage.completion_tokens`` one for one.

Every piece gets the same log-probability ``x``, chosen so that each summary the server can
compute (:func:`routecast.signals.live.summarize_logprobs`: ``mean``, ``mean_prob``, ``min``,
``first``, and ``margin``, whose runner-up alternatives are sent at log-prob
:data:`UNLIKELY`, probability 0 in floating point) gives back the recorded confidence ``c``:
``x = log(c)``, or the lowest float above it at which no summary falls below ``c``.
So a summary is ``c`` or a few units in its last place above it (``exp`` cannot hit every
float), never below: a cascade threshold taken from recorded confidences (they are quantiles
of them) accepts a served answer whenever it accepts the recorded one, and differs only for a
recorded confidence a relative 1e-12 or less below the threshold. ``c = 0`` is sent as
:data:`UNLIKELY` (JSON has no ``-Infinity``).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from routecast.signals.live import LogprobSummary, summarize_logprobs

#: The log-prob of a token that "cannot" be sampled: exp() of it is 0.0 in double precision.
UNLIKELY = -9999.0
_SUMMARIES: tuple[LogprobSummary, ...] = ("mean", "mean_prob", "min", "first")
_PIECE = re.compile(r"\s*\S+|\s+")


def pieces(text: str) -> list[str]:
    """``text`` cut into pieces that join back to it exactly (at least one piece)."""
    return _PIECE.findall(text) or [text]


@lru_cache(maxsize=65536)
def token_logprob(confidence: float, n_tokens: int) -> float:
    """The one log-prob every token of an ``n_tokens`` answer gets so that every summary
    reproduces ``confidence`` (see the module docstring)."""
    if not confidence > 0:  # 0, or NaN (a caller sends no log-probs for NaN)
        return UNLIKELY
    if confidence >= 1:
        return 0.0
    def enough(x: float) -> bool:
        values = [x] * n_tokens
        return all(summarize_logprobs(values, None, s) >= confidence for s in _SUMMARIES)

    x = math.log(confidence)
    if enough(x):
        return x
    # Near c = 1 one step of x moves exp(x) by far less than a unit of c: bisect between
    # log(c) (too low) and 0 (enough) for the lowest x that is enough.
    lo, hi = x, 0.0
    while math.nextafter(lo, 0.0) < hi:
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            mid = math.nextafter(lo, 0.0)
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _alternatives(k: int) -> list[dict[str, Any]]:
    return [{"token": f"<alt{i}>", "logprob": UNLIKELY, "bytes": None} for i in range(1, k)]


def chat_logprobs(parts: list[str], logprob: float, top: int) -> dict[str, Any]:
    """``choices[0].logprobs`` of a chat answer: one entry per piece, each with ``top``
    alternatives (the piece itself first)."""
    return {"content": [chat_entry(p, logprob, top) for p in parts], "refusal": None}


def chat_entry(piece: str, logprob: float, top: int) -> dict[str, Any]:
    """One piece's entry of a chat answer's ``logprobs.content``."""
    alts = ([{"token": piece, "logprob": logprob, "bytes": list(piece.encode())},
             *_alternatives(top)] if top > 0 else [])
    return {"token": piece, "logprob": logprob, "bytes": list(piece.encode()),
            "top_logprobs": alts}


def completion_logprobs(parts: list[str], logprob: float, top: int,
                        offset: int = 0) -> dict[str, Any]:
    """``choices[0].logprobs`` of a legacy completion (``logprobs: top``)."""
    offsets, at = [], offset
    for p in parts:
        offsets.append(at)
        at += len(p)
    tops = [{p: logprob, **{a["token"]: UNLIKELY for a in _alternatives(top)}} for p in parts]
    return {"tokens": parts, "token_logprobs": [logprob] * len(parts),
            "top_logprobs": tops, "text_offset": offsets}
