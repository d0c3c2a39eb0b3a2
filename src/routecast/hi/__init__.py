"""Hierarchical inference (HI): a device model first, the cloud when it is unsure.

- :mod:`~routecast.hi.profile`: what a model costs on a device or in the cloud (latency,
  energy, dollars per token) and the link between them;
- :mod:`~routecast.hi.simulation`: the device-first policy replayed over recorded outcomes,
  with the survey's IES score;
- :mod:`~routecast.hi.bandit`: HI-LCB, an online learner of the offload threshold, with its
  regret against the best fixed threshold;
- :mod:`~routecast.hi.experiments`: the experiments ``routecast hi`` runs and reports.
"""
