"""OpenAI's Responses API (``POST /v1/responses``, ``GET /v1/responses/{id}``) over the
server's chat requests.

What maps to what (Responses -> chat, then the answer back):

- ``instructions`` -> a ``system`` message, first; ``input`` as a string -> one user message;
- ``input`` items: messages (roles user / assistant / system / developer, content as a string
  or ``input_text`` / ``output_text`` / ``refusal`` / ``input_image`` / ``input_file`` parts)
  -> chat messages with text / ``image_url`` / ``file`` parts; ``function_call`` items ->
  an assistant message's ``tool_calls`` (consecutive calls grouped); ``function_call_output``
  -> ``tool`` messages; ``reasoning`` items are dropped (a chat model cannot read them);
- ``previous_response_id`` -> the stored conversation of that response (see
  :mod:`routecast.server.apis.store`), then this turn's input;
- ``tools`` of type ``function`` -> chat function tools; OpenAI's hosted tools (web search,
  file search, computer use, ...) run on OpenAI's side: they are left out of the chat request
  and named in the ``x-routecast-dropped-tools`` header, so an agent that offers them still
  works with the tools its models can call; ``tool_choice`` as in chat (``{"type":
  "function", "name"}`` -> the chat form);
- ``text.format`` -> ``response_format`` (``json_object``, or ``json_schema`` with its
  ``name``, ``schema``, ``strict``); ``max_output_tokens`` -> ``max_tokens``; ``temperature``,
  ``top_p``, ``parallel_tool_calls``, ``user`` as they are;
- ``reasoning`` (effort, summary) is not sent to chat upstreams (many reject it);
  ``store``, ``metadata``, ``include``, ``truncation``, ``prompt_cache_key`` and
  ``service_tier`` are routecast's business or dropped.

The answer is a ``response`` object whose ``model`` is the model that really answered;
``output`` holds a ``message`` item (``output_text``) and one ``function_call`` item per tool
call. Errors keep OpenAI's shape (``{"error": {...}}``), as on the chat route.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from routecast.backends.native import NATIVE_KEY, NativeRequest, native_request
from routecast.backends.responses_wire import chat_items
from routecast.backends.transport import json_dumps
from routecast.errors import RequestError
from routecast.server.apis.common import Conversation, conversation_hash, new_id
from routecast.server.apis.store import ResponseStore, Stored

if TYPE_CHECKING:
    from starlette.responses import Response

    from routecast.backends.base import Completion, Usage
    from routecast.server.apis.conversations import ConversationCascades
    from routecast.server.streaming import EventStream

#: Request fields echoed in the response object, with the defaults OpenAI echoes.
ECHOED: dict[str, Any] = {"instructions": None, "max_output_tokens": None, "metadata": {},
          "parallel_tool_calls": True, "temperature": None, "tool_choice": "auto",
          "tools": [], "top_p": None, "user": None, "previous_response_id": None,
          "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": True}


def _bad(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _part(part: Any, where: str) -> dict[str, Any] | None:
    """One content part of an input message as a chat part (``None``: nothing to send)."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad(f"{where}: routecast needs input_image.image_url (a URL or data: URL); "
                       "file_id refers to OpenAI's file store", f"{where}.image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "filename", "file_id") if k in part}
        return {"type": "file", "file": file}
    raise _bad(f"{where}.type {kind!r} is not a content part routecast can send (input_text, "
               "input_image, input_file, output_text, refusal)", f"{where}.type")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{where} must be a string or a list of content parts", where)
    parts = [p for i, c in enumerate(content) if (p := _part(c, f"{where}[{i}]")) is not None]
    if all(p["type"] == "text" for p in parts):  # plain text: the form every upstream reads
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any) -> list[dict[str, Any]]:
    """The chat messages of a request's ``input`` (a string or a list of items)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise RequestError("`input` is required: a string or a list of input items",
                           param="input", code="missing_input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise _bad(f"{where} must be an object (a message or a function call item)", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{where}.role must be user, assistant, system or developer, got "
                           f"{role!r}", f"{where}.role")
            out.append({"role": "system" if role == "developer" else role,
                        "content": _content(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id")), "type": "function",
                    "function": {"name": str(item.get("name")),
                                 "arguments": str(item.get("arguments") or "{}")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and (
                    last.get("tool_calls") or not last.get("content")
                    or isinstance(last.get("content"), str)):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, str):
                text = output
            elif isinstance(output, list):
                text = "".join(str(p.get("text", "")) for p in output if isinstance(p, Mapping))
            else:
                raise _bad(f"{where}.output must be a string or a list of content parts",
                           f"{where}.output")
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id")),
                        "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise _bad(f"{where}.type {kind!r} is not an input item routecast can serve "
                       "(message, function_call, function_call_output, reasoning)",
                       f"{where}.type")
    return out


def _tools(tools: Any, chat: dict[str, Any]) -> list[str]:
    """Put the function tools into ``chat``; returns the hosted tools left out."""
    if not isinstance(tools, list):
        raise _bad("`tools` must be a list of tool definitions", "tools")
    out, dropped = [], []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise _bad(f"tools[{i}] must be an object", f"tools[{i}]")
        if tool.get("type") != "function":
            dropped.append(str(tool.get("type")))
            continue
        if not isinstance(tool.get("name"), str):
            raise _bad(f"tools[{i}].name is required for a function tool", f"tools[{i}].name")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                    if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    if out:
        chat["tools"] = out
    return dropped


def _format(text: Any, chat: dict[str, Any]) -> None:
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise _bad(f"text.format.type must be text, json_object or json_schema, got {kind!r}",
                   "text.format.type")


def to_chat(body: Mapping[str, Any], history: list[dict[str, Any]]) -> tuple[
        dict[str, Any], list[dict[str, Any]], list[str]]:
    """(the chat request, this turn's input as chat messages, hosted tools left out) for a
    Responses request continuing ``history`` (the stored conversation, or ``[]``)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("`model` is required: the name of a routecast endpoint (GET "
                           "/v1/models lists them)", param="model", code="missing_model")
    turn = input_messages(body.get("input"))
    messages = [*history, *turn]
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    if not messages:
        raise RequestError("`input` is empty: send at least one message", param="input",
                           code="missing_input")
    chat: dict[str, Any] = {"model": model, "messages": messages}
    dropped = _tools(body["tools"], chat) if body.get("tools") else []
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    _format(body.get("text"), chat)
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        if body.get(name) is not None:
            chat[name] = body[name]
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _bad("`user` must be a string (an id for the end user)", "user")
        chat["user"] = user
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("`stream` must be true or false", "stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, turn, dropped


def usage_of(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content if text or status == "completed" else []}


def call_item(item_id: str, call_id: str, name: str, arguments: str,
              status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as chat messages, for the stored conversation."""
    text = "".join(str(p.get("text", "")) for item in output if item["type"] == "message"
                   for p in item.get("content") or ())
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


class ResponsesDialect(Conversation):
    """One ``/v1/responses`` request (see :class:`routecast.server.apis.common.Dialect`)."""

    def __init__(self, store: ResponseStore, pin: bool,
                 cascades: ConversationCascades | None = None, owner: str | None = None
                 ) -> None:
        super().__init__(cascades if pin else None)
        self.store = store
        self.owner = owner  # the client key's id: its responses are its own
        self.pin = pin
        self.response_id = new_id("resp")
        self.created_at = int(time.time())
        self.body: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.turn: list[dict[str, Any]] = []
        self.endpoint = ""

    async def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        self.body = body
        previous = body.get("previous_response_id")
        stored = None
        if previous is not None:
            if not isinstance(previous, str):
                raise _bad("`previous_response_id` must be a response id", "previous_response_id")
            stored = await self.store.get(previous, self.owner)
            if stored is None:
                raise RequestError(
                    f"no stored response {previous!r}: it was never stored (store: false), "
                    "is older than this server's retention (apis.response_retention_days), or "
                    "was made with another API key or by another server. Fix: send the whole "
                    "conversation as `input`",
                    status=404, param="previous_response_id", code="previous_response_not_found")
            self.history = stored.messages
        chat, self.turn, dropped = to_chat(body, self.history)
        # A model that speaks Responses upstream gets the client's body, its
        # previous_response_id expanded into the stored conversation.
        native = {k: v for k, v in body.items() if k != "previous_response_id"}
        if self.history:
            turn: Any = body.get("input")
            if isinstance(turn, str):
                turn = [{"type": "message", "role": "user", "content": turn}]
            native["input"] = [*chat_items(self.history)[1], *turn]
        native_request.set(NativeRequest("responses", native, chat))
        self.endpoint = chat["model"]
        if dropped:
            self.headers["x-routecast-dropped-tools"] = ",".join(dropped)
        self.key = chat.get("user")
        if self.pin and self.key is None:
            cache_key = body.get("prompt_cache_key")
            if isinstance(cache_key, str) and cache_key:
                self.key = f"conv_{cache_key}"
            elif stored is not None and stored.conversation:
                self.key = stored.conversation
            else:
                first = next((m.get("content") for m in chat["messages"]
                              if m["role"] == "user"), "")
                self.key = conversation_hash(body.get("instructions") or "", first)
            chat["user"] = self.key
        return chat

    def response(self, model: str, output: list[dict[str, Any]], usage: dict[str, Any] | None,
                 status: str = "completed", incomplete: str | None = None) -> dict[str, Any]:
        """The response object (``status`` in_progress while a stream has not ended)."""
        body = self.body
        echoed = {k: body.get(k, default) if body.get(k) is not None else default
                  for k, default in ECHOED.items()}
        return {"id": self.response_id, "object": "response", "created_at": self.created_at,
                "status": status, "error": None,
                "incomplete_details": {"reason": incomplete} if incomplete else None,
                "model": model, "output": output, "usage": usage,
                "reasoning": {"effort": None, "summary": None}, **echoed}

    async def finish(self, model: str, output: list[dict[str, Any]], usage: Usage | None,
                     finish: str | None, native: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
        """The completed response object (``native``: the upstream's own, given routecast's
        id); stored unless the request said ``store: false``."""
        if native is not None:
            response = {**native, "id": self.response_id, "model": model,
                        "previous_response_id": self.body.get("previous_response_id"),
                        "store": self.body.get("store", True) is not False}
            output = [i for i in response.get("output") or ()
                      if i.get("type") in ("message", "function_call")]
        else:
            assert usage is not None
            incomplete = "max_output_tokens" if finish == "length" else None
            response = self.response(model, output, usage_of(usage),
                                     "incomplete" if incomplete else "completed", incomplete)
        if self.body.get("store", True) is not False:
            messages = [*self.history, *self.turn, *output_messages(output)]
            await self.store.put(Stored(self.response_id, self.endpoint, self.key, messages,
                                        response, self.owner))
        return response

    async def answer(self, completion: Completion) -> tuple[dict[str, Any], dict[str, str]]:
        native = completion.body.get(NATIVE_KEY)
        if isinstance(native, dict):  # the upstream spoke Responses: its answer, our id
            return await self.finish(completion.model, [], None, None, native), self.headers
        choices = completion.body.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], Mapping) else {}
        message = choice.get("message") or {}
        output: list[dict[str, Any]] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            output.append(message_item(new_id("msg"), text))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments")
            output.append(call_item(new_id("fc"), call.get("id") or new_id("call"),
                                    function.get("name", ""),
                                    arguments if isinstance(arguments, str)
                                    else json_dumps(arguments or {}).decode()))
        response = await self.finish(completion.model, output, completion.usage,
                                     choice.get("finish_reason"))
        return response, self.headers

    def stream(self, response: Response) -> Response:
        from routecast.server.apis.responses_stream import ResponsesStream

        events: EventStream = response  # type: ignore[assignment]
        state = ResponsesStream(self)
        events.events = state.run(events.events)
        events.headers.update(self.headers)
        return events

    def error(self, response: Response) -> Response:
        return response  # the chat route's errors are already OpenAI-shaped
