"""Anthropic's Messages API (``POST /v1/messages``) over the server's chat requests.

What maps to what (Messages -> chat, then the answer back):

- ``system`` (a string or text blocks) -> a ``system`` message;
- ``text`` blocks -> text parts; ``image`` blocks (base64 or URL source) -> ``image_url`` parts
  (a ``data:`` URL for base64); ``document`` blocks: PDF (base64) -> a ``file`` part, plain
  text -> a text part, URL -> a text part naming the URL;
- ``tool_use`` blocks of an assistant turn -> ``tool_calls``; ``tool_result`` blocks -> one
  ``tool`` message each, placed before the rest of that user turn (chat needs tool answers
  right after the call); ``is_error`` results are prefixed so the model sees the failure;
- ``tools`` (custom tools: ``name``, ``description``, ``input_schema``) -> function tools;
  ``tool_choice`` auto/any/tool/none -> auto/required/the function/none;
  ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``;
- ``stop_sequences`` -> ``stop``; ``max_tokens``, ``temperature``, ``top_p`` as they are;
  ``metadata.user_id`` -> ``user``;
- ``thinking`` is Anthropic's own: a chat upstream has no such parameter, so it is not sent
  (answers' ``reasoning_content``, where an upstream streams one, comes back as ``thinking``
  blocks); ``top_k``, ``cache_control`` and ``service_tier`` are dropped the same way.

Anthropic's server tools (``web_search_...``, ``bash_...``: a ``type`` other than ``custom``)
run on Anthropic's side and cannot be served by another model: a request with one gets a 400
that says so. The answer's ``model`` is the model that really answered, as on the chat route;
``usage.input_tokens`` excludes cache reads (Anthropic's convention), which are
``cache_read_input_tokens``. Errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from routecast.backends.native import NATIVE_KEY, NativeRequest, native_request
from routecast.backends.transport import json_dumps
from routecast.errors import RequestError
from routecast.server.apis.common import (
    Conversation,
    conversation_hash,
    copy_headers,
    error_parts,
    new_id,
    translated,
)

if TYPE_CHECKING:
    from routecast.backends.base import Completion, Usage
    from routecast.server.apis.conversations import ConversationCascades
    from routecast.server.streaming import EventStream

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}

#: Anthropic's ``error.type`` per HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "api_error",
               504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _bad(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _text_of(content: Any, where: str) -> str:
    """A string, or the text of a list of text blocks (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content
                         if isinstance(b, Mapping) and b.get("type") == "text")
    if content is None:
        return ""
    raise _bad(f"{where} must be a string or a list of content blocks", where)


