"""OpenAI's published response schemas, as JSON Schema, for checking routecast's answers.

The OpenAPI document (``openai/openai-openapi``, ``openapi.yaml``) cannot be downloaded at test
time here, so the fields its components define are written out below, following the document
at ``info.version: "2.3.0"``: ``CreateChatCompletionResponse``,
``CreateChatCompletionStreamResponse``, ``CreateCompletionResponse`` (also the shape of a
streamed completion chunk), ``CompletionUsage``, ``ChatCompletionTokenLogprob``, ``Model``,
``ListModelsResponse`` and ``ErrorResponse``/``Error``. Required fields, types, enums and
nullability are the document's; optional fields it defines are typed when present. Extra
fields are allowed, as in the document (routecast's ``routecast`` summary is one).

One deliberate relaxation: the document's ``CreateCompletionResponse.choices[].finish_reason``
enum has no ``null``, yet OpenAI's streamed completion chunks carry ``null`` until the last
one; :data:`COMPLETION_CHUNK` accepts it there (and only there).

Validation uses ``jsonschema_rs`` (a dependency of the ``dev`` extra's schemathesis).
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

INT: dict[str, Any] = {"type": "integer"}
STR: dict[str, Any] = {"type": "string"}
NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}

USAGE: dict[str, Any] = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT,
        "completion_tokens_details": {"type": "object", "properties": {
            "accepted_prediction_tokens": INT, "audio_tokens": INT, "reasoning_tokens": INT,
            "rejected_prediction_tokens": INT}},
        "prompt_tokens_details": {"type": "object", "properties": {
            "audio_tokens": INT, "cached_tokens": INT}},
    },
}

TOKEN_LOGPROB: dict[str, Any] = {
    "type": "object",
    "required": ["token", "logprob", "bytes", "top_logprobs"],
    "properties": {
        "token": STR, "logprob": {"type": "number"},
        "bytes": {"type": ["array", "null"], "items": INT},
        "top_logprobs": {"type": "array", "items": {
            "type": "object", "required": ["token", "logprob", "bytes"],
            "properties": {"token": STR, "logprob": {"type": "number"},
                           "bytes": {"type": ["array", "null"], "items": INT}}}},
    },
}

CHAT_LOGPROBS: dict[str, Any] = {
    "type": ["object", "null"],
    "required": ["content"],
    "properties": {"content": {"type": ["array", "null"], "items": TOKEN_LOGPROB},
                   "refusal": {"type": ["array", "null"], "items": TOKEN_LOGPROB}},
}

TOOL_CALL: dict[str, Any] = {
    "type": "object", "required": ["id", "type", "function"],
    "properties": {"id": STR, "type": {"const": "function"},
                   "function": {"type": "object", "required": ["name", "arguments"],
                                "properties": {"name": STR, "arguments": STR}}},
}

CHAT_FINISH = ["stop", "length", "tool_calls", "content_filter", "function_call"]

CHAT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "choices", "created", "model", "object"],
    "properties": {
        "id": STR, "object": {"const": "chat.completion"}, "created": INT, "model": STR,
        "system_fingerprint": STR, "service_tier": NULLABLE_STR, "usage": USAGE,
        "choices": {"type": "array", "items": {
            "type": "object",
            "required": ["finish_reason", "index", "message", "logprobs"],
            "properties": {
                "finish_reason": {"enum": CHAT_FINISH}, "index": INT, "logprobs": CHAT_LOGPROBS,
                "message": {
                    "type": "object", "required": ["content", "refusal", "role"],
                    "properties": {"content": NULLABLE_STR, "refusal": NULLABLE_STR,
                                   "role": {"const": "assistant"},
                                   "tool_calls": {"type": "array", "items": TOOL_CALL}}},
            }}},
    },
}

CHAT_CHUNK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "choices", "created", "model", "object"],
    "properties": {
        "id": STR, "object": {"const": "chat.completion.chunk"}, "created": INT, "model": STR,
        "system_fingerprint": STR, "service_tier": NULLABLE_STR, "usage": USAGE,
        "choices": {"type": "array", "items": {
            "type": "object",
            "required": ["delta", "finish_reason", "index"],
            "properties": {
                "index": INT, "logprobs": CHAT_LOGPROBS,
                "finish_reason": {"enum": [*CHAT_FINISH, None]},
                "delta": {"type": "object", "properties": {
                    "content": NULLABLE_STR, "refusal": NULLABLE_STR,
                    "role": {"enum": ["developer", "system", "user", "assistant", "tool"]},
                    "tool_calls": {"type": "array", "items": {
                        "type": "object", "required": ["index"],
                        "properties": {"index": INT, "id": STR, "type": {"const": "function"},
                                       "function": {"type": "object", "properties": {
                                           "name": STR, "arguments": STR}}}}}}},
            }}},
    },
}


def _completion(finish: list[Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STR, "object": {"const": "text_completion"}, "created": INT, "model": STR,
            "system_fingerprint": STR, "usage": USAGE,
            "choices": {"type": "array", "items": {
                "type": "object",
                "required": ["finish_reason", "index", "logprobs", "text"],
                "properties": {
                    "finish_reason": {"enum": finish}, "index": INT, "text": STR,
                    "logprobs": {"type": ["object", "null"], "properties": {
                        "text_offset": {"type": "array", "items": INT},
                        "token_logprobs": {"type": "array", "items": {"type": "number"}},
                        "tokens": {"type": "array", "items": STR},
                        "top_logprobs": {"type": "array", "items": {"type": "object"}}}},
                }}},
        },
    }


COMPLETION = _completion(["stop", "length", "content_filter"])
COMPLETION_CHUNK = _completion(["stop", "length", "content_filter", None])

MODEL: dict[str, Any] = {
    "type": "object", "required": ["id", "object", "created", "owned_by"],
    "properties": {"id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR},
}

MODEL_LIST: dict[str, Any] = {
    "type": "object", "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}},
}

ERROR: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["type", "message", "param", "code"],
        "properties": {"code": NULLABLE_STR, "message": STR, "param": NULLABLE_STR,
                       "type": STR}}},
}


def check(schema: dict[str, Any], instance: Any) -> None:
    """Raise ``AssertionError`` naming every way ``instance`` breaks ``schema``."""
    errors = [f"{'/'.join(map(str, e.instance_path)) or '(top)'}: {e.message}"
              for e in jsonschema_rs.validator_for(schema).iter_errors(instance)]
    assert not errors, f"{instance} breaks OpenAI's schema: " + "; ".join(errors)
