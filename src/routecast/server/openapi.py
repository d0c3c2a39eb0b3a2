"""The server's OpenAPI 3 schema, served at ``GET /openapi.json``.

Written by hand, not generated: the server checks requests by hand too (see ``wire.py``), and
the schema states the same contract, so clients and fuzzers (schemathesis runs against it in
the tests) see what the server really accepts. Only the fields routecast acts on are
constrained; every object allows additional properties, as the proxy forwards them untouched.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}},
}

_ERRORS = {
    str(status): {"description": text,
                  "content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/Error"}}}}
    for status, text in [(400, "invalid request"), (401, "missing or invalid API key"),
                         (403, "forbidden by the privacy rule"), (404, "unknown endpoint"),
                         (413, "body too large"), (429, "rate limited or out of budget"),
                         (502, "the upstream failed"), (503, "every model's breaker is open"),
                         (504, "the upstream or the deadline timed out")]
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}]},
    },
}


def _completion_op(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "the answer (JSON, or SSE when stream is true)",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          "text/event-stream": {"schema": {"type": "string"}}}},
                      **_ERRORS},
    }


def openapi_schema(endpoints: list[str]) -> dict[str, Any]:
    """The schema; ``model`` is one of ``endpoints`` (another name is answered 404, which the
    schema also describes)."""
    model = {"type": "string", "enum": endpoints}
    common = {"model": model, "stream": {"type": "boolean"},
              "stream_options": {"type": "object"}}
    chat = {"type": "object", "required": ["model", "messages"],
            "properties": {**common, "messages": {"type": "array", "minItems": 1,
                                                  "items": _MESSAGE}}}
    completions = {"type": "object", "required": ["model", "prompt"],
                   "properties": {**common, "prompt": {
                       "oneOf": [{"type": "string"},
                                 {"type": "array", "minItems": 1, "items": {"type": "string"}}]}}}
    text = {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    as_json = {"200": {"description": "ok",
                       "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "routecast", "version": "1",
                 "description": "OpenAI-compatible routing proxy"},
        "paths": {
            "/v1/chat/completions": {"post": _completion_op("chat completion", chat)},
            "/v1/completions": {"post": _completion_op("text completion", completions)},
            "/v1/models": {"get": {"summary": "endpoints", "responses": as_json}},
            "/health": {"get": {"summary": "liveness", "responses": as_json}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": text}},
            "/openapi.json": {"get": {"summary": "this schema", "responses": as_json}},
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
