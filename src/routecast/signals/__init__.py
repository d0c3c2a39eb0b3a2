"""Deferral signals: scores in [0, 1] that an answer is acceptable.

A cascade compares a signal's score of each step's answer with that step's threshold; cascade
routing reads signals as calibrated probabilities that an answer is correct. Offline, a
:class:`Signal` scores recorded answers of every model on every prompt of a dataset (shape
``(n_prompts, n_models)``). Live, the server computes the same kind of score from a response
with the pure functions of :mod:`routecast.signals.live` (log-prob summaries, agreement of
samples, self-verification votes), which need no fitting.

Built-ins register through :func:`register_signal`, the same path a plugin takes, and are
imported only when first asked for by name:

========== ====================================================== =======================
name       what it scores                                          needs in the dataset
========== ====================================================== =======================
confidence the recorded model-intrinsic confidence (calibrated)    ``confidence``
learned    P(correct | prompt, answer), FrugalGPT-style scorer     ``responses``
cross-     P(correct) from task-agnostic answer features, and the  ``responses``
agreement  agreement of two cheap models' answers on pair columns
           (:func:`routecast.signals.agreement.add_pairs`)
router     a router's ex-ante estimate of each model's quality     nothing
========== ====================================================== =======================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from routecast.registry import Registry
from routecast.signals.base import Signal
from routecast.signals.live import (
    agreement,
    normalize_answer,
    parse_verdict,
    self_verification_score,
    summarize_logprobs,
)

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

__all__ = [
    "SIGNALS",
    "Signal",
    "agreement",
    "available_signals",
    "make_signal",
    "normalize_answer",
    "parse_verdict",
    "register_signal",
    "self_verification_score",
    "signal_names",
    "summarize_logprobs",
]

#: The built-ins, in the order they are documented (and listed), whichever was imported first.
BUILTIN_ORDER = ("confidence", "learned", "cross-agreement", "router")


def _load_builtins() -> None:
    from routecast.signals import (  # noqa: F401
        agreement,
        confidence,
        learned,
        router_estimate,
    )


_REGISTRY = Registry[Signal]("signal", _load_builtins, BUILTIN_ORDER)
SIGNALS: dict[str, type[Signal]] = _REGISTRY.classes

S = TypeVar("S", bound=type[Signal])


def register_signal(cls: S) -> S:
    """Class decorator: make a signal constructible by its ``name``."""
    _REGISTRY.register(cls)
    return cls


def signal_names() -> list[str]:
    """Registered signal names: the built-ins in documented order, then plugins in
    registration order."""
    return _REGISTRY.names()


def available_signals(dataset: Dataset, *, include_ex_ante: bool = False) -> list[str]:
    """Signals whose required recorded fields ``dataset`` has.

    Ex-ante signals (the router estimate) never look at an answer, so they are left out unless
    ``include_ex_ante``: a cascade deferring on them would pay for answers it does not read.
    """
    return [n for n, c in _REGISTRY.loaded().items()
            if c.available(dataset) and (include_ex_ante or c.reads_answers)]


def make_signal(name: str, **params: Any) -> Signal:
    """A new, unfitted signal by registered name."""
    return _REGISTRY.make(name, **params)
