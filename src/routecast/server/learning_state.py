"""What the learning service keeps per learning endpoint, routed or cascade alike: the spend
meter, the judge, the rate limit, counters, and where this replica stands in the shared store
(:mod:`routecast.server.learning`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from routecast.backends.base import Usage
from routecast.learning.meter import SpendMeter

#: A typical request, for a model's nominal cost before its answers have been seen.
NOMINAL_USAGE = Usage(prompt_tokens=500, completion_tokens=200)


@dataclass(kw_only=True)
class LearningState:
    name: str
    meter: SpendMeter
    judge: str | None
    rubric: str
    #: The judge's replies range from 0 to this.
    judge_scale: float = 10.0
    timeout_s: float
    max_per_s: float = 10.0
    refitting: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    #: The published version served (0: none).
    artifact_version: int = 0
    #: Every label id up to this one has been read from the store (or given up on: a gap).
    label_cursor: int = 0
    #: Label ids above the cursor read already, and since when the lowest gap below them
    #: has been open (see LearningService._sync_labels).
    labels_seen: set[int] = field(default_factory=set)
    gap_since: float | None = None
    #: Ids of labels this replica stored and has in its learner already.
    own_labels: set[int] = field(default_factory=set)
    #: Label inserts begun (a counter) and not yet finished: the sync of other replicas'
    #: labels discards a read that overlapped one (see LearningService._sync_labels).
    inserts_begun: int = 0
    inserts_pending: int = 0
    #: The last publish failed (logged when a run of failures begins and when it ends).
    publish_failing: bool = False
    _tokens: float = 1.0
    _last: float = 0.0

    def admit(self) -> bool:
        """A token bucket (one second's worth): may this request be learned from?"""
        if self.max_per_s <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self.max_per_s, self._tokens + (now - self._last) * self.max_per_s)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
