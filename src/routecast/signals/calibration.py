"""Per-task calibration of a score: a Platt scaling per task, shrunk towards the global fit.

A model's confidence means different things on different tasks (gpt-4o-mini's 0.9 on a
multiple-choice letter is not its 0.9 on a trivia answer). When the task of a prompt is known
(the data's ``task`` labels, or a server endpoint per task), a score's logit ``z`` can be
rescaled per task, ``sigmoid(a_t z + b_t)``, with ``(a_t, b_t)`` fitted on that task's training
prompts. Few prompts give noisy ``(a_t, b_t)``, so the fit carries a Gaussian prior centred on
the identity ``(1, 0)`` worth ``strength`` prompts; a task with fewer than ``min_prompts``
training prompts, or one never seen, keeps ``z`` as it is (the global fit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from routecast.signals.base import FloatArray

#: A task needs this many training prompts to get its own calibration.
MIN_TASK_PROMPTS = 30

TaskTable = dict[str, tuple[float, float]]


def platt(z: FloatArray, q: FloatArray, strength: float, steps: int = 25) -> tuple[float, float]:
    """``(a, b)`` minimising the soft log-loss of ``sigmoid(a z + b)`` against ``q`` plus
    ``strength / 2 * ((a - 1)^2 + b^2)``, by Newton's method (the problem is convex)."""
    x = np.column_stack([z, np.ones_like(z)])
    w = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - q) + strength * (w - prior)
        hess = (x * (p * (1 - p))[:, None]).T @ x + (strength + 1e-9) * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def fit_tasks(z: FloatArray, q: FloatArray, tasks: Sequence[str], strength: float,
              min_prompts: int = MIN_TASK_PROMPTS) -> TaskTable:
    """``{task: (a, b)}`` for every task with at least ``min_prompts`` rows."""
    labels = np.asarray(tasks)
    table: TaskTable = {}
    for task in np.unique(labels):
        rows = labels == task
        if rows.sum() >= min_prompts:
            table[str(task)] = platt(z[rows], q[rows], strength)
    return table


def apply_tasks(z: FloatArray, tasks: Sequence[str] | None, table: TaskTable) -> FloatArray:
    """``a_t z + b_t`` per row's task; rows of unknown tasks (or no labels) keep ``z``."""
    out = np.asarray(z, dtype=np.float64).copy()
    if tasks is None or not table:
        return out
    labels = np.asarray(tasks)
    for task, (a, b) in table.items():
        rows = labels == task
        out[rows] = a * out[rows] + b
    return out
