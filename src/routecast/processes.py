"""Child processes routecast starts (llama.cpp servers, a replay fleet, a demo's server)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], grace_s: float) -> None:
    """Ask ``process`` to stop (SIGTERM), give it ``grace_s`` seconds to drain, then kill it;
    returns once it has exited. A process that has exited already is left as it is."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
