"""Regressions of issue 10's drop-in defects, each through a running server.

Log-probs of a kept cascade answer in a stream; usage asked upstream but not passed on; no
upstream address in client errors; the upstream's ``param``, ``code`` and ``Retry-After``
passed on; non-integers where OpenAI wants integers; the config's removed ``profile``; a
trickling upstream handed to the fallback in time. (The stream ending, ``/v1/models/{id}`` and
the schemas are in ``test_openai_dropin``; key budgets in ``test_key_budgets``.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from benchmarks.fault_suite import FaultServer, fault

from routecast.errors import ConfigError
from routecast.server.config import parse_config
from tests.http_calls import call
from tests.routecast_live import make_config, model_entry, serve
from tests.stub_upstream import Step, StubUpstream, closed_port, iter_sse

MESSAGES: Any = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


DEAD_PORT = closed_port()


@pytest.fixture(scope="module")
def base_url(stub: StubUpstream) -> Iterator[str]:
    config = make_config(stub.url, None, models={
        "dead": model_entry(f"http://127.0.0.1:{DEAD_PORT}/v1", "dead", max_retries=0),
        "once": model_entry(stub.url, "once", max_retries=0),
    }, endpoints={"keeps": {"type": "cascade", "models": ["small", "large"],
                            "thresholds": [0.8]}})
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)


# -- 3. a kept cascade answer keeps its log-probs in a stream ------------------------------------

def test_cascade_stream_keeps_logprobs_of_the_kept_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="keeps", messages=MESSAGES, logprobs=True)
    assert plain.model == "small"  # kept: the stub's confidence ~0.905 passes 0.8
    assert plain.choices[0].logprobs is not None
    tokens = [t.token for t in plain.choices[0].logprobs.content or []]
    assert tokens == ["small", "says:", "hello", "world"]
    chunks = list(client.chat.completions.create(model="keeps", messages=MESSAGES,
                                                 logprobs=True, stream=True))
    logprobs = [c.choices[0].logprobs for c in chunks]
    streamed = [t.token for lp in logprobs if lp is not None for t in lp.content or []]
    assert streamed == tokens
    # Not asked: the cascade asked upstream for itself, the client gets none.
    unasked = list(client.chat.completions.create(model="keeps", messages=MESSAGES,
                                                  stream=True))
    assert all(c.choices[0].logprobs is None for c in unasked)


def test_cascade_stream_keeps_legacy_completion_logprobs(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="keeps", prompt="hello world", logprobs=1,
                                            stream=True))
    logprobs = chunks[0].choices[0].logprobs
    assert logprobs is not None and logprobs.tokens == ["small", " says:", " hello", " world"]


# -- 4. streamed completions: usage is asked upstream, not passed on -------------------------

def test_streamed_completions_carry_no_usage_unless_asked(base_url: str,
                                                          stub: StubUpstream) -> None:
    body = b'{"model": "small", "prompt": "hello world", "stream": true}'
    status, _, raw = call(base_url, "POST", "/v1/completions", body)
    assert status == 200
    assert stub.received[-1].body["stream_options"] == {"include_usage": True}
    events = list(iter_sse(raw))
    assert events and all("usage" not in e for e in events)  # the stub sent `"usage": null`


# -- 6. no upstream address in client errors -------------------------------------------------

def test_upstream_address_is_logged_not_told(client: openai.OpenAI, stub: StubUpstream,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="routecast.upstream")
    port = str(urlsplit(stub.url).port)
    stub.then(Step(status=400, message="bad temperature"))
    with pytest.raises(openai.BadRequestError) as rejected:
        client.chat.completions.create(model="once", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as unreachable:
        client.chat.completions.create(model="dead", messages=MESSAGES)
    for error in (rejected.value, unreachable.value):
        text = error.response.text
        assert "127.0.0.1" not in text and "http://" not in text, text
        assert port not in text and str(DEAD_PORT) not in text
    assert "model 'once'" in rejected.value.message
    assert "model 'dead'" in unreachable.value.message
    logged = caplog.text
    assert stub.url in logged and f"127.0.0.1:{DEAD_PORT}" in logged


# -- 7. the upstream's param, code and Retry-After reach the client --------------------------

def test_rejected_request_keeps_param_and_code(client: openai.OpenAI,
                                               stub: StubUpstream) -> None:
    stub.then(Step(status=400, message="temperature too high", param="temperature",
                   code="decimal_above_max_value"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="once", messages=MESSAGES, temperature=2)
    error = caught.value.response.json()["error"]
    assert error["param"] == "temperature"
    assert error["code"] == "decimal_above_max_value"
    assert error["type"] == "invalid_request_error"


def test_rate_limited_upstream_passes_on_retry_after(client: openai.OpenAI,
                                                     stub: StubUpstream) -> None:
    # Longer than the backend waits (60 s): it fails at once, and the client is told when.
    stub.then(Step(status=429, headers={"retry-after": "120"}, code="rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="once", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "120"
    assert caught.value.response.json()["error"]["code"] == "rate_limit_exceeded"


# -- 8. integers where OpenAI wants integers -----------------------------------------------------

@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions",
     b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}',
     "max_tokens"),
    ("/v1/chat/completions",
     b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "n": 1.5}', "n"),
    ("/v1/chat/completions",
     b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "seed": true}',
     "seed"),
    ("/v1/chat/completions", b'{"model": "small", "messages": [{"role": "user", "content": '
     b'"x"}], "max_completion_tokens": "16"}', "max_completion_tokens"),
    ("/v1/completions", b'{"model": "small", "prompt": "x", "logprobs": 2.0}', "logprobs"),
    ("/v1/completions", b'{"model": "small", "prompt": "x", "max_tokens": 1e999}',
     "max_tokens"),
])
def test_non_integers_are_refused_naming_the_field(base_url: str, stub: StubUpstream,
                                                   path: str, body: bytes, field: str) -> None:
    before = len(stub.received)
    status, _, raw = call(base_url, "POST", path, body)
    assert status == 400, raw
    error = json.loads(raw)["error"]
    assert error["param"] == field
    assert f"`{field}` must be an integer" in error["message"]
    assert len(stub.received) == before  # nothing was forwarded


def test_integers_and_nulls_pass(client: openai.OpenAI, stub: StubUpstream) -> None:
    client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=5, n=1,
                                   seed=7, extra_body={"top_logprobs": None})
    assert stub.received[-1].body["max_tokens"] == 5


# -- 9. models.<name>.profile is gone ------------------------------------------------------------

def test_model_profile_is_refused_with_a_fix() -> None:
    with pytest.raises(ConfigError, match=r"models\.small\.profile.*remove it"):
        parse_config({"models": {"small": {"base_url": "http://127.0.0.1:1/v1",
                                           "profile": {"first_token_s": 0.2}}}})


# -- 10. a trickling upstream hands over to the fallback while there is time ---------------------

@pytest.fixture(scope="module")
def trickle(stub: StubUpstream) -> Iterator[str]:
    server = FaultServer(fault("trickle 1 B/s")).__enter__()
    try:
        config = make_config(stub.url, None, models={
            # The read timeout alone never fires: a byte comes every second.
            "trickly": model_entry(f"http://127.0.0.1:{server.port}/v1", "trickly",
                                   read_timeout_s=5, first_token_timeout_s=1.0,
                                   max_retries=0)},
            endpoints={"guarded": {"type": "plain", "model": "trickly",
                                   "fallbacks": ["small"]}},
            limits={"deadline_s": 6})
        with serve(config) as url:
            yield url
    finally:
        server.__exit__()


@pytest.mark.parametrize("stream", [False, True])
def test_trickling_upstream_falls_back_in_time(trickle: str, stream: bool) -> None:
    client = openai.OpenAI(base_url=f"{trickle}/v1", api_key="x", max_retries=0, timeout=20)
    t0 = time.perf_counter()
    if stream:
        chunks = list(client.chat.completions.create(model="guarded", messages=MESSAGES,
                                                      stream=True))
        model = chunks[-1].model
        route = (chunks[-1].model_extra or {})["routecast"]["route"]
    else:
        raw = client.chat.completions.with_raw_response.create(model="guarded",
                                                               messages=MESSAGES)
        model, route = raw.parse().model, raw.headers["x-routecast-route"].split(",")
    elapsed = time.perf_counter() - t0
    assert model == "small" and route == ["trickly", "small"]
    # First-token budget 1 s (stream), or the minimum rate after a 1 s grace (whole answer):
    # well inside the 6 s deadline, which the trickle used to run into (504).
    assert elapsed < 4.0, elapsed
