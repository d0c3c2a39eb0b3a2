"""The ``learning:`` block of a routed endpoint (see ``routecast.learning``), and of a cascade
endpoint (:class:`CascadeLearningConfig`)::

    endpoints:
      auto:
        type: routed
        # router: routers/public   # optional: a prior router fitted on public data (its
        # model_map: {gpt-4-1106-preview: big}  # models mapped to ours); omit to start cold
        learning:
          models: [small, medium, big]   # cold start: the models to learn to route among
          judge: {model: grader}         # any configured model; optional rubric, scale (its
                                         # replies' range, 10), and noise: the share of its
                                         # verdicts that are wrong, if known
          strategy: active               # or uniform (shadow_fraction x shadows_per_request)
          spend_fraction: 0.2            # pace: <= 20 % of what the strongest model would cost
          budget_usd: 50                 # hard cap on shadow answers + judge calls, in all
          refit_every: 300               # labels between refits (early refits at 25, 50, ...)
          quality_fraction: 0.95         # target the policy is recalibrated to (or
                                         # budget_usd_per_query)
          calibration_window: 300        # held-out prompts the policy is calibrated on,
          calibration_recent: 100        # weighted to the latest 100 prompts' mix (0: equal)
          swap_tolerance_se: 1.0         # a refit worse within 1 standard error still swaps
          anchor_labels: 100             # the dearest model's labels bought first
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid")


class JudgeConfig(BaseModel):
    model_config = _STRICT
    #: A configured model that grades answers.
    model: str
    rubric: str | None = None
    #: The share of the judge's verdicts that are wrong (flipped), when known (e.g. measured
    #: against feedback or a stronger judge): labels and predictions are de-biased by it, so
    #: that the quality target means true quality. 0: taken at its word.
    noise: float = Field(default=0.0, ge=0, lt=0.5)
    #: The judge replies with a number from 0 to ``scale`` (10: the default rubric's; 1: a
    #: judge that replies with a probability, such as the replay fleet's).
    scale: float = Field(default=10.0, gt=0)


class _LearningBase(BaseModel):
    """What routed and cascade endpoints' ``learning:`` blocks share."""

    model_config = _STRICT
    judge: JudgeConfig | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    spend_fraction: float | None = Field(default=0.2, ge=0)
    refit_every: int = Field(default=300, ge=1)
    first_refit: int = Field(default=25, ge=1)
    holdout_fraction: float = Field(default=0.15, gt=0, lt=1)
    quality_fraction: float | None = Field(default=0.95, gt=0, le=1.5)
    budget_usd_per_query: float | None = Field(default=None, ge=0)
    #: Background work waiting at most (requests beyond it are not learned from).
    queue_size: int = Field(default=1000, ge=1)
    #: Background tasks working the queue.
    concurrency: int = Field(default=4, ge=1, le=64)
    #: At most this many requests per second are learned from (the rest are not queued):
    #: shadows and judge calls run in the proxy's own process, so under heavy traffic they
    #: would take CPU from clients' requests. 0: no limit.
    max_learned_per_s: float = Field(default=10.0, ge=0)
    #: The most one shadow or judge call may take.
    timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> _LearningBase:
        if self.budget_usd_per_query is not None:
            self.quality_fraction = None
        return self


class LearningConfig(_LearningBase):
    """How a routed endpoint learns from its traffic; every default is documented above."""

    models: list[str] = Field(default_factory=list)
    router: str = "linear"
    strategy: Literal["active", "uniform"] = "active"
    shadow_fraction: float = Field(default=0.3, ge=0, le=1)
    shadows_per_request: int = Field(default=2, ge=0, le=16)
    max_labels_per_request: int = Field(default=6, ge=1, le=32)
    #: The most recent held-out prompts the policy is recalibrated on (shorter: follows a
    #: shift in the traffic sooner, noisier).
    calibration_window: int = Field(default=300, ge=10)
    #: The latest labelled prompts that stand for the current traffic mix: the window's
    #: prompts are weighted by how like them they are (a density ratio), so the policy follows
    #: a shift in the mix within about this many requests. 0: equal weights.
    calibration_recent: int = Field(default=100, ge=0)
    #: A refit that validates worse than the router in use is swapped in anyway unless it is
    #: worse by more than this many standard errors (held-out Brier, paired). 0: any worse
    #: score keeps it out.
    swap_tolerance_se: float = Field(default=1.0, ge=0)
    #: Labels of the cold start's model (the dearest) bought first, before any other
    #: exploration, while it has fewer. 0: only the explorer's first 10, as for every model.
    anchor_labels: int = Field(default=100, ge=0)
    #: Predict each model's cost per prompt from the labels' recorded costs (false: the
    #: router's mean cost per model).
    prompt_cost: bool = True


class CascadeLearningConfig(_LearningBase):
    """How a cascade endpoint learns its thresholds (:mod:`routecast.learning.cascade`)::

        endpoints:
          smart:
            type: cascade
            models: [small, large]       # thresholds optional: without them it starts by
            learning:                    # never keeping an early answer
              judge: {model: grader}     # required: every step's answer is graded
              spend_fraction: 0.1        # pace of judge calls and shadow answers
              refit_every: 50            # complete rows (every step labelled) between refits
              quality_fraction: 0.95     # or budget_usd_per_query

    ``refit_every`` and ``first_refit`` count complete rows (one prompt with every step's
    answer graded), not labels."""

    judge: JudgeConfig
    refit_every: int = Field(default=50, ge=1)
    first_refit: int = Field(default=30, ge=2)
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1)
    #: Held-out complete rows needed before tuned thresholds may be swapped in.
    min_holdout_rows: int = Field(default=10, ge=1)
    #: Threshold levels tried per step at a refit (quantiles of the step's scores).
    n_levels: int = Field(default=16, ge=2, le=64)
