"""From a config to the endpoint table: one :class:`Backend` per name a client may ask for.

Each configured model gets exactly one HTTP backend (one connection pool), shared by every
endpoint that uses it. Routers are loaded here, at startup, never per request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routecast.backends.base import Backend, Price, close_all, start_all
from routecast.backends.cascade import CascadeBackend
from routecast.backends.fallback import FallbackBackend
from routecast.backends.health import CircuitBreaker
from routecast.backends.messages_http import MessagesHTTPBackend
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.prompt_format import FORMATS, PromptFormat
from routecast.backends.responses_http import ResponsesHTTPBackend
from routecast.backends.retry import RetryPolicy
from routecast.backends.routed import RoutedBackend
from routecast.errors import ConfigError
from routecast.server.config import (
    CascadeEndpoint,
    Config,
    ModelConfig,
    PlainEndpoint,
    RoutedEndpoint,
)

if TYPE_CHECKING:
    from pathlib import Path

    from routecast.backends.judges import Judge
    from routecast.cascades.cascade import Cascade
    from routecast.learning.cascade import CascadeLearner
    from routecast.learning.learner import Learner
    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.signals.learned import LearnedScorer


@dataclass
class EndpointTable:
    """``backends``: endpoint name -> backend; ``prices``: model -> price; ``strongest``:
    endpoint -> its most expensive model, the baseline that stats measure savings against."""

    backends: dict[str, Backend]
    prices: dict[str, Price]
    strongest: dict[str, str]
    #: Every distinct backend object once, for start-up and shutdown.
    members: list[Backend] = field(default_factory=list)
    #: Routed endpoint -> its learner, for endpoints with ``learning:``.
    learners: dict[str, Learner] = field(default_factory=dict)
    #: Cascade endpoint -> the learner of its thresholds, for endpoints with ``learning:``.
    cascade_learners: dict[str, CascadeLearner] = field(default_factory=dict)

    async def start(self) -> None:
        await start_all(self.members)

    async def aclose(self) -> None:
        await close_all(self.members)


def price_of(model: ModelConfig) -> Price:
    return Price(model.input_usd_per_mtok, model.output_usd_per_mtok, model.cached_usd_per_mtok)


def http_backend(name: str, model: ModelConfig, env: Mapping[str, str] | None = None
                 ) -> OpenAIHTTPBackend:
    """The HTTP backend of one configured model; reads its API key from the environment or
    from its secret file (never from the config itself)."""
    env = os.environ if env is None else env
    api_key = None
    if model.api_key_file is not None:
        try:
            api_key = model.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise ConfigError(f"models.{name}.api_key_file: cannot read {model.api_key_file} "
                              f"({reason}). Fix: point it at a readable file holding only the "
                              "key") from None
        if not api_key:
            raise ConfigError(f"models.{name}.api_key_file: {model.api_key_file} is empty. "
                              "Fix: write the key into it")
    if model.api_key_env:
        api_key = env.get(model.api_key_env)
        if not api_key:
            raise ConfigError(
                f"models.{name}.api_key_env: the environment variable {model.api_key_env} is "
                f"not set. Fix: export {model.api_key_env}=<key> before starting the server, or "
                "remove api_key_env for a server that needs no key")
    fmt = model.prompt_format
    try:
        prompt_format = FORMATS.load(fmt) if isinstance(fmt, str) else PromptFormat(
            **{**fmt.model_dump(), "stop": tuple(fmt.stop)})
    except ConfigError as e:
        raise ConfigError(f"models.{name}.prompt_format: {e}") from None
    # A model whose server speaks Anthropic's Messages or OpenAI's Responses API.
    natives: dict[str, type[OpenAIHTTPBackend]] = {"messages": MessagesHTTPBackend,
                                                   "responses": ResponsesHTTPBackend}
    cls = natives.get(model.api, OpenAIHTTPBackend)
    return cls(
        name, model.base_url, upstream_model=model.upstream_model, api_key=api_key,
        price=price_of(model), kind=model.kind, prompt_format=prompt_format,
        retry=RetryPolicy(max_retries=model.max_retries, backoff_s=model.backoff_s,
                          max_backoff_s=model.max_backoff_s),
        connect_timeout_s=model.connect_timeout_s, read_timeout_s=model.read_timeout_s,
        first_token_timeout_s=model.first_token_timeout_s,
        min_read_bytes_per_s=model.min_read_bytes_per_s,
        max_connections=model.max_connections, stream_usage=model.stream_usage,
        headers=model.headers,
        breaker=CircuitBreaker(model.breaker.failure_threshold, model.breaker.open_s,
                               model.breaker.half_open_probes))


def build_endpoints(config: Config, *, env: Mapping[str, str] | None = None,
                    routers: Mapping[str, tuple[Router, Policy]] | None = None,
                    scorers: Mapping[str, LearnedScorer] | None = None) -> EndpointTable:
    """Every endpoint of ``config``. ``routers`` supplies fitted (router, policy) pairs by
    endpoint name instead of loading the saved ones (for tests and for library use); likewise
    ``scorers`` the fitted scorers of cascade endpoints with the learned signal."""
    leaves: dict[str, Backend] = {name: http_backend(name, m, env)
                                  for name, m in config.models.items()}
    prices = {name: price_of(m) for name, m in config.models.items()}

    def with_fallbacks(model: str, fallbacks: list[str], endpoint: str) -> Backend:
        chain = [model, *(f for f in fallbacks if f != model)]
        if len(chain) == 1:
            return leaves[model]
        return FallbackBackend([leaves[m] for m in chain], name=endpoint)

    backends: dict[str, Backend] = {}
    learners: dict[str, Learner] = {}
    cascade_learners: dict[str, CascadeLearner] = {}
    for name, spec in config.endpoints.items():
        if isinstance(spec, PlainEndpoint):
            backends[name] = with_fallbacks(spec.model, spec.fallbacks, name)
        elif isinstance(spec, RoutedEndpoint):
            if spec.learning is not None and name not in (routers or {}):
                from routecast.server.learning import make_learner

                learners[name] = learner = make_learner(name, spec, config)
                router, policy = learner.current.router, learner.current.policy
            else:
                router, policy = (routers or {}).get(name) or _load_router(name, spec)
            models = list(getattr(router, "models_", ()))
            unmapped = [m for m in models if spec.model_map.get(m, m) not in leaves]
            if unmapped:
                raise ConfigError(
                    f"endpoints.{name}: the router chooses among models {unmapped} that are not "
                    f"configured. Fix: define them under `models`, or map them to configured "
                    f"models with endpoints.{name}.model_map")
            per_model = {m: with_fallbacks(spec.model_map.get(m, m), spec.fallbacks, name)
                         for m in models}
            backends[name] = RoutedBackend(router, policy, per_model, name=name,
                                           route_on=spec.route_on,
                                           max_sessions=spec.max_sessions,
                                           max_batch=spec.max_batch,
                                           features=spec.features)
        elif isinstance(spec, CascadeEndpoint):
            cascade, folder = _cascade(name, spec)
            unknown = [m for m in cascade.models if m not in leaves]
            if unknown:
                raise ConfigError(f"endpoints.{name}.file: the cascade asks models {unknown} "
                                  "that are not configured. Fix: define them under `models`")
            judge = _judge(name, spec, cascade, folder, (scorers or {}).get(name))
            if spec.learning is not None:
                cascade_learners[name] = cascade_learner = _cascade_learner(spec, cascade)
                cascade = cascade_learner.current.cascade
            backends[name] = CascadeBackend(cascade, leaves, name=name, summary=spec.logprobs,
                                            judge=judge)
    for model, leaf in leaves.items():
        backends.setdefault(model, leaf)

    strongest = {name: max(b.models, key=lambda m: prices[m].rank)
                 for name, b in backends.items()}
    members = list({id(b): b for b in [*leaves.values(), *backends.values()]}.values())
    return EndpointTable(backends, prices, strongest, members, learners, cascade_learners)


def _load_router(name: str, spec: RoutedEndpoint) -> tuple[Router, Policy]:
    """The saved router of a routed endpoint and the policy its config asks for."""
    from routecast.policy import Policy
    from routecast.routers.persist import load_router

    if spec.router is None or not spec.router.is_dir():
        raise ConfigError(f"endpoints.{name}.router: no saved router folder at {spec.router}. "
                          "Fix: give the folder a router was saved to")
    router, saved_policy = load_router(spec.router)
    if spec.cost_weight is not None:
        return router, Policy(spec.cost_weight)
    if spec.budget_usd is not None:
        from routecast.data import load_dataset

        assert spec.calibration_data is not None  # checked by the config model
        data = load_dataset(spec.calibration_data).subset("validation")
        return router, Policy.for_budget(router, data, spec.budget_usd)
    if saved_policy is None:
        raise ConfigError(f"endpoints.{name}: the router saved at {spec.router} has no policy. "
                          "Fix: set cost_weight, or budget_usd with calibration_data")
    return router, saved_policy


def _cascade(name: str, spec: CascadeEndpoint) -> tuple[Cascade, Path | None]:
    """The endpoint's :class:`~routecast.cascades.cascade.Cascade`, from the config or its file, and
    the folder ``file`` names when it names one (``cascade.json`` and maybe a scorer)."""
    import json

    from routecast.cascades.cascade import Cascade

    where = f"endpoints.{name}"
    try:
        if spec.file is not None:
            where = f"endpoints.{name}.file"
            folder = spec.file if spec.file.is_dir() else None
            path = spec.file / "cascade.json" if folder is not None else spec.file
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read a cascade from {path} ({e}). Fix: give a "
                                  "JSON file written from Cascade.to_dict(), or the folder "
                                  "`routecast tune-cascade` wrote") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path} holds no cascade object. Fix: give a JSON file "
                                  "written from Cascade.to_dict()")
            return Cascade.from_dict(data), folder
        assert spec.models is not None  # checked by the config model
        n = len(spec.models)
        if spec.learning is not None and not spec.thresholds:  # learnt: a cold start
            from routecast.learning.cascade import NEVER

            return Cascade(tuple(spec.models), (NEVER,) * (n - 1),
                           spec.signal or "confidence"), None
        if len(spec.thresholds) != n - 1:
            raise ConfigError(f"a cascade of {n} models needs {n - 1} thresholds (one per step "
                              f"but the last, which always answers); got "
                              f"{len(spec.thresholds)}. Fix: give endpoints.{name}.thresholds "
                              f"{n - 1} number(s)")
        return Cascade(tuple(spec.models), tuple(spec.thresholds),
                       spec.signal or "confidence"), None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _cascade_learner(spec: CascadeEndpoint, cascade: Cascade) -> CascadeLearner:
    """The learner of a cascade endpoint's thresholds: cold (never accept early) when the
    config gives no thresholds, else starting from the configured ones."""
    from routecast.learning.cascade import CascadeLearner, CascadeLearnerSettings

    lc = spec.learning
    assert lc is not None
    settings = CascadeLearnerSettings(
        refit_every=lc.refit_every, first_refit=lc.first_refit,
        holdout_fraction=lc.holdout_fraction, min_holdout_rows=lc.min_holdout_rows,
        quality_fraction=lc.quality_fraction, budget_usd_per_query=lc.budget_usd_per_query,
        n_levels=lc.n_levels, judge_noise=lc.judge.noise)
    return CascadeLearner(cascade, settings, cold=spec.file is None and not spec.thresholds)


def _judge(name: str, spec: CascadeEndpoint, cascade: Cascade, folder: Path | None,
           scorer: LearnedScorer | None) -> Judge:
    """How the cascade endpoint scores early answers: its signal with the config's
    parameters; the learned signal's scorer comes from ``scorer`` (passed in), the config's
    ``scorer`` path, or the folder of its ``file``, in that order."""
    from routecast.backends.judges import live_signals, make_judge
    from routecast.errors import DataError
    from routecast.signals.persist import has_scorer, load_scorer

    where = f"endpoints.{name}"
    if cascade.signal not in (live := live_signals()):
        raise ConfigError(f"{where}.file: the cascade's signal {cascade.signal!r} cannot be "
                          f"computed live. Fix: tune it for one of {', '.join(live)}")
    if spec.signal is not None and spec.signal != cascade.signal:
        raise ConfigError(f"{where}.signal: the cascade in {spec.file} was tuned for the "
                          f"{cascade.signal!r} signal, not {spec.signal!r}. Fix: remove "
                          "`signal` (the file's is used), or tune the cascade for "
                          f"{spec.signal}")
    problems = spec.misplaced(cascade.signal)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    if cascade.signal == "learned" and scorer is None:
        path = spec.scorer or folder
        if path is None or (spec.scorer is None and not has_scorer(path)):
            raise ConfigError(
                f"{where}.scorer: the learned signal cannot be computed live without a fitted "
                f"scorer{f' (there is none in {path})' if path else ''}. Fix: set `scorer:` to "
                "the folder `routecast tune-cascade --signal learned` wrote")
        try:
            scorer = load_scorer(path)
        except DataError as e:
            raise ConfigError(f"{where}.scorer: {e}") from None
    try:
        return make_judge(cascade.signal, summary=spec.logprobs, samples=spec.samples,
                          temperature=spec.temperature, votes=spec.votes, scorer=scorer)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
