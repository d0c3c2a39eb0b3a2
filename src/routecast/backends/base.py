"""The backend interface: one object that answers OpenAI-style requests.

A backend is one model behind an HTTP server, or a composite of backends (a routed endpoint,
a fallback chain, a cascade) that is itself a :class:`Backend`; the server only ever sees
backends. Requests and answers stay plain OpenAI JSON (``dict``), so fields routecast does not
know (``tools``, ``response_format``, ``stream_options``, ...) travel through untouched.

A stream is a sequence of :class:`Chunk`: one per upstream chunk (``data`` is the chunk
object), or one per block of upstream chunks that arrived together (``raw`` holds them all,
ready to send), then exactly one last chunk whose ``final`` holds the :class:`Completion`
summary (usage, cost, latency, route). That last chunk's ``data`` is the upstream's usage-only
chunk when it sent one, else ``None``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from routecast.backends.trace import Trace

#: Which OpenAI route a request came in on: ``/v1/chat/completions`` or ``/v1/completions``.
Api = Literal["chat", "completions"]


@dataclass(slots=True)
class Request:
    """One client request as a backend sees it.

    ``body`` is the client's JSON object as sent; its ``model`` names the endpoint, and each
    backend that forwards it swaps in its upstream's model name on a shallow copy (the client's
    dict is never changed). ``session`` is the ``x-routecast-session`` header, if any.
    ``allowed`` restricts which models may see the request (``None``: any); the privacy rule
    sets it to the local models for prompts that must not leave the premises, the capability
    check (:mod:`routecast.server.capability_check`) leaves out models that cannot serve the
    request, and every composite honours it when it picks a model.
    """

    body: dict[str, Any]
    api: Api = "chat"
    session: str | None = None
    allowed: frozenset[str] | None = None

    def allows(self, model: str) -> bool:
        return self.allowed is None or model in self.allowed

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass(slots=True)
class Usage:
    """Tokens one answer took.

    ``cached_tokens`` is the part of ``prompt_tokens`` served from the upstream's prompt cache
    and ``reasoning_tokens`` the part of ``completion_tokens`` spent on hidden reasoning (the
    OpenAI convention: both are subsets, not additions). ``estimated`` is true when the
    upstream reported no usage and the counts were guessed from the text.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; ``None`` when it is absent or not an object."""
        if not isinstance(usage, Mapping):
            return None
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        return cls(
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_int(prompt_details.get("cached_tokens"))
            if isinstance(prompt_details, Mapping) else 0,
            reasoning_tokens=_int(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, Mapping) else 0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens,
                "estimated": self.estimated}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Price:
    """What one model charges, in USD per million tokens.

    Cached prompt tokens are billed at ``cached_usd_per_mtok`` (the input price when that is
    ``None``); reasoning tokens are already inside ``completion_tokens`` and billed as output.
    """

    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    cached_usd_per_mtok: float | None = None

    def cost_usd(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = (self.input_usd_per_mtok if self.cached_usd_per_mtok is None
                        else self.cached_usd_per_mtok)
        return ((usage.prompt_tokens - cached) * self.input_usd_per_mtok
                + cached * cached_price
                + usage.completion_tokens * self.output_usd_per_mtok) / 1e6

    @property
    def rank(self) -> float:
        """Sort key for "most expensive": output price first, then input price."""
        return self.output_usd_per_mtok * 1e6 + self.input_usd_per_mtok


@dataclass(slots=True)
class Completion:
    """A finished answer and what it cost.

    ``body`` is the OpenAI response object (for a stream, ``{}``), its ``model`` set to the
    model that really answered. ``route`` is the escalation path: every model asked, in order,
    the answering one last (``len(route) > 1`` means a fallback or a cascade escalated).
    ``latency_s`` is wall time inside the backend, ``routing_s`` the part of it spent choosing
    a model. ``trace`` is a composite's record of why (the routing debugger's,
    :mod:`routecast.backends.trace`), ``None`` for a plain model.
    """

    body: dict[str, Any]
    model: str
    usage: Usage
    cost_usd: float
    latency_s: float
    route: list[str]
    routing_s: float = 0.0
    trace: Trace | None = None


@dataclass(slots=True)
class Chunk:
    """One piece of a streamed answer; see the module docstring for the sequence.

    ``route`` is the escalation path so far. Backends should share one list between every
    chunk of a stream and its final completion: a composite that learns of earlier attempts
    then extends it in place once per stream, not once per chunk.

    ``raw``, when set, is what the client receives for this piece: one or more server-sent
    events (``data: {...}\\n\\n`` each), already in their final form, and ``data`` is the last
    of them as an object, for reading (changing it does not change ``raw``). A backend that
    gets several upstream chunks in one network read hands them on as one ``Chunk`` with
    ``raw``: every layer of a stream then pays its per-chunk cost once per read, not once per
    token. A final chunk may have ``raw`` too (the events that arrived with the stream's end,
    sent before the summary); its ``data`` is then the upstream's usage chunk.
    """

    data: dict[str, Any] | None
    model: str
    route: list[str]
    final: Completion | None = None
    raw: bytes | None = None


class Backend(ABC):
    """Answers requests; async, so one process serves many at once.

    ``name`` labels it in logs and errors; ``models`` lists every model it may answer with
    (for ``/v1/models`` and for "the endpoint's strongest model" in stats).
    """

    name: str = ""
    models: tuple[str, ...] = ()

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """The whole answer; raises :class:`routecast.errors.UpstreamError` on failure."""

    @abstractmethod
    def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """The answer as it is generated; errors before the first chunk raise, so a composite
        can still try another model and the server can still answer with an error status."""

    def usable(self, request: Request) -> bool:
        """Whether asking this backend now could work: some model of it is healthy (its
        circuit breaker is not open) and allowed for ``request``. Composites skip backends
        that are not usable rather than pay their timeouts."""
        return any(request.allows(m) for m in self.models) if self.models else True

    # Optional hooks, deliberately not abstract: most backends need neither.
    async def start(self) -> None:  # noqa: B027
        """Prepare for requests (connection pools, warm-up); called once, inside the loop."""

    async def aclose(self) -> None:  # noqa: B027
        """Release connections; called once at shutdown."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


async def start_all(backends: Iterable[Backend]) -> None:
    """Start ``backends`` in order (composites and the server's endpoint table)."""
    for backend in backends:
        await backend.start()


async def close_all(backends: Iterable[Backend]) -> None:
    """Close ``backends`` in order."""
    for backend in backends:
        await backend.aclose()


async def close_stream(chunks: AsyncIterator[Chunk]) -> None:
    """Close a stream left unfinished (client gone, error), so its upstream connection is
    released now rather than when the garbage collector finds it."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class RoutePrefix:
    """Puts earlier attempts in front of a stream's routes, once per route list.

    A composite that asked other models before this stream started (failed fallbacks, early
    cascade steps) calls it on every chunk. Backends usually share one list between all chunks
    of a stream and its final completion (then this costs one insert per stream), but nothing
    requires it.
    """

    def __init__(self, earlier: list[str]) -> None:
        self.earlier = earlier
        # Holding the lists (not only their ids) keeps an id from being reused meanwhile.
        self.done: dict[int, list[str]] = {}

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.earlier:
            self._fix(chunk.route)
            if chunk.final is not None:
                self._fix(chunk.final.route)
        return chunk

    def _fix(self, route: list[str]) -> None:
        if id(route) not in self.done:
            route[:0] = self.earlier
            self.done[id(route)] = route
