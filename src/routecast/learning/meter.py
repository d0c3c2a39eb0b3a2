"""What learning spends (shadow answers and judge calls), against a hard cap and a pace.

Two limits, both in USD: ``budget_usd`` caps the total spend for the life of the endpoint
(``None``: no cap), and ``spend_fraction`` paces it: the learning loop may spend at most that
share of what the traffic it watched would have cost on the endpoint's strongest model (the
``baseline``; the same figure ``routecast stats`` measures savings against). Pacing spreads
exploration over the traffic instead of burning the budget on the first requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpendMeter:
    """Running totals; :meth:`allowance` is what may still be spent now."""

    budget_usd: float | None = None
    spend_fraction: float | None = 0.2
    shadow_usd: float = 0.0
    judge_usd: float = 0.0
    baseline_usd: float = 0.0
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def spent_usd(self) -> float:
        return self.shadow_usd + self.judge_usd

    def watch(self, baseline_usd: float) -> None:
        """One served request; ``baseline_usd`` is what the strongest model would have cost."""
        self.requests += 1
        self.baseline_usd += max(0.0, baseline_usd)

    def allowance(self) -> float:
        """USD that may be spent now without breaking the cap or running ahead of the pace
        (never negative)."""
        left = float("inf")
        if self.budget_usd is not None:
            left = self.budget_usd - self.spent_usd
        if self.spend_fraction is not None:
            left = min(left, self.spend_fraction * self.baseline_usd - self.spent_usd)
        return max(0.0, left)

    def pace_per_request(self) -> float:
        """The mean spend per request that keeps to the pace (inf when unpaced)."""
        if self.spend_fraction is None or self.requests == 0:
            return float("inf")
        return self.spend_fraction * self.baseline_usd / self.requests

    def charge(self, usd: float, kind: str) -> None:
        """Book ``usd`` as ``"shadow"`` (a candidate model's answer) or ``"judge"``."""
        if kind == "judge":
            self.judge_usd += usd
        else:
            self.shadow_usd += usd
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
