"""Fuzzing: schemathesis against the server's own OpenAPI schema (no 5xx, ever), and
hypothesis against the config loader and the outcome importers (only routecast's errors may
escape). The longer server run is ``benchmarks/fuzz_server.py``."""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from routecast.errors import RoutecastError
from routecast.server.config import load_config, parse_config
from tests.fuzz_app import fuzz_app

schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())
SEEN: dict[str, int] = {}


@schema.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_server_never_answers_5xx(case: Any) -> None:
    response = case.call()
    key = f"{case.method} {case.path}"
    SEEN[key] = SEEN.get(key, 0) + 1
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500


# -- the config loader ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=4),
    max_leaves=20)

near_configs = st.fixed_dictionaries(
    {"models": st.dictionaries(
        st.text(string.ascii_lowercase, min_size=1, max_size=5),
        st.fixed_dictionaries({"base_url": st.sampled_from(["http://x/v1", "ftp://x", "", 3])},
                              optional={"input_usd_per_mtok": json_values,
                                        "api_key_env": json_values,
                                        "api_key_file": json_values,
                                        "breaker": json_values, "local": json_values}),
        max_size=3)},
    optional={"endpoints": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
              "limits": json_values, "privacy": st.fixed_dictionaries(
                  {"patterns": st.lists(st.text(max_size=8), max_size=3)}),
              "auth": json_values, "storage": json_values})


@given(doc=json_values | near_configs)
@settings(max_examples=150, deadline=None)
def test_parse_config_raises_only_config_errors(doc: Any) -> None:
    with contextlib.suppress(RoutecastError):
        parse_config(doc)


@given(text=st.text(max_size=300))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_load_config_on_arbitrary_yaml_raises_only_config_errors(tmp_path: Path,
                                                                 text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(RoutecastError):
        load_config(path)


# -- the importers -----------------------------------------------------------------------------

def _canonical_like() -> st.SearchStrategy[Any]:
    record = st.fixed_dictionaries(
        {}, optional={"prompt": json_values, "prompt_id": json_values, "model": json_values,
                      "quality": json_values, "cost_usd": json_values, "outcomes": json_values,
                      "split": json_values, "latency_s": json_values})
    return st.lists(record, max_size=4)


@pytest.mark.parametrize("fmt", ["routecast", "routerbench", "routellm"])
@given(records=_canonical_like() | json_values, as_jsonl=st.booleans())
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_importers_raise_only_data_errors(tmp_path: Path, fmt: str, records: Any,
                                          as_jsonl: bool) -> None:
    from routecast.data import load_dataset

    path = tmp_path / ("data.jsonl" if as_jsonl else "data.json")
    if as_jsonl and isinstance(records, list):
        path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    with contextlib.suppress(RoutecastError):
        load_dataset(path, fmt=fmt)


@pytest.mark.parametrize("fmt", ["routecast", "routerbench", "routellm"])
@given(raw=st.binary(max_size=200))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_importers_on_raw_bytes(tmp_path: Path, fmt: str, raw: bytes) -> None:
    from routecast.data import load_dataset

    for suffix in (".json", ".jsonl", ".csv"):
        path = tmp_path / f"data{suffix}"
        path.write_bytes(raw)
        with contextlib.suppress(RoutecastError):
            load_dataset(path, fmt=fmt)
