"""Per-model linear quality predictor: one logistic regression per model on prompt features.

Quality may be fractional (judge scores, coverage); it is fitted as a soft label, i.e. each
prompt appears once as a success with weight ``q`` and once as a failure with weight ``1 - q``,
which is exactly the cross-entropy with target ``q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, make_encoder
from routecast.routers.base import FloatArray, Router

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior


class LinearRouter(Router):
    """``P(quality | prompt)`` per model by L2-regularised logistic regression.

    ``C`` is the inverse regularisation strength. A model whose training quality is constant
    (always right or always wrong) gets that constant (within 1e-9), since a classifier cannot
    be fitted.

    On sparse outcomes each model's regression is fitted on the prompts labelled for it (the
    encoder on every prompt); a model with no label predicts the mean of all labels.
    """

    name = "linear"
    accepts_sparse = True

    def __init__(self, C: float = 1.0, encoder: str | Encoder = "tfidf",  # noqa: N803
                 max_iter: int = 1000) -> None:
        self.C = C
        self.encoder = encoder
        self.max_iter = max_iter

    def _fit(self, dataset: Dataset) -> None:
        from scipy import sparse
        from sklearn.linear_model import LogisticRegression

        self.encoder_: Encoder = make_encoder(self.encoder).fit(dataset.prompts)
        x = self.encoder_.transform(dataset.prompts)
        n = dataset.n_prompts
        stack = sparse.vstack if sparse.issparse(x) else np.vstack
        x2 = stack([x, x])
        y2 = np.r_[np.ones(n), np.zeros(n)]
        m, d = dataset.n_models, x.shape[1]
        # Only the fitted weights are kept (arrays persist without pickle).
        self.coef_: FloatArray = np.zeros((m, d))
        self.intercept_: FloatArray = np.zeros(m)
        have = dataset.labelled
        overall = float(np.nanmean(dataset.quality)) if have.any() else 0.5
        for j in range(m):
            rows = np.flatnonzero(have[:, j])
            if rows.size == 0:
                self.intercept_[j] = _logit(overall)
                continue
            xj2, yj2 = (x2, y2) if rows.size == n else (  # sparse: the labelled prompts
                stack([x[rows], x[rows]]), np.r_[np.ones(rows.size), np.zeros(rows.size)])
            q = dataset.quality[rows, j]
            if np.all(q == q[0]):
                # A constant has no classifier: predict it through the intercept alone.
                self.intercept_[j] = _logit(float(q[0]))
                continue
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
            clf.fit(xj2, yj2, sample_weight=np.r_[q, 1.0 - q])
            self.coef_[j] = clf.coef_[0]
            self.intercept_[j] = clf.intercept_[0]

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        row = getattr(self.encoder_, "transform_row", None)
        if row is not None:
            # Sparse rows one by one, no scipy: a prompt's few hundred columns of the weights
            # times its values. Routing one prompt through a sparse matrix cost ~0.1 ms more
            # (scipy's checks, and a copy of coef_.T to C order on every product).
            z = np.empty((len(prompts), len(self.models_)))
            for i, prompt in enumerate(prompts):
                cols, values = row(prompt)
                z[i] = self.coef_.take(cols, axis=1) @ values
            z += self.intercept_
        else:
            z = np.asarray(self.encoder_.transform(prompts) @ self.coef_.T) + self.intercept_
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """One more logistic output on the TF-IDF rows, shrunk towards the prior's combination
        of the existing outputs (see ``routers/fewshot.py``)."""
        from routecast.routers.fewshot import fit_new_output

        rows = self.encoder_.transform(labels.prompts)
        coef, intercept = fit_new_output(rows, labels.quality, prior, self.coef_,
                                         self.intercept_)
        self.coef_ = np.vstack([self.coef_, coef])
        self.intercept_ = np.append(self.intercept_, intercept)


def _logit(p: float, eps: float = 1e-9) -> float:
    p = min(max(p, eps), 1 - eps)
    return float(np.log(p / (1 - p)))

