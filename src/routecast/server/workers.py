"""``routecast serve --workers N``: N server processes on one port, under uvicorn's supervisor.

The parent binds the port once and starts N worker processes (``spawn``: each imports
routecast afresh and builds its own app from the config file, so no state is shared by
accident); the kernel hands each new connection to one of them. uvicorn's supervisor
(:class:`uvicorn.supervisors.Multiprocess`) replaces a worker that dies or stops answering its
health pings, stops the whole server when a worker fails before it serves (a broken config
would fail the same way every time), and on SIGTERM or SIGINT sends SIGTERM to every worker,
which drains its requests (``timeout_graceful_shutdown``) like a single process does. A
supervisor killed outright takes its workers with it (they drain on SIGTERM from the kernel).

Two departures from uvicorn's defaults: SIGHUP is passed to every worker, which re-reads the
config in place (:meth:`routecast.server.app.RoutecastServer.reload`, the same as one process:
requests in flight finish, breakers and pins survive) rather than replacing each process; and
the workers share a folder of metrics snapshots so any worker's ``/metrics`` describes the
whole server (:mod:`routecast.server.worker_metrics`).

Each worker has its own request-log writer and key store on the config's storage, and
``state.replicas`` counts every process (the file's value times N), so a config without shared
state (Redis) is refused before any worker starts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvicorn.supervisors.multiprocess import Multiprocess

if TYPE_CHECKING:
    from starlette.types import ASGIApp

#: Environment variables through which the supervisor tells each worker what to serve.
CONFIG_ENV = "ROUTECAST_WORKER_CONFIG"
REPLICAS_ENV = "ROUTECAST_WORKER_REPLICAS"
SUPERVISOR_ENV = "ROUTECAST_WORKER_SUPERVISOR"
#: The factory each worker process calls (an import string, as uvicorn needs).
FACTORY = "routecast.server.workers:worker_app"


def worker_app() -> ASGIApp:
    """Build one worker's app from the config file the supervisor named (called in each
    worker process; the supervisor has already checked the same file)."""
    from routecast.server.app import create_app
    from routecast.server.config import load_config

    exit_with_supervisor(int(os.environ[SUPERVISOR_ENV]))
    path = Path(os.environ[CONFIG_ENV])
    config = load_config(path)
    config.state.replicas = int(os.environ[REPLICAS_ENV])
    app = create_app(config, config_path=path)
    limit_blas_threads()
    return app


def exit_with_supervisor(supervisor_pid: int) -> None:
    """Have the kernel send this worker SIGTERM (a graceful drain) when its supervisor dies,
    so a supervisor killed with SIGKILL leaves no orphan holding the port (Linux; elsewhere
    uvicorn's health pings are the only link)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def limit_blas_threads() -> None:
    """Keep the numeric libraries the routers loaded (BLAS, OpenMP) to one thread: routing runs
    on the event loop a few prompts at a time, where a thread pool only adds wake-ups and
    competes with the loop for cores. Libraries loaded later keep their defaults; the server
    loads its routers before this runs."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, with SIGHUP reloading each worker in place (see the module
    docstring) and :attr:`failed` telling the caller a worker could not start."""

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGHUP)

    @property
    def failed(self) -> bool:
        from uvicorn.config import STARTUP_FAILURE

        return any(p.exitcode == STARTUP_FAILURE for p in self.processes)


def supervise(config_path: Path, replicas: int, workers: int, metrics_dir: Path,
              **uvicorn_options: Any) -> bool:
    """Bind the port and run ``workers`` processes serving ``config_path`` until SIGTERM or
    SIGINT; ``False`` when a worker failed to start (the server stopped)."""
    import uvicorn

    os.environ[CONFIG_ENV] = str(config_path.resolve())
    os.environ[REPLICAS_ENV] = str(replicas)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    from routecast.server.worker_metrics import ENV

    os.environ[ENV] = str(metrics_dir)
    config = uvicorn.Config(FACTORY, factory=True, workers=workers, **uvicorn_options)
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    return not supervisor.failed
