"""Signals a live cascade computes from extra calls to the step's model: they are listed here
(so that every signal name is declared once, in the signal registry) but cannot be fitted on
recorded outcomes, which hold one answer per prompt and model and no verification votes.

The scores themselves are :func:`routecast.signals.live.agreement` and
:func:`routecast.signals.live.self_verification_score`; the judges that ask for the samples
are in :mod:`routecast.backends.judges`.
"""

from __future__ import annotations

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.signals.base import FloatArray, Signal


class _LiveOnly(Signal):
    offline = False

    def _fit(self, dataset: Dataset) -> None:  # fit() refuses before it gets here
        raise ConfigError(f"the {self.name!r} signal is computed live only")

    def _score(self, dataset: Dataset) -> FloatArray:
        raise ConfigError(f"the {self.name!r} signal is computed live only")


class Agreement(_LiveOnly):
    """The share of ``samples`` + 1 answers (sampled at a temperature) that agree with the
    kept one (AutoMix/ "self-consistency" style)."""

    name = "agreement"
    judge = "routecast.backends.judges:AgreementJudge.from_options"


class SelfVerification(_LiveOnly):
    """The share of ``votes`` in which the step's model says its own answer is correct
    (AutoMix's self-verification)."""

    name = "self-verification"
    judge = "routecast.backends.judges:SelfVerificationJudge.from_options"
