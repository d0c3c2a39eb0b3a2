"""What routers and deferral signals share as scikit-learn-style estimators.

Both are configured by constructor arguments, learn attributes ending in ``_`` in ``fit``, and
are "fitted" once they know their ``models_``.
"""

from __future__ import annotations

import inspect
from typing import Any

from routecast.errors import ConfigError, NotFittedError


class Estimator:
    """``get_params``, the fitted check and a ``repr`` from the constructor arguments."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (scikit-learn convention): the ``__init__`` signature's
        parameters, read from the attributes of the same names, which ``__init__`` stores."""
        try:
            return {name: getattr(self, name) for name in _init_params(type(self))}
        except AttributeError as e:
            raise ConfigError(f"{type(self).__name__}.__init__ must store each argument as an "
                              f"attribute of the same name ({e})") from None

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(dataset) first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


_INIT_PARAMS: dict[type, tuple[str, ...]] = {}


def _init_params(cls: type) -> tuple[str, ...]:
    """Names of ``cls.__init__``'s parameters (``*args`` and ``**kwargs`` aside), cached per
    class: ``repr`` and saving call this, and a signature costs tens of microseconds."""
    names = _INIT_PARAMS.get(cls)
    if names is None:
        signature = inspect.signature(getattr(cls, "__init__"))  # noqa: B009  (mypy: unsound)
        names = tuple(name for name, p in signature.parameters.items()
                      if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        _INIT_PARAMS[cls] = names
    return names
