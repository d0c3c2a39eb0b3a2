"""The server's YAML config, validated with pydantic; errors name the key path and the fix.

::

    models:                          # every model is also an endpoint under its own name
      small:
        base_url: http://127.0.0.1:8080/v1
        upstream_model: qwen2.5-0.5b  # the name the server knows (default: the key)
        api_key_env: SMALL_API_KEY    # the env var holding the key (none for local servers)
        # api_key_file: /run/secrets/small_key   # or a file holding it (Docker/K8s secrets)
        local: true                   # runs on our premises: may see sensitive prompts
        breaker: {failure_threshold: 5, open_s: 10}  # skip it after 5 failures in a row
        kind: chat                    # or base: served through /v1/completions
        api: chat                     # or messages | responses: the API its server speaks
        input_usd_per_mtok: 0.1       # USD per million tokens
        output_usd_per_mtok: 0.4
        cached_usd_per_mtok: 0.05     # cached prompt tokens (default: the input price)
        read_timeout_s: 120           # the longest silence before the first byte, or in a stream
        first_token_timeout_s: 10     # a stream's first chunk, after its response starts
                                      # (default: read_timeout_s); then a fallback takes over
        min_read_bytes_per_s: 1024    # a whole answer slower than this is a failure (0: off)
        capabilities:                 # what it can serve (defaults: text only, no tools, no
          input: [text, image]        # structured output, window unknown, streams); requests
          tools: true                 # it cannot serve go to models that can, or get a 400
          structured_output: [json_object, json_schema]
          context_window: 128000      # prompt + max_tokens must fit (null: not checked)
          max_output_tokens: 16384
          streaming: true
          # tokenize_url: http://127.0.0.1:8080/tokenize  # count prompt tokens exactly near
                                                          # the window (llama.cpp servers)
    endpoints:
      auto:
        type: routed                  # plain | routed | cascade
        router: routers/linear        # a saved router folder (relative to this file)
        cost_weight: 500              # or budget_usd + calibration_data, or the saved policy
        fallbacks: [small]
      smart:
        type: cascade                 # small first; keep its answer if it is good enough
        models: [small, large]        # or file: a cascade.json (Cascade.to_dict()), or the
                                      # folder `routecast tune-cascade` wrote
        thresholds: [0.8]             # one per step but the last
        signal: confidence            # how an answer is judged (default: the file's, else
                                      # confidence): confidence | agreement |
                                      # self-verification | learned
        logprobs: mean                # confidence, learned: how token log-probs become a
                                      # confidence (mean_prob: what `routecast collect` records)
        # samples: 2                  # agreement: resample k answers (seeds 1..k) ...
        # temperature: 0.7            # ... at this temperature (and self-verification votes)
        # votes: 1                    # self-verification: ask the model k times if it was right
        # scorer: tuned/smart         # learned: a saved scorer (default: the file's folder)
    storage: {db: routecast.db, log_prompts: false, durable: false}
                                      # or url: postgresql://user@host:5432/db (or url_env
                                      # naming an env var holding it); replicas sharing it
                                      # share the log, keys, labels and published routers
                                      # (artifact_poll_s: 2, how often they look)
    state: {redis_url: redis://127.0.0.1:6379/0, replicas: 3}  # shared by replicas
    limits: {max_body_bytes: 4194304, max_messages: 2048, deadline_s: 300}
    auth: {required: false}           # true: clients need a key from `routecast keys add`
    privacy:                          # prompts matching these stay on `local: true` models
      patterns: [email, card]         # built-ins (email, card, phone, ssn) or regexes
      redact_log: true                # mask matches in logged prompts (storage.log_prompts)
    apis:                             # /v1/messages and /v1/responses (server/apis)
      pin_conversations: true         # route an agent's conversation once, not every turn
      response_retention_days: 30     # how long stored responses can be continued
    ui: {enabled: true, admin_keys: [ops]}  # the dashboard at /ui; with auth.required only
                                      # these keys (by name) may open it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routecast.errors import ConfigError
from routecast.server.learning_config import CascadeLearningConfig, LearningConfig

_STRICT = ConfigDict(extra="forbid")


class PromptFormatConfig(BaseModel):
    """A custom prompt format for a base model (see ``routecast.backends.prompt_format``)."""

    model_config = _STRICT
    system_prefix: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    stop: list[str] = Field(default_factory=list)


class BreakerConfig(BaseModel):
    """The model's circuit breaker (see ``routecast.backends.health``)."""

    model_config = _STRICT
    failure_threshold: int = Field(default=5, ge=1)
    open_s: float = Field(default=10.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class CapabilitiesConfig(BaseModel):
    """What a model can serve (see ``routecast.capabilities``). The defaults claim little:
    text in, no tools, no structured output, streaming; an unknown window is not checked."""

    model_config = _STRICT
    # pydantic copies a mutable default for each instance.
    input: list[Literal["text", "image", "audio"]] = ["text"]
    tools: bool = False
    structured_output: list[Literal["json_object", "json_schema"]] = Field(default_factory=list)
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    streaming: bool = True
    #: A tokenizer endpoint of the model's own server: llama.cpp's ``/tokenize`` or
    #: llama-cpp-python's ``/extras/tokenize/count``.
    tokenize_url: str | None = None


class ModelConfig(BaseModel):
    model_config = _STRICT
    base_url: str
    upstream_model: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    local: bool = False
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    kind: Literal["chat", "base"] = "chat"
    #: The API the model's server speaks: OpenAI chat, Anthropic's Messages or OpenAI's
    #: Responses (requests that came in through that API then reach it untranslated).
    api: Literal["chat", "messages", "responses"] = "chat"
    prompt_format: str | PromptFormatConfig = "chatml"  # a name in backends.prompt_format
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    cached_usd_per_mtok: float | None = Field(default=None, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    min_read_bytes_per_s: float = Field(default=1024.0, ge=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    max_connections: int = Field(default=100, ge=1)
    stream_usage: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    capabilities: CapabilitiesConfig = Field(default_factory=CapabilitiesConfig)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://127.0.0.1:8080/v1)")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # A common slip is pasting the key itself here; refuse it without echoing it.
        if value is not None and (value.startswith("sk-") or not value.replace("_", "").isalnum()):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                             "not the key itself")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> ModelConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self


class PlainEndpoint(BaseModel):
    model_config = _STRICT
    type: Literal["plain"]
    model: str
    fallbacks: list[str] = Field(default_factory=list)


class RoutedEndpoint(BaseModel):
    model_config = _STRICT
    type: Literal["routed"]
    #: A saved router; optional with ``learning`` (then the prior it starts from).
    router: Path | None = None
    cost_weight: float | None = Field(default=None, ge=0)
    budget_usd: float | None = Field(default=None, ge=0)
    calibration_data: Path | None = None
    route_on: Literal["last_user", "conversation"] = "last_user"
    fallbacks: list[str] = Field(default_factory=list)
    model_map: dict[str, str] = Field(default_factory=dict)
    max_sessions: int = Field(default=10_000, ge=0)
    max_batch: int = Field(default=64, ge=1)
    #: Prefix the routing text with the request's modality and size words
    #: (``routecast.capabilities.feature_tags``); the router must be fitted on prompts tagged
    #: the same way (``tag_prompt``).
    features: bool = False
    learning: LearningConfig | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> RoutedEndpoint:
        if self.cost_weight is not None and self.budget_usd is not None:
            raise ValueError("give cost_weight or budget_usd, not both")
        if self.budget_usd is not None and self.calibration_data is None:
            raise ValueError("budget_usd needs calibration_data: outcome data (its validation "
                             "split) on which to solve for the budget")
        return self


class CascadeEndpoint(BaseModel):
    """Cheapest model first, escalating while the signal's score of its answer is below the
    step's threshold: inline ``models`` + ``thresholds``, or a ``file`` written from
    ``Cascade.to_dict()`` (or the folder ``routecast tune-cascade`` wrote: ``cascade.json``,
    plus ``scorer.json`` for the learned signal). Signals: :mod:`routecast.backends.judges`."""

    model_config = _STRICT
    type: Literal["cascade"]
    models: list[str] | None = Field(default=None, min_length=1)
    thresholds: list[float] = Field(default_factory=list)
    file: Path | None = None
    #: ``None``: the file's signal, else confidence.
    signal: str | None = None  # a signal with a live judge: routecast.signals
    logprobs: Literal["mean", "min", "first", "margin", "mean_prob"] = "mean"
    samples: int | None = Field(default=None, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    votes: int | None = Field(default=None, ge=1, le=16)
    scorer: Path | None = None
    #: Learn the thresholds from the traffic (``thresholds`` may then be omitted: the cascade
    #: starts by never keeping an early answer).
    learning: CascadeLearningConfig | None = None

    @field_validator("signal")
    @classmethod
    def _live_signal(cls, value: str | None) -> str | None:
        from routecast.signals import live_signal_names

        if value is not None and value not in (live := live_signal_names()):
            raise ValueError(f"the signal {value!r} cannot be computed live; live cascades "
                             f"use {', '.join(live)}")
        return value

    @model_validator(mode="after")
    def _models_or_file(self) -> CascadeEndpoint:
        if (self.models is None) == (self.file is None):
            raise ValueError("give either `models` (with `thresholds`) or `file`")
        if self.file is not None and self.thresholds:
            raise ValueError("`thresholds` come from the cascade `file`; remove `thresholds` "
                             "(or give `models` instead of `file`)")
        if self.signal is not None or self.models is not None:
            problems = self.misplaced(self.signal or "confidence")
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def misplaced(self, signal: str) -> list[str]:
        """Keys given that the ``signal`` does not read, each with its fix."""
        owners = {"samples": ("agreement",), "votes": ("self-verification",),
                  "temperature": ("agreement", "self-verification"), "scorer": ("learned",),
                  "logprobs": ("confidence", "learned")}
        # Given = not None, except logprobs, which has a default; not "in model_fields_set":
        # resolve_paths' model_copy marks `scorer` as set even when it stays None.
        given = [k for k in owners if (k in self.model_fields_set if k == "logprobs"
                                       else getattr(self, k) is not None)]
        return [f"`{key}` is read only by signal {' or '.join(owners[key])}, and this "
                f"endpoint's signal is {signal}. Fix: remove `{key}`, or set "
                f"`signal: {owners[key][0]}`"
                for key in given if signal not in owners[key]]


Endpoint = Annotated[PlainEndpoint | RoutedEndpoint | CascadeEndpoint,
                     Field(discriminator="type")]


class Storage(BaseModel):
    """Where the request log, client keys, the outcome store and published routers live.

    ``url`` names the database: ``sqlite:///routecast.db`` (the default; a relative path is
    relative to the config file) or ``postgresql://user@host:5432/db``; ``url_env`` names an
    environment variable holding it instead (a Kubernetes Secret, say). ``db`` is the older
    spelling of a SQLite file and stays valid; ``db: null`` (with no ``url``) stores nothing.

    The server opens the database at start-up and migrates its schema to the newest version
    (Alembic, :mod:`routecast.storage.migrate`; a file from an older release is upgraded in
    place). Request-log rows are written in batches by a background thread (``batch_rows``,
    ``batch_ms``), so no request waits on the database, SQLite or PostgreSQL. Learning
    endpoints publish each refitted router to the database and look for routers other
    replicas published every ``artifact_poll_s`` seconds (docs/storage.md).
    """

    model_config = _STRICT
    db: Path | None = Path("routecast.db")
    url: str | None = None
    url_env: str | None = None
    log_prompts: bool = False
    batch_rows: int = Field(default=256, ge=1)
    batch_ms: float = Field(default=200.0, gt=0)
    #: Commit each request's row before its response is sent: the log then survives a
    #: ``kill -9`` with one row per completed response (costs one commit per batch of
    #: concurrent requests; see benchmarks/durability.py).
    durable: bool = False
    #: Seconds between a learning endpoint's looks at the database for a router another
    #: replica published (and for the labels other replicas stored); see docs/storage.md.
    artifact_poll_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _one_place(self) -> Storage:
        given = [k for k in ("url", "url_env") if getattr(self, k) is not None]
        if len(given) > 1 or (given and "db" in self.model_fields_set):
            names = [*(["db"] if "db" in self.model_fields_set else []), *given]
            raise ValueError(f"give one of {' / '.join(names)}, not several: they all name "
                             "the database")
        if self.url is not None:
            try:
                _database_url(self.url, "url")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return self

    def database_url(self, env: Mapping[str, str] | None = None) -> str | None:
        """The database's URL (``sqlite:///...`` or ``postgresql://...``), or ``None`` when
        nothing is stored; ``env`` (default ``os.environ``) resolves ``url_env``."""
        if self.url_env is not None:
            environ = os.environ if env is None else env
            value = environ.get(self.url_env)
            if not value:
                raise ConfigError(f"storage.url_env: the environment variable {self.url_env} "
                                  "is not set; set it to the database URL "
                                  "(postgresql://user@host:5432/db or sqlite:///file.db)")
            return _database_url(value, f"${self.url_env}")
        if self.url is not None:
            return self.url
        return None if self.db is None else f"sqlite:///{self.db}"


def _database_url(url: str, where: str) -> str:
    """``url`` if it names a database routecast can store in, else a :class:`ConfigError`."""
    scheme = url.partition("://")[0].lower()
    if scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres") or "://" not in url:
        raise ConfigError(f"{where}: {url.split('@')[-1]!r} is not a database URL routecast "
                          "can use; write sqlite:///path/to/file.db or "
                          "postgresql://user@host:5432/dbname")
    return url


class State(BaseModel):
    """State that replicas share: rate limits, budget admission, session pins and circuit-
    breaker hints, in Redis (``redis_url``, or ``redis_url_env`` naming an environment variable
    that holds it). ``replicas`` says how many server processes share this config's storage
    (``routecast serve --workers N`` multiplies it by N; a Deployment sets it in its
    ConfigMap); more than one needs Redis, or budgets and rate limits would multiply, and the
    server refuses to start (:func:`routecast.state.check_shared_state`).

    Without Redis everything stays in the one process, as before. With it (see
    ``docs/state.md`` and :mod:`routecast.state`): a key's budget admission (spend, requests in
    flight, as reservations that expire) and its rate limit are atomic Lua scripts in Redis; a
    session's pin lives ``pin_ttl_s`` after its last turn; a model whose breaker opens on one
    replica is skipped by all until its ``open_s`` ends. Each Redis call waits at most
    ``timeout_s``: when Redis cannot answer, requests on keys with a budget or rate limit get a
    503 (fail closed: never an unaccounted overspend), pins fall back to the replica's own,
    and breakers to the local ones."""

    model_config = _STRICT
    redis_url: str | None = None
    redis_url_env: str | None = None
    replicas: int = Field(default=1, ge=1)
    #: Prefix of every Redis key, so several deployments can share one Redis.
    key_prefix: str = "routecast:"
    #: How long a session's pin outlives its last turn (Redis only; without Redis, pins are
    #: a bounded LRU per endpoint, ``endpoints.*.max_sessions``).
    pin_ttl_s: float = Field(default=86_400.0, gt=0)
    #: The most one Redis call may take before it counts as a failure (connect or answer).
    timeout_s: float = Field(default=0.25, gt=0, le=10)

    @model_validator(mode="after")
    def _one_source(self) -> State:
        if self.redis_url is not None and self.redis_url_env is not None:
            raise ValueError("give redis_url or redis_url_env, not both")
        if self.redis_url is not None and not self.redis_url.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url {self.redis_url.split('@')[-1]!r} is not a Redis URL; "
                             "write redis://host:6379/0")
        return self

    def resolved_redis_url(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Redis URL, or ``None`` without one; ``env`` (default ``os.environ``) resolves
        ``redis_url_env``."""
        if self.redis_url_env is None:
            return self.redis_url
        environ = os.environ if env is None else env
        value = environ.get(self.redis_url_env)
        if not value:
            raise ConfigError(f"state.redis_url_env: the environment variable "
                              f"{self.redis_url_env} is not set; set it to redis://host:6379/0")
        return value


class Limits(BaseModel):
    model_config = _STRICT
    max_body_bytes: int = Field(default=4 << 20, ge=1024)
    max_messages: int = Field(default=2048, ge=1)
    #: The most one request may take, arrival to last byte, retries and fallbacks included.
    deadline_s: float = Field(default=300.0, gt=0)


class Auth(BaseModel):
    """Client keys (``routecast keys add``), stored hashed in ``storage.db``."""

    model_config = _STRICT
    required: bool = False


class Privacy(BaseModel):
    """Prompts matching ``patterns`` go only to models marked ``local``."""

    model_config = _STRICT
    patterns: list[str] = Field(default_factory=list)
    redact_log: bool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        from routecast.server.privacy import compile_patterns

        compile_patterns(value)  # raises ValueError naming the bad pattern
        return value


class UIConfig(BaseModel):
    """The dashboard at ``/ui`` (see :mod:`routecast.server.ui`)."""

    model_config = _STRICT
    enabled: bool = True
    #: Client keys (by name) that may open the dashboard when ``auth.required`` is on.
    admin_keys: list[str] = Field(default_factory=list)
    #: How often the overview page refreshes itself, in seconds.
    refresh_s: float = Field(default=2.0, ge=0.5, le=3600)


class Apis(BaseModel):
    """The Messages and Responses APIs (:mod:`routecast.server.apis`)."""

    model_config = _STRICT
    #: Route an agent's conversation once (first turn) and keep it on that model.
    pin_conversations: bool = True
    #: How long stored responses (``previous_response_id``) are kept.
    response_retention_days: float = Field(default=30.0, gt=0)


class Config(BaseModel):
    """The whole file. Relative paths are relative to the file's folder (see ``load_config``).
    """

    model_config = _STRICT
    models: dict[str, ModelConfig] = Field(min_length=1)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    storage: Storage = Field(default_factory=Storage)
    state: State = Field(default_factory=State)
    limits: Limits = Field(default_factory=Limits)
    auth: Auth = Field(default_factory=Auth)
    privacy: Privacy = Field(default_factory=Privacy)
    ui: UIConfig = Field(default_factory=UIConfig)
    apis: Apis = Field(default_factory=Apis)

    @model_validator(mode="after")
    def _known_models(self) -> Config:
        known = set(self.models)
        problems: list[str] = []
        for name, endpoint in self.endpoints.items():
            if isinstance(endpoint, PlainEndpoint) and endpoint.model not in known:
                problems.append(f"endpoints.{name}.model: unknown model {endpoint.model!r}")
            if isinstance(endpoint, (PlainEndpoint, RoutedEndpoint)):
                problems += [f"endpoints.{name}.fallbacks[{i}]: unknown model {m!r}"
                             for i, m in enumerate(endpoint.fallbacks) if m not in known]
            if isinstance(endpoint, RoutedEndpoint):
                if endpoint.router is None and (endpoint.learning is None
                                                or not endpoint.learning.models):
                    problems.append(f"endpoints.{name}.router: missing; add it (a saved router "
                                    "folder), or give `learning` with `models` to start "
                                    "learning from nothing")
                problems += [f"endpoints.{name}.model_map.{k}: unknown model {m!r}"
                             for k, m in endpoint.model_map.items() if m not in known]
                learn = endpoint.learning
                problems += [f"endpoints.{name}.learning.{where}: unknown model {m!r}"
                             for where, m in ([("models", m) for m in learn.models]
                                              + ([("judge.model", learn.judge.model)]
                                                 if learn.judge else []))
                             if m not in known] if learn else []
            if isinstance(endpoint, CascadeEndpoint):
                problems += [f"endpoints.{name}.models[{i}]: unknown model {m!r}"
                             for i, m in enumerate(endpoint.models or []) if m not in known]
                if endpoint.learning and endpoint.learning.judge.model not in known:
                    problems.append(f"endpoints.{name}.learning.judge.model: unknown model "
                                    f"{endpoint.learning.judge.model!r}")
        if problems:
            raise ValueError("; ".join(problems) + f". Fix: use one of the models defined "
                             f"under `models` ({', '.join(sorted(known))}) or define it there")
        return self

    def endpoint_names(self) -> list[str]:
        """Every name a client may put in ``model``: the endpoints, then the bare models."""
        return [*self.endpoints, *(m for m in self.models if m not in self.endpoints)]

    def resolve_paths(self, base: Path) -> Config:
        """A copy with relative paths made absolute against ``base``."""
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        endpoints: dict[str, Any] = {}
        for name, e in self.endpoints.items():
            if isinstance(e, RoutedEndpoint):
                e = e.model_copy(update={"router": fix(e.router),
                                         "calibration_data": fix(e.calibration_data)})
            elif isinstance(e, CascadeEndpoint):
                e = e.model_copy(update={"file": fix(e.file), "scorer": fix(e.scorer)})
            endpoints[name] = e
        url = self.storage.url
        if url is not None and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{fix(Path(url.removeprefix('sqlite:///')))}"
        storage = self.storage.model_copy(update={"db": fix(self.storage.db), "url": url})
        models = {name: m.model_copy(update={"api_key_file": fix(m.api_key_file)})
                  for name, m in self.models.items()}
        return self.model_copy(update={"endpoints": endpoints, "storage": storage,
                                       "models": models})


def parse_config(data: Any, where: str = "config") -> Config:
    """Validate an already-parsed document; :class:`ConfigError` lists every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with at least `models:`, got "
                          f"{type(data).__name__}. Fix: see `routecast config check --help`")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {e.error_count()} problem(s):\n"
                          + "\n".join(_describe(err) for err in e.errors())) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file, resolving its relative paths."""
    import yaml  # imported here: only the server and `config check` need it

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}. Fix: pass "
                          "the path of a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    return parse_config(data, where=str(path)).resolve_paths(path.resolve().parent)


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling",
    "union_tag_invalid": "set `type` to plain, routed or cascade",
    "union_tag_not_found": "add `type: plain`, `type: routed` or `type: cascade`",
    "too_short": "add at least one entry",
}


def _describe(err: Any) -> str:
    """``  - models.small.input_usd_per_mtok: <what is wrong>. Fix: <what to do>``."""
    # Union branches and discriminator tags show up in pydantic's path; readers think in keys.
    loc = [str(x) for x in err["loc"]
           if not (isinstance(x, str) and x in ("plain", "routed", "cascade", "function-after"))
           and not str(x).startswith(("literal[", "PromptFormatConfig", "function-"))]
    path = ".".join(loc) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(err["type"])
    given = err.get("input")
    shown = ""
    if err["type"] not in ("missing", "model_attributes_type") and not isinstance(given, dict) \
            and "api_key" not in path:  # never echo what may be a pasted key
        shown = f" (got {given!r})"
    return f"  - {path}: {message}{shown}" + (f". Fix: {fix}" if fix else "")
