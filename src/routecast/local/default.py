"""The embedded default: ``routecast serve`` with no config, fully offline.

Two local models run under llama.cpp's OpenAI-compatible server, one process each, on
127.0.0.1 (:mod:`routecast.local.llamacpp`), and routecast serves four endpoints over them:

==========  =====================================================================================
endpoint    what answers
==========  =====================================================================================
``smollm2``   SmolLM2-135M-Instruct, a chat model
``gemma3``    Gemma 3 270M, a base model asked completion-style: the chat turn is written into
              the same few-shot template ``routecast collect`` used (:data:`GEMMA_FORMAT`)
``auto``      routed: a TF-IDF linear router fitted at start-up on the shipped outcomes (train
              split), its policy calibrated on validation (:mod:`routecast.local.outcomes`)
``cascade``   Gemma first (the cheaper model per answer: it answers in a few tokens); its
              answer is kept when a learned scorer (FrugalGPT-style, question and answer
              text) rates it at least the threshold tuned on the shipped outcomes, else
              SmolLM2 answers
==========  =====================================================================================

No server keeps log-probs (llama-cpp-python's ``logits_all``): the learned scorer needs none,
and llama-cpp-python makes them cost 3-4x the CPU of the answer itself. Fitting and tuning take
about two seconds, so nothing is cached between starts; the model servers stop with the
:func:`embedded` block (and with this process, however it ends).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from routecast.local.collect import USD_PER_KWH
from routecast.local.models import BUILTIN, GEMMA_TEMPLATE, WATTS_PER_THREAD
from routecast.local.outcomes import LARGE, SMALL, data_dir

if TYPE_CHECKING:
    from routecast.cascades.cascade import Cascade
    from routecast.local.llamacpp import LlamaServer
    from routecast.local.outcomes import TunedCascade
    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.server.config import Config, PromptFormatConfig
    from routecast.server.endpoints import EndpointTable
    from routecast.signals.learned import LearnedScorer

#: Endpoint name -> the model it serves alone.
PLAIN_ENDPOINTS = {"smollm2": SMALL, "gemma3": LARGE}
ROUTED_ENDPOINT = "auto"
CASCADE_ENDPOINT = "cascade"
#: How a ``confidence`` cascade summarises log-probs: the arithmetic mean token probability,
#: which is what ``routecast collect`` records as ``confidence`` (what its threshold is tuned on).
CASCADE_SUMMARY = "mean_prob"


def gemma_format() -> PromptFormatConfig:
    """The chat-to-completion format that reproduces :data:`GEMMA_TEMPLATE` for one user
    turn: the solved examples and ``Question: `` before the turn, ``\\nAnswer:`` after it, a
    stop at the end of the line. (Later turns of a conversation repeat the examples: the
    template was written for single questions.)"""
    from routecast.server.config import PromptFormatConfig

    head, _, tail = GEMMA_TEMPLATE.partition("{prompt}")
    answer = tail.lstrip("\n")
    return PromptFormatConfig(user_prefix=head, user_suffix=tail[:len(tail) - len(answer)],
                              assistant_prefix=answer, assistant_suffix="\n\n",
                              system_suffix="\n\n", stop=list(BUILTIN[LARGE].stop))


def served_window(model: str, gguf: Path | None = None) -> int:
    """The tokens a request to ``model`` may take, prompt and answer: the llama.cpp
    server's context (``n_ctx``), or the context the model was trained with when that is
    smaller (read from the GGUF file's metadata, when ``gguf`` is given), less the tokens of
    the template a base model's prompts are wrapped in (estimated)."""
    from routecast.capabilities import estimate_tokens

    local = BUILTIN[model]
    window = local.n_ctx
    if gguf is not None:
        from routecast.local.gguf import context_length

        window = min(window, context_length(gguf))
    if local.kind == "base":
        window -= estimate_tokens(len(local.template))
    return window


def _model_entry(model: str, base_url: str, window: int) -> dict[str, object]:
    """A model of the config: local, priced by the energy of an output token (no log-probs),
    and what it can serve: text only (neither model was trained for images, audio or tool
    calls, and structured output is not declared: the base model is asked completion-style),
    in a ``window``-token context, counted by its own server's tokenizer near the limit."""
    profile = BUILTIN[model].profile
    j_per_token = WATTS_PER_THREAD * profile.per_token_s
    entry: dict[str, object] = {
        "base_url": f"{base_url}/v1", "local": True,
        "kind": BUILTIN[model].kind,
        "output_usd_per_mtok": j_per_token / 3.6e6 * USD_PER_KWH * 1e6,
        "capabilities": {"input": ["text"], "tools": False, "structured_output": [],
                         "context_window": window, "streaming": True,
                         # llama-cpp-python's server (llama.cpp's own would be /tokenize)
                         "tokenize_url": f"{base_url}/extras/tokenize/count"},
    }
    if BUILTIN[model].kind == "base":
        entry["prompt_format"] = gemma_format().model_dump()
    return entry


def default_config(urls: Mapping[str, str], cascade: Cascade, *, db: Path | None = None,
                   windows: Mapping[str, int] | None = None) -> Config:
    """The config of the embedded default, for model servers at ``urls`` (model -> root URL).
    ``windows`` are the models' context windows (default: :func:`served_window` without the
    model files).

    The routed endpoint's router and a ``learned`` cascade's scorer are passed to the app
    directly (see :meth:`Embedded.endpoints`); the ``router`` path names the data the router
    was fitted on, for ``/v1/models`` readers and logs.
    """
    from routecast.server.config import parse_config

    endpoints: dict[str, object] = {
        name: {"type": "plain", "model": model} for name, model in PLAIN_ENDPOINTS.items()}
    endpoints[ROUTED_ENDPOINT] = {"type": "routed", "router": str(data_dir())}
    live: dict[str, object] = {"type": "cascade", "models": list(cascade.models),
                               "thresholds": list(cascade.thresholds), "signal": cascade.signal}
    if cascade.signal == "confidence":
        live["logprobs"] = CASCADE_SUMMARY
    endpoints[CASCADE_ENDPOINT] = live
    windows = windows or {m: served_window(m) for m in (SMALL, LARGE)}
    return parse_config({"models": {m: _model_entry(m, urls[m], windows[m])
                                    for m in (SMALL, LARGE)},
                         "endpoints": endpoints,
                         "storage": {"db": None if db is None else str(db)}},
                        where="the embedded default config")


def _warm_template(server: LlamaServer) -> None:
    """Have Gemma read its few-shot template once: llama.cpp keeps the longest common prefix
    of consecutive prompts, so later questions skip those ~130 tokens, and the first client
    does not pay for them (about a second on one thread)."""
    import json
    import urllib.request

    head = GEMMA_TEMPLATE.partition("{prompt}")[0]
    body = json.dumps({"prompt": head, "max_tokens": 1, "temperature": 0}).encode()
    request = urllib.request.Request(f"{server.base_url}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    # Straight to 127.0.0.1, whatever HTTP_PROXY says; a failure here is only a slower start.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with contextlib.suppress(OSError), opener.open(request, timeout=60) as r:
        r.read()


@dataclass
class Embedded:
    """What :func:`embedded` set up: the config, the fitted router and the running servers."""

    config: Config
    routers: dict[str, tuple[Router, Policy]]
    cascade: Cascade
    servers: dict[str, LlamaServer]
    scorer: LearnedScorer | None = None

    def endpoints(self) -> EndpointTable:
        """The endpoint table to serve, with the fitted router and scorer."""
        from routecast.server.endpoints import build_endpoints

        scorers = {} if self.scorer is None else {CASCADE_ENDPOINT: self.scorer}
        return build_endpoints(self.config, routers=self.routers, scorers=scorers)


def tuned() -> tuple[TunedCascade, Router, Policy]:
    """The cascade (with its scorer) and the router, tuned and fitted on the shipped
    outcomes."""
    from routecast.local import outcomes

    data = outcomes.load()
    router, policy = outcomes.fit_router(data)
    return outcomes.tune_cascade(data), router, policy


@contextlib.contextmanager
def embedded(*, threads: int | None = None, timeout_s: float = 180.0, db: Path | None = None,
             say: Callable[[str], None] = lambda _: None) -> Iterator[Embedded]:
    """Fit, tune and start everything, yield it, and stop the model servers afterwards.

    ``threads`` per model server defaults to the available cores shared between the two.
    """
    from routecast.local import llamacpp

    tuned_cascade, router, policy = tuned()
    cascade = tuned_cascade.cascade
    say(f"cascade {cascade.describe()} ({cascade.signal} signal) and router {router.name!r} "
        "tuned on the shipped outcomes")
    n_threads = threads or llamacpp.default_threads(2)
    servers: dict[str, LlamaServer] = {}
    try:
        # Log-probs (logits_all) only where the cascade reads them: the first step of a
        # confidence cascade. The learned scorer reads text only.
        for model in (SMALL, LARGE):
            logprobs = cascade.signal == "confidence" and model == cascade.models[0]
            servers.update(llamacpp.start([BUILTIN[model]], n_threads=n_threads,
                                          logprobs=logprobs, timeout_s=timeout_s))
            s = servers[model]
            say(f"started {model} (llama.cpp, {s.n_threads} thread(s), log-probs "
                f"{'on' if logprobs else 'off'}) in {s.ready_s:.1f}s")
        _warm_template(servers[LARGE])
        config = default_config({m: s.base_url for m, s in servers.items()}, cascade, db=db,
                                windows={m: served_window(m, s.gguf) for m, s in servers.items()})
        yield Embedded(config, {ROUTED_ENDPOINT: (router, policy)}, cascade, servers,
                       tuned_cascade.scorer)
    finally:
        for s in servers.values():
            s.stop()
