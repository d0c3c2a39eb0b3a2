"""Learning from traffic: labels from a judge, shadow requests and feedback, and a router that
is refitted on them in the background.

The core (:class:`~routecast.learning.learner.Learner`, the explorers, the spend meter) is
synchronous and knows nothing of HTTP: the server drives it from background tasks
(:mod:`routecast.learning.service`), and ``benchmarks/learning_curve.py`` drives the same
classes in-process over recorded outcomes.
"""

from __future__ import annotations

from routecast.learning.explore import ActiveExplorer, Candidate, Explorer, UniformExplorer
from routecast.learning.labels import LabelTable
from routecast.learning.learner import Learner, LearnerSettings, RefitReport
from routecast.learning.meter import SpendMeter

__all__ = ["ActiveExplorer", "Candidate", "Explorer", "LabelTable", "Learner",
           "LearnerSettings", "RefitReport", "SpendMeter", "UniformExplorer"]
