"""Serve chat requests with a base (non-chat) model: messages in, one prompt out, and back.

A base model only continues text, through ``/v1/completions``. :class:`PromptFormat` writes the
conversation as the text the model was trained on (ChatML, Llama 3, or plain "User:" lines)
ending with the assistant's opening, and stops where the model would start the next turn. The
answer is mapped back into a chat response (or chat chunks), so the client never knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routecast.errors import ConfigError, RequestError
from routecast.registry import Registry

#: Chat-only request fields a completion endpoint would reject or misread.
_CHAT_ONLY = ("messages", "tools", "tool_choice", "parallel_tool_calls", "functions",
              "function_call", "response_format", "logprobs", "top_logprobs",
              "max_completion_tokens", "modalities", "audio", "reasoning_effort")


@dataclass(frozen=True)
class PromptFormat:
    """How one family of base models expects a conversation to be written.

    Each turn is ``{role}_prefix + content + {role}_suffix``; the prompt ends with
    ``assistant_prefix``; ``stop`` are the strings that end the assistant's turn.
    """

    system_prefix: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    stop: tuple[str, ...] = ()

    def render(self, messages: list[Any]) -> str:
        parts: list[str] = []
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, Mapping) else None
            if role not in ("system", "developer", "user", "assistant"):
                raise RequestError(
                    f"messages[{i}] has role {role!r}, which a base model cannot take; use "
                    "system, user or assistant turns (tool turns need a chat model)",
                    param=f"messages[{i}].role")
            prefix, suffix = {
                "system": (self.system_prefix, self.system_suffix),
                "developer": (self.system_prefix, self.system_suffix),
                "user": (self.user_prefix, self.user_suffix),
                "assistant": (self.assistant_prefix, self.assistant_suffix),
            }[role]
            parts.append(prefix + message_text(message) + suffix)
        parts.append(self.assistant_prefix)
        return "".join(parts)


CHATML = PromptFormat(
        system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
        user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n", assistant_suffix="<|im_end|>\n",
        stop=("<|im_end|>", "<|im_start|>"))
LLAMA3 = PromptFormat(
        system_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
        system_suffix="<|eot_id|>",
        user_prefix="<|start_header_id|>user<|end_header_id|>\n\n", user_suffix="<|eot_id|>",
        assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant_suffix="<|eot_id|>", stop=("<|eot_id|>",))
PLAIN = PromptFormat(
        system_prefix="", system_suffix="\n\n", user_prefix="User: ", user_suffix="\n",
        assistant_prefix="Assistant:", assistant_suffix="\n", stop=("\nUser:",))


def _check(name: str, obj: object) -> PromptFormat:
    if not isinstance(obj, PromptFormat):
        raise ConfigError(f"prompt format {name!r} is {obj!r}, not a PromptFormat")
    return obj


#: Every prompt format by name (a read-only mapping; plugins: ``routecast.prompt_formats``).
FORMATS: Registry[PromptFormat] = Registry("prompt format", "routecast.prompt_formats", {
    "chatml": f"{__name__}:CHATML", "llama3": f"{__name__}:LLAMA3", "plain": f"{__name__}:PLAIN",
}, _check)


def prompt_format(name: str) -> PromptFormat:
    """The prompt format registered as ``name``."""
    try:
        return FORMATS.load(name)
    except ConfigError as e:
        raise ConfigError(f"{e} (or give prefixes and stop strings)") from None


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message: a string, or the text parts of a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content
                         if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def chat_to_completion_body(body: Mapping[str, Any], fmt: PromptFormat, upstream_model: str
                            ) -> dict[str, Any]:
    """A ``/v1/completions`` body that asks a base model what ``body`` asks a chat model."""
    if body.get("tools") or body.get("functions"):
        raise RequestError("tools need a chat model; this endpoint's model is a base model "
                           "(kind: base). Drop `tools` or use a chat model", param="tools")
    out = {k: v for k, v in body.items() if k not in _CHAT_ONLY}
    out["model"] = upstream_model
    out["prompt"] = fmt.render(body["messages"])
    if "max_completion_tokens" in body and "max_tokens" not in body:
        out["max_tokens"] = body["max_completion_tokens"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []
    out["stop"] = [*stops, *(s for s in fmt.stop if s not in stops)][:4]  # OpenAI allows 4
    return out


def completion_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A chat response from a ``/v1/completions`` response (``text`` becomes the message)."""
    choices = [{"index": c.get("index", i),
                "message": {"role": "assistant", "content": c.get("text", "")},
                "finish_reason": c.get("finish_reason"),
                "logprobs": None}
               for i, c in enumerate(body.get("choices") or []) if isinstance(c, Mapping)]
    return {**body, "object": "chat.completion", "choices": choices}


def completion_chunk_to_chat(chunk: dict[str, Any], first: bool) -> dict[str, Any]:
    """A chat chunk from a completion chunk; the first one also carries the role."""
    choices = []
    for i, c in enumerate(chunk.get("choices") or []):
        if not isinstance(c, Mapping):
            continue
        delta: dict[str, Any] = {"content": c.get("text", "")}
        if first:
            delta["role"] = "assistant"
        choices.append({"index": c.get("index", i), "delta": delta,
                        "finish_reason": c.get("finish_reason"), "logprobs": None})
    return {**chunk, "object": "chat.completion.chunk", "choices": choices}
