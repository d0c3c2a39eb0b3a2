"""Seeded train / validation / test splits.

Two rules, both deterministic for a given seed:

* a source without its own split is cut at random into ``fractions`` (default 60/20/20);
* a source with its own train/test split keeps it, and a validation split is carved out of its
  train part (``validation_fraction`` of it, default 20 %), because policies are calibrated on
  validation and never on train or test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError

DEFAULT_SEED = 0
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_VALIDATION_FRACTION = 0.2


def random_split(n: int, *, seed: int = DEFAULT_SEED,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS) -> npt.NDArray[np.str_]:
    """Assign ``n`` prompts to train/validation/test at random in the given proportions."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ConfigError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    out = np.empty(n, dtype="<U10")
    out[order[:n_train]] = "train"
    out[order[n_train:n_train + n_val]] = "validation"
    out[order[n_train + n_val:]] = "test"
    return out


def carve_validation(split: npt.NDArray[np.str_], *, seed: int = DEFAULT_SEED,
                     fraction: float = DEFAULT_VALIDATION_FRACTION) -> npt.NDArray[np.str_]:
    """Move ``fraction`` of the ``train`` prompts to ``validation``; test is left untouched."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction must lie in [0, 1), got {fraction}")
    out = np.asarray(split, dtype="<U10").copy()
    train = np.flatnonzero(out == "train")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train, size=round(fraction * len(train)), replace=False)
    out[chosen] = "validation"
    return out
