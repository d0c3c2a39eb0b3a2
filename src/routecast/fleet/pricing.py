"""What each replayed model charges, and the usage tokens that reproduce a recorded cost.

A client (``routecast serve`` among them) bills an answer as ``prompt_tokens * input price +
completion_tokens * output price``. The fleet publishes one price per model and answers with
token counts chosen so that this product gives back the cost the data recorded:

* **recorded**: the data's ``meta["prices"]`` names the model and its recorded token counts
  times that price give its recorded costs (RouteLLM's evals, whose importer computed the cost
  that way): the price and the recorded counts are served as they are, so cost is exact.
* **blended** (every other case: RouterBench records costs but no tokens; the cascade set
  records tokens whose costs follow no single price): one price per million tokens for input
  and output alike, ``1e6 * sum(cost) / sum(tokens)`` over all the model's rows, with tokens as
  recorded or else estimated from the text (:func:`~routecast.data.pricing.estimate_tokens`), so
  counts stay realistic. An answer then carries ``round(cost * 1e6 / price)`` tokens in all,
  shared between prompt and completion in the recorded (or estimated) proportion; what it bills
  differs from the recorded cost by at most half a token's price, and by far less on average
  (rounding to nearest is unbiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from routecast.data.pricing import estimate_tokens

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset, FloatArray

#: Largest relative gap between a recorded cost and tokens x meta price still called "exact".
_EXACT = 1e-9


@dataclass(frozen=True, slots=True)
class FleetPrice:
    """A replayed model's price in USD per million tokens, and how it was derived (see the
    module docstring)."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    how: Literal["recorded", "blended"]

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_mtok
                + completion_tokens * self.output_usd_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Per-(prompt, model) usage that reproduces ``data.cost_usd`` under ``prices``."""

    prices: dict[str, FleetPrice]
    prompt_tokens: np.ndarray  # int64, (n_prompts, n_models)
    completion_tokens: np.ndarray  # int64, (n_prompts, n_models)


def token_table(data: Dataset) -> TokenTable:
    """Prices and usage for every model of ``data`` (see the module docstring)."""
    tokens_in, tokens_out = _tokens(data)
    meta_prices = data.meta.get("prices") if isinstance(data.meta.get("prices"), dict) else {}
    prices: dict[str, FleetPrice] = {}
    n, m = data.n_prompts, data.n_models
    prompt = np.zeros((n, m), dtype=np.int64)
    completion = np.zeros((n, m), dtype=np.int64)
    for j, model in enumerate(data.models):
        cost = data.cost_usd[:, j]
        recorded = _recorded_price(meta_prices.get(model) if meta_prices else None, data, j)
        if recorded is not None:
            prices[model] = recorded
            prompt[:, j] = np.rint(data.tokens_in[:, j])  # type: ignore[index]
            completion[:, j] = np.rint(data.tokens_out[:, j])  # type: ignore[index]
            continue
        total = tokens_in[:, j] + tokens_out[:, j]
        per_mtok = 1e6 * float(cost.sum()) / float(total.sum()) if total.sum() > 0 else 0.0
        prices[model] = FleetPrice(per_mtok, per_mtok, "blended")
        # Free models keep their (estimated) counts: any count costs 0.
        served = np.rint(cost * 1e6 / per_mtok) if per_mtok > 0 else np.rint(total)
        share = np.divide(tokens_in[:, j], total, out=np.zeros(n), where=total > 0)
        prompt[:, j] = np.minimum(np.rint(served * share), served)
        completion[:, j] = served - prompt[:, j]
    return TokenTable(prices, prompt, completion)


def _tokens(data: Dataset) -> tuple[FloatArray, FloatArray]:
    """Recorded token counts where the data has them (NaN filled from the text), else
    estimates: ``estimate_tokens`` of the prompt and of each response."""
    n, m = data.n_prompts, data.n_models
    est_in = np.array([[estimate_tokens(p)] * m for p in data.prompts], dtype=np.float64)
    if data.responses is not None:
        est_out = np.array([[estimate_tokens(r) if isinstance(r, str) else 1 for r in row]
                            for row in data.responses], dtype=np.float64).reshape(n, m)
    else:
        est_out = np.ones((n, m))
    t_in = est_in if data.tokens_in is None else np.where(np.isfinite(data.tokens_in),
                                                          data.tokens_in, est_in)
    t_out = est_out if data.tokens_out is None else np.where(np.isfinite(data.tokens_out),
                                                             data.tokens_out, est_out)
    return np.maximum(t_in, 0.0), np.maximum(t_out, 0.0)


def _recorded_price(entry: object, data: Dataset, j: int) -> FleetPrice | None:
    """The meta price of column ``j`` if recorded tokens times it give every recorded cost."""
    if not isinstance(entry, dict) or data.tokens_in is None or data.tokens_out is None:
        return None
    try:
        p_in = float(entry["input_usd_per_mtok"])
        p_out = float(entry["output_usd_per_mtok"])
    except (KeyError, TypeError, ValueError):
        return None
    t_in, t_out = data.tokens_in[:, j], data.tokens_out[:, j]
    if not (np.isfinite(t_in).all() and np.isfinite(t_out).all()):
        return None
    if not (np.rint(t_in) == t_in).all() or not (np.rint(t_out) == t_out).all():
        return None
    implied = (t_in * p_in + t_out * p_out) / 1e6
    cost = data.cost_usd[:, j]
    gap = np.abs(implied - cost) / np.maximum(np.abs(cost), 1e-300)
    if not math.isfinite(float(gap.max(initial=0.0))) or float(gap.max(initial=0.0)) > _EXACT:
        return None
    return FleetPrice(p_in, p_out, "recorded")
