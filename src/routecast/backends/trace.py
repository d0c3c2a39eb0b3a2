"""Why a request went where it went: the routing debugger's record of one answer.

A composite backend (a routed endpoint, a cascade) attaches a :class:`Trace` to the
:class:`~routecast.backends.base.Completion` it returns: the router's estimate of every model's
quality and cost, the policy's cost weight and the model it chose, or each cascade step with its
signal's score, threshold, verdict, cost and latency. The request log stores it (JSON), and the
dashboard and ``GET /v1/routecast/requests/{id}`` show it.

Building one costs a few microseconds (a dict of estimates the router computed anyway); nothing
here runs a model or a router a second time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

TraceKind = Literal["routed", "cascade"]


@dataclass(slots=True)
class Step:
    """One model asked on the way to the answer.

    ``score`` and ``threshold`` are a cascade step's signal and the bar it had to clear
    (``None`` for the last step, which always answers); ``accepted`` says whether the answer was
    kept. ``note`` says what else happened (a failure, a skipped judge).
    """

    model: str
    cost_usd: float = 0.0
    latency_s: float = 0.0
    score: float | None = None
    threshold: float | None = None
    accepted: bool | None = None
    note: str = ""
    #: The step's answer (an early step's; the last step's is the completion itself), for a
    #: cascade that learns to grade it; never logged (not in :meth:`as_dict`).
    body: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "cost_usd": self.cost_usd, "latency_s": self.latency_s,
                "score": _finite(self.score), "threshold": _finite(self.threshold),
                "accepted": self.accepted, "note": self.note}


@dataclass(slots=True)
class Trace:
    """The decision behind one answer; see the module docstring.

    ``estimates`` and ``costs`` map each model to the router's predicted quality and cost
    (routed endpoints); ``cost_weight`` is the policy's (``None``: infinite, "always the
    cheapest"); ``reason`` is a short phrase (``"router"``, ``"pinned session"``, ``"chosen model
    unusable"``); ``signal`` names a cascade's deferral signal.
    """

    kind: TraceKind
    chosen: str | None = None
    reason: str = ""
    estimates: dict[str, float] | None = None
    costs: dict[str, float] | None = None
    cost_weight: float | None = None
    signal: str | None = None
    steps: list[Step] = field(default_factory=list)
    policy: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chosen": self.chosen, "reason": self.reason,
                "estimates": self.estimates, "costs": self.costs,
                "cost_weight": self.cost_weight, "signal": self.signal,
                "policy": self.policy,
                "steps": [s.as_dict() for s in self.steps]}


def _finite(x: float | None) -> float | None:
    """NaN (an answer that could not be judged) and infinity (a learning cascade's "never
    accept" threshold) are not JSON: store them as null."""
    return None if x is None or not math.isfinite(x) else x
