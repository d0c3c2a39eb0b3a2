"""Stacked router: kNN at several scales, a linear and an MF model, combined and calibrated.

Published routers end up tied with a well-tuned kNN ("routing plateau"), and which kNN is
well-tuned depends on the data: small ``k`` follows local structure, large ``k`` the topic
level, where most of the signal is on benchmark mixes. Rather than pick one, this router
learns from the data how far to trust each view, per model:

1. **Base predictors**, all on one shared encoding (fitted once): kNN similarity-weighted
   means at each ``k`` in ``ks`` on the encoder rows (one similarity matrix serves every
   ``k``), and, on the dense LSA features of ``_features.py``, a soft-label logistic
   regression per model (strength ``C``) and the low-rank model of ``mf.py``. (The logistic
   regression on the sparse TF-IDF rows instead took 4x longer to fit, 26 s vs 6 s on the
   RouterBench subset, for no gain on its validation split: AIQ 0.812 vs 0.814.)
2. **Cross-fitting**: the training prompts are cut into ``folds`` seeded folds; each fold's
   base predictions come from bases fitted on the other folds, so they are as wrong as they
   will be on new prompts (in-sample predictions would reward whichever base overfits most).
3. **Combiner**, per model: a logistic regression on the bases' logits, with its weights
   shrunk (``l2``) towards the plain average of the logits. It *calibrates* as it combines:
   the policy compares predicted quality across models at one cost weight, so a model whose
   predictions are systematically over- or under-confident would be chosen too often or too
   rarely; the per-model intercept and scale remove that.

The encoder vocabulary and the LSA are fitted on all training prompts before the folds are
cut (unsupervised, so no outcome leaks into the held-out predictions). Fitting costs about
``folds + 1`` times the bases; see ``benchmarks/routers.py`` for the measured time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, Features
from routecast.errors import ConfigError
from routecast.routers._features import DenseFeatures, DenseMap, similarity
from routecast.routers._fit import FloatArray, fit_logistic, logit, sigmoid
from routecast.routers.base import Router
from routecast.routers.cost import PromptCost
from routecast.routers.mf import fit_mf

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior

#: Base predictions are clipped this far from 0 and 1 before taking logits, so that a kNN
#: mean of exactly 0 or 1 does not become an unbounded combiner input.
CLIP = 1e-3


class StackRouter(DenseFeatures, PromptCost, Router):
    """Cross-fitted, per-model calibrated stack of kNN (several ``ks``), linear and MF."""

    name = "stack"

    # Set by _fit through setattr (one dict per base fit): declared for the type checker.
    features_: Any
    quality_: FloatArray
    mean_quality_: FloatArray
    lin_coef_: FloatArray
    lin_intercept_: FloatArray
    proj_: FloatArray
    model_emb_: FloatArray
    bias_: FloatArray

    def __init__(self, ks: tuple[int, ...] | list[int] = (20, 80, 320), C: float = 1.0,  # noqa: N803
                 mf_k: int = 16, mf_alpha: float = 20.0, folds: int = 5, l2: float = 0.1,
                 encoder: str | Encoder = "tfidf", dim: int = 128, seed: int = 0,
                 cost_model: str = "knn") -> None:
        self.ks = tuple(int(k) for k in ks)
        self.C = C
        self.mf_k = mf_k
        self.mf_alpha = mf_alpha
        self.folds = folds
        self.l2 = l2
        self.encoder = encoder
        self.dim = dim
        self.seed = seed
        self.cost_model = cost_model

    # -- fitting ---------------------------------------------------------------------------

    def _fit(self, dataset: Dataset) -> None:
        if not self.ks or min(self.ks) < 1 or self.folds < 2 or not self.C > 0:
            raise ConfigError(f"stack needs ks >= 1, folds >= 2 and C > 0, got ks={self.ks}, "
                              f"folds={self.folds}, C={self.C}")
        z, rows = self._fit_features(dataset.prompts, self.encoder, self.dim, self.seed)
        y = np.asarray(dataset.quality, dtype=np.float64)
        n = dataset.n_prompts
        n_folds = min(self.folds, n)
        fold = np.random.default_rng(self.seed).permutation(n) % n_folds
        held_out = np.zeros((n, dataset.n_models, self.n_bases))
        for f in range(n_folds):
            inside = fold != f
            if not inside.any():
                continue
            bases = self._fit_bases(rows[inside], z[inside], y[inside])
            sim = rows[~inside] @ rows[inside].T
            sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim)
            held_out[~inside] = self._base_logits(bases, sim, rows[~inside], z[~inside])
        for key, value in self._fit_bases(rows, z, y).items():
            setattr(self, key, value)
        self.comb_coef_: FloatArray = np.zeros((dataset.n_models, self.n_bases))
        self.comb_intercept_: FloatArray = np.zeros(dataset.n_models)
        for j in range(dataset.n_models):
            coef, intercept = fit_logistic(
                held_out[:, j, :], y[:, j], l2=self.l2,
                prior_coef=np.full((1, self.n_bases), 1.0 / self.n_bases))
            self.comb_coef_[j], self.comb_intercept_[j] = coef[0], intercept[0]
        self._fit_cost(dataset, rows)

    @property
    def n_bases(self) -> int:
        return len(self.ks) + 2

    def _fit_bases(self, rows: Features, z: FloatArray, y: FloatArray) -> dict[str, Any]:
        n = y.shape[0]
        lin_coef, lin_intercept = fit_logistic(z, y, l2=1.0 / (self.C * n))
        proj, emb, bias = fit_mf(z, y, self.mf_k, self.mf_alpha / n, 300, self.seed)
        return {"features_": rows, "quality_": y, "mean_quality_": y.mean(axis=0),
                "lin_coef_": lin_coef, "lin_intercept_": lin_intercept,
                "proj_": proj, "model_emb_": emb, "bias_": bias}

    def _base_logits(self, bases: dict[str, Any], sim: FloatArray, rows: Features,
                     z: FloatArray) -> FloatArray:
        """Logits of every base, ``(n, m, n_bases)``: kNN per ``k``, linear, MF.

        ``sim`` is the similarity of ``rows`` to the bases' training rows.
        """
        knn = knn_means(sim, bases["quality_"], bases["mean_quality_"], self.ks)
        lin = np.asarray(z @ bases["lin_coef_"].T, dtype=np.float64) + bases["lin_intercept_"]
        mf = (z @ bases["proj_"]) @ bases["model_emb_"].T + bases["bias_"]
        parts = [logit(np.clip(p, CLIP, 1 - CLIP)) for p in knn]
        parts += [np.clip(lin, logit(CLIP), logit(1 - CLIP)),
                  np.clip(mf, logit(CLIP), logit(1 - CLIP))]
        return np.stack(parts, axis=-1)

    # -- prediction ------------------------------------------------------------------------

    def _cost_rows(self, prompts: Sequence[str]) -> Features:
        return self.encoder_.transform(list(prompts))

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        z, rows = self._features(prompts)
        return self._combine(rows, z)

    def _combine(self, rows: Features, z: FloatArray) -> FloatArray:
        logits = self._base_logits(vars(self), similarity(self, "features_", rows), rows, z)
        return sigmoid(np.einsum("nmb,mb->nm", logits, self.comb_coef_) + self.comb_intercept_)

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """Extend every base (see ``fewshot.py``); the new combiner is the others' mean."""
        from routecast.routers.fewshot import fit_new_output, impute_and_append

        z, rows = self._features(labels.prompts)
        dense = DenseMap(self.projection_)
        # kNN first: imputing uses the stack's current (m-model) predictions.
        self.features_, self.quality_ = impute_and_append(
            self.features_, self.quality_, rows, labels, prior,
            lambda r: self._combine(r, dense.apply(r)))
        self.mean_quality_ = np.append(self.mean_quality_, self.quality_[:, -1].mean())
        coef, intercept = fit_new_output(z, labels.quality, prior, self.lin_coef_,
                                         self.lin_intercept_)
        self.lin_coef_ = np.vstack([self.lin_coef_, coef])
        self.lin_intercept_ = np.append(self.lin_intercept_, intercept)
        coef, intercept = fit_new_output(z @ self.proj_, labels.quality, prior,
                                         self.model_emb_, self.bias_)
        self.model_emb_ = np.vstack([self.model_emb_, coef])
        self.bias_ = np.append(self.bias_, intercept)
        self.comb_coef_ = np.vstack([self.comb_coef_, self.comb_coef_.mean(axis=0)])
        self.comb_intercept_ = np.append(self.comb_intercept_, self.comb_intercept_.mean())

