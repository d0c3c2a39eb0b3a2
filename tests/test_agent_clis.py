"""Claude Code and Codex CLI, the real agents, completing a task through routecast.

Claude Code speaks the Messages API to ``ANTHROPIC_BASE_URL``; Codex CLI the Responses API to
a custom provider's ``base_url``. Both ask the routed endpoint ``auto`` with a routecast client
key, in a throwaway HOME, and the upstream is :class:`tests.agent_stub.AgentStub` (a real
chat server scripted like a model that reads the file it is asked about, with the agent's own
tool, then answers). Each test is one agent task of two turns: the agent runs a real tool
between them, and both turns stay on one model, in one logged conversation. The CLIs come
from npm: ``scripts/install-agent-clis.sh``
puts them in ``.agent-clis/``; the tests skip, saying so, only when node or a CLI is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routecast import Policy, make_router
from routecast.server.keys import add_key
from tests.agent_stub import MARKER, AgentStub
from tests.routecast_live import log_rows, make_config, serve
from tests.toy import toy_dataset

ROOT = Path(__file__).resolve().parent.parent
SECRET = "the secret word is pelican"


def task(folder: Path) -> str:
    """Write the file the agent is asked about; the prompt that asks."""
    (folder / "notes.txt").write_text(SECRET + "\n")
    return f"What does {folder}/notes.txt say?"


def cli(name: str) -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (needed by the agent CLIs): install Node.js 18+ "
                    "and run scripts/install-agent-clis.sh")
    local = ROOT / ".agent-clis" / "node_modules" / ".bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: run scripts/install-agent-clis.sh")
    return found


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path,
                                                                       AgentStub]]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    db = tmp_path_factory.mktemp("agents") / "requests.db"
    key = add_key(db, "agent")
    with AgentStub() as stub:
        config = make_config(stub.url, db, auth={"required": True},
                             endpoints={"auto": {"type": "routed", "router": "given"}})
        with serve(config, routers={"auto": (router, policy)}) as url:
            yield url, key, db, stub


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env={"PATH": os.environ["PATH"], **env}, cwd=cwd, text=True,
                          capture_output=True, timeout=180, stdin=subprocess.DEVNULL)


def check_task(stdout: str, asked: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """The agent's task went through routecast: two turns, the file read by the agent's tool
    in between, both on one model and logged as one conversation."""
    assert f"{MARKER} the tool said:" in stdout and "pelican" in stdout
    assert len(asked) == 2
    assert asked[0]["tools"] and "tool" not in [m["role"] for m in asked[0]["messages"]]
    assert asked[1]["messages"][-1]["role"] == "tool"
    assert SECRET in str(asked[1]["messages"][-1]["content"])
    assert asked[0]["model"] == asked[1]["model"] in ("small", "medium", "large")
    assert [r["model"] for r in rows[-2:]] == [asked[0]["model"]] * 2
    assert rows[-1]["session"] == rows[-2]["session"] is not None


def test_claude_code_completes_through_a_routed_endpoint(
        routed: tuple[str, str, Path, AgentStub], tmp_path: Path) -> None:
    claude = cli("claude")
    url, key, db, stub = routed
    before = len(stub.received)
    home = tmp_path / "home"
    home.mkdir()
    done = run([claude, "-p", task(tmp_path), "--model", "auto", "--allowedTools", "Read"], {
        "HOME": str(home), "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ANTHROPIC_MODEL": "auto",
        "ANTHROPIC_SMALL_FAST_MODEL": "auto", "ANTHROPIC_DEFAULT_HAIKU_MODEL": "auto"},
        tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = log_rows(db, 2, lambda r: (r["session"] or "").startswith("{"))  # Claude's id
    check_task(done.stdout, stub.received[before:], rows)


def test_codex_completes_through_the_responses_api(
        routed: tuple[str, str, Path, AgentStub], tmp_path: Path) -> None:
    codex = cli("codex")
    url, key, db, stub = routed
    before = len(stub.received)
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "auto"\nmodel_provider = "routecast"\n\n[model_providers.routecast]\n'
        f'name = "routecast"\nbase_url = "{url}/v1"\nenv_key = "ROUTECAST_KEY"\n'
        'wire_api = "responses"\n')
    done = run([codex, "exec", "--skip-git-repo-check", task(tmp_path)], {
        "HOME": str(tmp_path), "CODEX_HOME": str(home), "ROUTECAST_KEY": key}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = log_rows(db, 2, lambda r: (r["session"] or "").startswith("conv_"))  # Codex's id
    check_task(done.stdout, stub.received[before:], rows)
