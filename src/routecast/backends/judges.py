"""Live judges: how a cascade endpoint scores an early step's answer, one class per signal.

A :class:`Judge` tells the cascade how to ask a step (:meth:`Judge.probe`: e.g. with token
log-probs) and then scores the answer it got (:meth:`Judge.judge`) in [0, 1], NaN when the
answer cannot be judged; :meth:`routecast.cascades.cascade.Cascade.accepts` compares the
score with the step's threshold, and NaN never accepts (a cascade escalates on doubt).

* ``confidence``: the answer's token log-probs, summarised
  (:func:`~routecast.signals.live.summarize_logprobs`); no extra call, the step is asked for
  ``logprobs``;
* ``agreement``: ``samples`` more answers (at ``temperature``, seeds 1..k); the share of the
  k + 1 answers that agree with the kept one after
  :func:`~routecast.signals.live.normalize_answer`;
* ``self-verification`` (AutoMix): the same model asked ``votes`` times whether its answer is
  correct; the share of replies that say yes (:func:`~routecast.signals.live.parse_verdict`);
* ``learned`` (FrugalGPT): a fitted :class:`~routecast.signals.learned.LearnedScorer`'s
  P(correct | last user turn, answer), with the answer's log-prob confidence if it was fitted
  with one; no extra call.

Each judge is declared by its signal (``Signal.judge``, see :mod:`routecast.signals`), which
names a factory taking :class:`JudgeOptions`: :func:`make_judge` looks the signal up in the
signal registry, so a plugin's signal brings its own judge and the names are listed once.

Extra calls go to the step's own backend, concurrently, without streaming or log-probs; their
cost is returned in :attr:`Verdict.cost_usd` for the cascade to add to the request's. An answer
that cannot be judged scores NaN without extra calls: a tool call, an empty answer, an answer
without log-probs where they are read; so does a judge whose own call failed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from routecast.backends.base import Backend, Completion, Request
from routecast.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    from routecast.cascades.cascade import Cascade
    from routecast.signals.learned import LearnedScorer
    from routecast.signals.live import LogprobSummary

#: AutoMix-style self-verification, short so that a small model can follow it and the call
#: stays cheap. No "Question:" label: a base model's few-shot template adds its own.
VERIFY_PROMPT = ("{question}\nProposed answer: {answer}\n"
                 "Is the proposed answer correct? Answer yes or no.")
#: Enough for "Yes, the proposed answer is correct."; the verdict's last word wins.
VERIFY_MAX_TOKENS = 12

#: Request fields a judge's own calls never carry: they would stream, ask for alternatives
#: the judge does not read (log-probs cost 4x the CPU on llama.cpp), or several choices.
_NOT_FOR_JUDGES = ("stream", "stream_options", "logprobs", "top_logprobs", "n")


@dataclass(slots=True)
class Verdict:
    """A judged answer: ``score`` in [0, 1] (NaN: cannot be judged), what the judge's own
    calls cost, and how many it made."""

    score: float
    cost_usd: float = 0.0
    calls: int = 0


@dataclass(frozen=True, slots=True)
class JudgeOptions:
    """A cascade endpoint's judge settings (``None``: the judge's default); each judge reads
    the ones it has a use for."""

    summary: LogprobSummary = "mean"
    samples: int | None = None
    temperature: float | None = None
    votes: int | None = None
    scorer: LearnedScorer | None = None


class Judge(Protocol):
    """Scores an early cascade step's answer; see the module docstring."""

    #: The signal's name; a cascade's thresholds belong to one signal.
    name: str

    def check(self, cascade: Cascade, endpoint: str) -> None:
        """Raise :class:`ConfigError` if this judge cannot judge ``cascade``'s early steps."""

    def probe(self, request: Request) -> dict[str, Any]:
        """The body an early step is asked with (never streaming)."""

    async def judge(self, step: Backend, model: str, request: Request,
                    answer: Completion) -> Verdict:
        """Score ``answer``, which ``step`` (the cascade's ``model``) gave to ``request``."""


