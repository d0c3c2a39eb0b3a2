"""Malformed Messages, Responses and embeddings requests get a 4xx that names the field,
never a 5xx: every field the server reads, set to each of a set of wrong values."""

from __future__ import annotations

from typing import Any

import pytest

from tests.apis_live import Live, http, live_fixture

live = live_fixture()

WRONG: list[Any] = [
    None, 1, -1, 1.5, True, "x", [], {}, [1], [None], [{}], [{"type": 5}], {"type": "x"},
    [{"role": "user"}], [{"role": "user", "content": [5]}],
    [{"role": "user", "content": [{"type": "text"}]}],
    [{"role": "assistant", "content": [{"type": "tool_use"}]}],
    [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}],
    [{"role": "user", "content": [{"type": "image", "source": 5}]}],
    [{"role": "user", "content": [{"type": "input_image"}]}],
    [{"type": "function_call"}], [{"type": "function_call_output", "output": 5}],
    [{"type": "function"}], [{"type": "function", "name": 5}], {"format": {"type": 5}},
]
CASES = [
    ("/v1/messages", {"model": "small", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]},
     ["messages", "system", "tools", "tool_choice", "stop_sequences", "max_tokens",
      "metadata", "stream", "model"]),
    ("/v1/messages/count_tokens", {"model": "small",
                                   "messages": [{"role": "user", "content": "hi"}]},
     ["messages", "system", "tools", "model"]),
    ("/v1/responses", {"model": "small", "input": "hi"},
     ["input", "instructions", "tools", "tool_choice", "text", "max_output_tokens",
      "previous_response_id", "stream", "model", "user", "prompt_cache_key"]),
    ("/v1/embeddings", {"model": "small", "input": "hi"}, ["model"]),
]


@pytest.mark.parametrize(("path", "base", "fields"), CASES, ids=[c[0] for c in CASES])
def test_wrong_values_are_client_errors(live: Live, path: str, base: dict[str, Any],
                                        fields: list[str]) -> None:
    headers = {"authorization": f"Bearer {live.key}"}
    failures = []
    for field in fields:
        for value in WRONG:
            answer = http("POST", live.url + path, {**base, field: value}, headers)
            if answer.status_code >= 500:
                failures.append((field, value, answer.status_code, answer.text[:120]))
            elif answer.status_code >= 400:
                assert answer.text and "error" in answer.json()
    assert failures == []


def test_the_errors_name_the_field(live: Live) -> None:
    headers = {"authorization": f"Bearer {live.key}"}
    user = http("POST", f"{live.url}/v1/responses", {"model": "small", "input": "x",
                                                     "user": 1}, headers)
    assert user.status_code == 400 and user.json()["error"]["param"] == "user"
    output = http("POST", f"{live.url}/v1/responses", {"model": "small", "input": [
        {"type": "function_call_output", "call_id": "c", "output": 5}]}, headers)
    assert output.status_code == 400
    assert output.json()["error"]["param"] == "input[0].output"
    model = http("POST", f"{live.url}/v1/embeddings", {"model": [1], "input": "x"}, headers)
    assert model.status_code == 400 and model.json()["error"]["param"] == "model"
    block = http("POST", f"{live.url}/v1/messages", {"model": "small", "max_tokens": 5,
                                                     "messages": [{"role": "user",
                                                                   "content": [5]}]},
                 {"x-api-key": live.key})
    assert block.status_code == 400 and block.json()["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in block.json()["error"]["message"]
