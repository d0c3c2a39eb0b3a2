"""Adding a model to a fitted router from a few labelled prompts, without refitting the rest.

A new model usually arrives with outcomes on a few dozen or hundred prompts, not thousands.
Refitting a router on only those prompts throws away what it learned about every prompt from
the other models; refitting on everything needs the new model's outcomes everywhere. Instead,
:meth:`Router.add_model` keeps everything learned and fits only what is new, in two steps:

1. **A prior from similar models.** On the labelled prompts, the new model's outcomes are
   regressed on the router's own predicted logits for the existing models:
   ``logit q_new(x) ~ a + sum_j beta_j logit q_j(x)``, a logistic regression with ``beta``
   shrunk towards the plain average ``1/m`` (strength ``prior_strength`` pseudo-prompts).
   It says which existing models the new one behaves like, and it is defined on *every*
   prompt, labelled or not.
2. **A specialised fit centred on that prior**, in each router's ``_add_model`` (the
   extension hook every built-in implements; a plugin's router may too):

   * ``linear``, ``mf``, ``mlp``: one more output (a logistic regression on the router's own
     prompt representation: TF-IDF rows, MF's projected prompt, the MLP's hidden layer) whose
     weights are shrunk not towards zero but towards the prior's combination of the existing
     models' weights (the prior is linear in their logits, so it is such a combination);
   * ``knn``, ``sw-ranking``: the new model's outcome on every training prompt is imputed from
     the prior, and the labelled prompts join the training rows with their true outcomes, so a
     prompt near labelled ones follows them and elsewhere the prior ("sparse neighbours with
     shrinkage to a prior from similar models");
   * ``stack``: each base as above; the new model's combiner is the mean of the others';
   * ``best-single``: the new model's mean quality on the labelled prompts; ``cheapest`` and
     ``random`` only need its name and cost. The oracle cannot take new models (evaluation
     only).

The cost the router predicts for the new model is its mean cost on the labelled prompts (with
``cost_model="knn"``, scaled per prompt like the existing models' costs).
``routecast bench DATA --few-labels MODEL`` measures how close this gets to a router fitted on
all the data (``bench/fewlabels.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError
from routecast.routers._fit import FloatArray, fit_logistic, logit, sigmoid
from routecast.routers.cost import PromptCost

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router

#: Pseudo-prompts' worth of confidence in the prior (see the module docstring).
DEFAULT_PRIOR_STRENGTH = 20.0
#: The intercept (the new model's overall level) is what few labels tell best: penalise it
#: this much less than the weights.
INTERCEPT_RELIEF = 0.1


@dataclass(frozen=True)
class Labels:
    """The labelled prompts of the new model.

    ``known`` holds the existing models' true outcomes on those prompts, in the router's
    column order, when the data had them (else ``None``).
    """

    model: str
    prompts: list[str]
    quality: FloatArray
    cost_usd: FloatArray
    known: FloatArray | None


@dataclass(frozen=True)
class Prior:
    """``logit q_new = intercept + logits_existing @ beta`` (step 1 of the module docstring)."""

    beta: FloatArray
    intercept: float
    strength: float

    def logit(self, existing_logits: FloatArray) -> FloatArray:
        return np.asarray(self.intercept + existing_logits @ self.beta, dtype=np.float64)

    def combine(self, per_model: FloatArray, base: FloatArray) -> tuple[FloatArray, float]:
        """The prior as weights of a model that is linear in its logit: ``(coef, intercept)``.

        ``per_model`` ``(m, d)`` and ``base`` ``(m,)`` are the existing models' weights and
        intercepts on some representation; the prior's logit is linear in theirs.
        """
        return (np.asarray(self.beta @ per_model, dtype=np.float64),
                float(self.intercept + self.beta @ base))

    def penalties(self, n: int) -> tuple[float, float]:
        """L2 strengths (mean-loss scale) on weights and intercept for ``n`` labels."""
        l2 = self.strength / max(n, 1)
        return l2, INTERCEPT_RELIEF * l2


def add_model(router: Router, model: str, data: Dataset | Sequence[str],
              quality: npt.ArrayLike | None = None, cost_usd: npt.ArrayLike | None = None, *,
              prior_strength: float = DEFAULT_PRIOR_STRENGTH) -> None:
    """Add ``model`` to the fitted ``router`` in place; see :meth:`Router.add_model`."""
    router._check_fitted()
    if router.evaluation_only:
        raise ConfigError(f"the {router.name!r} router is for evaluation only and cannot take "
                          "new models; refit it on data that includes the model")
    if model in router.models_:
        raise ConfigError(f"the router already predicts {model!r}; give the new model another "
                          "name, or refit the router to replace it")
    if not prior_strength > 0:
        raise ConfigError(f"prior_strength must be > 0, got {prior_strength}")
    labels = _labels(router, model, data, quality, cost_usd)
    existing = logit(router.predict(labels.prompts))
    prior = fit_prior(existing, labels.quality, prior_strength)
    router._add_model(labels, prior)
    if isinstance(router, PromptCost):
        router.add_model_cost(float(labels.cost_usd.mean()))
    router.models_ = (*router.models_, model)
    router.mean_cost_usd_ = np.append(router.mean_cost_usd_, labels.cost_usd.mean())


def fit_prior(existing_logits: FloatArray, y: FloatArray, strength: float) -> Prior:
    """Step 1 of the module docstring, on ``(n, m)`` logits and ``n`` outcomes."""
    n, m = existing_logits.shape
    # Centred on "an average existing model" (beta = 1/m, intercept 0); the intercept is held
    # more loosely, but held: with 25 labels all correct, a free intercept would run off to
    # +inf and predict certainty.
    coef, intercept = fit_logistic(existing_logits, y, l2=strength / n,
                                   prior_coef=np.full((1, m), 1.0 / m),
                                   prior_intercept=np.zeros(1),
                                   intercept_l2=INTERCEPT_RELIEF * strength / n)
    return Prior(coef[0], float(intercept[0]), strength)


# -- input ---------------------------------------------------------------------------------


def _labels(router: Router, model: str, data: Dataset | Sequence[str],
            quality: npt.ArrayLike | None, cost_usd: npt.ArrayLike | None) -> Labels:
    from routecast.data.dataset import Dataset

    if isinstance(data, Dataset):
        if quality is not None or cost_usd is not None:
            raise ConfigError("give either a Dataset, or prompts with quality and cost_usd "
                              "arrays, not both")
        j = data.model_index(model)
        prompts = list(data.prompts)
        q, c = data.quality[:, j], data.cost_usd[:, j]
        known = (data.select_models(router.models_).quality
                 if set(router.models_) <= set(data.models) else None)
    else:
        if isinstance(data, str):
            raise ConfigError("prompts must be a list of strings, not one string")
        prompts = list(data)
        if quality is None or cost_usd is None:
            raise ConfigError(f"adding {model!r} from prompts needs quality (one per prompt) "
                              "and cost_usd (one per prompt, or the mean cost per prompt)")
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
        c = np.broadcast_to(np.asarray(cost_usd, dtype=np.float64), q.shape).copy()
        known = None
    where = f"outcomes of new model {model!r}"
    if not prompts:
        raise DataError("are empty", where=where, fix="give at least one labelled prompt")
    if q.shape != (len(prompts),) or c.shape != (len(prompts),):
        raise DataError(f"have {q.size} quality values and {c.size} costs for {len(prompts)} "
                        "prompts", where=where, fix="give one of each per prompt")
    if not np.all(np.isfinite(q)) or q.min() < 0 or q.max() > 1:
        raise DataError("have quality outside [0, 1] (or NaN)", where=where,
                        fix="rescale the scores to [0, 1]")
    if not np.all(np.isfinite(c)) or c.min() < 0:
        raise DataError("have a negative or missing cost", where=where,
                        fix="give costs in USD >= 0")
    return Labels(model, prompts, q, c, known)


# -- shared building blocks ----------------------------------------------------------------


def fit_new_output(x: Any, y: FloatArray, prior: Prior, per_model: FloatArray,
                   base: FloatArray) -> tuple[FloatArray, float]:
    """One more logistic output on representation ``x``, shrunk towards the prior's weights."""
    coef0, intercept0 = prior.combine(per_model, base)
    l2, l2_intercept = prior.penalties(len(y))
    coef, intercept = fit_logistic(x, y, l2=l2, prior_coef=coef0[None, :],
                                   prior_intercept=np.array([intercept0]),
                                   intercept_l2=l2_intercept)
    return coef[0], float(intercept[0])


