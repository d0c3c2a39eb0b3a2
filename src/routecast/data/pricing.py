"""Per-model prices, and token estimates for sources that record no cost.

Some public outcome sets (RouteLLM's evals, LLMRouter's scores) carry no per-call cost. Their
importers attach one: ``tokens_in * input price + tokens_out * output price``, where tokens are
counted from the recorded text with :func:`estimate_tokens` when the source has no counts.

The default table below is documented in the README ("Price table"); every entry names where
its figure comes from. Users override or extend it with a JSON file of the same shape::

    {"my-model": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.5, "source": "..."}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routecast.errors import DataFormatError

#: Characters per token used by :func:`estimate_tokens`. OpenAI's guidance for English text is
#: "about 4 characters per token"; no tokenizer can be downloaded offline, so we use the rule.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens, and where the figure comes from."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str = ""

    def cost_usd(self, tokens_in: float, tokens_out: float) -> float:
        return (tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok) / 1e6


#: The default price table (USD per 1M tokens).
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4-1106-preview": Price(10.0, 30.0, "OpenAI list price for gpt-4-1106-preview (2023-11)"),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": Price(
        0.6, 0.6, "Together AI serverless price for Mixtral-8x7B-Instruct (2024)"),
}


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text``: ``ceil(len / 4)``, at least 1 (see CHARS_PER_TOKEN)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The default table, updated with the entries of the JSON file at ``path`` if given."""
    prices = dict(DEFAULT_PRICES)
    if path is None:
        return prices
    path = Path(path)
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot be read as JSON ({e})", where=path,
                              fix="give a JSON object of model -> prices") from None
    if not isinstance(raw, dict):
        raise DataFormatError("must be a JSON object of model -> prices", where=path)
    for model, entry in raw.items():
        keys = ("input_usd_per_mtok", "output_usd_per_mtok")
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), int | float) and entry[k] >= 0 for k in keys):
            raise DataFormatError(
                f"entry {model!r} needs non-negative numbers {keys[0]!r} and {keys[1]!r}",
                where=path)
        prices[model] = Price(float(entry[keys[0]]), float(entry[keys[1]]),
                              str(entry.get("source", path.name)))
    return prices


def price_of(model: str, prices: dict[str, Price], where: str | Path) -> Price:
    """The price of ``model``, or an error telling how to supply one."""
    try:
        return prices[model]
    except KeyError:
        raise DataFormatError(
            f"no price known for model {model!r}", where=where,
            fix="pass a price table with `--prices FILE` (see the README's Price table)",
        ) from None
