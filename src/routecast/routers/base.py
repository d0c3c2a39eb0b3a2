"""The router interface (scikit-learn style) shared by every router."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError
from routecast.estimator import Estimator

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.policy import Policy
    from routecast.routers.fewshot import Labels, Prior

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Router(Estimator, ABC):
    """A fitted predictor of each model's quality (and cost) on each prompt.

    Contract (checked by one shared test over every registered router):

    * ``__init__`` only stores its arguments; learned attributes end in ``_``;
    * ``fit(dataset)`` learns from that dataset (its train split, as the caller passes it) and
      returns ``self``; it sets ``models_`` (column order of every prediction) and
      ``mean_cost_usd_``;
    * ``predict(prompts)`` gives expected quality, shape ``(n, len(models_))``, values in [0, 1];
    * ``predict_cost(prompts)`` gives expected USD cost, same shape; the default is each model's
      mean cost on the training data;
    * ``route(prompts, policy)`` returns one model name per prompt. Batch in, batch out.
    """

    #: Registry name; also the name shown in bench tables.
    name: ClassVar[str] = ""
    #: True for routers that look at true outcomes (the oracle): evaluation only.
    evaluation_only: ClassVar[bool] = False
    #: True for routers that fit on sparse outcomes (NaN for unlabelled (prompt, model)
    #: pairs, e.g. labels from live traffic); the others refuse them with a clear error.
    accepts_sparse: ClassVar[bool] = False

    def fit(self, dataset: Dataset) -> Self:
        if dataset.n_prompts == 0:
            raise DataError("cannot fit a router on an empty dataset", where=dataset.name)
        if not dataset.is_complete() and not self.accepts_sparse:
            from routecast.routers import ROUTERS

            able = sorted(n for n, c in ROUTERS.items() if c.accepts_sparse)
            raise DataError(
                f"router {self.name!r} cannot fit on sparse outcomes (some models are "
                "unlabelled on some prompts)", where=dataset.name,
                fix=f"use a router that can ({', '.join(able)}), or fill the missing outcomes")
        self.models_: tuple[str, ...] = tuple(dataset.models)
        self.mean_cost_usd_: FloatArray = _known_costs(dataset)
        self._fit(dataset)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> None:
        """Learn from ``dataset``; ``models_`` and ``mean_cost_usd_`` are already set."""

    @abstractmethod
    def predict(self, prompts: Sequence[str]) -> FloatArray:
        """Expected quality of every model on every prompt, shape ``(n, m)``."""

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        """Expected cost in USD of every model on every prompt, shape ``(n, m)``."""
        self._check_fitted()
        return np.tile(self.mean_cost_usd_, (len(prompts), 1))

    def route(self, prompts: Sequence[str], policy: Policy) -> list[str]:
        """The model ``policy`` picks for each prompt."""
        prompts = _as_prompts(prompts)
        picks = policy.choose(self.predict(prompts), self.predict_cost(prompts),
                              models=self.models_, prompts=prompts)
        return [self.models_[i] for i in picks]

    def add_model(self, model: str, data: Dataset | Sequence[str],
                  quality: npt.ArrayLike | None = None, cost_usd: npt.ArrayLike | None = None,
                  *, prior_strength: float = 20.0) -> Self:
        """Add ``model`` to this fitted router from a few labelled prompts; returns ``self``.

        ``data`` is a :class:`Dataset` with a ``model`` column (its other columns, when they
        include every model the router knows, are used as those models' true outcomes), or a
        list of prompts with ``quality`` (one per prompt) and ``cost_usd`` (one per prompt, or
        the mean). Nothing already learned is refitted: the new model's predictions start
        from a prior drawn from the existing models and are fitted to the labels around it
        (``prior_strength`` pseudo-prompts of confidence in the prior); see
        ``routers/fewshot.py`` for what each router fits. Routers without a way to do this
        raise :class:`ConfigError`.
        """
        from routecast.routers.fewshot import add_model

        add_model(self, model, data, quality, cost_usd, prior_strength=prior_strength)
        return self

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """The extension hook of :meth:`add_model`: extend every learned attribute by the new
        model ``labels.model`` (``models_`` and ``mean_cost_usd_`` are extended after it).

        ``prior`` predicts the new model from the existing ones on any prompt; a router fits
        what it can around it (see ``routers/fewshot.py``). This default says the router
        cannot: routers that can override it.
        """
        raise ConfigError(
            f"router {self.name!r} cannot add a model in place (it defines no _add_model); "
            "refit it on outcomes that include the new model")

    # -- persistence (see routers/persist.py) ------------------------------------------------

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """Learned attributes (names ending in ``_``) as JSON-able values and numpy arrays.

        The default handles numpy arrays, scipy sparse matrices, encoders with
        ``get_state``, and JSON-able values; override it (and :meth:`set_state`) for anything
        else.
        """
        from routecast.encoders import encoder_state

        self._check_fitted()
        values: dict[str, Any] = {}
        arrays: dict[str, npt.NDArray[Any]] = {}
        sparse: list[str] = []
        encoders: dict[str, Any] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif hasattr(value, "tocsr") and hasattr(value, "nnz"):
                csr = value.tocsr()
                arrays.update({f"{key}::data": csr.data, f"{key}::indices": csr.indices,
                               f"{key}::indptr": csr.indptr,
                               f"{key}::shape": np.asarray(csr.shape, dtype=np.int64)})
                sparse.append(key)
            elif hasattr(value, "get_state") and isinstance(getattr(value, "name", None), str):
                encoders[key], enc_arrays = encoder_state(value)
                arrays.update({f"{key}::{k}": v for k, v in enc_arrays.items()})
            elif _jsonable(value):
                values[key] = list(value) if isinstance(value, tuple) else value
            else:
                raise ConfigError(
                    f"cannot save attribute {key} ({type(value).__name__}) of router "
                    f"{self.name!r}; override get_state/set_state for it")
        values["__sparse__"] = sparse
        values["__encoders__"] = encoders
        return values, arrays

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Restore what :meth:`get_state` returned, on an instance with the same parameters."""
        from scipy import sparse as sp

        from routecast.encoders import encoder_from_state

        values = dict(values)
        sparse_keys = values.pop("__sparse__", [])
        encoders = values.pop("__encoders__", {})
        for key, value in values.items():
            setattr(self, key, value)
        for key in sparse_keys:
            shape = tuple(int(x) for x in arrays[f"{key}::shape"])
            setattr(self, key, sp.csr_matrix(
                (arrays[f"{key}::data"], arrays[f"{key}::indices"], arrays[f"{key}::indptr"]),
                shape=shape))
        for key, spec in encoders.items():
            prefix = f"{key}::"
            setattr(self, key, encoder_from_state(spec, {k[len(prefix):]: v for k, v
                                                         in arrays.items()
                                                         if k.startswith(prefix)}))
        for key, arr in arrays.items():
            if "::" not in key:
                setattr(self, key, arr)
        self.models_ = tuple(self.models_)


def _known_costs(dataset: Dataset) -> FloatArray:
    """Mean cost per model; in sparse data a model whose cost was never observed gets the
    dearest known mean, so that a policy never prefers it for being cheap without evidence."""
    cost = dataset.mean_cost_usd()
    unknown = np.isnan(cost)
    if unknown.all():
        raise DataError("no model has a known cost", where=dataset.name,
                        fix="record the cost of the answers that were labelled")
    if unknown.any():
        cost = np.where(unknown, float(np.nanmax(cost)), cost)
    return np.asarray(cost, dtype=np.float64)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _as_prompts(prompts: Sequence[str] | str) -> list[str]:
    # A bare string is a classic mistake: it would be routed character by character.
    if isinstance(prompts, str):
        return [prompts]
    return list(prompts)