def impute_and_append(features: Any, quality: FloatArray, rows: Any, labels: Labels,
                      prior: Prior, existing: Callable[[Any], FloatArray]
                      ) -> tuple[Any, FloatArray]:
    """Training rows of a neighbour-based router, extended by one model and the labels.

    ``existing(rows)`` gives the router's predictions for the existing models from encoder
    rows. The new column on the training rows is the prior's prediction (computed in chunks,
    so memory stays bounded on large training sets), except on training prompts that were
    labelled, which get their true outcome. Labelled prompts the router has not seen are
    appended as rows, with their true outcome for the new model and, for the existing models,
    the true outcomes when known or else the router's own predictions (which change those
    models' predictions little, and only near the new rows).
    """
    from scipy import sparse

    chunk = 2048
    column = np.concatenate([
        sigmoid(prior.logit(logit(existing(features[i:i + chunk]))))
        for i in range(0, quality.shape[0], chunk)])
    # Encoder rows are L2-normalised, so a training prompt seen again has similarity 1.
    sim = rows @ features.T
    sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim, dtype=np.float64)
    best = sim.argmax(axis=1) if sim.size else np.zeros(0, dtype=np.int64)
    seen = sim[np.arange(len(best)), best] > 1 - 1e-9 if sim.size else np.zeros(0, bool)
    column[best[seen]] = labels.quality[seen]
    grown = np.vstack([quality.T, column]).T
    if seen.all():
        return features, grown
    fresh = np.flatnonzero(~seen)
    old = labels.known[fresh] if labels.known is not None else existing(rows[fresh])
    new_rows = np.column_stack([old, labels.quality[fresh]])
    if sparse.issparse(features):
        appended = sparse.vstack([features, rows[fresh]]).tocsr()
    else:
        appended = np.vstack([features, rows[fresh]])
    return appended, np.vstack([grown, new_rows])
