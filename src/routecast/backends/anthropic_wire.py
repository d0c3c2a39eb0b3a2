"""Chat requests and answers in Anthropic's Messages format, for upstreams that speak it.

The reverse of the server's Messages dialect (:mod:`routecast.server.apis.anthropic`): a chat
request becomes a Messages request (system messages -> ``system``, tool calls -> ``tool_use``
blocks, tool messages -> ``tool_result`` blocks, function tools -> ``input_schema`` tools,
``stop`` -> ``stop_sequences``, ``user`` -> ``metadata.user_id``; ``max_tokens`` defaults to
:data:`DEFAULT_MAX_TOKENS`, since Messages requires one), and a Messages answer or stream
becomes chat. Usage: chat's ``prompt_tokens`` counts cache reads and writes too (Anthropic's
``input_tokens`` does not), ``cached_tokens`` is the cache reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from routecast.backends.base import Usage

DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "refusal": "content_filter", "pause_turn": "stop"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content or "")


def _block(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image_url":
        url = str((part.get("image_url") or {}).get("url", ""))
        if url.startswith("data:") and ";base64," in url:
            media, data = url[5:].split(";base64,", 1)
            return {"type": "image", "source": {"type": "base64", "media_type": media,
                                                "data": data}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "file":
        data = str((part.get("file") or {}).get("file_data", ""))
        if data.startswith("data:") and ";base64," in data:
            media, raw = data[5:].split(";base64,", 1)
            return {"type": "document", "source": {"type": "base64", "media_type": media,
                                                   "data": raw}}
    return {"type": "text", "text": str(part.get("text", ""))}


def chat_to_messages(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for a chat request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in body.get("messages") or ():
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if _text(content):
                blocks.append({"type": "text", "text": _text(content)})
            for call in m.get("tool_calls") or ():
                function = call.get("function") or {}
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = {"arguments": function.get("arguments")}
                blocks.append({"type": "tool_use", "id": call.get("id"),
                               "name": function.get("name"), "input": arguments})
            messages.append({"role": "assistant", "content": blocks})
        elif role in ("tool", "function"):
            result = {"type": "tool_result", "tool_use_id": m.get("tool_call_id"),
                      "content": _text(content)}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list) \
                    and all(b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(result)
            else:
                messages.append({"role": "user", "content": [result]})
        else:
            blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
                      else [_block(p) for p in content or () if isinstance(p, Mapping)])
            messages.append({"role": "user", "content": blocks})
    out: dict[str, Any] = {"model": model, "messages": messages,
                           "max_tokens": body.get("max_tokens")
                           or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [t.get("function") or {} for t in body.get("tools") or ()
             if isinstance(t, Mapping) and t.get("type") == "function"]
    if tools:
        out["tools"] = [{"name": f.get("name"), "description": f.get("description", ""),
                         "input_schema": f.get("parameters") or {"type": "object"}}
                        for f in tools]
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, Mapping):
            kind: dict[str, Any] = {"type": "tool",
                                    "name": (choice.get("function") or {}).get("name")}
        else:
            kind = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
        if body.get("parallel_tool_calls") is False:
            kind["disable_parallel_tool_use"] = True
        out["tool_choice"] = kind
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


def usage_of(usage: Any, into: Usage | None = None) -> Usage:
    """A Messages usage object (or a stream's part of one) as :class:`Usage`."""
    u = into or Usage()
    if not isinstance(usage, Mapping):
        return u
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    if usage.get("input_tokens") is not None:
        u.prompt_tokens = int(usage["input_tokens"]) + int(read) + int(written)
        u.cached_tokens = int(read)
    if usage.get("output_tokens") is not None:
        u.completion_tokens = int(usage["output_tokens"])
    return u


def messages_to_chat(data: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The chat completion body for a Messages answer."""
    text, reasoning, calls = [], [], []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    u = usage_of(data.get("usage"))
    return {"id": data.get("id", ""), "object": "chat.completion", "created": 0,
            "model": model, "choices": [{"index": 0, "message": message,
                                         "finish_reason": FINISH.get(
                                             str(data.get("stop_reason")), "stop")}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "total_tokens": u.prompt_tokens + u.completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}}


class MessagesToChat:
    """Reads a Messages stream's events; :meth:`chunk` gives each one's chat chunk (or
    ``None``), and :attr:`usage` / :attr:`ended` what the stream said."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage = Usage()
        self.ended = False
        self.id = ""
        self.tools: dict[int, int] = {}  # content block index -> tool call index

    def chunk(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        delta: dict[str, Any] | None = None
        finish = None
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id", ""))
            usage_of(message.get("usage"), self.usage)
            delta = {"role": "assistant", "content": ""}
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[event.get("index", 0)] = len(self.tools)
                delta = {"tool_calls": [{"index": index, "id": block.get("id"),
                                         "type": "function", "function": {
                                             "name": block.get("name"), "arguments": ""}}]}
        elif kind == "content_block_delta":
            d = event.get("delta") or {}
            if d.get("type") == "text_delta":
                delta = {"content": d.get("text", "")}
            elif d.get("type") == "thinking_delta":
                delta = {"reasoning_content": d.get("thinking", "")}
            elif d.get("type") == "input_json_delta":
                delta = {"tool_calls": [{"index": self.tools.get(event.get("index", 0), 0),
                                         "function": {"arguments": d.get("partial_json", "")}}]}
        elif kind == "message_delta":
            usage_of(event.get("usage"), self.usage)
            finish = FINISH.get(str((event.get("delta") or {}).get("stop_reason")), "stop")
            delta = {}
        elif kind == "message_stop":
            self.ended = True
        if delta is None:
            return None
        return {"id": self.id, "object": "chat.completion.chunk", "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