def knn_means(sim: FloatArray, quality: FloatArray, mean_quality: FloatArray,
              ks: Sequence[int], prior: float = 1.0, weighted: bool = True
              ) -> list[FloatArray]:
    """Similarity-weighted mean quality of the ``k`` nearest rows, for every ``k`` in ``ks``.

    The same estimate as the ``knn`` router (weights ``max(sim, 1e-6)``, or 1 when not
    ``weighted``; ``prior`` pseudo-neighbours at the overall mean), from one sort of each row.
    """
    n, n_train = sim.shape
    kmax = max(1, min(max(ks), n_train))
    if kmax < n_train:
        idx = np.argpartition(-sim, kmax - 1, axis=1)[:, :kmax]
    else:
        idx = np.tile(np.arange(n_train), (n, 1))
    top = np.take_along_axis(sim, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    w = np.clip(np.take_along_axis(top, order, axis=1), 1e-6, None)
    if not weighted:
        w = np.ones_like(w)
    cum_w = np.cumsum(w, axis=1)
    cum_wq = np.cumsum(w[:, :, None] * quality[idx], axis=1)
    out = []
    for k in ks:
        kk = min(k, kmax) - 1
        out.append((cum_wq[:, kk] + prior * mean_quality) / (cum_w[:, kk, None] + prior))
    return out
