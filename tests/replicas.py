"""Several ``routecast serve`` processes behind a real HAProxy, as a deployment runs them.

::

    with Replicas(config, 3, haproxy_bin) as fleet:
        fleet.url                    # HAProxy's frontend: http://127.0.0.1:PORT
        fleet.replicas[1].url        # one replica, directly
        fleet.replicas[1].id_prefix  # the prefix of its x-routecast-request-id values
        fleet.kill(1)                # kill -9
        fleet.server_states()        # {"r0": "UP", "r1": "DOWN", ...} from HAProxy's stats

Every replica serves the same config file (``config``, written as JSON, which is YAML) on a port
of its own; start-up waits for each one's ``/health``, then starts HAProxy in front: round
robin, an active ``GET /ready`` check every 200 ms (two failures take a replica out, one
success brings it back; a check may take up to 2 s, so a busy replica is not taken for dead),
``retries`` with ``option redispatch`` so that a connection refused by a dead replica is
retried on another. Leaving the ``with`` block, or :meth:`Replicas.close`, stops everything
(SIGTERM, so the survivors drain and flush their request logs, then SIGKILL after a timeout)
and removes the harness's folder (config, HAProxy config, process output), also when the test
failed or start-up did. The storage the config names is the caller's.

:func:`storage_config` turns a storage URL (``sqlite:///...`` or ``postgresql://...``) into
the config's ``storage`` section, and :func:`logged_requests` reads back what was logged, so a
test can run unchanged over SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.stub_upstream import closed_port

#: HAProxy's health checks: a replica is out after ``FALL`` failed checks ``CHECK_MS`` apart.
CHECK_MS = 200
FALL = 2


class Replica:
    """One ``routecast serve`` subprocess; its output goes to ``log`` (a pipe nobody reads
    would fill and stall it)."""

    def __init__(self, name: str, config_path: Path, log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = closed_port()
        self.log = log
        self.id_prefix: str | None = None
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "routecast.cli", "serve", "--config", str(config_path),
                 "--port", str(self.port), "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited ({self.proc.returncode}) at "
                                   f"start-up:\n{self.output()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"replica {self.name} did not answer /health:\n"
                           f"{self.output()[-4000:]}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server drains and flushes its log), SIGKILL if that takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def haproxy_config(frontend_port: int, stats_port: int, backends: list[tuple[str, int]],
                   *, retries: int = 3) -> str:
    """A minimal HAProxy config: one HTTP frontend, round robin over ``backends`` with active
    ``/ready`` checks, and a stats page (``/stats``, ``;csv`` for CSV)."""
    servers = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in backends)
    return f"""\
global
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    # A check may wait behind the requests a busy replica is serving: without this, its
    # timeout is `inter` (200 ms) and a saturated replica would flap out. A dead one refuses
    # the connection at once, so this does not slow down taking it out.
    timeout check 2s
    retries {retries}
    option redispatch 1

