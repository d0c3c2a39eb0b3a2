"""Config files: validation errors name the key path and the fix; the CLI around them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from click.testing import CliRunner

from routecast import Policy, make_router
from routecast.cli import cli, main
from routecast.errors import ConfigError
from routecast.routers.persist import save_router
from routecast.server.config import load_config, parse_config
from routecast.server.endpoints import build_endpoints
from tests.routecast_live import serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

GOOD: dict[str, Any] = {
    "models": {"small": {"base_url": "http://127.0.0.1:9/v1", "input_usd_per_mtok": 0.1,
                         "output_usd_per_mtok": 0.4},
               "large": {"base_url": "http://127.0.0.1:9/v1", "input_usd_per_mtok": 10,
                         "output_usd_per_mtok": 30}},
    "endpoints": {"safe": {"type": "plain", "model": "large", "fallbacks": ["small"]}},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at dotted ``path`` replaced."""
    doc: Any = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return dict(doc)


def config_error(doc: Any) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, where="routecast.yaml")
    return str(e.value)


def test_good_config_serves_every_model_and_endpoint() -> None:
    config = parse_config(GOOD)
    assert config.endpoint_names() == ["safe", "small", "large"]
    table = build_endpoints(config, env={})
    assert table.backends["safe"].models == ("large", "small")
    assert table.strongest == {"safe": "large", "small": "small", "large": "large"}


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("models.small.inptu_usd_per_mtok", 1, ["models.small.inptu_usd_per_mtok",
                                            "remove it, or check its spelling"]),
    ("models.small.input_usd_per_mtok", -1, ["models.small.input_usd_per_mtok",
                                             "greater than or equal to 0", "(got -1)"]),
    ("models.small.base_url", "localhost:8080", ["models.small.base_url", "http://"]),
    ("models.small.kind", "instruct", ["models.small.kind", "'chat' or 'base'"]),
    ("endpoints.safe.fallbacks", ["smal"], ["endpoints.safe.fallbacks[0]", "unknown model "
                                            "'smal'", "defined under `models`"]),
    ("endpoints.safe.type", "magic", ["endpoints.safe", "set `type` to plain, routed or "
                                      "cascade"]),
    ("endpoints.auto", {"type": "routed"}, ["endpoints.auto.router", "add it"]),
    ("endpoints.auto", {"type": "routed", "router": "r", "budget_usd": 0.01},
     ["endpoints.auto", "calibration_data"]),
    ("limits.max_body_bytes", 10, ["limits.max_body_bytes", "greater than or equal to 1024"]),
])
def test_errors_name_the_key_path_and_the_fix(path: str, value: Any,
                                              expected: list[str]) -> None:
    message = config_error(with_change(path, value))
    assert message.startswith("routecast.yaml: 1 problem(s)")
    for part in expected:
        assert part in message


def test_every_problem_is_listed() -> None:
    doc = with_change("models.small.output_usd_per_mtok", "cheap")
    doc["storage"] = {"dbpath": "x"}
    message = config_error(doc)
    assert "2 problem(s)" in message
    assert "models.small.output_usd_per_mtok" in message and "storage.dbpath" in message


def test_a_pasted_key_is_refused_without_being_echoed() -> None:
    message = config_error(with_change("models.small.api_key_env", "sk-live-secret-value"))
    assert "models.small.api_key_env" in message and "NAME of an environment variable" in message
    assert "sk-live-secret-value" not in message


def test_missing_models_and_non_mapping() -> None:
    assert "models" in config_error({"endpoints": {}})
    assert "expected a mapping" in config_error(["models"])


def test_unset_api_key_env_is_named() -> None:
    config = parse_config(with_change("models.small.api_key_env", "SMALL_KEY"))
    with pytest.raises(ConfigError, match=r"models\.small\.api_key_env.*SMALL_KEY is not set"):
        build_endpoints(config, env={})


def test_cascade_errors_name_the_endpoint(tmp_path: Path) -> None:
    message = config_error(with_change("endpoints.smart", {"type": "cascade",
                                                           "models": ["small", "huge"]}))
    assert "endpoints.smart.models[1]: unknown model 'huge'" in message
    bare = with_change("endpoints.smart", {"type": "cascade"})
    assert "give either `models`" in config_error(bare)
    config = parse_config(with_change("endpoints.smart", {"type": "cascade",
                                                          "models": ["small", "large"]}))
    with pytest.raises(ConfigError, match=r"endpoints\.smart: .*needs 1 thresholds"):
        build_endpoints(config, env={})
    config = parse_config(with_change("endpoints.smart", {
        "type": "cascade", "models": ["small", "large"], "thresholds": [0.5],
        "signal": "learned"}))
    with pytest.raises(ConfigError, match="cannot be computed live"):
        build_endpoints(config, env={})
    missing = parse_config(with_change("endpoints.smart", {"type": "cascade",
                                                           "file": str(tmp_path / "no.json")}))
    with pytest.raises(ConfigError, match=r"endpoints\.smart\.file: cannot read a cascade"):
        build_endpoints(missing, env={})


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  small: {base_url: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


def test_config_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    result = CliRunner().invoke(cli, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "2 models, 3 endpoints" in result.output and result.output.rstrip().endswith("ok")

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_change("models.large.input_usd_per_mtok", -5)))
    with pytest.raises(SystemExit) as e:
        main(["config", "check", str(bad)])
    assert e.value.code == 2


# `routecast serve` without --config now serves the embedded local default:
# see tests/test_local_default.py.


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as s:
        yield s


def test_routed_endpoint_from_a_saved_router(stub: StubUpstream, tmp_path: Path) -> None:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    save_router(router, tmp_path / "routers" / "toy", policy=policy)
    doc = {
        "models": {m: {"base_url": stub.url} for m in ("small", "medium", "large")},
        "endpoints": {
            "auto": {"type": "routed", "router": "routers/toy"},  # relative to the file
            "thrifty": {"type": "routed", "router": "routers/toy", "cost_weight": 1e9},
        },
        "storage": {"db": None},
    }
    (tmp_path / "routecast.yaml").write_text(yaml.safe_dump(doc))
    config = load_config(tmp_path / "routecast.yaml")
    prompts = list(data.subset("test").prompts[:10])
    with serve(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        saved = [client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": p}]).model for p in prompts]
        thrifty = {client.chat.completions.create(
            model="thrifty", messages=[{"role": "user", "content": p}]).model
            for p in prompts}
    assert saved == router.route(prompts, policy)
    assert thrifty == {"small"}  # a huge cost weight always picks the cheapest model


def test_config_check_loads_what_serve_would_load(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # A routed endpoint without its saved router, and a cascade whose file is missing: the
    # file parses, but `serve` would refuse it, so `config check` must say so.
    path = tmp_path / "routecast.yaml"

    def check(doc: dict[str, Any]) -> tuple[int, str]:
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(SystemExit) as e:
            main(["config", "check", str(path)])
        out = capsys.readouterr()
        return int(e.value.code or 0), out.out + out.err

    code, text = check(with_change("endpoints.auto", {
        "type": "routed", "router": str(tmp_path / "nowhere"), "cost_weight": 1.0}))
    assert code == 2 and "endpoints.auto.router: no saved router folder" in text
    code, text = check(with_change("endpoints.smart", {"type": "cascade",
                                                       "file": str(tmp_path / "no.json")}))
    assert code == 2 and "endpoints.smart.file: cannot read a cascade" in text
    # a good config names the models each endpoint answers with
    path.write_text(yaml.safe_dump(GOOD))
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0 and "endpoint safe: plain over large, small" in result.output