# -- reading answers -------------------------------------------------------------------------


def answer_text(body: Mapping[str, Any], api: str) -> str | None:
    """The first choice's text, or ``None`` when there is none to judge (a tool call, an
    empty or missing answer)."""
    choices = body.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    if api == "chat":
        message = first.get("message")
        if not isinstance(message, Mapping) or message.get("tool_calls"):
            return None
        text = message.get("content")
    else:
        text = first.get("text")
    return text if isinstance(text, str) and text.strip() else None


def confidence_score(body: Mapping[str, Any], summary: LogprobSummary = "mean") -> float:
    """The answer's token log-probs summarised into [0, 1]; NaN when it carries none."""
    from routecast.signals.live import summarize_logprobs

    choices = body.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    logprobs = first.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return math.nan
    tokens: list[Any]
    tops: list[Any] | None
    if isinstance(logprobs.get("content"), list):  # chat: one entry per token
        entries = [t for t in logprobs["content"] if isinstance(t, Mapping)]
        tokens = [t.get("logprob") for t in entries]
        tops = [t.get("top_logprobs") or [] for t in entries]
    elif isinstance(logprobs.get("token_logprobs"), list):  # completions
        tokens = [x for x in logprobs["token_logprobs"] if x is not None]
        tops = logprobs.get("top_logprobs") or None
    else:
        return math.nan
    try:
        return summarize_logprobs(tokens, tops, summary)
    except ConfigError:  # empty or malformed log-probs: no confidence
        return math.nan


def question_text(request: Request) -> str:
    """What was asked: the last user turn (chat) or the prompt (completions), as a routed
    endpoint reads it."""
    from routecast.backends.routed import routing_text

    return routing_text(request, "last_user")


def plain_body(request: Request) -> dict[str, Any]:
    """The client's body, asked without streaming (a judge needs the whole answer)."""
    body = {k: v for k, v in request.body.items() if k != "stream_options"}
    body["stream"] = False
    return body


def with_logprobs(request: Request, summary: LogprobSummary) -> dict[str, Any]:
    """:func:`plain_body` asking for the token log-probs ``summary`` reads."""
    top = 2 if summary == "margin" else 0
    body = plain_body(request)
    if request.api == "chat":
        body["logprobs"] = True
        # Always set: llama.cpp's server sends chat log-probs only when top_logprobs is
        # given (0 asks for none of the alternatives, and OpenAI accepts it).
        body["top_logprobs"] = max(top, int(body.get("top_logprobs") or 0))
    else:
        body["logprobs"] = max(top or 1, int(body.get("logprobs") or 0))
    return body


async def ask_all(step: Backend, request: Request, bodies: Sequence[dict[str, Any]]
                  ) -> tuple[list[Completion | None], float]:
    """Ask ``step`` every body at once; (answers, None where a call failed; their cost).

    llama-cpp-python's server ignores ``n``, so k answers are k requests. Only upstream
    failures become ``None``; anything else (a bug, a cancelled request) propagates.
    """
    calls = [step.complete(Request(b, request.api, request.session, request.allowed))
             for b in bodies]
    results = await asyncio.gather(*calls, return_exceptions=True)
    answers: list[Completion | None] = []
    for r in results:
        if isinstance(r, UpstreamError):
            answers.append(None)
        elif isinstance(r, BaseException):
            raise r
        else:
            answers.append(r)
    return answers, sum(a.cost_usd for a in answers if a is not None)


# -- the judges ------------------------------------------------------------------------------


class ConfidenceJudge:
    """The answer's model-intrinsic confidence from its token log-probs (``summary``: see
    :func:`~routecast.signals.live.summarize_logprobs`)."""

    name = "confidence"

    def __init__(self, summary: LogprobSummary = "mean") -> None:
        self.summary: LogprobSummary = summary

    @classmethod
    def from_options(cls, options: JudgeOptions) -> ConfidenceJudge:
        return cls(options.summary)

    def check(self, cascade: Cascade, endpoint: str) -> None:
        pass

    def probe(self, request: Request) -> dict[str, Any]:
        return with_logprobs(request, self.summary)

    async def judge(self, step: Backend, model: str, request: Request,
                    answer: Completion) -> Verdict:
        return Verdict(confidence_score(answer.body, self.summary))


