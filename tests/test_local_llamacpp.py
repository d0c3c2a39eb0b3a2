"""Server process management, on stand-in interpreters that fail the ways llama.cpp can."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest

from routecast.errors import OptionalDependencyError, UpstreamError
from routecast.local import llamacpp
from routecast.local.models import CMAKE_ARGS


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for the interpreter ``launch`` starts."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_free_port_is_bindable() -> None:
    port = llamacpp.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_default_threads_share_the_cores() -> None:
    one, two = llamacpp.default_threads(1), llamacpp.default_threads(2)
    assert one >= 1 and two == max(1, one // 2)
    assert llamacpp.default_threads(10_000) == 1


def test_missing_llama_cpp_names_the_portable_install(tmp_path: Path) -> None:
    # -S: no site-packages, so llama_cpp cannot be imported, as on an install without the extra.
    python = fake_python(tmp_path, f'exec {sys.executable} -S "$@"')
    server = llamacpp.launch(tmp_path / "m.gguf", "m", python=python)
    with pytest.raises(OptionalDependencyError) as info:
        server.wait_ready(30)
    assert CMAKE_ARGS in str(info.value) and "routecast[local]" in str(info.value)
    assert not server.alive() and not server.log_path.exists()


def test_illegal_instruction_says_how_to_rebuild(tmp_path: Path) -> None:
    server = llamacpp.launch(tmp_path / "m.gguf", "m", python=fake_python(tmp_path, "kill -ILL $$"))
    with pytest.raises(UpstreamError, match="illegal instruction") as info:
        server.wait_ready(30)
    assert "--force-reinstall" in str(info.value) and CMAKE_ARGS in str(info.value)


def test_early_exit_shows_the_log(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "echo 'error loading model: bad magic' >&2; exit 3")
    server = llamacpp.launch(tmp_path / "m.gguf", "m", python=python)
    with pytest.raises(UpstreamError, match="exited with status 3") as info:
        server.wait_ready(30)
    assert "bad magic" in str(info.value)


def test_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    server = llamacpp.launch(tmp_path / "m.gguf", "slow",
                             python=fake_python(tmp_path, "exec sleep 60"))
    assert server.alive() and server in llamacpp._LIVE
    with pytest.raises(UpstreamError, match=r"not ready within 0\.5s"):
        server.wait_ready(0.5)
    assert not server.alive() and server not in llamacpp._LIVE


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "trap '' TERM; while :; do sleep 0.1; done")
    server = llamacpp.launch(tmp_path / "m.gguf", "stubborn", python=python)
    server.stop(grace_s=0.3)
    assert server.process.returncode is not None and not server.alive()
