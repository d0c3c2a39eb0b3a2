"""The server's capability check: which of an endpoint's models can serve a request.

Before a request reaches its endpoint's backend, :meth:`CapabilityCheck.check` reads what it
needs (:func:`routecast.capabilities.needs_of`) and rules out the endpoint's models that
cannot serve it, by narrowing the request's ``allowed`` models. Every composite already honours
``allowed``: a routed endpoint picks by the same policy among the models left, a cascade skips
the steps ruled out, a fallback chain the fallbacks. When no model is left the client gets a
400 naming what the request needs and every model considered, with the reason for each.

Cost: a plain text request (no content parts, tools or response format) that is far enough
from every model's window pays one pass over its messages, a few microseconds
(``benchmarks/capability_check.py``); only requests near a window with a model that has a
``tokenize_url`` pay a call to that tokenizer (loopback, a millisecond or so), and only for
the models near the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from routecast.capabilities import (
    PER_IMAGE_TOKENS,
    PER_MESSAGE_TOKENS,
    Capabilities,
    Needs,
    needs_of,
    refusal,
)
from routecast.errors import RequestError

if TYPE_CHECKING:
    from routecast.server.config import CapabilitiesConfig, Config

log = logging.getLogger("routecast.server")

#: The response header that names the models ruled out, and why.
EXCLUDED_HEADER = "x-routecast-excluded"
#: Exact counting is worth a tokenizer call only while the estimate is within this factor of
#: a window: further away the estimate's error cannot change the verdict.
NEAR = 2.0


def capabilities_of(spec: CapabilitiesConfig) -> Capabilities:
    """The :class:`Capabilities` a model's config block declares."""
    return Capabilities(frozenset(spec.input), spec.tools, frozenset(spec.structured_output),
                        spec.context_window, spec.max_output_tokens, spec.streaming)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request needs and which of the models considered were ruled out, and why."""

    needs: Needs
    considered: tuple[str, ...]
    excluded: dict[str, str]

    def header(self) -> str:
        """``x-routecast-excluded``: ``model (reason); model (reason)``."""
        return "; ".join(f"{m} ({why})" for m, why in self.excluded.items())


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """An endpoint's models and the limits under which none can be ruled out."""

    models: tuple[str, ...]
    window: float  # the smallest known context window (halved where a tokenizer counts)
    max_output: float  # the smallest known max_output_tokens
    streams: bool  # all stream