class AgreementJudge:
    """Answer consistency: ``samples`` more answers at ``temperature`` with seeds 1..k (or the
    client's seed + 1..k), scored by how many agree with the kept answer."""

    name = "agreement"

    def __init__(self, samples: int = 2, temperature: float = 0.7) -> None:
        if samples < 1:
            raise ConfigError(f"agreement needs at least 1 sample to compare with, got {samples}")
        self.samples = samples
        self.temperature = temperature

    @classmethod
    def from_options(cls, options: JudgeOptions) -> AgreementJudge:
        return cls(2 if options.samples is None else options.samples,
                   0.7 if options.temperature is None else options.temperature)

    def check(self, cascade: Cascade, endpoint: str) -> None:
        pass

    def probe(self, request: Request) -> dict[str, Any]:
        return plain_body(request)

    def sample_bodies(self, request: Request) -> list[dict[str, Any]]:
        """One body per sample: the client's request at this judge's temperature, each with
        its own seed (llama.cpp samples with a fixed default seed: equal seeds, equal answers).
        """
        base = {k: v for k, v in request.body.items() if k not in _NOT_FOR_JUDGES}
        seed = request.body.get("seed")
        first = seed + 1 if isinstance(seed, int) and not isinstance(seed, bool) else 1
        return [{**base, "temperature": self.temperature, "seed": first + i}
                for i in range(self.samples)]

    async def judge(self, step: Backend, model: str, request: Request,
                    answer: Completion) -> Verdict:
        from routecast.signals.live import normalize_answer

        kept = normalize_answer(answer_text(answer.body, request.api))
        if not kept:
            return Verdict(math.nan)
        samples, cost = await ask_all(step, request, self.sample_bodies(request))
        if any(s is None for s in samples):
            return Verdict(math.nan, cost, len(samples))
        texts = [answer_text(s.body, request.api) for s in samples if s is not None]
        # The share of all k + 1 answers that agree with the kept one: what agreement() gives
        # when the kept answer is the most common, but never credit for a majority it is not in.
        agreeing = 1 + sum(normalize_answer(t) == kept for t in texts)
        return Verdict(agreeing / (1 + len(texts)), cost, len(samples))


class SelfVerificationJudge:
    """The step's model asked ``votes`` times whether its own answer is correct (greedy for one
    vote, else at ``temperature`` with seeds 1..k); the share of "yes" votes."""

    name = "self-verification"

    def __init__(self, votes: int = 1, temperature: float = 0.7, *,
                 prompt: str = VERIFY_PROMPT, max_tokens: int = VERIFY_MAX_TOKENS) -> None:
        if votes < 1:
            raise ConfigError(f"self-verification needs at least 1 vote, got {votes}")
        if "{question}" not in prompt or "{answer}" not in prompt:
            raise ConfigError("the self-verification prompt must contain {question} and "
                              "{answer}")
        self.votes = votes
        self.temperature = temperature
        self.prompt = prompt
        self.max_tokens = max_tokens

    @classmethod
    def from_options(cls, options: JudgeOptions) -> SelfVerificationJudge:
        return cls(1 if options.votes is None else options.votes,
                   0.7 if options.temperature is None else options.temperature)

    def check(self, cascade: Cascade, endpoint: str) -> None:
        pass

    def probe(self, request: Request) -> dict[str, Any]:
        return plain_body(request)

    def verify_bodies(self, request: Request, answer: str) -> list[dict[str, Any]]:
        """One verification request per vote, in the client's API (a chat turn, or a prompt
        for ``/v1/completions``; a base model's backend writes a chat turn in its format)."""
        text = self.prompt.format(question=question_text(request).strip(),
                                  answer=answer.strip())
        body: dict[str, Any] = {"model": request.body.get("model"),
                                "max_tokens": self.max_tokens}
        if request.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = f"{text}\nAnswer:"
        if self.votes == 1:
            return [{**body, "temperature": 0.0}]
        return [{**body, "temperature": self.temperature, "seed": 1 + i}
                for i in range(self.votes)]

    async def judge(self, step: Backend, model: str, request: Request,
                    answer: Completion) -> Verdict:
        from routecast.signals.live import parse_verdict, self_verification_score

        text = answer_text(answer.body, request.api)
        if text is None:
            return Verdict(math.nan)
        replies, cost = await ask_all(step, request, self.verify_bodies(request, text))
        if any(r is None for r in replies):
            return Verdict(math.nan, cost, len(replies))
        votes = [parse_verdict(answer_text(r.body, request.api)) for r in replies
                 if r is not None]
        return Verdict(self_verification_score(votes), cost, len(replies))


