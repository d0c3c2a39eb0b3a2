"""The synthetic datasets of the tests: kept in :mod:`routecast.testing`, where plugin authors
find them too, and re-exported here for the tests."""

from __future__ import annotations

from routecast.testing import WORDS, toy_dataset, toy_with_answers

__all__ = ["WORDS", "toy_dataset", "toy_with_answers"]