def _media_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An image or document block as a chat content part."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise _bad(f"{where}.source is required: {{\"type\": \"base64\", \"media_type\": ..., "
                   "\"data\": ...}} or {\"type\": \"url\", \"url\": ...}", f"{where}.source")
    kind = source.get("type")
    if block.get("type") == "image":
        if kind == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif kind == "url":
            url = str(source.get("url"))
        else:
            raise _bad(f"{where}.source.type must be base64 or url, got {kind!r}",
                       f"{where}.source.type")
        return {"type": "image_url", "image_url": {"url": url}}
    title = block.get("title")
    if kind == "base64":
        return {"type": "file", "file": {
            "filename": title if isinstance(title, str) else "document.pdf",
            "file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"}}
    if kind == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if kind == "content":
        return {"type": "text", "text": _text_of(source.get("content"), f"{where}.source")}
    if kind == "url":
        return {"type": "text", "text": f"(document at {source.get('url')})"}
    raise _bad(f"{where}.source.type must be base64, text, content or url, got {kind!r}",
               f"{where}.source.type")


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` is required: a non-empty list of "
                           '{"role": "user" | "assistant", "content": ...}', param="messages",
                           code="missing_messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _bad(f"{where} must be an object with `role` and `content`", where)
        role = message.get("role")
        content = message.get("content")
        if role == "system":  # Claude Code sends mid-conversation system turns
            out.append({"role": "system", "content": _text_of(content, f"{where}.content")})
            continue
        if role not in ("user", "assistant"):
            raise _bad(f"{where}.role must be user or assistant, got {role!r}", f"{where}.role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise _bad(f"{where}.content must be a string or a list of content blocks",
                       f"{where}.content")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            bwhere = f"{where}.content[{j}]"
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(block.get("text", ""))})
            elif kind in ("image", "document"):
                parts.append(_media_part(block, bwhere))
            elif kind == "tool_use" and role == "assistant":
                calls.append({"id": str(block.get("id")), "type": "function", "function": {
                    "name": str(block.get("name")),
                    "arguments": json_dumps(block.get("input") or {}).decode()}})
            elif kind == "tool_result" and role == "user":
                text = _text_of(block.get("content"), f"{bwhere}.content")
                if block.get("is_error"):
                    text = f"[tool error] {text}"
                out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                            "content": text})
            elif kind in ("thinking", "redacted_thinking", "server_tool_use",
                          "web_search_tool_result", "search_result"):
                continue  # Anthropic-side artefacts: a chat model has no use for them
            else:
                raise _bad(f"{bwhere}.type {kind!r} is not a content block this role can send "
                           "(text, image, document; tool_use from the assistant, tool_result "
                           "from the user)", f"{bwhere}.type")
        if role == "assistant":
            text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            if text or calls:
                out.append(entry)
        elif parts and all(p["type"] == "text" for p in parts):
            # Plain text as a string: the form every chat upstream reads.
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        elif parts:
            out.append({"role": "user", "content": parts})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("`tools` must be a list of tool definitions", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools[{i}] must be an object with `name` and `input_schema`",
                       f"tools[{i}]")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _bad(f"tools[{i}] is Anthropic's server tool {kind!r}: it runs on Anthropic's "
                       "side and no model behind routecast can serve it. Fix: define it as a "
                       "custom tool (name, description, input_schema) that your client runs",
                       f"tools[{i}].type")
        function: dict[str, Any] = {"name": tool["name"],
                                    "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, Mapping):
        raise _bad("`tool_choice` must be an object such as {\"type\": \"auto\"}", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise _bad(f"tool_choice.type must be auto, any, tool or none, got {kind!r}",
                   "tool_choice.type")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def check_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("`model` is required: the name of a routecast endpoint (GET "
                           "/v1/models lists them)", param="model", code="missing_model")
    return model


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request for a Messages request (see the module docstring)."""
    chat: dict[str, Any] = {"model": check_model(body)}
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("`max_tokens` is required: a positive integer, the most tokens to generate",
                   "max_tokens")
    messages = _messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            messages.insert(0, {"role": "system", "content": text})
    chat["messages"] = messages
    chat["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("`stop_sequences` must be a list of strings", "stop_sequences")
        chat["stop"] = stop
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("`stream` must be true or false", "stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return chat


def stop_reason(finish: str | None, stop: list[str] | None) -> str:
    return STOP_REASONS.get(finish or "stop", "end_turn")


def usage_of(usage: Usage) -> dict[str, int]:
    """Anthropic's usage object: input tokens exclude cache reads."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return {"input_tokens": usage.prompt_tokens - cached, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def message_of(chat: Mapping[str, Any], completion: Completion, message_id: str
               ) -> dict[str, Any]:
    """The Messages answer for a chat completion body."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or new_id("toolu"),
                        "name": function.get("name", ""),
                        "input": parse_arguments(function.get("arguments"))})
    finish = choice.get("finish_reason")
    return {"id": message_id, "type": "message", "role": "assistant",
            "model": completion.model, "content": content,
            "stop_reason": "tool_use" if message.get("tool_calls") else stop_reason(finish, None),
            "stop_sequence": None, "usage": usage_of(completion.usage)}


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (an unparsable string is kept whole under
    ``"arguments"`` rather than lost)."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    from routecast.backends.transport import json_loads

    try:
        parsed = json_loads(arguments.encode())
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def count_tokens(body: Mapping[str, Any]) -> int:
    """An estimate of a request's input tokens (``/v1/messages/count_tokens``): routecast has
    no tokenizer for the models behind it, so it counts about 4 characters per token over the
    system prompt, messages and tools, as the request log does for upstreams that report no
    usage."""
    check_model(body)
    chat = to_chat({**body, "max_tokens": 1})
    size = sum(len(json_dumps(m.get("content") or "")) + 4 for m in chat["messages"])
    size += len(json_dumps(chat.get("tools") or []))
    return max(1, size // 4)


class MessagesDialect(Conversation):
    """One ``/v1/messages`` request (see :class:`routecast.server.apis.common.Dialect`)."""

    def __init__(self, pin: bool, cascades: ConversationCascades | None = None) -> None:
        super().__init__(cascades if pin else None)
        self.pin = pin
        self.message_id = new_id("msg")

    async def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = to_chat(body)
        # A model that speaks Messages upstream gets this body untranslated.
        native_request.set(NativeRequest("messages", body, chat))
        self.key = chat.get("user")
        if self.pin and self.key is None:
            messages = chat["messages"]
            system = messages[0]["content"] if messages[0]["role"] == "system" else ""
            first = next((m.get("content") for m in messages if m["role"] == "user"), "")
            self.key = chat["user"] = conversation_hash(system, first)
        return chat

    async def answer(self, completion: Completion) -> tuple[dict[str, Any], dict[str, str]]:
        native = completion.body.get(NATIVE_KEY)
        if isinstance(native, dict):  # the upstream spoke Messages: its answer as it was
            return native, self.headers
        return message_of(completion.body, completion, self.message_id), self.headers

    def stream(self, response: Response) -> Response:
        from routecast.server.apis.anthropic_stream import MessagesStream

        events: EventStream = response  # type: ignore[assignment]
        state = MessagesStream(self.message_id)
        events.events = translated(events.events, state.translate)
        events.headers.update(self.headers)
        return events

    def error(self, response: Response) -> Response:
        status, message, _, _ = error_parts(response)
        new = Response(json_dumps(error_body(status, message)), status,
                       media_type="application/json")
        return copy_headers(response, new)
