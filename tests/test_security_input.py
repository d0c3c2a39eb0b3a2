"""Hostile or broken input gets an OpenAI-shaped 4xx; the privacy rule keeps prompts local."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from routecast.server.privacy import PrivacyRule
from tests.http_calls import assert_openai_error, call
from tests.routecast_live import db_fixture, log_rows, make_config, model_entry, serve, stub_fixture
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hi"}]


stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def server(stub: StubUpstream, db: Path) -> Iterator[str]:
    config = make_config(
        stub.url, db,
        models={"onprem": model_entry(stub.url, "onprem", local=True)},
        endpoints={"mixed": {"type": "plain", "model": "large", "fallbacks": ["onprem"]},
                   "cloud": {"type": "plain", "model": "large"},
                   "steps": {"type": "cascade", "models": ["small", "onprem", "large"],
                             "thresholds": [0.99, 0.99]}},
        storage={"db": str(db), "batch_ms": 20, "log_prompts": True},
        privacy={"patterns": ["email", "card", r"PROJECT-\d+"]},
        limits={"max_body_bytes": 8192, "max_messages": 4})
    with serve(config) as url:
        yield url


HOSTILE: list[tuple[str, bytes, int]] = [
    ("invalid JSON", b'{"model": "small", "messages": [', 400),
    ("invalid UTF-8", b'{"model": "sm\xff\xfeall", "messages": []}', 400),
    ("not an object", b"[1, 2, 3]", 400),
    ("empty body", b"", 400),
    ("huge integer", b'{"model": "small", "max_tokens": ' + b"9" * 5000 + b', "messages": []}',
     400),
    ("NaN", b'{"model": "small", "temperature": NaN, "messages": [{"role":"user"}]}', 400),
    ("Infinity", b'{"model": "small", "temperature": -Infinity, "messages": []}', 400),
    ("deep nesting", b'{"model": "small", "messages": ' + b"[" * 3000 + b"]" * 3000 + b"}",
     400),
    ("model a number", b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400),
    ("messages a string", b'{"model": "small", "messages": "hi"}', 400),
    ("empty messages", b'{"model": "small", "messages": []}', 400),
    ("message not an object", b'{"model": "small", "messages": [3]}', 400),
    ("bad role", b'{"model": "small", "messages": [{"role": "root", "content": "x"}]}', 400),
    ("content a number", b'{"model": "small", "messages": [{"role": "user", "content": 1}]}',
     400),
    ("stream a string", b'{"model": "small", "stream": "yes", "messages": [{"role": "user"}]}',
     400),
    ("too many messages", json.dumps({"model": "small", "messages": USER * 5}).encode(), 400),
    ("too large", json.dumps({"model": "small", "messages": USER,
                              "pad": "x" * 10000}).encode(), 413),
    ("unknown endpoint", json.dumps({"model": "gpt-17", "messages": USER}).encode(), 404),
]


@pytest.mark.parametrize(("name", "raw", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_an_openai_4xx(server: str, name: str, raw: bytes,
                                        expected: int) -> None:
    status, headers, body = call(server, "POST", "/v1/chat/completions", raw)
    assert status == expected, (name, body[:300])
    assert headers["content-type"].startswith("application/json")
    assert_openai_error(json.loads(body))


def test_lying_content_length_is_413_not_a_hang(server: str) -> None:
    status, _, body = call(server, "POST", "/v1/chat/completions", b"{}",
                           {"content-length": str(10**12)})
    assert status == 413
    assert_openai_error(json.loads(body))


def test_unknown_endpoint_and_method(server: str) -> None:
    for method, path, expected in [("GET", "/v2/anything", 404), ("DELETE", "/v1/models", 405),
                                   ("GET", "/v1/chat/completions", 405)]:
        status, _, body = call(server, method, path)
        assert status == expected
        assert_openai_error(json.loads(body))


# -- privacy ----------------------------------------------------------------------------------

def ask(server: str, endpoint: str, text: str) -> tuple[int, dict[str, object]]:
    status, _, raw = call(server, "POST", "/v1/chat/completions", json.dumps(
        {"model": endpoint, "messages": [{"role": "user", "content": text}]}).encode())
    return status, json.loads(raw)


def test_sensitive_prompts_stay_on_local_models(server: str, stub: StubUpstream) -> None:
    status, body = ask(server, "mixed", "what is the weather")
    assert status == 200 and body["model"] == "large"
    for text in ("mail me at jane.doe@example.com", "card 4111 1111 1111 1111",
                 "status of PROJECT-42?"):
        status, body = ask(server, "mixed", text)
        assert status == 200 and body["model"] == "onprem", text
        assert stub.received[-1].body["model"] == "onprem"
    # The cascade skips its non-local steps for a sensitive prompt.
    status, body = ask(server, "steps", "reach me at a@b.io")
    assert status == 200 and body["model"] == "onprem"
    # A card-like number failing the Luhn check is not a card.
    status, body = ask(server, "mixed", "order 4111 1111 1111 1112")
    assert status == 200 and body["model"] == "large"


def test_sensitive_prompt_to_an_endpoint_without_local_model_is_403(server: str,
                                                                   stub: StubUpstream) -> None:
    before = len(stub.received)
    status, body = ask(server, "cloud", "my email is x@y.com")
    assert status == 403 and body["error"]["code"] == "privacy_rule"  # type: ignore[index]
    assert len(stub.received) == before  # nothing left the building
    status, body = ask(server, "large", "my email is x@y.com")
    assert status == 403


def test_logged_prompts_are_redacted(server: str, db: Path) -> None:
    ask(server, "mixed", "bill PROJECT-7 to jane.doe@example.com please")
    rows = log_rows(db, 1, lambda r: "please" in (r["prompt"] or ""))
    prompt = rows[-1]["prompt"]
    assert "jane.doe@example.com" not in prompt and "PROJECT-7" not in prompt
    assert "[REDACTED:email]" in prompt and "[REDACTED:custom2]" in prompt


def test_redaction_handles_overlaps_and_keeps_the_rest() -> None:
    rule = PrivacyRule(["email", r"doe@"], ["x"])
    assert rule.redact("a jane.doe@ex.com b") == "a [REDACTED:email] b"
    assert rule.redact("nothing here") == "nothing here"
    assert rule.allowed({"prompt": "x@y.org"}) == frozenset({"x"})
    assert rule.allowed({"prompt": "plain"}) is None