class CapabilityCheck:
    """The capabilities of every model of a config, and the check of each request."""

    def __init__(self, capabilities: Mapping[str, Capabilities],
                 tokenize_urls: Mapping[str, str] | None = None) -> None:
        self.capabilities = dict(capabilities)
        self.tokenize_urls = dict(tokenize_urls or {})
        self._endpoints: dict[tuple[str, ...], _Endpoint] = {}
        self._session: Any = None

    @classmethod
    def from_config(cls, config: Config) -> CapabilityCheck:
        return cls({name: capabilities_of(m.capabilities) for name, m in config.models.items()},
                   {name: m.capabilities.tokenize_url for name, m in config.models.items()
                    if m.capabilities.tokenize_url})

    def _endpoint(self, models: tuple[str, ...]) -> _Endpoint:
        spec = self._endpoints.get(models)
        if spec is None:
            caps = [self.capabilities[m] for m in models if m in self.capabilities]
            # A model with a tokenizer is counted exactly once the estimate comes near its
            # window, so the fast path ends there.
            windows = [c.context_window / (NEAR if m in self.tokenize_urls else 1.0)
                       for m in models if (c := self.capabilities.get(m)) and c.context_window]
            spec = _Endpoint(
                models, min(windows, default=float("inf")),
                min((c.max_output_tokens for c in caps if c.max_output_tokens),
                    default=float("inf")),
                all(c.streaming for c in caps))
            self._endpoints[models] = spec
        return spec

    async def check(self, body: Mapping[str, Any], api: str, models: tuple[str, ...],
                    allowed: frozenset[str] | None, endpoint: str
                    ) -> tuple[frozenset[str] | None, Verdict | None]:
        """(the models the request may go to, the verdict when any was ruled out).

        ``models`` are the endpoint's, ``allowed`` what the privacy rule left (``None``: all).
        Raises a 400 :class:`RequestError` when none of them can serve the request.
        """
        needs = needs_of(body, api)
        spec = self._endpoint(models)
        # The fast path: nothing the request needs can rule out any of the models.
        if (needs.plain and needs.tokens <= spec.window and needs.max_tokens <= spec.max_output
                and (spec.streams or not needs.stream)):
            return allowed, None
        considered = tuple(m for m in models if allowed is None or m in allowed)
        excluded: dict[str, str] = {}
        near: list[str] = []
        for m in considered:
            caps = self.capabilities.get(m)
            if caps is None:
                continue
            why = refusal(caps, needs)
            window = caps.context_window
            if (m in self.tokenize_urls and window and (why is None or why.startswith("con"))
                    and window / NEAR <= needs.tokens <= window * NEAR):
                near.append(m)
            if why is not None:
                excluded[m] = why
        for m in near:  # count with the model's own tokenizer and decide again
            exact = await self._count(m, body, api, needs)
            if exact is None:
                continue
            why = refusal(self.capabilities[m], exact)
            if why is None:
                excluded.pop(m, None)
            else:
                excluded[m] = why + " (counted)"
        if not excluded:
            return allowed, None
        verdict = Verdict(needs, considered, excluded)
        left = frozenset(m for m in considered if m not in excluded)
        if not left:
            raise _none_can(endpoint, verdict)
        return left, verdict

    # -- exact counts ----------------------------------------------------------------------

    async def _count(self, model: str, body: Mapping[str, Any], api: str, needs: Needs
                     ) -> Needs | None:
        """``needs`` with the prompt counted by ``model``'s tokenizer, or ``None`` when the
        tokenizer cannot be asked (then the estimate stands; it is logged)."""
        url = self.tokenize_urls[model]
        text, n_messages, n_images = _prompt_text(body, api)
        extended = url.rstrip("/").endswith(("/tokenize/count", "/extras/tokenize"))
        payload = {"input": text} if extended else {"content": text}
        try:
            import aiohttp

            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=5.0), trust_env=False)
            async with self._session.post(url, json=payload) as resp:
                data = await resp.json(content_type=None)
        except (TimeoutError, OSError, ValueError) as e:
            log.warning("capability check: cannot count tokens at %s (%s); using the estimate",
                        url, e)
            return None
        count = data.get("count") if isinstance(data, dict) else None
        if count is None and isinstance(data, dict) and isinstance(data.get("tokens"), list):
            count = len(data["tokens"])
        if not isinstance(count, int):
            log.warning("capability check: %s answered no token count; using the estimate", url)
            return None
        tokens = count + PER_MESSAGE_TOKENS * n_messages + PER_IMAGE_TOKENS * n_images
        return replace(needs, prompt_tokens=tokens, exact=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- config check ----------------------------------------------------------------------

    def gaps(self, models: Iterable[str]) -> list[str]:
        """Kinds of request that none of ``models`` can serve (for ``config check``)."""
        caps = [self.capabilities[m] for m in models if m in self.capabilities]
        gaps = [f"{m} input" for m in ("image", "audio")
                if not any(m in c.modalities for c in caps)]
        if not any(c.tools for c in caps):
            gaps.append("tools")
        gaps += [f"response_format {f}" for f in ("json_object", "json_schema")
                 if not any(f in c.structured_output for c in caps)]
        if not any(c.streaming for c in caps):
            gaps.append("streaming")
        windows = [c.context_window for c in caps]
        if windows and None not in windows:
            gaps.append(f"prompts over {max(w or 0 for w in windows)} tokens")
        return gaps


def capability_warnings(config: Config, backends: Mapping[str, Any]) -> list[str]:
    """One line per configured endpoint that some requests can never pass: the kinds no model
    of it declares (``routecast config check`` prints them; they are not errors)."""
    check = CapabilityCheck.from_config(config)
    out = []
    for name in config.endpoints:
        backend = backends.get(name)
        gaps = check.gaps(backend.models) if backend is not None else []
        if gaps:
            out.append(f"endpoint {name} can never serve requests with {', '.join(gaps)} (no "
                       "model of it declares them; they get a 400). Fix: add a model that can, "
                       "or declare what a model can under models.<name>.capabilities")
    return out


def _prompt_text(body: Mapping[str, Any], api: str) -> tuple[str, int, int]:
    """(the text a tokenizer counts, messages, image parts) of a request."""
    if api != "chat":
        prompt = body.get("prompt")
        parts = prompt if isinstance(prompt, list) else [prompt]
        return "\n".join(p for p in parts if isinstance(p, str)), 0, 0
    from routecast.backends.transport import json_dumps

    texts: list[str] = []
    n_messages = n_images = 0
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        n_messages += 1
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    if isinstance(part.get("text"), str):
                        texts.append(part["text"])
                    if part.get("type") in ("image_url", "input_image", "image"):
                        n_images += 1
        if message.get("tool_calls"):
            texts.append(json_dumps(message["tool_calls"]).decode())
    for key in ("tools", "functions"):
        if body.get(key):
            texts.append(json_dumps(body[key]).decode())
    return "\n".join(texts), n_messages, n_images


def _none_can(endpoint: str, verdict: Verdict) -> RequestError:
    needs = verdict.needs
    reasons = ", ".join(f"{m} ({why})" for m, why in verdict.excluded.items())
    param = ("tools" if needs.tools and "tools" in reasons else
             "response_format" if needs.structured_output and "json" in reasons else
             "max_tokens" if "max_tokens" in reasons else
             "stream" if "streaming" in reasons else "messages")
    return RequestError(
        f"no model of endpoint {endpoint!r} can serve this request, which needs "
        f"{needs.describe()}; models considered: {reasons}. Fix: send it to an endpoint with "
        "a model that can (GET /v1/models), shorten it, or, if a model can after all, "
        "declare it under models.<name>.capabilities", param=param, code="no_capable_model")
