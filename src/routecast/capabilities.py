"""What a model can serve, what a request needs, and whether the two meet.

A model's :class:`Capabilities` come from its config (``models.<name>.capabilities``): input
modalities (text, image, audio), tool calls, structured output (``json_object``,
``json_schema``), context window, most output tokens, streaming. A request's :class:`Needs`
are read from the internal chat (or completions) body by :func:`needs_of`, so any API that is
translated to that body (Messages, Responses) gets the same checks for free.

Prompt tokens are estimated without a tokenizer (:func:`estimate_tokens`): ASCII text at 4
characters per token (English under the common BPE vocabularies is 3.5-4.5), other text at 3
UTF-8 bytes per token (CJK is about one token per character, i.e. 3 bytes), plus 4 tokens per
message for the chat template and 765 per image (OpenAI's price of a 512-pixel high-detail
tile: a size upstreams rarely exceed per image). The estimate is then taken 10 % larger
(:data:`MARGIN`) before it is compared with a window: sending a request that overflows costs a
round trip and a retry, excluding a model that would have fitted costs a worse or dearer
answer, and 10 % covers the spread of the per-character rates above for prose and code. Where
the server knows the model's own tokenizer (``tokenize_url``, e.g. llama.cpp's ``/tokenize``)
it counts exactly, but only when the estimate is near a window
(:mod:`routecast.server.capability_check`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: How much larger than the estimate a prompt is taken to be when compared with a window.
MARGIN = 0.10
#: Tokens the chat template adds per message (role markers, separators).
PER_MESSAGE_TOKENS = 4
#: Tokens counted per image part (OpenAI's high-detail 512 px tile).
PER_IMAGE_TOKENS = 765

#: Content-part types that carry an image or audio, across the OpenAI Chat and Responses
#: shapes and the Anthropic Messages shape (after translation they may still appear).
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one model can serve. ``None`` for a size means unknown: it is not checked (an
    upstream's context-length error still moves the request to the next model)."""

    modalities: frozenset[str] = frozenset({"text"})
    tools: bool = False
    structured_output: frozenset[str] = frozenset()
    context_window: int | None = None
    max_output_tokens: int | None = None
    streaming: bool = True


@dataclass(frozen=True, slots=True)
class Needs:
    """What one request needs from the model that answers it.

    ``modalities`` lists input kinds beyond plain text; ``prompt_tokens`` is an estimate
    unless ``exact`` (a tokenizer counted it); ``max_tokens`` is what the client asked for as
    the most output tokens (0: not given).
    """

    modalities: frozenset[str] = frozenset()
    tools: bool = False
    structured_output: str | None = None
    prompt_tokens: int = 0
    max_tokens: int = 0
    stream: bool = False
    exact: bool = False

    @property
    def plain(self) -> bool:
        """Plain text, no tools, no structured output: only size can rule a model out."""
        return not (self.modalities or self.tools or self.structured_output)

    @property
    def tokens(self) -> int:
        """Prompt plus requested output tokens, with the estimate's margin."""
        # (less a hair: 900 * 1.1 is 990.0000000000001 in floating point)
        prompt = self.prompt_tokens if self.exact else math.ceil(self.prompt_tokens
                                                                  * (1 + MARGIN) - 1e-9)
        return prompt + self.max_tokens

    def describe(self) -> str:
        """What the request needs, in words (for error messages and ``config check``)."""
        parts = [f"{m} input" for m in sorted(self.modalities)]
        if self.tools:
            parts.append("tools")
        if self.structured_output:
            parts.append(f"response_format {self.structured_output}")
        if self.stream:
            parts.append("streaming")
        size = f"~{self.prompt_tokens}" if not self.exact else str(self.prompt_tokens)
        parts.append(f"{size} prompt tokens" + (f" + max_tokens {self.max_tokens}"
                                                  if self.max_tokens else ""))
        return ", ".join(parts)


def refusal(caps: Capabilities, needs: Needs) -> str | None:
    """Why a model with ``caps`` cannot serve ``needs`` (a short reason), or ``None``."""
    missing = needs.modalities - caps.modalities
    if missing:
        return f"no {'/'.join(sorted(missing))} input"
    if needs.tools and not caps.tools:
        return "no tools"
    if needs.structured_output and needs.structured_output not in caps.structured_output:
        return f"no {needs.structured_output}"
    if needs.stream and not caps.streaming:
        return "no streaming"
    if caps.max_output_tokens is not None and needs.max_tokens > caps.max_output_tokens:
        return f"max_tokens {needs.max_tokens} > its {caps.max_output_tokens}"
    if caps.context_window is not None and needs.tokens > caps.context_window:
        return f"context {needs.tokens} > its window {caps.context_window}"
    return None


