"""The ex-ante signal: a router's estimate of each model's quality on a prompt.

It looks at the prompt only, never at an answer, so it is known *before* a model is called.
Cascade routing uses it for the models not yet run ("what would the next model bring?"); as a
deferral signal of a plain cascade it would pay for answers it never reads, so
:func:`~routecast.signals.available_signals` leaves it out unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence

from routecast.data.dataset import Dataset
from routecast.routers import make_router
from routecast.routers.base import Router
from routecast.signals.base import FloatArray, Signal


class RouterEstimate(Signal):
    """Expected quality from a router (a registered name or a :class:`Router`), fitted on the
    training split."""

    name = "router"
    reads_answers = False

    def __init__(self, router: str | Router = "linear") -> None:
        self.router = router

    def _fit(self, dataset: Dataset) -> None:
        if isinstance(self.router, str):
            router = make_router(self.router)
        else:  # a fresh copy, so fitting never changes the caller's router
            router = type(self.router)(**self.router.get_params())
        self.router_: Router = router.fit(dataset)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        """Expected quality of every model on ``prompts``, shape ``(n, m)``: the live path."""
        self._check_fitted()
        return self.router_.predict(list(prompts))

    def _score(self, dataset: Dataset) -> FloatArray:
        return self.predict(dataset.prompts)
