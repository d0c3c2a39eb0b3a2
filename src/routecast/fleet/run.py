"""Starting a fleet: in this process (a uvicorn thread) or as a ``routecast fleet`` subprocess.

Both bind ``127.0.0.1`` on a free port unless told otherwise and yield a :class:`RunningFleet`
whose ``base_url`` (ending in ``/v1``) any OpenAI client, or a ``routecast serve`` config
(:meth:`RunningFleet.models_config`), can use::

    from routecast.fleet import serve_fleet

    with serve_fleet("../shared/data/routerbench-subset", split="test") as fleet:
        client = openai.OpenAI(base_url=fleet.base_url, api_key="unused")
        ...

The subprocess (:func:`spawn_fleet`) keeps the fleet's CPU off the caller's event loop and
GIL, which matters when the caller is itself a server under measurement.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from routecast.errors import ConfigError
from routecast.processes import stop_process

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.fleet.pricing import FleetPrice
    from routecast.fleet.replay import Fleet

#: The line ``routecast fleet`` prints on stdout once it listens: its base URL.
READY = re.compile(r"^routecast fleet: serving .* on (http://\S+/v1)\s*$")


@dataclass(frozen=True)
class RunningFleet:
    """A fleet that is listening. ``fleet`` is the :class:`Fleet` itself for an in-process
    fleet and ``None`` for a subprocess; ``models`` lists the replayed models (the judge not
    included) and ``prices`` what each bills."""

    base_url: str
    models: tuple[str, ...]
    judge_model: str
    prices: dict[str, FleetPrice]
    judge_price: FleetPrice
    fleet: Fleet | None = None
    process: subprocess.Popen[str] | None = None

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def models_config(self, *, judge: bool = True) -> dict[str, Any]:
        """The ``models:`` block of a ``routecast serve`` config over this fleet."""
        def entry(price: FleetPrice) -> dict[str, Any]:
            return {"base_url": self.base_url, "input_usd_per_mtok": price.input_usd_per_mtok,
                    "output_usd_per_mtok": price.output_usd_per_mtok}

        out = {m: entry(self.prices[m]) for m in self.models}
        if judge:
            out[self.judge_model] = entry(self.judge_price)
        return out


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or a clear error. It listens
    at once, so clients that connect before the server runs wait instead of being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}). Fix: give "
                          "another --port, or 0 for a free one") from None
    return sock


@contextmanager
def serve_fleet(data: str | Path | Dataset | Fleet, *, host: str = "127.0.0.1", port: int = 0,
                **options: Any) -> Iterator[RunningFleet]:
    """Serve a fleet from a thread of this process while the block runs.

    ``data`` is a :class:`Fleet`, a loaded :class:`Dataset` or a path; ``options`` go to
    :func:`routecast.fleet.load_fleet` (``split``, ``tasks``, ``models``, ``speed``,
    ``judge_noise``, ``seed``, ``judge_model``, ``fmt``).
    """
    import uvicorn

    from routecast.fleet.app import create_fleet_app
    from routecast.fleet.replay import Fleet, load_fleet

    fleet = data if isinstance(data, Fleet) else load_fleet(data, **options)
    if isinstance(data, Fleet) and options:
        raise ConfigError(f"options {sorted(options)} apply when loading a fleet; this one is "
                          "already built")
    sock = bind(host, port)
    config = uvicorn.Config(create_fleet_app(fleet), log_level="warning", lifespan="off",
                            access_log=False, loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="routecast-fleet")
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fleet's server did not start")
            time.sleep(0.005)
        url = f"http://{host}:{sock.getsockname()[1]}/v1"
        yield RunningFleet(url, fleet.models, fleet.judge_model, dict(fleet.prices),
                           fleet.judge_price, fleet=fleet)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def spawn_fleet(data: str | Path, *, split: str | None = None, speed: float = 0.0,
                judge_noise: float = 0.0, seed: int = 0, port: int = 0,
                judge_model: str = "judge", tasks: list[str] | None = None,
                fmt: str = "auto", timeout_s: float = 120.0) -> Iterator[RunningFleet]:
    """Run ``routecast fleet`` as a subprocess of this Python while the block runs (the same
    options as the command); stopped with SIGTERM, then SIGKILL, at the end."""
    from routecast.fleet.pricing import FleetPrice

    args = [sys.executable, "-m", "routecast.cli", "fleet", str(data), "--port", str(port),
            "--speed", str(speed), "--judge-noise", str(judge_noise), "--seed", str(seed),
            "--judge-model", judge_model, "--format", fmt, "--log-level", "warning"]
    if split is not None:
        args += ["--split", split]
    for task in tasks or ():
        args += ["--task", task]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # stderr to a file, not a pipe: nobody reads a pipe once the fleet is up, and a full one
    # would block the fleet.
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    try:
        url = _wait_ready(proc, errors, timeout_s)
        import json
        import urllib.request

        with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
            cards = json.loads(r.read())["data"]
        prices = {c["id"]: FleetPrice(c["input_usd_per_mtok"], c["output_usd_per_mtok"],
                                      c["price"]) for c in cards}
        models = tuple(c["id"] for c in cards if c["role"] == "replay")
        yield RunningFleet(url, models, judge_model, {m: prices[m] for m in models},
                           prices[judge_model], process=proc)
    finally:
        stop_process(proc, 10)
        if proc.stdout is not None:
            proc.stdout.close()
        errors.close()


def _wait_ready(proc: subprocess.Popen[str], errors: IO[str], timeout_s: float) -> str:
    """The URL from the subprocess's ready line; its stderr in the error if it dies."""
    assert proc.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = READY.match(line)
            if m:
                found.append(m[1])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if found:
        return found[0]
    proc.kill()
    proc.wait(10)
    errors.seek(0)
    raise RuntimeError(f"routecast fleet did not start within {timeout_s:g}s: "
                       f"{errors.read().strip()[-2000:]}")
