"""Per-model linear quality predictor: one logistic regression per model on prompt features.

Quality may be fractional (judge scores, coverage); it is fitted as a soft label, i.e. each
prompt appears once as a success with weight ``q`` and once as a failure with weight ``1 - q``,
which is exactly the cross-entropy with target ``q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, make_encoder
from routecast.routers import register_router
from routecast.routers.base import FloatArray, Router


@register_router
class LinearRouter(Router):
    """``P(quality | prompt)`` per model by L2-regularised logistic regression.

    ``C`` is the inverse regularisation strength. A model whose training quality is constant
    (always right or always wrong) gets that constant, since a classifier cannot be fitted.
    """

    name = "linear"

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
        self.estimators_: list[Any] = []
        for j in range(dataset.n_models):
            q = dataset.quality[:, j]
            if np.all(q == q[0]):
                self.estimators_.append(float(q[0]))
                continue
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
            clf.fit(x2, y2, sample_weight=np.r_[q, 1.0 - q])
            self.estimators_.append(clf)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        x = self.encoder_.transform(prompts)
        cols = [np.full(len(prompts), est) if isinstance(est, float)
                else est.predict_proba(x)[:, 1] for est in self.estimators_]
        return np.column_stack(cols).astype(np.float64)
