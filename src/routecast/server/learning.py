"""The server side of learning from traffic: a background queue that labels answers, shadow
requests, ``POST /v1/feedback``, and refits swapped into the routed endpoint.

Nothing here is on a request's path. After a learning endpoint has answered, the server calls
:meth:`LearningService.observe`, which only appends the finished request to an inbox (at most
``learning.queue_size`` waiting; beyond that a request is not learned from, and counted). An
intake task files it under the request's ``x-routecast-request-id`` (what ``/v1/feedback``
takes) and queues it for the workers. At most
``learning.max_learned_per_s`` requests a second are queued (a token bucket): the shadows and
judge calls run in this process, and unthrottled they took the proxy's one core from
clients (benchmarks/proxy_overhead.py: +1.9 ms p50 at concurrency 1, every request learned
from). Background tasks
(``learning.concurrency``) take requests off the queue and, as the explorer decides, ask the
judge to grade the served answer, ask other models the same request (shadows) and have those
graded; every label goes to the :class:`~routecast.learning.learner.Learner` and the outcome
store. Each shadow and judge call has its own timeout (``learning.timeout_s``); a slow or failing
one costs a label, never a client's answer or latency. Refits run in a worker thread and the
new router and policy are swapped into the endpoint in one step on the event loop.

Cascade endpoints with a ``learning:`` block go through the same inbox, rate limit, queue,
meter, timeouts and store; what is done for each of their requests (completing it into a row
of every step's graded answer, and tuning thresholds instead of a router) is in
:mod:`routecast.server.cascade_learning`.

Replicas: servers sharing one database (``storage.url``) share the outcome store, and each
refit swapped in is published as a new version of the endpoint's router
(:class:`~routecast.storage.artifacts.ArtifactStore`, :mod:`routecast.learning.publish`).
Every ``storage.artifact_poll_s`` seconds each replica, in a worker thread, reads the labels
other replicas stored since it last looked (into its learner, so its next refit fits on all of
them) and the newest published version; a version newer than the one it serves, published by
another replica, is loaded and swapped in by the same assignments as a local refit. What a
replica loaded it never publishes again; a version it cannot read (a newer format) it
skips, counted (``load_failed``), and a publish that fails is counted (``publish_failed``) and
logged once per run of failures: either way the replica serves on. Two replicas may refit at
the same moment (each refit is due at the same label counts); both publish, the versions are
distinct and increasing (the database allocates them), and every replica ends on the
highest one, so a concurrent refit costs a refit's CPU and nothing else. Loading a version
also moves the replica's next refit as if it had refitted itself, which keeps that rare.

Privacy and keys: a request the privacy rule restricted (``Request.allowed``) is shadowed only
to allowed models, and graded only by a judge that is allowed too; its stored prompt is
masked. Feedback must come with the same client key that made the request (when the server
requires keys).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routecast.backends.base import Backend, Chunk, Completion, Request, Usage
from routecast.backends.cascade import CascadeBackend
from routecast.backends.routed import RoutedBackend, routing_text
from routecast.backends.trace import Step
from routecast.data.pricing import estimate_tokens
from routecast.errors import ConfigError, DataFormatError, RequestError
from routecast.learning.cascade import CascadeRefit, RowSampler
from routecast.learning.explore import ActiveExplorer, Candidate, Explorer, UniformExplorer
from routecast.learning.judge import JUDGE_MAX_TOKENS, RUBRIC, judge_messages, parse_score
from routecast.learning.learner import Learner, LearnerSettings, RefitReport
from routecast.learning.meter import SpendMeter
from routecast.learning.publish import KIND, snapshot_from_payload, snapshot_payload
from routecast.learning.store import LabelRow, OutcomeStore
from routecast.server.cascade_learning import KIND as CASCADE_KIND
from routecast.server.cascade_learning import (
    CascadeLearning,
    learn_cascade,
    thresholds_from_payload,
    thresholds_payload,
)
from routecast.server.learning_config import LearningConfig
from routecast.server.learning_state import NOMINAL_USAGE, LearningState
from routecast.server.stream_answer import answered
from routecast.storage.artifacts import ArtifactStore
from routecast.storage.database import Database

if TYPE_CHECKING:
    from routecast.server.config import Config, RoutedEndpoint
    from routecast.server.endpoints import EndpointTable
    from routecast.server.privacy import PrivacyRule

log = logging.getLogger("routecast.server")

#: Response ids remembered for feedback, per server (oldest forgotten first).
MAX_RESPONSES = 100_000
#: Seconds a gap in the label ids read from the shared store is waited on (an insert by another
#: replica not committed yet) before it is taken for a rolled-back insert.
GAP_S = 10.0


def make_learner(name: str, spec: RoutedEndpoint, config: Config) -> Learner:
    """The endpoint's learner: cold, or from the saved ``router`` as a prior (its models mapped
    to configured ones by ``model_map``)."""
    from routecast.server.endpoints import price_of

    lc = spec.learning
    assert lc is not None
    prior = None
    to_prior: dict[str, str] = {}
    models = list(lc.models)
    if spec.router is not None:
        from routecast.routers.persist import load_router

        if not spec.router.is_dir():
            raise ConfigError(f"endpoints.{name}.router: no saved router folder at "
                              f"{spec.router}. Fix: give the folder a router was saved to, or "
                              "remove `router` to start learning from nothing")
        prior, _ = load_router(spec.router)
        to_prior = {ours: theirs for theirs, ours in spec.model_map.items()}
        models = models or [spec.model_map.get(m, m) for m in prior.models_]
    unknown = [m for m in models if m not in config.models]
    if unknown:
        raise ConfigError(f"endpoints.{name}.learning: models {unknown} are not configured. "
                          "Fix: define them under `models`, or map the prior router's models "
                          f"with endpoints.{name}.model_map")
    nominal = [price_of(config.models[m]).cost_usd(NOMINAL_USAGE) for m in models]
    settings = LearnerSettings(
        router=lc.router, refit_every=lc.refit_every, first_refit=lc.first_refit,
        holdout_fraction=lc.holdout_fraction, calibration_window=lc.calibration_window,
        calibration_recent=lc.calibration_recent, swap_tolerance_se=lc.swap_tolerance_se,
        anchor_labels=lc.anchor_labels,
        quality_fraction=lc.quality_fraction,
        budget_usd_per_query=lc.budget_usd_per_query, prompt_cost=lc.prompt_cost,
        judge_noise=lc.judge.noise if lc.judge else 0.0)
    try:
        from routecast.routers import make_router

        make_router(lc.router)
    except ConfigError as e:
        raise ConfigError(f"endpoints.{name}.learning.router: {e}") from None
    return Learner(models, nominal, settings, prior=prior, model_map=to_prior)


@dataclass
class _Served:
    """A finished request waiting to be learned from."""

    endpoint: str
    prompt: str
    body: dict[str, Any]
    api: Any
    model: str
    answer: str | None
    baseline_usd: float
    allowed: frozenset[str] | None
    response_id: str
    client: str | None
    #: A cascade's steps, from its trace (what each asked step answered and scored).
    steps: list[Step] | None = None


@dataclass(kw_only=True)
class EndpointLearning(LearningState):
    """A routed endpoint that learns: its learner, the backend it swaps routers into, and
    the explorer that picks the labels to buy."""

    learner: Learner
    backend: RoutedBackend
    explorer: Explorer


#: A learning endpoint of either kind.
Learning = EndpointLearning | CascadeLearning


class LearningService:
    """Every learning endpoint of one server; see the module docstring."""

    def __init__(self, config: Config, table: EndpointTable, db: Database | Path | None,
                 privacy: PrivacyRule | None) -> None:
        from routecast.server.config import CascadeEndpoint, RoutedEndpoint

        self.table = table
        self.privacy = privacy
        self.db = db
        self.store: OutcomeStore | None = None
        self.artifacts: ArtifactStore | None = None
        self.poll_s = config.storage.artifact_poll_s
        #: Who publishes from here (the artifacts' ``publisher``): host, process, a nonce.
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.endpoints: dict[str, EndpointLearning | CascadeLearning] = {}
        self._responses: OrderedDict[str, tuple[str, str, str, str | None]] = OrderedDict()
        self._queue: asyncio.Queue[_Served] | None = None
        self._inbox: deque[tuple[Learning, Request, Completion, str | None, str,
                                 list[Chunk] | None]] = deque()
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        size = 1
        workers = 1
        for name, spec in config.endpoints.items():
            if not isinstance(spec, RoutedEndpoint | CascadeEndpoint) or spec.learning is None:
                continue
            lc = spec.learning
            backend = table.backends[name]
            common: dict[str, Any] = {
                "name": name, "meter": SpendMeter(lc.budget_usd, lc.spend_fraction),
                "judge": lc.judge.model if lc.judge else None,
                "rubric": lc.judge.rubric if lc.judge and lc.judge.rubric else RUBRIC,
                "judge_scale": lc.judge.scale if lc.judge else 10.0,
                "timeout_s": lc.timeout_s, "max_per_s": lc.max_learned_per_s}
            if isinstance(spec, CascadeEndpoint):
                assert isinstance(backend, CascadeBackend)
                self.endpoints[name] = CascadeLearning(
                    learner=table.cascade_learners[name], backend=backend,
                    sampler=RowSampler(), **common)
            else:
                assert isinstance(backend, RoutedBackend) and isinstance(
                    spec.learning, LearningConfig)
                explorer: Explorer = (
                    ActiveExplorer(max_labels=spec.learning.max_labels_per_request)
                    if spec.learning.strategy == "active"
                    else UniformExplorer(fraction=spec.learning.shadow_fraction,
                                         k=spec.learning.shadows_per_request))
                self.endpoints[name] = EndpointLearning(
                    learner=table.learners[name], backend=backend, explorer=explorer, **common)
            size = max(size, lc.queue_size)
            workers = max(workers, lc.concurrency)
        self.queue_size = size
        self.concurrency = workers

    def __bool__(self) -> bool:
        return bool(self.endpoints)

    def routed(self, name: str) -> EndpointLearning:
        """The learning state of routed endpoint ``name``."""
        e = self.endpoints[name]
        assert isinstance(e, EndpointLearning), f"{name} is not a routed learning endpoint"
        return e

    def cascade(self, name: str) -> CascadeLearning:
        """The learning state of cascade endpoint ``name``."""
        e = self.endpoints[name]
        assert isinstance(e, CascadeLearning), f"{name} is not a cascade learning endpoint"
        return e

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.db is not None:
            self.store = await asyncio.to_thread(OutcomeStore, self.db)
            self.artifacts = ArtifactStore(self.store.db)
            for e in self.endpoints.values():  # resume: the labels of earlier runs
                await self._sync_labels(e, initial=True)
                spent = await asyncio.to_thread(self.store.spend, e.name)
                e.meter.shadow_usd = spent.get("shadow", 0.0)
                e.meter.judge_usd = spent.get("judge", 0.0)
                # What the replicas serve already, if one published a router.
                await self._sync_router(e)
                if e.learner.due():
                    self._spawn(self.refit(e))
            if self.endpoints:
                self._spawn(self._poll())
        self._queue = asyncio.Queue(self.queue_size)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._intake()),
                         *(loop.create_task(self._work()) for _ in range(self.concurrency))]

    async def aclose(self) -> None:
        for task in [*self._workers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._tasks, return_exceptions=True)
        if self.artifacts is not None:
            self.artifacts.close()
        if self.store is not None:
            self.store.close()

    # -- replicas: labels and routers from the shared database ------------------------------

    async def _poll(self) -> None:
        """Every ``poll_s`` seconds: other replicas' labels and newer published routers."""
        failing = False
        while True:
            await asyncio.sleep(self.poll_s)
            for e in self.endpoints.values():
                try:
                    await self._sync_labels(e)
                    await self._sync_router(e)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database away for a while: keep serving
                    e.count("sync_failed")
                    if not failing:  # once per outage, not every poll
                        log.warning("learning %s: cannot read the shared store (%s); serving "
                                    "the current router", e.name, exc)
                    failing = True
                else:
                    if failing:
                        log.warning("learning %s: the shared store answers again", e.name)
                    failing = False

    async def add_label(self, e: LearningState, row: LabelRow) -> None:
        """Store a label this replica has in its learner already (and remember its id)."""
        assert self.store is not None
        e.inserts_begun += 1
        e.inserts_pending += 1
        try:
            e.own_labels.add(await asyncio.to_thread(self.store.add_label, row))
        finally:
            e.inserts_pending -= 1

    async def _sync_labels(self, e: Learning, *, initial: bool = False) -> None:
        """Record the labels stored since the last look, but for this replica's own.

        A read that overlapped one of this replica's inserts is discarded (and made again at
        the next poll): its row could be visible before its id is known here, and would be
        learned twice. Ids are handed out before commits, so a label can become visible after
        one with a higher id (two replicas inserting at once): a gap in the ids read keeps the
        cursor below it, and those rows are read again (and skipped) until the gap fills or
        has been open ``GAP_S`` seconds (a rolled-back insert leaves one for good). The
        ``initial`` read, at start-up, takes what it finds as complete: gaps in the history
        are rolled-back inserts."""
        assert self.store is not None
        begun = e.inserts_begun
        if e.inserts_pending:
            return
        rows = await asyncio.to_thread(self.store.labels_since, e.name, e.label_cursor)
        if e.inserts_begun != begun:
            return
        for label_id, row in rows:
            if label_id in e.labels_seen:
                continue
            e.labels_seen.add(label_id)
            if label_id in e.own_labels:
                e.own_labels.discard(label_id)
            elif isinstance(e, CascadeLearning):
                e.learner.record(row.prompt, row.model, row.quality, row.cost_usd,
                                 score=row.score, scored=row.score is not None,
                                 weight=row.weight)
            else:
                e.learner.record(row.prompt, row.model, row.quality, row.cost_usd)
        if initial and e.labels_seen:
            e.label_cursor = max(e.labels_seen)
            e.labels_seen.clear()
        while e.label_cursor + 1 in e.labels_seen:
            e.label_cursor += 1
            e.labels_seen.discard(e.label_cursor)
        if not e.labels_seen:
            e.gap_since = None
            return
        now = time.monotonic()
        if e.gap_since is None:
            e.gap_since = now
        elif now - e.gap_since > GAP_S:  # given up on: skip to the next id read
            e.label_cursor = min(e.labels_seen) - 1
            while e.label_cursor + 1 in e.labels_seen:
                e.label_cursor += 1
                e.labels_seen.discard(e.label_cursor)
            e.gap_since = now if e.labels_seen else None

    async def _sync_router(self, e: Learning) -> None:
        """Swap in the newest published router if another replica published a newer one."""
        assert self.artifacts is not None
        if e.refitting:  # a local refit is running: it will publish, or the next look will do
            return
        kind = _kind(e)
        newest = await asyncio.to_thread(self.artifacts.latest_version, e.name, kind)
        if newest is None or newest <= e.artifact_version:
            return
        e.refitting = True
        try:
            artifact = await asyncio.to_thread(self.artifacts.latest, e.name, kind)
            if artifact is None or artifact.version <= e.artifact_version:
                return
            if artifact.publisher != self.replica_id:
                try:
                    if isinstance(e, CascadeLearning):
                        thresholds, rows = thresholds_from_payload(
                            artifact.payload, len(e.learner.models))
                        e.learner.adopt(thresholds, rows)
                    else:
                        snap, labels = await asyncio.to_thread(
                            snapshot_from_payload, artifact.payload, artifact.version)
                        await asyncio.to_thread(e.learner.adopt, snap, labels)
                except DataFormatError as exc:
                    # Unreadable here (a newer format, a bug): keep serving the current
                    # router and skip this version, rather than read it again every poll.
                    e.count("load_failed")
                    log.error("learning %s: cannot load router version %d published by %s; "
                              "still serving the current router: %s", e.name,
                              artifact.version, artifact.publisher, exc)
                    e.artifact_version = artifact.version
                    return
                self._swap_in(e)
                e.count("loaded")
                log.info("learning %s: serving router version %d published by %s", e.name,
                         artifact.version, artifact.publisher)
            e.artifact_version = artifact.version
        finally:
            e.refitting = False

    @staticmethod
    def _swap_in(e: EndpointLearning | CascadeLearning) -> None:
        """Serve the learner's current router and policy (a cascade: its thresholds)."""
        if isinstance(e, CascadeLearning):
            e.backend.cascade = e.learner.current.cascade  # the swap: one assignment
            return
        snap = e.learner.current
        # The swap: two assignments on the event loop, no await between them.
        e.backend.router, e.backend.policy = snap.router, snap.policy
        e.backend.batcher.router, e.backend.batcher.policy = snap.router, snap.policy

    async def _publish(self, e: Learning, labels: int) -> None:
        """Publish the router just refitted here, for the other replicas."""
        assert self.artifacts is not None
        if isinstance(e, CascadeLearning):
            payload: bytes | None = thresholds_payload(e.learner.current.cascade.thresholds,
                                                       labels)
        else:
            payload = await asyncio.to_thread(snapshot_payload, e.learner.current, labels)
        if payload is None:
            return
        version = await asyncio.to_thread(self.artifacts.publish, e.name, _kind(e), payload,
                                          publisher=self.replica_id)
        e.artifact_version = max(e.artifact_version, version)
        e.count("published")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the request path: one append --------------------------------------------------------

    def observe(self, endpoint: str, request: Request, completion: Completion,
                client: str | None, response_id: str, *, chunks: list[Chunk] | None = None
                ) -> bool:
        """Hand a finished request to the background intake, to be learned from under
        ``response_id`` (the request's ``x-routecast-request-id``); ``False`` when
        ``endpoint`` does not learn. A deque append and an event set: extracting the prompt,
        the feedback index, the rate limit and the queue all run in the intake task, off the
        request's path. Never blocks and never raises; beyond ``queue_size`` waiting requests
        one is not learned from (and counted).

        A streamed answer comes as its summary (``completion``, whose body is empty) and the
        ``chunks`` the client was sent: the intake assembles the answer's text from them
        (:func:`~routecast.server.stream_answer.answered`), and only for a request the rate
        limit admits."""
        e = self.endpoints.get(endpoint)
        if e is None:
            return False
        if len(self._inbox) >= self.queue_size:
            e.count("dropped")
            return True
        self._inbox.append((e, request, completion, client, response_id, chunks))
        self._wake.set()
        return True

    async def _intake(self) -> None:
        """Drain the inbox: index each request for feedback, and queue what the rate limit
        admits for the workers. Yields to the event loop between requests, so that a burst
        of intake never delays a client's request by more than one item's work."""
        assert self._queue is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox:
                self._admit(*self._inbox.popleft())
                await asyncio.sleep(0)

    def _admit(self, e: Learning, request: Request, completion: Completion,
               client: str | None, response_id: str, chunks: list[Chunk] | None) -> None:
        prompt = routing_text(request, e.backend.route_on if isinstance(e, EndpointLearning)
                              else "last_user")
        if request.allowed is not None and self.privacy is not None:
            prompt = self.privacy.redact(prompt)
        self._responses[response_id] = (e.name, prompt, completion.model, client)
        if len(self._responses) > MAX_RESPONSES:
            self._responses.popitem(last=False)
        if not e.admit():
            e.count("over_rate")
            return
        if chunks is not None:
            completion = answered(completion, chunks, request.api)
        strongest = self.table.strongest.get(e.name)
        baseline = (self.table.prices[strongest].cost_usd(completion.usage)
                    if strongest in self.table.prices else completion.cost_usd)
        item = _Served(e.name, prompt, request.body, request.api, completion.model,
                       answer_text(completion.body), baseline, request.allowed, response_id,
                       client, completion.trace.steps if completion.trace is not None else None)
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            e.count("dropped")

    # -- background work -------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            e = self.endpoints[item.endpoint]
            try:
                if isinstance(e, CascadeLearning):
                    await learn_cascade(self, e, item)
                else:
                    await self._learn(e, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in learning must not stop the workers
                log.exception("learning from a request to %s failed: %s", item.endpoint, exc)

    async def _learn(self, e: EndpointLearning, item: _Served) -> None:
        e.meter.watch(item.baseline_usd)
        e.count("observed")
        judge_ok = e.judge is not None and (item.allowed is None or e.judge in item.allowed)
        if not judge_ok or item.prompt == "":
            return
        judge_usd = self.judge_usd(e, item)
        served = item.model if item.answer else None
        # Predicting for the explorer costs a millisecond or more of CPU: in a worker thread,
        # so that it never holds the event loop that clients' requests run on.
        plan = await asyncio.to_thread(self._plan, e, item, served, judge_usd)
        await asyncio.gather(*(self._label(e, item, c.model, c.served) for c in plan))
        if e.learner.due() and not e.refitting:
            await self.refit(e)

    @staticmethod
    def _plan(e: EndpointLearning, item: _Served, served: str | None, judge_usd: float
              ) -> list[Candidate]:
        cands = e.learner.candidates(item.prompt, served, judge_usd=judge_usd,
                                     allowed=item.allowed)
        return e.explorer.plan(cands, e.meter)

    def judge_usd(self, e: LearningState, item: _Served) -> float:
        """What grading the answer of ``item`` costs (estimated from the text's length)."""
        assert e.judge is not None
        return self.table.prices[e.judge].cost_usd(Usage(
            estimate_tokens(e.rubric) + estimate_tokens(item.prompt)
            + estimate_tokens(item.answer or "") + 12, JUDGE_MAX_TOKENS))

    async def grade(self, e: LearningState, item: _Served, answer: str) -> float | None:
        """The judge's score in [0, 1] of ``answer`` to ``item``'s prompt; ``None`` when the
        call failed or its verdict could not be read (counted)."""
        assert e.judge is not None
        body = {"model": e.judge, "messages": judge_messages(item.prompt, answer, e.rubric),
                "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
        verdict = await self.call(e, self.table.backends[e.judge], body, item, "judge", e.judge)
        score = (parse_score(answer_text(verdict.body) or "", e.judge_scale) if verdict
                 else None)
        if score is None:
            e.count("no_verdict")
        return score

    async def _label(self, e: EndpointLearning, item: _Served, model: str, served: bool
                     ) -> None:
        answer, cost = item.answer, None
        if not served:
            shadow = await self.call(e, e.backend.backends[model], dict(item.body, stream=False),
                                      item, "shadow", model)
            if shadow is None:
                return
            answer, cost = answer_text(shadow.body), shadow.cost_usd
        if not answer:
            return
        score = await self.grade(e, item, answer)
        if score is None:
            return
        e.learner.record(item.prompt, model, score, cost)
        e.count("labels")
        if self.store is not None:
            await self.add_label(e, LabelRow(
                e.name, item.prompt, model, score, cost, "judge" if served else "shadow",
                item.response_id, item.client))

    async def call(self, e: LearningState, backend: Backend, body: dict[str, Any],
                    item: _Served, kind: str, model: str) -> Completion | None:
        body.pop("stream_options", None)
        try:
            async with asyncio.timeout(e.timeout_s):
                result = await backend.complete(Request(body, "chat" if kind == "judge"
                                                        else item.api, None, item.allowed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # slow, failing, refused: no label, nothing else
            e.count(f"{kind}_failed")
            log.info("learning %s call to %s failed: %s", kind, model, exc)
            return None
        e.meter.charge(result.cost_usd, kind)
        if self.store is not None:
            await asyncio.to_thread(self.store.add_spend, e.name, kind, model, result.cost_usd)
        return result

    async def refit(self, e: Learning) -> None:
        e.refitting = True
        try:
            try:
                report: RefitReport | CascadeRefit = await asyncio.to_thread(e.learner.refit)
            except Exception as exc:
                log.error("refit of %s failed, still serving the current router: %s", e.name,
                          exc)
                return
            self._swap_in(e)
            e.count("refits")
            if self.artifacts is not None:
                try:
                    await self._publish(e, report.rows if isinstance(report, CascadeRefit)
                                        else report.labels)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # serving the refit here goes on regardless
                    e.count("publish_failed")
                    if not e.publish_failing:  # once per run of failures, with the cause
                        log.error("learning %s: cannot publish the refitted router (served "
                                  "here, not on the other replicas): %s", e.name, exc,
                                  exc_info=True)
                    e.publish_failing = True
                else:
                    if e.publish_failing:
                        log.warning("learning %s: publishing refitted routers again", e.name)
                    e.publish_failing = False
        finally:
            e.refitting = False
        if self.store is None:
            return
        if isinstance(report, CascadeRefit):  # the thresholds tuned, in the router column
            kind = "thresholds " + ",".join("never" if t == math.inf else f"{t:.4g}"
                                            for t in report.thresholds)
            cost_weight = 0.0
        else:
            kind, cost_weight = report.kind, report.cost_weight
        await asyncio.to_thread(self.store.add_refit, e.name, report.version, report.swapped,
                                kind, report.labels, report.scores, cost_weight,
                                report.seconds)

    # -- feedback --------------------------------------------------------------------------

    async def feedback(self, body: Mapping[str, Any], client: str | None) -> dict[str, Any]:
        """Record a client's score of an answer: ``{"response_id": ..., "score": 0..1}``."""
        rid, score = body.get("response_id"), body.get("score")
        if not isinstance(rid, str) or not rid:
            raise RequestError("`response_id` must be the x-routecast-request-id of an answer",
                               status=400, param="response_id")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise RequestError("`score` must be a number from 0 (bad) to 1 (good)",
                               status=400, param="score")
        known = self._responses.get(rid)
        if known is None:
            raise RequestError(f"no answer with request id {rid[:64]!r} is known here (ids "
                               "are kept for the latest answers of learning endpoints)",
                               status=404, param="response_id", code="response_not_found")
        endpoint, prompt, model, owner = known
        if owner is not None and owner != client:
            raise RequestError("feedback on an answer must come with the key that asked for "
                               "it", status=403, param="response_id", code="not_your_response")
        e = self.endpoints[endpoint]
        e.learner.record(prompt, model, float(score))
        e.count("feedback")
        if self.store is not None:
            await self.add_label(e, LabelRow(
                endpoint, prompt, model, float(score), None, "feedback", rid, client))
        if e.learner.due() and not e.refitting:
            self._spawn(self.refit(e))
        return {"object": "feedback", "response_id": rid, "endpoint": endpoint,
                "model": model, "score": float(score)}


def answer_text(body: Mapping[str, Any]) -> str | None:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, Mapping):
        content = message.get("content")
        return content if isinstance(content, str) else None
    text = first.get("text")
    return text if isinstance(text, str) else None


def _kind(e: Learning) -> str:
    """The artifact kind ``e`` publishes: a router, or a cascade's thresholds."""
    return CASCADE_KIND if isinstance(e, CascadeLearning) else KIND