def needs_of(body: Mapping[str, Any], api: str = "chat") -> Needs:
    """What the request ``body`` (OpenAI chat or completions JSON) needs; see the module
    docstring for how prompt tokens are estimated. One pass over the messages: a few
    microseconds for a short conversation (benchmarks/capability_check.py)."""
    modalities: set[str] = set()
    chars = 0
    wide = 0  # UTF-8 bytes of non-ASCII strings
    n_images = 0
    n_messages = 0
    if api == "chat":
        for message in body.get("messages") or ():
            if not isinstance(message, Mapping):
                continue
            n_messages += 1
            content = message.get("content")
            if isinstance(content, str):
                if content.isascii():
                    chars += len(content)
                else:
                    wide += len(content.encode("utf-8", "replace"))
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, Mapping):
                        continue
                    kind = part.get("type")
                    if kind in _IMAGE_PARTS:
                        modalities.add("image")
                        n_images += 1
                    elif kind in _AUDIO_PARTS:
                        modalities.add("audio")
                    text = part.get("text")
                    if isinstance(text, str):
                        if text.isascii():
                            chars += len(text)
                        else:
                            wide += len(text.encode("utf-8", "replace"))
            calls = message.get("tool_calls")
            if calls:
                chars += len(_json(calls))
    else:
        prompt = body.get("prompt")
        for text in (prompt if isinstance(prompt, list) else [prompt]):
            if isinstance(text, str):
                if text.isascii():
                    chars += len(text)
                else:
                    wide += len(text.encode("utf-8", "replace"))
    tools = _wants_tools(body)
    if tools:
        chars += len(_json(body.get("tools") or body.get("functions") or ()))
    fmt = body.get("response_format")
    structured = None
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        structured = str(fmt["type"])
        if structured == "json_schema":
            chars += len(_json(fmt.get("json_schema") or {}))
    max_tokens = body.get("max_completion_tokens")
    if not isinstance(max_tokens, int):
        max_tokens = body.get("max_tokens")
    prompt_tokens = (estimate_tokens(chars, wide) + PER_MESSAGE_TOKENS * n_messages
                     + PER_IMAGE_TOKENS * n_images)
    return Needs(frozenset(modalities), tools, structured, prompt_tokens,
                 max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0,
                 body.get("stream") is True)


def estimate_tokens(ascii_chars: int, other_bytes: int = 0) -> int:
    """Tokens of text with ``ascii_chars`` ASCII characters and ``other_bytes`` UTF-8 bytes of
    other text: 4 characters, or 3 bytes, per token (rounded up)."""
    return -(-ascii_chars // 4) + -(-other_bytes // 3)


def _wants_tools(body: Mapping[str, Any]) -> bool:
    """Tools offered (``tools``, or legacy ``functions``) and not switched off."""
    if not (body.get("tools") or body.get("functions")):
        return False
    return body.get("tool_choice") != "none" and body.get("function_call") != "none"


def _json(value: Any) -> bytes:
    from routecast.backends.transport import json_dumps

    try:
        return json_dumps(value)
    except (TypeError, ValueError):
        return b""


# -- upstream overflow -------------------------------------------------------------------

#: What upstreams say when a prompt does not fit: OpenAI and vLLM ("This model's maximum
#: context length is ..."), llama-cpp-python (the same, code context_length_exceeded),
#: llama.cpp's server ("exceeds the available context size"), Anthropic ("prompt is too
#: long"), Gemini ("exceeds the maximum number of tokens"), Mistral / others ("too many
#: tokens", "context window").
_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|context (?:length|window|size)"
    r"|prompt is too long|too many (?:input )?tokens|exceeds? the maximum number of tokens",
    re.IGNORECASE)


def is_context_overflow(error: BaseException) -> bool:
    """Whether an upstream rejected a request because it did not fit the model's context
    window (then a model with a larger window may still serve it)."""
    status = getattr(error, "upstream_status", None)
    return status in (400, 413, 422) and _OVERFLOW.search(str(error)) is not None


# -- request features for routers ------------------------------------------------------------

def feature_tags(needs: Needs) -> str:
    """Words that tell a text router the request's modality and size: ``rcsize<k>`` with
    ``k = floor(log2(prompt tokens))`` (so 1,000 and 1,900 tokens share a word, 4,000 does
    not) and ``rcimage`` / ``rcaudio`` / ``rctools``. A router fitted on prompts tagged with
    :func:`tag_prompt` learns a weight per word, e.g. that long prompts do better on a model."""
    words = [f"rcsize{int(math.log2(max(needs.prompt_tokens, 1)))}"]
    words += [f"rc{m}" for m in sorted(needs.modalities)]
    if needs.tools:
        words.append("rctools")
    return " ".join(words)


def tag_prompt(prompt: str) -> str:
    """``prompt`` with the :func:`feature_tags` of a one-message text request holding it, as
    a routed endpoint with ``features: true`` builds its routing text; fit the endpoint's
    router on prompts passed through this."""
    needs = needs_of({"messages": [{"role": "user", "content": prompt}]})
    return f"{feature_tags(needs)} {prompt}"
