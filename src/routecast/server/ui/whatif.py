"""What-if: what each endpoint would do with a prompt, without calling any model.

A routed endpoint runs its router on the prompt and applies its policy (exactly what
``routecast route DIR PROMPT`` prints for the same saved router and policy); a cascade names the
step it would ask first and the bar its answer must clear; a plain endpoint names its model and
fallbacks. Session pins are not consulted: the answer is what a new conversation would get.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routecast.backends.base import Backend
from routecast.backends.cascade import CascadeBackend
from routecast.backends.fallback import FallbackBackend
from routecast.backends.routed import RoutedBackend
from routecast.explain import explain_decision


@dataclass
class Estimate:
    model: str
    quality: float
    cost_usd: float
    score: float | None


@dataclass
class WhatIf:
    """One endpoint's decision for the prompt; ``kind`` is routed, cascade or plain."""

    endpoint: str
    kind: str
    model: str
    why: list[str]
    cost_weight: float | None = None
    estimates: list[Estimate] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": self.kind, "model": self.model,
                "why": self.why, "cost_weight": self.cost_weight,
                "models": [vars(e) for e in self.estimates]}


def what_if(backends: Mapping[str, Backend], prompt: str) -> list[WhatIf]:
    """The decision of every endpoint that decides (routed and cascade endpoints first, then
    plain endpoints with fallbacks; bare models are left out: they have nothing to decide)."""
    out: list[WhatIf] = []
    for name, backend in backends.items():
        if isinstance(backend, RoutedBackend):
            out.append(_routed(name, backend, prompt))
        elif isinstance(backend, CascadeBackend):
            out.append(_cascade(name, backend))
    for name, backend in backends.items():
        if isinstance(backend, FallbackBackend):
            models = list(backend.models)
            out.append(WhatIf(name, "plain", models[0], [
                f"always {models[0]}; if it fails, then " + ", then ".join(models[1:])]))
    return out


def _routed(name: str, backend: RoutedBackend, prompt: str) -> WhatIf:
    router, policy = backend.router, backend.policy
    quality = [float(x) for x in router.predict([prompt])[0]]
    cost = [float(x) for x in router.predict_cost([prompt])[0]]
    import numpy as np

    models = backend.router_models
    pick = int(policy.choose(np.asarray([quality]), np.asarray([cost]), models=models,
                             prompts=[prompt])[0])
    w = float(policy.cost_weight)
    estimates = [Estimate(m, q, c, None if math.isinf(w) else q - w * c)
                 for m, q, c in zip(models, quality, cost, strict=True)]
    estimates.sort(key=lambda e: (-(e.score if e.score is not None else -e.cost_usd),
                                  e.cost_usd))
    return WhatIf(name, "routed", models[pick],
                  explain_decision(policy, models, quality, cost, pick),
                  None if math.isinf(w) else w, estimates)


def _cascade(name: str, backend: CascadeBackend) -> WhatIf:
    cascade = backend.cascade
    steps = []
    for k, model in enumerate(cascade.models[:-1]):
        steps.append(f"asks {model}; keeps its answer if its {cascade.signal} score is at "
                     f"least {cascade.thresholds[k]:.4g}")
    steps.append(f"otherwise {cascade.models[-1]} answers")
    return WhatIf(name, "cascade", cascade.models[0], steps)
