"""``routecast collect`` as a user runs it: real servers, killed midway, resumed, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from routecast.data.canonical import load
from routecast.local.graders import grade
from routecast.local.tasks import builtin_tasks

N_TASKS, MODELS = 6, ("smollm2-135m", "gemma3-270m")


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "routecast.cli", "collect", str(out), "--limit", str(N_TASKS),
            "--concurrency", "2", "--max-tokens", "8", "--seed", "1"]


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the command name sits in parentheses and may hold spaces: split after it
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def journal_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def run_until_journal_has(out: Path, n: int, sig: signal.Signals) -> tuple[set[int], int]:
    """Start collect, send ``sig`` once ``n`` answers are journaled; its servers and status."""
    journal = out.with_name(out.name + ".journal")
    proc = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    servers: set[int] = set()
    try:
        assert wait_for(lambda: len(journal_lines(journal)) >= n or proc.poll() is not None, 120)
        assert proc.poll() is None, proc.communicate()
        servers = children(proc.pid)
        assert len(servers) == 2  # one llama.cpp server per model
        proc.send_signal(sig)
        proc.wait(30)
        # the servers must go with it, whether it could clean up (TERM) or not (KILL)
        assert wait_for(lambda: not alive(servers), 10), alive(servers)
        return servers, proc.returncode
    finally:
        for pid in alive(servers):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.needs_local
def test_collect_killed_midway_resumes_without_recomputing(tmp_path: Path) -> None:
    out = tmp_path / "local.jsonl"
    journal = out.with_name(out.name + ".journal")
    _, status = run_until_journal_has(out, 3, signal.SIGTERM)
    assert status == -signal.SIGTERM
    assert not out.exists()  # only a complete run writes outcomes
    before = journal_lines(journal)
    assert 3 <= len(before) < 2 * N_TASKS

    done = subprocess.run(command(out), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert (f"({len(before)} pairs from the journal, {2 * N_TASKS - len(before)} asked)"
            in done.stdout)
    after = journal_lines(journal)
    assert after[:len(before)] == before  # what was finished was kept, not redone
    keys = [(r["id"], r["model"]) for r in map(json.loads, after)]
    assert len(keys) == len(set(keys)) == 2 * N_TASKS

    ds = load(out)
    assert ds.models == MODELS and ds.n_prompts == N_TASKS
    assert ds.confidence is not None and ds.latency_s is not None and ds.tokens_out is not None
    assert ds.responses is not None
    tasks = {t.id: t for t in builtin_tasks(seed=1)}
    by_key = {(r["id"], r["model"]): r for r in map(json.loads, after)}
    for i, pid in enumerate(ds.ids):
        for j, m in enumerate(ds.models):
            # each outcome is the journaled answer, graded by its task's grader
            assert ds.quality[i, j] == by_key[(pid, m)]["quality"]
            assert ds.quality[i, j] == grade(tasks[pid], ds.responses[i, j])
    conf = ds.confidence[~np.isnan(ds.confidence)]
    assert conf.size >= N_TASKS and ((conf > 0) & (conf <= 1)).all()  # log-probs came back
    assert (ds.latency_s > 0).all() and (ds.tokens_out <= 8).all()
    assert (ds.cost_usd > 0).all() and (ds.cost_usd < 1e-5).all()  # joules' worth, not dollars
    assert "AUROC" in done.stdout


@pytest.mark.needs_local
def test_servers_die_with_a_collect_killed_outright(tmp_path: Path) -> None:
    # SIGKILL leaves no chance to clean up: the servers' watchdog must end them.
    logs = set(Path(tempfile.gettempdir()).glob("routecast-llama-*.log"))
    servers, status = run_until_journal_has(tmp_path / "k.jsonl", 1, signal.SIGKILL)
    assert status == -signal.SIGKILL and len(servers) == 2
    # and take their logs with them, which the killed parent could not remove
    assert set(Path(tempfile.gettempdir()).glob("routecast-llama-*.log")) <= logs
