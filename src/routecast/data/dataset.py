"""The :class:`Dataset`: prompts and what every model achieved on each of them.

A dataset is the ``X`` (prompts) and ``y`` (outcomes) of routing. Per-(prompt, model) arrays are
shaped ``(n_prompts, n_models)``; ``quality`` and ``cost_usd`` are always present, the other
outcome arrays are ``None`` when the source does not record them.

A dataset is complete unless built with ``sparse=True``: then NaN in ``quality`` marks a
(prompt, model) pair nobody labelled (and NaN in ``cost_usd`` one whose cost is unknown), as in
labels gathered from live traffic. Routers fit on sparse data where they can (see
``Router.accepts_sparse``); evaluation and calibration need complete data and call
:meth:`Dataset.require_complete`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SPLITS = ("train", "validation", "test")

#: Optional per-(prompt, model) numeric arrays, in the order the canonical format lists them.
OPTIONAL_ARRAYS = ("latency_s", "tokens_in", "tokens_out", "confidence")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Prompts with per-(prompt, model) outcomes.

    ``split`` holds one of ``"train"``, ``"validation"``, ``"test"`` per prompt. ``responses``
    is an object array of ``str | None``. ``meta`` carries provenance (source, prices, notes)
    and is written to the canonical file as is, so it must stay JSON-serialisable.
    """

    name: str
    models: tuple[str, ...]
    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    quality: FloatArray
    cost_usd: FloatArray
    split: npt.NDArray[np.str_]
    task: tuple[str, ...] | None = None
    latency_s: FloatArray | None = None
    tokens_in: FloatArray | None = None
    tokens_out: FloatArray | None = None
    confidence: FloatArray | None = None
    responses: npt.NDArray[np.object_] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: NaN quality / cost_usd mark unlabelled pairs (see the module docstring).
    sparse: bool = False

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        where = f"dataset {self.name!r}"
        if m == 0:
            raise DataError("has no models", where=where, fix="give at least one model")
        if len(set(self.models)) != m:
            dup = sorted({x for x in self.models if self.models.count(x) > 1})
            raise DataError(f"lists models more than once: {dup}", where=where,
                            fix="give each model once")
        if len(self.ids) != n:
            raise DataError(f"has {len(self.ids)} ids for {n} prompts", where=where)
        if len(set(self.ids)) != n:
            seen: set[str] = set()
            dups = [i for i in self.ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
            raise DataError(f"has duplicate prompt ids, e.g. {dups[:3]}", where=where,
                            fix="make every prompt id unique")
        for name in ("quality", "cost_usd", *OPTIONAL_ARRAYS):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != (n, m):
                raise DataError(f"{name} has shape {arr.shape}, expected ({n}, {m})", where=where)
        if not self.sparse and self.quality.size and (
                np.isnan(self.quality).any() or np.isnan(self.cost_usd).any()):
            raise DataError("quality and cost_usd must be complete (no NaN)", where=where,
                            fix="drop or fill the missing outcomes, or build a sparse dataset "
                                "(sparse=True) for training on partial labels")
        if self.quality.size and (np.nanmin(self.quality, initial=0.0) < 0
                                  or np.nanmax(self.quality, initial=1.0) > 1):
            raise DataError("quality must lie in [0, 1]", where=where,
                            fix="rescale the scores to [0, 1] (e.g. divide 1-10 scores by 10)")
        if self.cost_usd.size and np.nanmin(self.cost_usd, initial=0.0) < 0:
            raise DataError("cost_usd must be >= 0", where=where)
        if self.split.shape != (n,):
            raise DataError(f"split has shape {self.split.shape}, expected ({n},)", where=where)
        bad = sorted(set(self.split.tolist()) - set(SPLITS))
        if bad:
            raise DataError(f"unknown split names {bad}", where=where,
                            fix=f"use only {', '.join(SPLITS)}")
        if self.task is not None and len(self.task) != n:
            raise DataError(f"has {len(self.task)} task labels for {n} prompts", where=where)
        if self.responses is not None and self.responses.shape != (n, m):
            raise DataError(f"responses has shape {self.responses.shape}", where=where)

    # -- shape -----------------------------------------------------------------------------

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_prompts

    def __repr__(self) -> str:
        counts = {s: int((self.split == s).sum()) for s in SPLITS}
        return (f"Dataset({self.name!r}, {self.n_prompts} prompts x {self.n_models} models, "
                f"splits={counts})")

    def model_index(self, model: str) -> int:
        """Column of ``model``; raises a :class:`ConfigError` that lists the known models."""
        try:
            return self.models.index(model)
        except ValueError:
            raise ConfigError(
                f"unknown model {model!r}; this dataset has: {', '.join(self.models)}"
            ) from None

    # -- selection -------------------------------------------------------------------------

    def take(self, rows: Sequence[int] | npt.NDArray[np.integer[Any]] | npt.NDArray[np.bool_]
             ) -> Dataset:
        """A new dataset with only the given rows (indices or a boolean mask), in that order."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (self.n_prompts,):
                raise ConfigError(f"a boolean mask must have one entry per prompt "
                                  f"({self.n_prompts}), got shape {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)

        def pick(arr: Any) -> Any:
            return None if arr is None else arr[idx]

        return replace(
            self,
            ids=tuple(self.ids[i] for i in idx),
            prompts=tuple(self.prompts[i] for i in idx),
            quality=self.quality[idx],
            cost_usd=self.cost_usd[idx],
            split=self.split[idx],
            task=None if self.task is None else tuple(self.task[i] for i in idx),
            latency_s=pick(self.latency_s),
            tokens_in=pick(self.tokens_in),
            tokens_out=pick(self.tokens_out),
            confidence=pick(self.confidence),
            responses=pick(self.responses),
        )

    def subset(self, split: str) -> Dataset:
        """The prompts of one split; raises if that split is empty."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        mask = self.split == split
        if not mask.any():
            raise DataError(f"has no prompts in the {split!r} split",
                            where=f"dataset {self.name!r}",
                            fix="re-split it, e.g. `routecast import ... --resplit`")
        return self.take(mask)

    def select_models(self, models: Sequence[str]) -> Dataset:
        """A new dataset with only ``models``, in the order given."""
        cols = np.array([self.model_index(m) for m in models], dtype=np.int64)

        def pick(arr: Any) -> Any:
            return None if arr is None else arr[:, cols]

        return replace(
            self, models=tuple(models), quality=self.quality[:, cols],
            cost_usd=self.cost_usd[:, cols], latency_s=pick(self.latency_s),
            tokens_in=pick(self.tokens_in), tokens_out=pick(self.tokens_out),
            confidence=pick(self.confidence), responses=pick(self.responses),
        )

    def with_splits(self, split: npt.NDArray[np.str_]) -> Dataset:
        """The same dataset with a new split assignment."""
        return replace(self, split=np.asarray(split, dtype=str))

    # -- summaries -------------------------------------------------------------------------

    def mean_quality(self) -> FloatArray:
        """Mean quality per model, shape ``(n_models,)``; of a sparse dataset, over each
        model's labelled prompts (NaN for a model with none)."""
        return _column_mean(self.quality, self.sparse)

    def mean_cost_usd(self) -> FloatArray:
        """Mean cost per prompt per model, shape ``(n_models,)``; sparse as mean_quality."""
        return _column_mean(self.cost_usd, self.sparse)

    # -- sparse outcomes -------------------------------------------------------------------

    @property
    def labelled(self) -> npt.NDArray[np.bool_]:
        """``(n, m)`` mask of the (prompt, model) pairs with a quality label."""
        return np.asarray(~np.isnan(self.quality))

    def is_complete(self) -> bool:
        """Whether every pair has a quality and a cost (always true unless ``sparse``)."""
        return not self.sparse or not (np.isnan(self.quality).any()
                                       or np.isnan(self.cost_usd).any())

    def require_complete(self, purpose: str) -> None:
        """Raise :class:`DataError` unless every pair is labelled: ``purpose`` (e.g.
        "evaluation") needs each model's outcome on each prompt."""
        if not self.is_complete():
            missing = int(np.isnan(self.quality).sum())
            raise DataError(
                f"is sparse ({missing} of {self.quality.size} (prompt, model) outcomes are "
                f"missing), and {purpose} needs every model's outcome on every prompt",
                where=f"dataset {self.name!r}",
                fix="use fully labelled data for it (e.g. a recorded benchmark's test split); "
                    "sparse labels are for fitting routers")


def _column_mean(arr: FloatArray, sparse: bool) -> FloatArray:
    if not sparse:
        return np.asarray(arr.mean(axis=0), dtype=np.float64)
    have = ~np.isnan(arr)
    count = have.sum(axis=0)
    total = np.where(have, arr, 0.0).sum(axis=0)
    return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan),
                      dtype=np.float64)
