"""Numeric helpers shared by the learned routers: link functions, soft-label losses, L-BFGS.

Every learned router here fits by full-batch L-BFGS (scipy) from a seeded start, so a fit is
deterministic for a given seed and needs no learning rate: the data sets routers learn from are
small (thousands of prompts), where full-batch second-order-ish methods beat SGD on a laptop.

Quality may be fractional, so every loss is the cross-entropy with a *soft* target ``y`` in
[0, 1]: ``-(y log p + (1 - y) log(1 - p))``, which equals the usual logistic loss on 0/1 data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Predicted probabilities are kept this far from 0 and 1 so that logits stay finite.
EPS = 1e-6


def sigmoid(z: FloatArray) -> FloatArray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def logit(p: FloatArray | float, eps: float = EPS) -> FloatArray:
    """Inverse of :func:`sigmoid`, with ``p`` clipped to ``[eps, 1 - eps]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def soft_bce(z: FloatArray, y: FloatArray, weight: FloatArray | None = None
             ) -> tuple[float, FloatArray]:
    """Summed cross-entropy of logits ``z`` against soft targets ``y``, and its gradient in ``z``.

    ``weight`` (broadcastable to ``z``) scales each term; the caller divides by the number of
    samples. Written with ``logaddexp`` so that large logits cannot overflow.
    """
    loss = np.logaddexp(0.0, z) - y * z  # = -(y log s(z) + (1-y) log(1-s(z)))
    grad = sigmoid(z) - y
    if weight is not None:
        loss = loss * weight
        grad = grad * weight
    return float(loss.sum()), grad


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS (OpenBLAS, MKL) limited to one thread.

    Why: the learned routers fit with many small matrix products (an L-BFGS loop, a
    truncated SVD of a few thousand rows). Threads gain nothing there, and numpy and scipy
    each ship their own OpenBLAS whose idle threads busy-wait against each other: on the
    2-core reference machine ``mf`` fitted the RouterBench subset in 11.4 s with the
    default two threads and in 1.8 s with one (``stack``: 40 s vs 2.5 s).
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def minimize(fun: Callable[[list[FloatArray]], tuple[float, list[FloatArray]]],
             start: Sequence[FloatArray], *, max_iter: int = 200,
             tol: float = 1e-7) -> list[FloatArray]:
    """Minimise ``fun(params) -> (loss, grads)`` over a list of arrays with L-BFGS.

    The arrays are packed into one vector for scipy and unpacked for ``fun``, so callers write
    their loss over named, shaped parameters.
    """
    from scipy.optimize import minimize as scipy_minimize

    shapes = [np.shape(a) for a in start]
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]

    def unpack(theta: FloatArray) -> list[FloatArray]:
        return [part.reshape(s) for part, s in zip(np.split(theta, cuts), shapes, strict=True)]

    def packed(theta: FloatArray) -> tuple[float, FloatArray]:
        loss, grads = fun(unpack(theta))
        return loss, np.concatenate([np.ravel(g) for g in grads])

    x0 = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in start])
    with one_blas_thread():
        res = scipy_minimize(packed, x0, jac=True, method="L-BFGS-B",
                             options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-10})
    return unpack(np.asarray(res.x, dtype=np.float64))


def fit_logistic(x: Any, y: FloatArray, *, l2: float, offset: FloatArray | None = None,
                 prior_coef: FloatArray | None = None, prior_intercept: FloatArray | None = None,
                 intercept_l2: float = 0.0, sample_weight: FloatArray | None = None,
                 max_iter: int = 300) -> tuple[FloatArray, FloatArray]:
    """Independent soft-label logistic regressions, one per column of ``y``: ``(coef, intercept)``.

    ``x`` is a dense ``(n, d)`` array or a scipy sparse matrix; ``y`` is ``(n, m)`` or ``(n,)``.

    Minimises ``mean_i w_i * bce(offset + x_i . c_j + b_j, y_ij) + l2/2 ||c_j - prior_coef_j||^2
    + intercept_l2/2 (b_j - prior_intercept_j)^2`` for every column ``j``. The prior centres the
    penalty, so with few samples the fit stays near what is already known (adding a model from
    few labels) instead of near zero; ``offset`` is a fixed per-(sample, column) logit added to
    the linear part (a prior prediction the regression corrects).
    """
    if not hasattr(x, "tocsr"):  # scipy sparse rows (TF-IDF) are used as they are
        x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64).T).T
    n, d = x.shape
    m = y.shape[1]
    c0 = np.zeros((m, d)) if prior_coef is None else np.asarray(prior_coef, dtype=np.float64)
    b0 = (logit(np.clip(y.mean(axis=0), 0.02, 0.98)) if prior_intercept is None
          else np.asarray(prior_intercept, dtype=np.float64))
    off = np.zeros((n, m)) if offset is None else np.asarray(offset, dtype=np.float64)
    w = np.ones((n, 1)) if sample_weight is None else np.asarray(sample_weight)[:, None]
    scale = 1.0 / float(w.sum())

    def fun(params: list[FloatArray]) -> tuple[float, list[FloatArray]]:
        coef, intercept = params
        loss, g = soft_bce(off + x @ coef.T + intercept, y, w)
        dc = coef - c0
        db = intercept - b0
        # (x.T @ g).T rather than g.T @ x: the former stays fast when x is sparse.
        return (loss * scale + 0.5 * l2 * float((dc * dc).sum())
                + 0.5 * intercept_l2 * float((db * db).sum()),
                [scale * np.asarray(x.T @ g).T + l2 * dc,
                 scale * g.sum(axis=0) + intercept_l2 * db])

    coef, intercept = minimize(fun, [c0.copy(), b0.copy()], max_iter=max_iter)
    return coef, intercept
