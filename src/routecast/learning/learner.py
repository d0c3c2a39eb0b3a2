"""The learning loop's core: labels in, a refitted, validated, recalibrated router out.

A :class:`Learner` owns one endpoint's :class:`~routecast.learning.labels.LabelTable` and its
current (router, policy) pair, which it replaces in one assignment (so a reader sees the old
pair or the new one, never a mix):

* **cold start** from nothing: until labels arrive, a router that prefers the endpoint's
  dearest model (``nominal_cost_usd``: its price for a typical request), so first clients get
  the safest answers and their judged answers are the first labels; or from a **prior**
  router fitted on public data, its models mapped to the endpoint's (``model_map``);
* **refit** when :meth:`due`: early after 25, 50, 100, ... labels, then every
  ``refit_every`` labels. Candidates are the zero router (each model's mean label, shrunk:
  mixing single models) and the configured router family, both fitted on the training labels;
  each is scored on the held-out labels (Brier score) against the current router, and the best
  replaces the current one unless it validates worse beyond noise: by more than
  ``swap_tolerance_se`` standard errors of the paired difference of squared errors. A refit
  that validates worse than that is not swapped in (it is reported, with both scores). The
  tolerance is there because the comparison is not fair to the refit: the current router was
  itself chosen on most of the same held-out labels, so its score there runs low (the
  winner's curse). Without it, on the RouterBench subset (seed 1, exact judge) the router
  fitted on 2,525 labels lost six refits in a row by 0.0002-0.0015 and still served after
  4,363 labels (82.8 % of the offline gain; the same labels refitted: 105.5 %);
* **trust**: a model with fewer than ``min_model_labels`` labels is explored but not routed
  to (its predicted quality is held at 0 for the policy). A few labels of a dear model that
  happened to be right made the router send it traffic it did not deserve: on the RouterBench
  subset, masking models with under 30 labels raised the test AIQ of a router refitted on the
  labels of 1,000 requests from 0.809 to 0.848 (and from 0.801 to 0.844 under 10 % judge
  noise). The exception is the cold start's choice, the dearest model: it is trusted from the
  start. Its labels are cheap only while it serves (a judge call; a shadow answer of it costs
  as much as the request), so once masked it was never served again, stayed under the
  threshold, and the endpoint lost its best model for good: under 10 % judge noise a few
  flipped verdicts of GPT-4 at the first refit did that in one of three seeds (test AIQ below
  the zero router's after 1,000 requests);
* **anchor**: the cold start's model is explored first, before the value of its labels is
  weighed, until it has ``anchor_labels`` labels. It is the model the quality target is
  measured against, and its labels dry up as soon as the policy stops serving it (a shadow of
  it costs a whole answer), so a few unlucky verdicts could starve it: under 10 % judge noise
  (seed 4) GPT-4 had 69 labels after 1,000 requests, their mean 0.67 against a true 0.84 on
  those prompts, the router ranked it below cheaper models and reached -117 % of the offline
  gain; with the anchor (100 labels) and the swap tolerance 62 % (without them: -145 %);
* **costs**: a model whose cost no training label recorded gets its price (``nominal_cost_usd``,
  scaled to the recorded costs) rather than the router's dearest-known default, and, with
  ``prompt_cost``, each model's cost is predicted per prompt from the labels' recorded costs
  (:mod:`routecast.learning.cost`);
* **judge noise**: with ``judge_noise`` ``p`` (the share of verdicts a judge flips), the served
  router's predictions and the calibration labels are de-biased (:class:`DebiasedRouter`), so
  that the quality target means true quality;
* **recalibration** of the policy to the endpoint's target (a quality fraction of the best
  single model, or a mean budget per query) on the most recent held-out labels (imputed where
  sparse: :mod:`routecast.learning.calibrate`), after every refit whether or not the router
  changed: a shift in the traffic moves the calibration even when the router stays. The
  window's prompts are weighted to the mix of the latest ``calibration_recent`` labelled
  prompts (:func:`~routecast.learning.calibrate.mix_weights`): the window (300 held-out
  prompts, about 2,000 requests at a 15 % holdout) is slow to fill with a new mix, and a
  policy calibrated on the old one kept the old cost weight after a shift.

It also turns a request into exploration :class:`~routecast.learning.explore.Candidate` s: the
current router's predictions, and ``nearby``, a kernel count of each model's labels on similar
prompts: ``sum_i max(cos(x, x_i), 0) ** kernel_power`` over the labelled training prompts
``x_i`` (TF-IDF rows of the current router's encoder, or one fitted on the labels).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset, FloatArray
from routecast.encoders import make_encoder
from routecast.learning.calibrate import calibrate, mix_weights, squared_errors
from routecast.learning.cost import PromptCostModel, PromptCostRouter
from routecast.learning.explore import Candidate
from routecast.learning.labels import LabelTable
from routecast.policy import Policy
from routecast.routers import make_router
from routecast.routers.base import Router


@dataclass
class LearnerSettings:
    """How an endpoint learns; the server builds it from the config's ``learning:`` block."""

    router: str = "linear"
    router_params: dict[str, Any] = field(default_factory=dict)
    refit_every: int = 300
    first_refit: int = 25
    holdout_fraction: float = 0.15
    #: Held-out prompts (most recent first) the policy is calibrated on.
    calibration_window: int = 300
    #: The latest labelled prompts (any part) that stand for the current traffic mix: the
    #: calibration window's prompts are weighted by how like these prompts they are (a
    #: density ratio: :func:`~routecast.learning.calibrate.mix_weights`), so the policy
    #: follows a shift in the mix; 0: every window prompt weighs the same.
    calibration_recent: int = 100
    min_holdout_labels: int = 20
    quality_fraction: float | None = 0.95
    budget_usd_per_query: float | None = None
    kernel_power: float = 3.0
    #: Labels a model needs before it is routed to (explored before that).
    min_model_labels: int = 30
    #: A refit's best candidate stays out only if its held-out Brier score is worse than the
    #: current router's by more than this many standard errors of the paired difference
    #: (:func:`worse`); 0: by any margin.
    swap_tolerance_se: float = 1.0
    #: Labels the cold start's model (the dearest) is explored to first, like every model's
    #: first few (the explorer's ``warmup``); see the module docstring's **anchor**.
    anchor_labels: int = 100
    #: Predict each model's cost per prompt from the labels' recorded costs
    #: (:mod:`routecast.learning.cost`) instead of the router's mean cost per model.
    prompt_cost: bool = True
    #: Parts of the training labels the router family is refitted on to measure, per model,
    #: how far its predictions are worth following (:func:`shrink`); 0 or 1: taken as fitted.
    shrink_folds: int = 3
    #: The share of the judge's binary verdicts that are wrong (flipped), if known
    #: (``learning.judge.noise``): labels and predictions are de-biased by it (see
    #: :class:`DebiasedRouter`).
    judge_noise: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The router and policy in use, as one value (swapped whole). ``router`` serves (models
    without enough labels masked); ``raw`` is the fitted router itself, which the explorer and
    validation read."""

    router: Router
    policy: Policy
    version: int
    kind: str
    raw: Router | None = None

    @property
    def fitted(self) -> Router:
        return self.raw if self.raw is not None else self.router


@dataclass
class RefitReport:
    version: int
    swapped: bool
    kind: str
    labels: int
    scores: dict[str, float]
    cost_weight: float
    seconds: float


class ColdRouter(Router):
    """No labels yet: equal quality for every model, broken towards the dearer one, so a
    quality-seeking policy answers with the strongest model. Not registered: internal."""

    name = "cold"

    def __init__(self, models: Sequence[str], nominal_cost_usd: Sequence[float]) -> None:
        self.models = tuple(models)
        self.nominal_cost_usd = tuple(nominal_cost_usd)

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> ColdRouter:
        self.models_ = self.models
        self.mean_cost_usd_ = np.asarray(self.nominal_cost_usd, dtype=np.float64)
        rank = np.argsort(np.argsort(self.mean_cost_usd_))
        self.quality_ = 0.5 + 1e-6 * rank
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        return np.tile(self.quality_, (len(prompts), 1))


class MappedRouter(Router):
    """A router fitted on other model names (public data), answering for the endpoint's models
    through ``model_map`` (endpoint model -> the router's model). Models it does not cover
    get the mean of its predictions and the dearest nominal cost."""

    name = "mapped"

    def __init__(self, inner: Router, models: Sequence[str], model_map: Mapping[str, str],
                 nominal_cost_usd: Sequence[float]) -> None:
        self.inner = inner
        self.models = tuple(models)
        self.model_map = dict(model_map)
        self.nominal_cost_usd = tuple(nominal_cost_usd)

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> MappedRouter:
        from routecast.errors import ConfigError

        inner_models = list(self.inner.models_)
        cols = [inner_models.index(self.model_map.get(m, m))
                if self.model_map.get(m, m) in inner_models else -1 for m in self.models]
        if all(c < 0 for c in cols):
            raise ConfigError("the prior router knows none of the endpoint's models; map them "
                              "with learning.model_map (endpoint model: prior router's model)")
        self.cols_ = cols
        self.models_ = self.models
        self.mean_cost_usd_ = np.asarray(self.nominal_cost_usd, dtype=np.float64)
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        inner = self.inner.predict(list(prompts))
        fill = inner.mean(axis=1)
        return np.column_stack([inner[:, c] if c >= 0 else fill for c in self.cols_])


class TrustedRouter(Router):
    """Serves ``inner``'s predictions with the quality of untrusted models held at 0, so no
    policy routes to them; costs unchanged. Not registered: internal."""

    name = "trusted"

    def __init__(self, inner: Router, trusted: Sequence[bool]) -> None:
        self.inner = inner
        self.trusted = tuple(trusted)

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> TrustedRouter:
        self.models_ = tuple(self.inner.models_)
        self.mean_cost_usd_ = self.inner.mean_cost_usd_
        self.mask_ = ~np.asarray(self.trusted, dtype=bool)
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        q = self.inner.predict(prompts)
        q[:, self.mask_] = 0.0
        return q

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        return self.inner.predict_cost(prompts)


class ShrunkRouter(Router):
    """``inner``'s predictions of each model pulled towards that model's mean label by the
    slope its out-of-fold predictions earned (see :func:`shrink`). Not registered: internal."""

    name = "shrunk"

    def __init__(self, inner: Router, slope: FloatArray, center: FloatArray,
                 mean: FloatArray) -> None:
        self.inner = inner
        self.slope = np.asarray(slope, dtype=np.float64)
        self.center = np.asarray(center, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> ShrunkRouter:
        self.models_ = tuple(self.inner.models_)
        self.mean_cost_usd_ = self.inner.mean_cost_usd_
        encoder = getattr(self.inner, "encoder_", None)
        if encoder is not None:  # what the density count and the cost estimate read
            self.encoder_ = encoder
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        q = self.inner.predict(prompts)
        return np.asarray(np.clip(self.mean + self.slope * (q - self.center), 0.0, 1.0))

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        return self.inner.predict_cost(prompts)


def shrink(name: str, params: Mapping[str, Any], train: Dataset, fitted: Router,
           folds: int = 3, prior: float = 2.0, seed: int = 0) -> ShrunkRouter:
    """``fitted`` (of router family ``name`` on ``train``) shrunk per model: fitted again on
    all but one of ``folds`` parts of the prompts and asked about the held-out part, each
    model's labels regressed on those out-of-fold predictions give a slope, clipped to
    [0, 1] (0: the predictions carry nothing beyond the mean; 1: take them as they are), and
    a centre; the mean is the model's mean label shrunk towards the mean of all labels by
    ``prior`` pseudo-labels."""
    n, m = train.n_prompts, train.n_models
    part = np.random.default_rng(seed).integers(0, folds, n)
    oof = np.full((n, m), np.nan)
    for f in range(folds):
        fit_rows = np.flatnonzero(part != f)
        rest = np.flatnonzero(part == f)
        if rest.size == 0 or fit_rows.size < 20:
            continue
        r = make_router(name, **params).fit(train.take(fit_rows))
        oof[rest] = r.predict([train.prompts[i] for i in rest])
    y = train.quality
    have = ~np.isnan(y) & ~np.isnan(oof)
    overall = float(np.nanmean(y))
    slope, center, mean = np.zeros(m), np.zeros(m), np.full(m, overall)
    for j in range(m):
        rows = have[:, j]
        k = int(rows.sum())
        if k == 0:
            continue
        pj, yj = oof[rows, j], y[rows, j]
        center[j] = float(pj.mean())
        mean[j] = (float(yj.sum()) + prior * overall) / (k + prior)
        var = float(((pj - center[j]) ** 2).sum())
        if k >= 5 and var > 0:
            slope[j] = float(np.clip(((pj - center[j]) * (yj - yj.mean())).sum() / var, 0, 1))
    return ShrunkRouter(fitted, slope, center, mean).ready()


def worse(new: FloatArray, current: FloatArray, tolerance_se: float) -> bool:
    """Whether squared errors ``new`` are worse than ``current`` (paired, same labels) by
    more than ``tolerance_se`` standard errors of the mean difference."""
    d = new - current
    if d.size < 2:
        return bool(d.mean() > 0)
    return bool(d.mean() > tolerance_se * d.std(ddof=1) / math.sqrt(d.size))


def debias(value: FloatArray, noise: float) -> FloatArray:
    """What a judge that flips a share ``noise`` of its verdicts saw, ``E[y_obs] = noise +
    (1 - 2 noise) y``, solved for ``y``. Unclipped: the mean of de-biased labels is unbiased,
    single ones may fall outside [0, 1]."""
    return np.asarray((value - noise) / (1.0 - 2.0 * noise), dtype=np.float64)


class DebiasedRouter(Router):
    """``inner`` fitted on a noisy judge's labels predicts ``E[y_obs]``; this one predicts the
    true quality, ``debias(E[y_obs])`` clipped to [0, 1]. A judge noise ``p`` squeezes every
    predicted quality towards 0.5 by ``1 - 2p``: the choice at a cost weight is unchanged (it
    is the choice at another weight), but the calibrated point is not: a quality target of 95 %
    of the best model's observed mean sits ``0.05 p / (1 - 2p)`` lower in true quality (3
    points at ``p = 0.1``), so the endpoint settled below its target. Not registered."""

    name = "debiased"

    def __init__(self, inner: Router, noise: float) -> None:
        self.inner = inner
        self.noise = noise

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> DebiasedRouter:
        self.models_ = tuple(self.inner.models_)
        self.mean_cost_usd_ = self.inner.mean_cost_usd_
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        return np.clip(debias(self.inner.predict(prompts), self.noise), 0.0, 1.0)

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        return self.inner.predict_cost(prompts)


class Learner:
    """One endpoint's learning state; see the module docstring."""

    def __init__(self, models: Sequence[str], nominal_cost_usd: Sequence[float],
                 settings: LearnerSettings | None = None, *,
                 prior: Router | None = None, model_map: Mapping[str, str] | None = None
                 ) -> None:
        self.models = tuple(models)
        self.settings = settings or LearnerSettings()
        s = self.settings
        self.nominal_cost_usd = np.asarray(nominal_cost_usd, dtype=np.float64)
        self.labels = LabelTable(self.models, holdout_fraction=s.holdout_fraction, seed=s.seed)
        if prior is not None:
            router: Router = MappedRouter(prior, self.models, model_map or {},
                                          self.nominal_cost_usd.tolist()).ready()
            kind = "prior"
        else:
            router = ColdRouter(self.models, self.nominal_cost_usd.tolist()).ready()
            kind = "cold"
        # A prior router's policy is calibrated once held-out labels exist; until then it
        # seeks quality, as the cold router does.
        self.current = Snapshot(router, Policy(0.0), 0, kind)
        self.reports: list[RefitReport] = []
        self._next_refit = s.first_refit
        self._density: tuple[Any, Any, FloatArray] | None = None

    # -- serving and exploring -------------------------------------------------------------

    def route(self, prompts: Sequence[str]) -> list[str]:
        snap = self.current
        return snap.router.route(list(prompts), snap.policy)

    def nearby(self, prompt: str) -> FloatArray:
        """Kernel count of each model's training labels on prompts like ``prompt``."""
        if self._density is None:
            return np.zeros(len(self.models))
        encoder, rows_t, mask = self._density
        sim = encoder.transform([prompt]) @ rows_t
        sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim).ravel()
        w = np.clip(sim, 0.0, 1.0) ** self.settings.kernel_power
        return np.asarray(w @ mask, dtype=np.float64)

    def candidates(self, prompt: str, served: str | None, *, judge_usd: float,
                   allowed: frozenset[str] | None = None) -> list[Candidate]:
        """One candidate per model ``allowed`` to see ``prompt`` and not yet labelled on it;
        ``judge_usd`` is what judging one answer to it would cost."""
        snap = self.current
        quality = snap.fitted.predict([prompt])[0]
        cost = snap.fitted.predict_cost([prompt])[0]
        near = self.nearby(prompt)
        counts = self.labels.counts()
        anchor = int(np.argmax(self.nominal_cost_usd))
        out = []
        for j, m in enumerate(self.models):
            if allowed is not None and m not in allowed and m != served:
                continue
            if self.labels.has(prompt, m):
                continue
            is_served = m == served
            out.append(Candidate(m, is_served, float(quality[j]), float(cost[j]),
                                 float(near[j]),
                                 judge_usd + (0.0 if is_served else float(cost[j])),
                                 int(counts[j]),
                                 self.settings.anchor_labels if j == anchor else 0))
        return out

    def record(self, prompt: str, model: str, quality: float,
               cost_usd: float | None = None) -> None:
        self.labels.add(prompt, model, quality, cost_usd)

    # -- refitting -------------------------------------------------------------------------

    def due(self) -> bool:
        return self.labels.n_labels >= self._next_refit

    def refit(self) -> RefitReport:
        """Fit the candidates, keep the best if it validates better, recalibrate, swap."""
        t0 = time.perf_counter()
        s = self.settings
        n = self.labels.n_labels
        self._next_refit = n + min(max(n, s.first_refit), s.refit_every)
        train = self.labels.dataset("train")
        hold = self.labels.dataset("holdout", last=s.calibration_window)
        current = self.current
        fitted = self._fit_candidates(train) if train is not None else {}
        scores: dict[str, float] = {}
        enough = hold is not None and int(hold.labelled.sum()) >= s.min_holdout_labels
        if enough:
            assert hold is not None
            errors = {k: squared_errors(r, hold) for k, r in fitted.items()}
            if current.kind != "cold":
                errors["current"] = squared_errors(current.fitted, hold)
            scores = {k: float(e.mean()) for k, e in errors.items()}
            if current.kind == "cold":
                scores["current"] = math.inf
            best = min(scores, key=lambda k: scores[k])
            if best == "current" and len(errors) > 1:
                # The refit's best stays out only if it validates worse beyond noise.
                new = min((k for k in errors if k != "current"), key=lambda k: scores[k])
                if not worse(errors[new], errors["current"], s.swap_tolerance_se):
                    best = new
        else:  # nothing to validate on yet: mixing single models is the safe step from cold
            best = "zero" if current.kind == "cold" and "zero" in fitted else "current"
        swapped = best not in ("current",)
        router, kind = (fitted[best], best) if swapped else (current.fitted, current.kind)
        serving = router
        if kind not in ("cold", "prior"):
            if s.prompt_cost and train is not None:
                serving = self._with_prompt_cost(router, train)
            trusted = self.labels.counts() >= s.min_model_labels
            # The cold start's choice is trusted from the start (see the module docstring).
            trusted[int(np.argmax(self.nominal_cost_usd))] = True
            if trusted.any() and not trusted.all():
                serving = TrustedRouter(serving, trusted.tolist()).ready()
        calib = hold if enough else train
        policy = current.policy
        if s.judge_noise > 0 and kind not in ("cold", "prior"):
            serving = DebiasedRouter(serving, s.judge_noise).ready()
        if calib is not None and kind != "cold":
            policy = calibrate(serving, calib, quality_fraction=s.quality_fraction,
                               budget_usd=s.budget_usd_per_query,
                               labels=(debias(calib.quality, s.judge_noise)
                                       if s.judge_noise > 0 else None),
                               weights=self._mix_weights(router, calib))
        self.current = Snapshot(serving, policy, current.version + 1, kind, router)  # the swap
        if swapped or self._density is None:
            self._build_density(router, train)
        report = RefitReport(self.current.version, swapped, kind, n, scores,
                             policy.cost_weight, time.perf_counter() - t0)
        self.reports.append(report)
        return report

    def _fit_candidates(self, train: Dataset) -> dict[str, Router]:
        """The refit's candidates fitted on ``train``, by name: the zero router and the
        router family (shrunk)."""
        s = self.settings
        fitted: dict[str, Router] = {}
        fitted["zero"] = make_router("best-single", prior=2.0).fit(train)
        self._fill_unknown_costs(fitted["zero"], train)
        if train.n_prompts >= 20 and len(set(train.prompts)) >= 20:
            fitted[s.router] = make_router(s.router, **s.router_params).fit(train)
            self._fill_unknown_costs(fitted[s.router], train)
            if s.shrink_folds > 1:
                fitted[s.router] = shrink(s.router, s.router_params, train,
                                          fitted[s.router], folds=s.shrink_folds,
                                          seed=s.seed)
        return fitted

    def adopt(self, snap: Snapshot, labels: int) -> None:
        """Serve ``snap``, a router refitted elsewhere (another replica, on ``labels``
        labels), as if this learner had made it: one assignment swaps it in, and the next
        refit waits as it would after a refit on that many labels (so replicas sharing the
        labels do not all refit at the same count). Blocking (rebuilds the exploration
        kernel): call it from a worker thread, as :meth:`refit`."""
        s = self.settings
        self._next_refit = max(self._next_refit,
                               labels + min(max(labels, s.first_refit), s.refit_every))
        self.current = Snapshot(snap.router, snap.policy, self.current.version + 1, snap.kind,
                                snap.raw)  # the swap
        self._build_density(snap.fitted, self.labels.dataset("train"))

    def _mix_weights(self, router: Router, calib: Dataset) -> FloatArray | None:
        """Weights of the calibration prompts for the current traffic mix (see
        ``calibration_recent``); ``None`` (equal) when off or when there is no encoder yet."""
        s = self.settings
        if s.calibration_recent <= 0:
            return None
        encoder = getattr(router, "encoder_", None)
        if encoder is None or not hasattr(encoder, "transform"):
            if self._density is None:
                return None
            encoder = self._density[0]
        recent = self.labels.prompts[-s.calibration_recent:]
        return mix_weights(encoder.transform(recent), encoder.transform(list(calib.prompts)))

    def _cost_means(self, train: Dataset) -> FloatArray:
        """Each model's mean recorded cost in ``train``; where none is recorded, its nominal
        cost scaled to the recorded ones (the median ratio over the models with both)."""
        known = ~np.isnan(train.cost_usd)
        have = known.any(axis=0)
        means = np.nansum(train.cost_usd, axis=0) / np.maximum(known.sum(axis=0), 1)
        nominal = self.nominal_cost_usd
        both = have & (nominal > 0)
        scale = float(np.median(means[both] / nominal[both])) if both.any() else 1.0
        return np.asarray(np.where(have, means, nominal * scale), dtype=np.float64)

    def _fill_unknown_costs(self, router: Router, train: Dataset) -> None:
        """A router gives a model whose cost it never saw the dearest known mean (so that no
        policy prefers it for being cheap without evidence). The learner knows better, each
        model's price: such a model gets its nominal cost, scaled to the recorded ones. Else
        a cheap model whose few labels were all held out looked as dear as the dearest, was
        never routed to and never worth a shadow label, and stayed unknown: on the
        RouterBench subset under 10 % judge noise, Yi-34B (the second best model, at 7 % of
        GPT-4's cost) had 2 labels after 1,000 requests."""
        known = ~np.isnan(train.cost_usd)
        if known.any(axis=0).all() or not known.any():
            return
        router.mean_cost_usd_ = np.where(known.any(axis=0), router.mean_cost_usd_,
                                         self._cost_means(train))

    def _with_prompt_cost(self, router: Router, train: Dataset) -> Router:
        """``router`` with costs per prompt (:mod:`routecast.learning.cost`), fitted on the
        training labels' recorded costs; ``router`` itself while too few costs are known."""
        encoder = getattr(router, "encoder_", None)
        if encoder is None or not hasattr(encoder, "transform"):
            encoder = (self._density[0] if self._density is not None
                       else make_encoder("tfidf").fit(train.prompts))
        model = PromptCostModel.fit(encoder, train, self._cost_means(train))
        return router if model is None else PromptCostRouter(router, model).ready()

    def _build_density(self, router: Router, train: Dataset | None) -> None:
        if train is None:
            return
        encoder = getattr(router, "encoder_", None)
        if encoder is None or not hasattr(encoder, "transform"):
            encoder = make_encoder("tfidf").fit(train.prompts)
        rows = encoder.transform(list(train.prompts))
        rows_t = rows.T.tocsr() if hasattr(rows, "tocsr") else np.ascontiguousarray(rows.T)
        self._density = (encoder, rows_t, train.labelled.astype(np.float64))
