"""A third-party router installed as a package is fitted, benchmarked and served by name.

``tests/plugins/routecast-toy-router`` is a distribution of its own: its ``pyproject.toml``
declares the entry point ``routecast.routers: toy-keywords``. It is installed for real (pip
builds it and writes its ``.dist-info``) with ``pip install --target`` into a temporary folder
that the CLI subprocesses get on ``PYTHONPATH``, so :mod:`importlib.metadata` finds its entry
point exactly as it would in a user's environment - and the shared virtualenv is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from routecast.data import save_dataset
from tests.routecast_live import model_entry
from tests.server_process import ServerProcess
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

PLUGIN = Path(__file__).parent / "plugins" / "routecast-toy-router"
NAME = "toy-keywords"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin, built and installed into a fresh folder (offline: no index, no isolation)."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "src")  # pip builds in place: keep the repo clean
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(target.glob("routecast_toy_router-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def env(site: Path) -> dict[str, str]:
    """This process's environment with the plugin's folder after the project's own paths."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(site)])}


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(toy_dataset(240), tmp_path_factory.mktemp("data") / "toy.jsonl")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routecast.cli", *args], capture_output=True,
                          text=True, check=False, env=env, timeout=300)


@pytest.fixture(scope="module")
def fitted(env: dict[str, str], toy_file: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Path:
    out = tmp_path_factory.mktemp("router") / "toy"
    done = cli(env, "fit", str(toy_file), "--router", NAME, "--param", "n_words=4",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_without_the_plugin_the_name_is_unknown(toy_file: Path, tmp_path: Path) -> None:
    done = cli(dict(os.environ), "fit", str(toy_file), "--router", NAME, "--out",
               str(tmp_path / "r"))
    assert done.returncode == 2
    assert f"unknown router {NAME!r}; known routers: random, best-single" in done.stderr


def test_fit_saves_the_plugin_router_by_name(fitted: Path) -> None:
    meta = json.loads((fitted / "router.json").read_text())
    assert meta["router"] == NAME and meta["params"] == {"n_words": 4}
    # What it learned: the words of the hard prompts of the toy data.
    assert set(meta["state"]["words_"]) <= {"integral", "theorem", "proof", "derivative",
                                            "matrix", "eigenvalue"}


def test_bench_evaluates_the_plugin_router_beside_the_built_ins(
        env: dict[str, str], toy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = cli(env, "bench", str(toy_file), "--routers", f"best-single,{NAME}",
               "--bootstrap", "0", "--no-cascades", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    routers = {r["name"]: r for r in result["routers"]}
    assert set(routers) == {"best-single", NAME}
    # The toy data is learnable from its words: the plugin beats the best single model's AIQ.
    assert routers[NAME]["aiq"] > routers["best-single"]["aiq"]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with StubUpstream() as upstream:
        yield upstream


def test_serve_loads_the_saved_plugin_router_and_routes_with_it(
        env: dict[str, str], fitted: Path, stub: StubUpstream, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"models": {m: model_entry(stub.url, m) for m in ("small", "medium", "large")},
              "endpoints": {"auto": {"type": "routed", "router": str(fitted),
                                     "cost_weight": 10.0}}}
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # ServerProcess passes os.environ on
    server = ServerProcess(tmp_path, config).start()
    try:
        answers = {}
        for prompt in ("hello weather thanks song", "integral theorem proof matrix"):
            body = json.dumps({"model": "auto", "messages": [{"role": "user",
                                                              "content": prompt}]}).encode()
            request = urllib.request.Request(f"{server.url}/v1/chat/completions", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                answers[prompt] = json.loads(r.read())["model"]
    finally:
        server.stop()
    # Easy words go to the cheap model, hard ones to a dearer one: the plugin decided.
    assert answers["hello weather thanks song"] == "small"
    assert answers["integral theorem proof matrix"] in {"medium", "large"}
