"""The OpenAI wire format at the server's edge: request checks, error bodies, SSE framing.

Requests are checked by hand rather than parsed into pydantic models: only the fields routecast
acts on (``model``, ``messages``, ``prompt``, ``stream``, ``stream_options``) and the numbers
OpenAI types as integers (``max_tokens``, ``n``, ...) are checked, and the client's dict is
forwarded as it is, so fields routecast does not know pass through unchanged.

JSON goes through :func:`routecast.backends.transport.json_loads` and ``json_dumps`` (orjson,
with the standard library deciding wherever the two would differ).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from routecast.backends.transport import json_dumps as dumps
from routecast.backends.transport import json_loads
from routecast.errors import RequestError

__all__ = ["DONE", "check_chat", "check_completions", "dumps", "error_body", "parse_json",
           "sse"]

DONE = b"data: [DONE]\n\n"

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def sse(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + dumps(data) + b"\n\n"


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says where it broke."""
    if not raw:
        raise RequestError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json_loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 text", code="invalid_json") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON: {e.msg} at line {e.lineno}, "
                           f"column {e.colno}", code="invalid_json") from None
    except RecursionError:
        raise RequestError("the request body nests JSON too deeply", code="invalid_json"
                           ) from None
    except ValueError as e:  # an integer of more than 4300 digits, NaN / Infinity
        raise RequestError(f"the request body is not acceptable JSON: {e}",
                           code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got "
                           f"{type(body).__name__}", code="invalid_json")
    return body


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON: an upstream would choke on
    # them when the body is forwarded.
    raise ValueError(f"{name} is not a JSON number")


#: Fields OpenAI's API reference types as integers, per route (chat's ``logprobs`` is a
#: boolean, the legacy completions' an integer).
_INTEGERS_CHAT = ("max_tokens", "max_completion_tokens", "n", "top_logprobs", "seed")
_INTEGERS_COMPLETIONS = ("max_tokens", "n", "logprobs", "best_of", "seed")


def check_integers(body: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    """A 400 naming the first of ``fields`` that is present, not null and not an integer
    (``1e999``, ``2.5``, ``"5"``, ``true``), as OpenAI answers; forwarded, such a value would
    reach the upstream changed (``1e999`` is infinity, which JSON cannot carry) or rejected
    with a less helpful message."""
    for name in fields:
        value = body.get(name)
        if value is not None and (type(value) is not int):
            raise RequestError(f"`{name}` must be an integer, got {_shown(value)}. Fix: send a "
                               "whole number without a decimal point or exponent",
                               param=name, code="invalid_type")


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "a number out of range (infinite)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:40] + "..."


def check_common(body: Mapping[str, Any]) -> str:
    """Checks shared by both routes; returns the endpoint name (``model``)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("`model` is required: the name of an endpoint (GET /v1/models "
                           "lists them)", param="model", code="missing_model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("`stream` must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("`stream_options` must be an object", param="stream_options")
    return model


def check_chat(body: Mapping[str, Any], max_messages: int) -> str:
    """Check a chat request; returns the endpoint name."""
    model = check_common(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` is required: a non-empty list of "
                           '{"role": ..., "content": ...} objects', param="messages",
                           code="missing_messages")
    if len(messages) > max_messages:
        raise RequestError(f"{len(messages)} messages is more than this server takes "
                           f"({max_messages}, limits.max_messages)", param="messages",
                           code="too_many_messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object with `role` and `content`",
                               param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:  # a list is unhashable
            raise RequestError(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))};"
                               f" got {role!r}", param=f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestError(f"messages[{i}].content must be a string or a list of parts",
                               param=f"messages[{i}].content")
    check_integers(body, _INTEGERS_CHAT)
    return model


def check_completions(body: Mapping[str, Any]) -> str:
    """Check a text-completion request; returns the endpoint name."""
    model = check_common(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
        raise RequestError("`prompt` is required: a string (or a list of strings)",
                           param="prompt", code="missing_prompt")
    check_integers(body, _INTEGERS_COMPLETIONS)
    return model


def error_type(status: int) -> str:
    """OpenAI's ``error.type`` for a status."""
    if status == 429:
        return "rate_limit_error"
    if status in (401, 403):
        return "authentication_error"
    if status < 500:
        return "invalid_request_error"
    if status in (502, 504):
        return "upstream_error"
    return "server_error"


def error_body(message: str, status: int, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    return {"error": {"message": message, "type": error_type(status), "param": param,
                      "code": code}}
