"""Cascades: ask models cheapest first and stop at the first acceptable answer.

- :mod:`~routecast.cascades.cascade`: the :class:`Cascade` (steps, signal, thresholds) and its
  offline :class:`Replay` over recorded outcomes;
- :mod:`~routecast.cascades.tuning`: choosing the model subset, order and thresholds for a
  quality target or a budget (:class:`CascadeSearch`);
- :mod:`~routecast.cascades.routing`: cascade routing, which at each step picks the next model
  or stops by expected quality minus a cost weight (:class:`CascadeRouting`).

The live counterpart, a cascade served as a backend, is :mod:`routecast.backends.cascade`.
"""

from __future__ import annotations

from routecast.cascades.cascade import Cascade, Replay
from routecast.cascades.routing import CascadeRouting
from routecast.cascades.tuning import CascadeSearch, tune_cascade

__all__ = ["Cascade", "CascadeRouting", "CascadeSearch", "Replay", "tune_cascade"]
