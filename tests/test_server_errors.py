"""Errors are OpenAI-shaped JSON with the right status; secrets never leak into them."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from routecast.server.endpoints import http_backend
from tests.http_calls import assert_openai_error, call, post
from tests.routecast_live import db_fixture, log_rows, make_config, model_entry, serve, stub_fixture
from tests.stub_upstream import Step, StubUpstream, iter_sse

SECRET = "sk-test-0123456789abcdef"


stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def server(stub: StubUpstream, db: Path) -> Iterator[str]:
    config = make_config(stub.url, db, limits={"max_body_bytes": 4096, "max_messages": 3}, models={
        "slow": model_entry(stub.url, "slow", read_timeout_s=0.2, max_retries=0),
        "keyed": model_entry(stub.url, "keyed", api_key_env="STUB_KEY", max_retries=0),
    })
    with serve(config, env={"STUB_KEY": SECRET}) as url:
        yield url


USER = [{"role": "user", "content": "hi"}]


def test_invalid_json_is_400(server: str) -> None:
    status, body = post(server, b'{"model": "small", "messages": [')
    error = assert_openai_error(body)
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert "line 1" in error["message"]


def test_body_must_be_an_object(server: str) -> None:
    status, body = post(server, [1, 2])
    assert status == 400
    assert "JSON object" in assert_openai_error(body)["message"]


def test_unknown_endpoint_is_404_and_lists_the_known_ones(server: str) -> None:
    status, body = post(server, {"model": "gpt-17", "messages": USER})
    error = assert_openai_error(body)
    assert status == 404
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "'gpt-17'" in error["message"] and "small" in error["message"]


@pytest.mark.parametrize(("payload", "param"), [
    ({"model": "small"}, "messages"),
    ({"model": "small", "messages": []}, "messages"),
    ({"messages": USER}, "model"),
    ({"model": "small", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "small", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "small", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "small", "messages": USER * 4}, "messages"),  # limits.max_messages is 3
])
def test_bad_fields_are_400_naming_the_field(server: str, payload: dict[str, Any],
                                            param: str) -> None:
    status, body = post(server, payload)
    assert status == 400
    assert assert_openai_error(body)["param"] == param


def test_completions_need_a_prompt(server: str) -> None:
    status, body = post(server, {"model": "small"}, path="/v1/completions")
    assert status == 400
    assert assert_openai_error(body)["param"] == "prompt"


def test_too_large_is_413(server: str) -> None:
    status, body = post(server, {"model": "small", "messages": [
        {"role": "user", "content": "x" * 5000}]})
    assert status == 413
    assert assert_openai_error(body)["code"] == "request_too_large"


def test_unknown_route_and_method_are_openai_shaped(server: str) -> None:
    status, _, raw = call(server, "GET", "/v1/nothing")
    assert status == 404
    assert "POST /v1/chat/completions" in assert_openai_error(json.loads(raw))["message"]
    status, _, raw = call(server, "GET", "/v1/chat/completions")
    assert status == 405
    assert_openai_error(json.loads(raw))


def test_upstream_timeout_is_504(server: str, stub: StubUpstream) -> None:
    stub.then(Step(delay_s=0.6))
    status, body = post(server, {"model": "slow", "messages": USER})
    error = assert_openai_error(body)
    assert status == 504
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_timeout")


def test_upstream_500_without_fallback_is_502(server: str, stub: StubUpstream) -> None:
    stub.then(*[Step(500)] * 3)
    status, body = post(server, {"model": "small", "messages": USER})
    error = assert_openai_error(body)
    assert status == 502
    assert "HTTP 500" in error["message"] and "3 attempts" in error["message"]


def test_stream_broken_midway_ends_with_an_error_event(server: str, stub: StubUpstream,
                                                       db: Path) -> None:
    stub.then(Step(cut_after=2))
    status, _, raw = call(server, "POST", "/v1/chat/completions", json.dumps(
        {"model": "small", "messages": [{"role": "user", "content": "a b c d e"}],
         "stream": True}).encode())
    assert status == 200  # the stream had begun; the failure is told inside it
    events = list(iter_sse(raw))
    assert [e["choices"][0]["delta"].get("content") for e in events[:2]] == ["small", " says:"]
    assert_openai_error(events[-1])
    assert events[-1]["error"]["type"] == "upstream_error"
    rows = log_rows(db, 1, lambda r: r["stream"] == 1 and r["endpoint"] == "small")
    assert [(r["status"], r["model"], r["route"]) for r in rows] == [(502, None, "small")]
    assert "stream broke" in rows[0]["error"]


def test_a_client_that_hangs_up_mid_stream_is_logged(server: str, stub: StubUpstream,
                                                     db: Path) -> None:
    stub.then(Step(chunk_delay_s=0.05))
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": "medium", "stream": True, "messages": [
            {"role": "user", "content": "one two three four five six seven eight"}]}),
        headers={"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"data: ")  # the first event arrived
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    rows = log_rows(db, 1, lambda r: r["endpoint"] == "medium" and r["stream"] == 1)
    assert [(r["status"], r["error"]) for r in rows] == [(499, "client disconnected")]


def test_api_key_is_sent_but_never_echoed(server: str, stub: StubUpstream) -> None:
    status, body = post(server, {"model": "keyed", "messages": USER})
    assert status == 200
    assert stub.received[-1].headers["authorization"] == f"Bearer {SECRET}"
    stub.then(Step(401, message=f"Incorrect API key provided: {SECRET}"))
    status, body = post(server, {"model": "keyed", "messages": USER})
    error = assert_openai_error(body)
    assert status == 502
    assert error["code"] == "upstream_auth"
    assert SECRET not in json.dumps(body)
    assert "***" in error["message"] and "api_key_env" in error["message"]
    backend = http_backend("keyed", make_config(stub.url, None, models={"keyed": model_entry(
        stub.url, "keyed", api_key_env="K")}).models["keyed"], env={"K": SECRET})
    assert SECRET not in repr(backend) and SECRET not in repr(vars(backend).get("price"))


def test_health_and_metrics(server: str) -> None:
    status, _, raw = call(server, "GET", "/health")
    assert (status, json.loads(raw)["status"]) == (200, "ok")
    before = _requests_total(server, "medium")
    for _ in range(3):
        assert post(server, {"model": "medium", "messages": USER})[0] == 200
    assert _requests_total(server, "medium") == before + 3
    _, headers, raw = call(server, "GET", "/metrics")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = raw.decode()
    assert "# TYPE routecast_request_latency_seconds histogram" in text
    assert 'routecast_request_latency_seconds_bucket{endpoint="medium",le="+Inf"}' in text


def _requests_total(server: str, model: str) -> float:
    _, _, raw = call(server, "GET", "/metrics")
    key = f'routecast_requests_total{{endpoint="{model}",model="{model}",status="200"}} '
    for line in raw.decode().splitlines():
        if line.startswith(key):
            return float(line[len(key):])
    return 0.0