class LearnedJudge:
    """A fitted FrugalGPT-style scorer of (last user turn, answer); when it was fitted with
    the answers' confidence, the step is asked for log-probs, summarised by ``summary``."""

    name = "learned"

    def __init__(self, scorer: LearnedScorer, summary: LogprobSummary = "mean") -> None:
        if not hasattr(scorer, "estimators_"):
            raise ConfigError("the learned signal needs a fitted scorer; fit it (or load a "
                              "saved one with routecast.signals.persist.load_scorer) first")
        self.scorer = scorer
        self.summary: LogprobSummary = summary

    @classmethod
    def from_options(cls, options: JudgeOptions) -> LearnedJudge:
        if options.scorer is None:
            raise ConfigError("the learned signal cannot be computed live without a fitted "
                              "scorer. Fix: give its saved folder (`scorer:` in the config, "
                              "written by `routecast tune-cascade --signal learned`)")
        return cls(options.scorer, options.summary)

    def check(self, cascade: Cascade, endpoint: str) -> None:
        unknown = [m for m in cascade.models[:-1] if m not in self.scorer.models_]
        if unknown:
            raise ConfigError(
                f"endpoint {endpoint!r}: the learned scorer was fitted on models "
                f"{list(self.scorer.models_)} and cannot score {unknown}. Fix: name the "
                "cascade's models as in the scorer's data, or fit a scorer on them")

    def probe(self, request: Request) -> dict[str, Any]:
        if self.scorer.uses_confidence_:
            return with_logprobs(request, self.summary)
        return plain_body(request)

    async def judge(self, step: Backend, model: str, request: Request,
                    answer: Completion) -> Verdict:
        text = answer_text(answer.body, request.api)
        if text is None:
            return Verdict(math.nan)
        confidence = None
        if self.scorer.uses_confidence_:
            value = confidence_score(answer.body, self.summary)
            if math.isnan(value):
                return Verdict(math.nan)
            confidence = [value]
        # On the event loop: one prompt costs ~1 ms of scikit-learn, less than a thread hop
        # is worth on the one core the proxy is meant to use.
        score = self.scorer.score_responses([question_text(request)], model, [text],
                                            confidence)
        return Verdict(float(score[0]))


def live_signals() -> list[str]:
    """Signals a live cascade can compute (those that declare a judge), documented order."""
    from routecast.signals import live_signal_names

    return live_signal_names()


def make_judge(signal: str, *, summary: LogprobSummary = "mean", samples: int | None = None,
               temperature: float | None = None, votes: int | None = None,
               scorer: LearnedScorer | None = None) -> Judge:
    """The judge of ``signal`` with its parameters (``None``: the judge's default)."""
    from routecast.registry import resolve
    from routecast.signals import SIGNALS

    reference = SIGNALS.load(signal).judge
    if not reference:
        raise ConfigError(f"the signal {signal!r} cannot be computed live; live cascades use "
                          f"{', '.join(live_signals())}")
    factory = resolve(reference)
    if not callable(factory):
        raise ConfigError(f"the {signal!r} signal's judge {reference!r} cannot be called")
    judge: Judge = factory(JudgeOptions(summary, samples, temperature, votes, scorer))
    return judge
