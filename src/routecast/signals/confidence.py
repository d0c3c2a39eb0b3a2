"""The recorded model-intrinsic confidence, optionally calibrated per model.

Sources such as the cascade set of Zellinger & Thomson record one confidence per answer (there
the probability of the answer token, or of "yes, my answer is correct"). Live, the same score
comes from the response's token log-probabilities through
:func:`routecast.signals.live.summarize_logprobs`.

Raw confidences are not comparable across models (a small model's 0.9 is not a large model's
0.9), which matters when scores are read as probabilities (cascade routing, "stop at the best
answer seen"). So by default each model's confidence is Platt-scaled on the training split:
``P(correct) = sigmoid(a_j * logit(confidence) + b_j)``. With ``a_j > 0`` (the usual case) the
order within a model is unchanged, so a cascade's thresholds mean the same accept/escalate
decisions either way.

With ``per_task`` and task labels in the training data, each (task, model) is Platt-scaled
again on top of the model's global fit, shrunk towards it (:mod:`routecast.signals.calibration`);
prompts of a task it never saw keep the global fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.signals.base import FloatArray, Signal, logit
from routecast.signals.calibration import TaskTable, apply_tasks, fit_tasks


class RecordedConfidence(Signal):
    """The dataset's ``confidence``; Platt-scaled per model when ``calibrate``, and per task
    too when ``per_task`` (with ``task_strength`` prompts' worth of pull to the model's fit).

    A model whose training quality is constant cannot be calibrated and keeps its raw scores.
    """

    name = "confidence"
    requires = ("confidence",)
    judge = "routecast.backends.judges:ConfidenceJudge.from_options"

    def __init__(self, calibrate: bool = True, per_task: bool = False,
                 task_strength: float = 50.0) -> None:
        self.calibrate = calibrate
        self.per_task = per_task
        self.task_strength = task_strength

    def _fit(self, dataset: Dataset) -> None:
        from sklearn.linear_model import LogisticRegression

        assert dataset.confidence is not None  # checked by fit
        self.calibrators_: list[Any] = []
        self.task_calibration_: dict[int, TaskTable] = {}
        if not self.calibrate:
            return
        n = dataset.n_prompts
        y2 = np.r_[np.ones(n), np.zeros(n)]
        for j in range(dataset.n_models):
            q = dataset.quality[:, j]
            if np.all(q == q[0]):
                self.calibrators_.append(None)
                continue
            x = logit(dataset.confidence[:, j])[:, None]
            # Soft labels: each prompt once as a success with weight q, once as a failure.
            clf = LogisticRegression(C=100.0, max_iter=1000)
            clf.fit(np.vstack([x, x]), y2, sample_weight=np.r_[q, 1.0 - q])
            self.calibrators_.append(clf)
            if self.per_task and dataset.task is not None:
                self.task_calibration_[j] = fit_tasks(clf.decision_function(x), q,
                                                      dataset.task, self.task_strength)

    def _score(self, dataset: Dataset) -> FloatArray:
        assert dataset.confidence is not None
        raw = np.asarray(dataset.confidence, dtype=np.float64)
        if not self.calibrators_:
            return raw
        out = raw.copy()
        for j, clf in enumerate(self.calibrators_):
            if clf is not None:
                z = apply_tasks(clf.decision_function(logit(raw[:, j])[:, None]),
                                dataset.task, self.task_calibration_.get(j, {}))
                out[:, j] = 1.0 / (1.0 + np.exp(-z))
        return out
