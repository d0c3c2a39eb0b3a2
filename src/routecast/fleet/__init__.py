"""The replay fleet: recorded outcomes served as OpenAI-compatible models.

``routecast fleet DATA`` (or :func:`serve_fleet` / :func:`spawn_fleet` from Python) serves every
model of a recorded data set from one server: the request's ``model`` picks the model, a known
prompt gets that model's recorded answer, billed (through usage tokens and the published
price) at its recorded cost, after its recorded latency times ``speed``, with token log-probs
that reproduce its recorded confidence. A judge model scores an answer to a known prompt with
the recorded quality of the model that gave it. So a whole ``routecast serve`` deployment can
be run end to end on real model answers, deterministically and offline.

Modules: :mod:`~routecast.fleet.replay` (the :class:`Fleet`: look-ups, no I/O),
:mod:`~routecast.fleet.pricing` (prices and usage), :mod:`~routecast.fleet.logprobs`,
:mod:`~routecast.fleet.judge`, :mod:`~routecast.fleet.app` (HTTP),
:mod:`~routecast.fleet.run` (starting one). An edge of the project: it imports the core and
the server's wire helpers; nothing imports it.
"""

from __future__ import annotations

from routecast.fleet.pricing import FleetPrice
from routecast.fleet.replay import DEFAULT_JUDGE, Answer, Fleet, Verdict, load_fleet, prompt_key
from routecast.fleet.run import RunningFleet, serve_fleet, spawn_fleet

__all__ = ["DEFAULT_JUDGE", "Answer", "Fleet", "FleetPrice", "RunningFleet", "Verdict",
           "load_fleet", "prompt_key", "serve_fleet", "spawn_fleet"]
