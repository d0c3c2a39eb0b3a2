"""Chat requests and answers in OpenAI's Responses format, for upstreams that speak it.

The reverse of the server's Responses dialect (:mod:`routecast.server.apis.responses`): chat
messages become input items (system messages -> ``instructions``, tool calls ->
``function_call`` items, tool messages -> ``function_call_output`` items), function tools
become flat Responses tools, ``response_format`` becomes ``text.format``, ``max_tokens``
``max_output_tokens``; and a Responses answer or stream becomes chat. Requests go upstream
with ``store: false``: routecast keeps the conversation itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routecast.backends.base import Usage


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content or "")


def _parts(content: Any, role: str) -> str | list[dict[str, Any]]:
    if not isinstance(content, list):
        return str(content or "")
    kind = "output_text" if role == "assistant" else "input_text"
    out: list[dict[str, Any]] = []
    for p in content:
        if not isinstance(p, Mapping):
            continue
        if p.get("type") == "image_url":
            out.append({"type": "input_image",
                        "image_url": (p.get("image_url") or {}).get("url")})
        elif p.get("type") == "file":
            out.append({"type": "input_file", **(p.get("file") or {})})
        else:
            out.append({"type": kind, "text": str(p.get("text", ""))})
    return out


def chat_items(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, input items) for chat messages."""
    system: list[str] = []
    items: list[dict[str, Any]] = []
    for m in messages or ():
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role in ("tool", "function"):
            items.append({"type": "function_call_output", "call_id": m.get("tool_call_id"),
                          "output": _text(m.get("content"))})
        else:
            if m.get("content"):
                items.append({"type": "message", "role": role,
                              "content": _parts(m.get("content"), role)})
            for call in m.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": function.get("name"),
                              "arguments": function.get("arguments") or "{}"})
    return system, items


def chat_to_responses(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Responses request for a chat request."""
    system, items = chat_items(body.get("messages"))
    out: dict[str, Any] = {"model": model, "input": items, "store": False}
    if system:
        out["instructions"] = "\n\n".join(system)
    tools = [t.get("function") or {} for t in body.get("tools") or ()
             if isinstance(t, Mapping) and t.get("type") == "function"]
    if tools:
        out["tools"] = [{"type": "function", **f} for f in tools]
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, Mapping):
        out["tool_choice"] = {"type": "function",
                              "name": (choice.get("function") or {}).get("name")}
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        if fmt.get("type") == "json_schema":
            out["text"] = {"format": {"type": "json_schema", **(fmt.get("json_schema") or {})}}
        elif fmt.get("type") == "json_object":
            out["text"] = {"format": {"type": "json_object"}}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        out["max_output_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream"] = True
    return out


def usage_of(usage: Any) -> Usage:
    if not isinstance(usage, Mapping):
        return Usage()
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
                 int(cached), int(reasoning))


def responses_to_chat(data: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The chat completion body for a Responses answer."""
    text, calls = [], []
    for item in data.get("output") or ():
        if item.get("type") == "message":
            text += [str(p.get("text", "")) for p in item.get("content") or ()
                     if p.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function", "function": {
                "name": item.get("name"), "arguments": item.get("arguments") or "{}"}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    incomplete = data.get("status") == "incomplete"
    u = usage_of(data.get("usage"))
    return {"id": data.get("id", ""), "object": "chat.completion", "created": 0,
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason":
                                         "tool_calls" if calls else
                                         "length" if incomplete else "stop"}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "total_tokens": u.prompt_tokens + u.completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
                      "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}}


class ResponsesToChat:
    """Reads a Responses stream's events; :meth:`chunk` gives each one's chat chunk (or
    ``None``); :attr:`response` is the final response object once it came."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.response: dict[str, Any] | None = None
        self.calls: dict[int, int] = {}  # output index -> tool call index

    def chunk(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        delta: dict[str, Any] | None = None
        finish = None
        if kind == "response.created":
            delta = {"role": "assistant", "content": ""}
        elif kind == "response.output_text.delta":
            delta = {"content": event.get("delta", "")}
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                index = self.calls[event.get("output_index", 0)] = len(self.calls)
                delta = {"tool_calls": [{"index": index, "id": item.get("call_id"),
                                         "type": "function", "function": {
                                             "name": item.get("name"), "arguments": ""}}]}
        elif kind == "response.function_call_arguments.delta":
            delta = {"tool_calls": [{"index": self.calls.get(event.get("output_index", 0), 0),
                                     "function": {"arguments": event.get("delta", "")}}]}
        elif kind in ("response.completed", "response.incomplete"):
            self.response = dict(event.get("response") or {})
            finish = "tool_calls" if self.calls else (
                "length" if kind == "response.incomplete" else "stop")
            delta = {}
        if delta is None:
            return None
        return {"id": "", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
