"""Deferral signals: scores in [0, 1] that an answer is acceptable.

A cascade compares a signal's score of each step's answer with that step's threshold; cascade
routing reads signals as calibrated probabilities that an answer is correct. Offline, a
:class:`Signal` scores recorded answers of every model on every prompt of a dataset (shape
``(n_prompts, n_models)``). Live, the server computes the same kind of score from a response
with the pure functions of :mod:`routecast.signals.live` (log-prob summaries, agreement of
samples, self-verification votes), which need no fitting.

Signals are one :class:`~routecast.registry.Registry` (entry-point group
``routecast.signals``), imported only when first asked for by name; a plugin's signal joins
the same way. A signal that a live cascade can compute names its live judge (a
:class:`~routecast.backends.judges.Judge`) in its class attribute ``judge``, so each signal
name is listed once, here:

================= ================================================ ============== ========
name              what it scores                                   needs recorded live
================= ================================================ ============== ========
confidence        the model-intrinsic confidence (calibrated)      ``confidence`` log-probs
learned           P(correct | prompt, answer), FrugalGPT-style     ``responses``  yes
router            a router's ex-ante estimate of each model's      nothing        no
                  quality
agreement         agreement of k sampled answers with the kept one (live only)    yes
self-verification the model's own votes that its answer is right   (live only)    yes
cross-agreement   P(correct) from task-agnostic answer features,   ``responses``  no
                  and the agreement of two cheap models' answers
                  on pair columns (:func:`routecast.signals.cross_agreement.add_pairs`)
================= ================================================ ============== ========
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from routecast.registry import Registry, class_check
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
    "live_signal_names",
    "make_signal",
    "normalize_answer",
    "parse_verdict",
    "register_signal",
    "self_verification_score",
    "signal_names",
    "summarize_logprobs",
]

_BUILTINS = {
    "confidence": "routecast.signals.confidence:RecordedConfidence",
    "learned": "routecast.signals.learned:LearnedScorer",
    "router": "routecast.signals.router_estimate:RouterEstimate",
    "agreement": "routecast.signals.sampled:Agreement",
    "self-verification": "routecast.signals.sampled:SelfVerification",
    "cross-agreement": "routecast.signals.cross_agreement:AgreementScorer",
}

#: Every signal class by name (a read-only mapping; plugins included).
SIGNALS: Registry[type[Signal]] = Registry("signal", "routecast.signals", _BUILTINS,
                                           class_check("signal", Signal))

S = TypeVar("S", bound=type[Signal])


def register_signal(cls: S) -> S:
    """Class decorator: make a signal constructible by its ``name`` in this process."""
    SIGNALS.register(cls.name, cls)
    return cls


def signal_names() -> list[str]:
    """Signal names: the built-ins in documented order, then run-time ones, then plugins."""
    return SIGNALS.names()


def live_signal_names() -> list[str]:
    """Signals a live cascade can compute: those that declare a :attr:`Signal.judge`."""
    return [n for n in SIGNALS.names() if SIGNALS.load(n).judge]


def available_signals(dataset: Dataset, *, include_ex_ante: bool = False) -> list[str]:
    """Signals whose required recorded fields ``dataset`` has.

    Ex-ante signals (the router estimate) never look at an answer, so they are left out unless
    ``include_ex_ante``: a cascade deferring on them would pay for answers it does not read.
    """
    return [n for n in SIGNALS.names()
            if (c := SIGNALS.load(n)).available(dataset)
            and (include_ex_ante or c.reads_answers)]


def make_signal(name: str, **params: Any) -> Signal:
    """A new, unfitted signal by registered name."""
    signal = SIGNALS.make(name, **params)
    assert isinstance(signal, Signal)  # class_check made sure
    return signal