frontend routecast
    bind 127.0.0.1:{frontend_port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {CHECK_MS}ms fastinter {CHECK_MS // 2}ms fall {FALL} rise 1 check
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class Replicas:
    """``n`` replicas of ``config`` behind HAProxy; see the module docstring. ``env`` adds to
    the replicas' environment (upstream keys, ``*_env`` URLs)."""

    def __init__(self, config: dict[str, Any], n: int, haproxy_bin: str, *,
                 env: dict[str, str] | None = None, start_timeout_s: float = 60.0) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="routecast-replicas-"))
        self.config_path = self.folder / "routecast.yaml"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self.n = n
        self.haproxy_bin = haproxy_bin
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.replicas: list[Replica] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.port = closed_port()
        self.stats_port = closed_port()

    @property
    def url(self) -> str:
        """HAProxy's frontend, where clients go."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Replicas:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        # All start at once (each loads its config and routers in parallel), then each is
        # waited for.
        for i in range(self.n):
            self.replicas.append(Replica(f"r{i}", self.config_path,
                                         self.folder / f"r{i}.log", self.env))
        for replica in self.replicas:
            replica.wait_healthy(deadline)
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, self.stats_port,
                                      [(r.name, r.port) for r in self.replicas]))
        with (self.folder / "haproxy.log").open("wb") as out:
            # -db: stay in the foreground (no daemon), so that killing this process ends it.
            self.haproxy = subprocess.Popen([self.haproxy_bin, "-db", "-f", str(cfg)],
                                            stdout=out, stderr=subprocess.STDOUT)
        self.wait_states({r.name: "UP" for r in self.replicas}, deadline)

    def haproxy_output(self) -> str:
        path = self.folder / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's stats (one row per frontend, backend and server), from its CSV page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv",
                                    timeout=2) as r:
            text = r.read().decode().lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def server_states(self) -> dict[str, str]:
        """``{"r0": "UP", "r1": "DOWN", ...}``: what HAProxy's health checks say now."""
        return {row["svname"]: row["status"].split()[0] for row in self.stats()
                if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_states(self, wanted: dict[str, str], deadline: float) -> None:
        """Wait until HAProxy sees each named replica in the wanted state (``UP``/``DOWN``)."""
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.haproxy is not None and self.haproxy.poll() is not None:
                raise RuntimeError(f"haproxy exited ({self.haproxy.returncode}):\n"
                                   f"{self.haproxy_output()[-4000:]}")
            try:
                states = self.server_states()
            except OSError:
                states = {}
            if all(states.get(name) == state for name, state in wanted.items()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy did not see {wanted} (it sees {states}):\n"
                           f"{self.haproxy_output()[-4000:]}")

    def learn_id_prefixes(self) -> None:
        """Learn each replica's id from its ``/health`` (asked directly): its request ids
        start ``req-<id>-``."""
        for replica in self.replicas:
            with urllib.request.urlopen(f"{replica.url}/health", timeout=10) as r:
                replica.id_prefix = f"req-{json.loads(r.read())['replica']}-"
        prefixes = {r.id_prefix for r in self.replicas}
        assert len(prefixes) == self.n, f"replicas share request-id prefixes: {prefixes}"

    def replica_of(self, request_id: str) -> str | None:
        """The name of the replica that answered ``request_id`` (after
        :meth:`learn_id_prefixes`)."""
        return next((r.name for r in self.replicas
                     if r.id_prefix is not None and request_id.startswith(r.id_prefix)), None)

    def kill(self, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        self.replicas[index].proc.send_signal(sig)

    def close(self) -> None:
        """Stop HAProxy and every replica still running; remove the harness's folder."""
        try:
            if self.haproxy is not None and self.haproxy.poll() is None:
                self.haproxy.terminate()
                try:
                    self.haproxy.wait(10)
                except subprocess.TimeoutExpired:
                    self.haproxy.kill()
                    self.haproxy.wait(10)
            for replica in self.replicas:
                try:
                    replica.stop()
                except Exception:  # keep stopping the others
                    if replica.proc.poll() is None:
                        replica.proc.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


# -- storage over SQLite or PostgreSQL ------------------------------------------------------


def storage_config(url: str, **options: Any) -> dict[str, Any]:
    """The config's ``storage`` section for a database URL. A SQLite file is given as
    ``db`` (its spelling every server version reads), PostgreSQL as ``url``."""
    if url.startswith("sqlite:///"):
        return {"db": url.removeprefix("sqlite:///"), **options}
    return {"url": url, **options}


def logged_requests(url: str) -> dict[str, int]:
    """``request_id -> status`` of every row of the request log at ``url``."""
    query = "SELECT request_id, status FROM requests WHERE request_id IS NOT NULL"
    if url.startswith("sqlite:///"):
        import sqlite3

        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {rid: int(status) for rid, status in con.execute(query)}
        finally:
            con.close()
    import psycopg

    with psycopg.connect(url) as pg:
        return {rid: int(status) for rid, status in pg.execute(query)}
