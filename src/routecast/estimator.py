"""What routers and deferral signals share as scikit-learn-style estimators.

Both are configured by constructor arguments, learn attributes ending in ``_`` in ``fit``, and
are "fitted" once they know their ``models_``.
"""

from __future__ import annotations

from typing import Any

from routecast.errors import NotFittedError


class Estimator:
    """``get_params``, the fitted check and a ``repr`` from the constructor arguments."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (scikit-learn convention): public attributes not ending in _."""
        return {k: v for k, v in vars(self).items()
                if not k.endswith("_") and not k.startswith("_")}

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(dataset) first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
