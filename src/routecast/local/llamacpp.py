"""Start, health-check and stop llama.cpp servers (``python -m llama_cpp.server``) on 127.0.0.1.

One process per model: llama-cpp-python's multi-model mode keeps one model loaded at a time
and swaps on demand, so two models asked in turn would reload weights on every switch; two
processes also fail independently and each gets its own threads.

No orphans, however the parent ends:

* :meth:`LlamaServer.stop` sends SIGTERM, then SIGKILL after a grace period;
* every live server is stopped at interpreter exit (``atexit``), and on SIGTERM -- the handler
  is installed only if nobody else has one -- before the process dies of that signal;
* each server runs under a tiny watchdog that exits it as soon as its parent process is gone,
  which covers a parent killed with SIGKILL, where no Python code runs.

A server is ready when ``GET /v1/models`` answers 200 and it has generated one token (a warm-up:
a fresh process's first request is slow, and would skew the first measured latency). If it
exits first, or is not ready in time, the error says why, with the tail of its log and, when
llama-cpp-python is missing or was built for another CPU, the install command with portable
build flags.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from routecast.errors import OptionalDependencyError, UpstreamError
from routecast.local.models import INSTALL_HINT, LocalModel
from routecast.processes import stop_process

#: Run in the child: exit as soon as the parent is gone (it is re-parented, so getppid changes),
#: removing the log the parent can no longer remove; then hand over to llama_cpp.server as if
#: started with ``python -m``. Arguments: parent pid, log path, the server's own arguments.
_WATCHDOG = """\
import os, runpy, sys, threading, time
parent, log = int(sys.argv[1]), sys.argv[2]
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    try:
        os.unlink(log)
    except OSError:
        pass
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["llama_cpp.server", *sys.argv[3:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""

_LIVE: set[LlamaServer] = set()
# Health checks go straight to 127.0.0.1, whatever HTTP_PROXY says.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_hooks_installed = False


def default_threads(n_servers: int) -> int:
    """CPU cores this process may use, shared evenly between ``n_servers`` (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, n_servers))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class LlamaServer:
    """One running ``llama_cpp.server`` process serving ``alias`` on ``port``."""

    alias: str
    gguf: Path
    port: int
    n_threads: int
    process: subprocess.Popen[bytes]
    log_path: Path
    launched_at: float = field(default_factory=time.perf_counter)
    ready_s: float = float("nan")  # seconds from launch until warmed up and ready

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n_chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace_s``) and remove its log."""
        _LIVE.discard(self)
        if self.alive():
            stop_process(self.process, grace_s)
        self.log_path.unlink(missing_ok=True)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ``GET /v1/models`` answers 200; raise with the log if it never does."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if not self.alive():
                raise self._failure()
            try:
                with _LOOPBACK.open(f"{self.base_url}/v1/models", timeout=1.0) as r:
                    listening = r.status == 200
            except (urllib.error.URLError, OSError):
                listening = False  # not yet
            if listening:
                self._warm_up(max(1.0, deadline - time.perf_counter()))
                self.ready_s = time.perf_counter() - self.launched_at
                return
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise UpstreamError(
            f"llama.cpp server for {self.alias!r} was not ready within {timeout_s:g}s. "
            f"Its log ends with:\n{log}\nFix: raise the start timeout, or check the model file "
            f"{self.gguf}", model=self.alias)

    def _warm_up(self, timeout_s: float) -> None:
        """Generate one token. The first request to a fresh llama.cpp process is slow (10-30 s
        here for a 2-token prompt, then ~25 ms per token): pay that at start, not in the
        latency of the first measured answer."""
        body = json.dumps({"prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(f"{self.base_url}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with _LOOPBACK.open(request, timeout=timeout_s) as r:
                r.read()
        except (urllib.error.URLError, OSError) as e:
            if not self.alive():
                raise self._failure() from None
            log = self.log_tail()
            self.stop()
            raise UpstreamError(f"llama.cpp server for {self.alias!r} failed its first "
                                f"request ({e}). Its log ends with:\n{log}",
                                model=self.alias) from None

    def _failure(self) -> Exception:
        code = self.process.returncode
        log = self.log_tail()
        self.stop()
        if "No module named 'llama_cpp'" in log or "No module named llama_cpp" in log:
            return OptionalDependencyError("llama-cpp-python", "local", "serving local models",
                                           hint=INSTALL_HINT)
        if code == -signal.SIGILL or "Illegal instruction" in log:
            rebuild = INSTALL_HINT.replace("pip install",
                                           "pip install --force-reinstall --no-cache-dir")
            return UpstreamError(
                f"llama.cpp crashed with an illegal instruction serving {self.alias!r}: it was "
                f"built for a CPU other than this one. Fix: rebuild it portably: {rebuild}",
                model=self.alias)
        return UpstreamError(
            f"llama.cpp server for {self.alias!r} exited with status {code} before it was "
            f"ready. Its log ends with:\n{log}", model=self.alias)


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(grace_s=2.0)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    # Then die of SIGTERM as we would have, so the exit status still tells what happened.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_stop_all)
    # Signal handlers can only be set from the main thread; leave anyone else's handler alone.
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _on_sigterm)


def launch(gguf: Path, alias: str, *, n_ctx: int = 2048, n_threads: int = 1,
           logprobs: bool = True, port: int | None = None, python: str | None = None,
           extra_args: Sequence[str] = ()) -> LlamaServer:
    """Start one server process and return at once (see :meth:`LlamaServer.wait_ready`).

    ``logprobs`` keeps the logits of every token (llama-cpp-python's ``logits_all``), which it
    needs to return log-probs at all; without it an answer took 4x (SmolLM2) to 14x (Gemma)
    less CPU here (see :class:`~routecast.local.models.LocalProfile`).
    """
    python = python or sys.executable
    if python == sys.executable and importlib.util.find_spec("llama_cpp") is None:
        raise OptionalDependencyError("llama-cpp-python", "local", "serving local models",
                                      hint=INSTALL_HINT)
    _install_hooks()
    port = port or free_port()
    fd, log_name = tempfile.mkstemp(prefix=f"routecast-llama-{alias}-", suffix=".log")
    args = ["--model", str(gguf), "--model_alias", alias, "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
            "--n_threads_batch", str(n_threads), "--logits_all", str(logprobs).lower(),
            "--verbose", "false", *extra_args]
    with os.fdopen(fd, "wb") as log:
        # A session of its own: a Ctrl-C in the terminal reaches us, and we stop the server;
        # the watchdog and the hooks make sure nothing outlives us.
        process = subprocess.Popen([python, "-c", _WATCHDOG, str(os.getpid()), log_name, *args],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    server = LlamaServer(alias, gguf, port, n_threads, process, Path(log_name))
    _LIVE.add(server)
    return server


def start(models: Sequence[LocalModel], *, n_threads: int | None = None,
          logprobs: bool = True, timeout_s: float = 120.0) -> dict[str, LlamaServer]:
    """Start one server per model (loading in parallel) and wait until all are ready.

    ``n_threads`` per server defaults to the available cores shared evenly. If one fails, the
    others are stopped before the error propagates.
    """
    threads = n_threads or default_threads(len(models))
    servers: dict[str, LlamaServer] = {}
    try:
        for m in models:
            servers[m.name] = launch(m.gguf_path(), m.name, n_ctx=m.n_ctx, n_threads=threads,
                                     logprobs=logprobs)
        for m in models:
            try:
                servers[m.name].wait_ready(timeout_s)
            except UpstreamError as e:
                # The port was free when picked but another process may have taken it before
                # the server bound it: pick another once.
                if "address already in use" not in str(e).lower():
                    raise
                servers[m.name] = launch(m.gguf_path(), m.name, n_ctx=m.n_ctx,
                                         n_threads=threads, logprobs=logprobs)
                servers[m.name].wait_ready(timeout_s)
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return servers


@contextmanager
def serving(models: Sequence[LocalModel], *, n_threads: int | None = None,
            logprobs: bool = True, timeout_s: float = 120.0
            ) -> Iterator[dict[str, LlamaServer]]:
    """Servers for ``models`` (by name) for the duration of a ``with`` block."""
    servers = start(models, n_threads=n_threads, logprobs=logprobs, timeout_s=timeout_s)
    try:
        yield servers
    finally:
        for s in servers.values():
            s.stop()
