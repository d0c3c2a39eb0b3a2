"""The labels a learning endpoint has gathered, as a growing sparse outcome table.

One row per distinct prompt text, one column per model; NaN where nobody labelled that pair.
A label that arrives twice for the same pair (a judge, then the client's feedback) replaces the
earlier one: the later word is usually the better informed. Each row is assigned once, by a hash
of its text, to the training part or the held-out part (``holdout_fraction``); the held-out part
validates refits and calibrates the policy and is never trained on.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from routecast.data.dataset import Dataset, FloatArray


class LabelTable:
    """Sparse ``(prompt, model)`` quality and cost labels; see the module docstring."""

    def __init__(self, models: Sequence[str], *, holdout_fraction: float = 0.15,
                 seed: int = 0) -> None:
        self.models = tuple(models)
        self.holdout_fraction = holdout_fraction
        self.seed = seed
        self._col = {m: j for j, m in enumerate(self.models)}
        self._row: dict[str, int] = {}
        self.prompts: list[str] = []
        self.holdout: list[bool] = []
        self._q = np.full((64, len(self.models)), np.nan)
        self._c = np.full((64, len(self.models)), np.nan)
        #: Labels recorded in all (a replaced label counts again: it is new information).
        self.n_labels = 0

    def __len__(self) -> int:
        return len(self.prompts)

    def _row_of(self, prompt: str) -> int:
        i = self._row.get(prompt)
        if i is not None:
            return i
        i = len(self.prompts)
        if i == self._q.shape[0]:  # grow by doubling: appends stay O(1) amortised
            grow = np.full_like(self._q, np.nan)
            self._q = np.vstack([self._q, grow])
            self._c = np.vstack([self._c, grow.copy()])
        self._row[prompt] = i
        self.prompts.append(prompt)
        self.holdout.append(self.is_holdout(prompt))
        return i

    def is_holdout(self, prompt: str) -> bool:
        """Whether ``prompt``'s labels are held out (fixed by a hash of its text)."""
        return zlib.crc32(f"{self.seed}:{prompt}".encode()) / 2**32 < self.holdout_fraction

    def add(self, prompt: str, model: str, quality: float, cost_usd: float | None = None
            ) -> None:
        """Record ``model``'s quality (in [0, 1]) on ``prompt``, and what the answer cost if
        known. Unknown models are ignored (a label for a model the endpoint no longer has)."""
        j = self._col.get(model)
        if j is None or not 0.0 <= quality <= 1.0:
            return
        i = self._row_of(prompt)
        self._q[i, j] = quality
        if cost_usd is not None and math.isfinite(cost_usd):
            self._c[i, j] = cost_usd
        self.n_labels += 1

    def has(self, prompt: str, model: str) -> bool:
        i = self._row.get(prompt)
        return i is not None and not math.isnan(self._q[i, self._col[model]])

    @property
    def quality(self) -> FloatArray:
        return self._q[:len(self.prompts)]

    @property
    def cost_usd(self) -> FloatArray:
        return self._c[:len(self.prompts)]

    def counts(self) -> FloatArray:
        """Labels per model (training and held-out)."""
        return np.asarray((~np.isnan(self.quality)).sum(axis=0), dtype=np.float64)

    def dataset(self, part: str = "train", *, last: int | None = None) -> Dataset | None:
        """The ``"train"`` or ``"holdout"`` rows as a sparse :class:`Dataset` (``None`` when
        there are none); ``last`` keeps only the most recent rows of that part."""
        want = part == "holdout"
        rows = [i for i, h in enumerate(self.holdout) if h == want]
        if last is not None:
            rows = rows[-last:]
        rows = [i for i in rows if not np.isnan(self._q[i]).all()]
        if not rows:
            return None
        idx = np.asarray(rows)
        return Dataset(
            name=f"labels-{part}", models=self.models,
            ids=tuple(f"p{i}" for i in idx), prompts=tuple(self.prompts[i] for i in idx),
            quality=self._q[idx].copy(), cost_usd=self._c[idx].copy(),
            split=np.full(len(idx), "train" if part == "train" else "validation"),
            sparse=True)
