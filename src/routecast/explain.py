"""Why a policy chose a model, in words: shared by ``routecast route`` and the dashboard.

The policy picks ``argmax(quality - w * cost)`` over the router's estimates (see
:mod:`routecast.policy`); :func:`explain` names the winner's score and the two trades the policy
turned down: the nearest model predicting more quality (too dear per quality point) and the best
cheaper one (too much quality lost per dollar saved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routecast.policy import Policy


def explain(models: tuple[str, ...], quality: list[float], cost: list[float], weight: float,
            pick: int) -> list[str]:
    """Why ``pick`` won under ``argmax(quality - weight * cost)``, in a few sentences.

    Names the winner's score, then the nearest alternative that predicts *more* quality (it
    costs too much per quality point) and the best *cheaper* one (it loses too much quality per
    dollar saved): the two trades the policy turned down.
    """
    win, qw, cw = models[pick], quality[pick], cost[pick]
    if math.isinf(weight):
        return [f"{win} is the cheapest model (${cw:.3g}); an infinite cost weight always "
                "picks the cheapest"]
    if weight == 0:
        lines = [f"{win} predicts the highest quality ({qw:.3f}); the cost weight is 0, so cost "
                 "only breaks ties (to the cheaper)"]
    else:
        lines = [f"{win} scores {qw:.3f} - {weight:.4g} x ${cw:.3g} = {qw - weight * cw:.3f}, "
                 "the best score"]
    others = [j for j in range(len(models)) if j != pick]
    better = [j for j in others if quality[j] > qw]
    if better:
        j = max(better, key=lambda k: quality[k] - weight * cost[k])
        dq, dc = quality[j] - qw, cost[j] - cw
        if dc > 0:
            lines.append(f"{models[j]} would add {dq:.3f} quality for ${dc:.3g} more: "
                         f"{dq / dc:.4g} quality per $, below the {weight:.4g} the policy asks")
    cheaper = [j for j in others if cost[j] < cw]
    if cheaper and weight > 0:
        j = max(cheaper, key=lambda k: quality[k] - weight * cost[k])
        dq, dc = qw - quality[j], cw - cost[j]
        lines.append(f"{models[j]} would save ${dc:.3g} but lose {dq:.3f} quality: "
                     f"{dq / dc:.4g} quality per $ saved, above the {weight:.4g} the policy asks")
    return lines


def explain_decision(policy: Policy, models: Sequence[str], quality: Sequence[float],
                     cost: Sequence[float], pick: int) -> list[str]:
    """Why ``policy`` sent a prompt to ``models[pick]``: :func:`explain` for a policy that
    trades the router's estimates, or the mix (or single model) that decided before the
    estimates could, for a do-no-harm policy (:mod:`routecast.mixing`)."""
    if not policy.uses_router or policy.mix_share > 0:
        return [mixed_reason(policy.describe(), models[pick])]
    return explain(tuple(models), list(quality), list(cost), policy.cost_weight, pick)


def mixed_reason(policy_description: str, model: str) -> str:
    return (f"the policy is {policy_description}; this prompt's seeded draw sent it to "
            f"{model}")
