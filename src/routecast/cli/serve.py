"""``routecast serve``, ``routecast stats`` and ``routecast config check``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from routecast.cli.common import err_console
from routecast.cli.storage import describe, storage_options, storage_target
from routecast.errors import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from routecast.server.config import Config


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config: models, endpoints, storage, limits")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind (0.0.0.0 exposes the server to the network)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="server processes sharing the port (needs --config, and state.redis_url "
                   "when more than one)")
def serve_cmd(config_path: str | None, host: str, port: int, log_level: str,
              workers: int) -> None:
    """Serve an OpenAI-compatible API that routes each request to a model.

    Point any OpenAI client at http://HOST:PORT/v1 and ask for an endpoint name as the model.
    Without --config, two local models start under llama.cpp, fully offline, behind the
    endpoints smollm2, gemma3, auto (routed) and cascade (see routecast.local.default).
    With --workers N, N processes share the port (routecast.server.workers); /metrics on any
    of them describes the whole server.
    """
    from routecast.server.app import create_app

    if config_path is None:
        if workers > 1:
            raise ConfigError(f"--workers {workers} needs --config: without one, serve starts "
                              "its own llama.cpp models, and a second set per worker would not "
                              "fit in memory. Fix: drop --workers, or write a config file whose "
                              "models the workers share")
        from routecast.local.default import embedded

        with embedded(say=lambda line: err_console.print(line, highlight=False)) as local:
            _run(create_app(local.config, table=local.endpoints()), local.config, host, port,
                 log_level)
        return
    from routecast.server.config import load_config
    from routecast.state import check_shared_state

    config = load_config(config_path)
    config.state.replicas *= workers  # every process shares the storage and the state
    check_shared_state(config)
    # Loads routers and checks keys before the port is bound; SIGHUP re-reads the file.
    app = create_app(config, config_path=Path(config_path))
    if workers == 1:
        _run(app, config, host, port, log_level)
        return
    del app  # built to surface router and key problems here; each worker builds its own
    _run_workers(Path(config_path), config, workers, host, port, log_level)


def _uvicorn_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    return {"host": host, "port": port, "log_level": log_level, "access_log": False,
            "loop": _best("uvloop", "asyncio"), "http": _best("httptools", "h11"),
            "lifespan": "on", "timeout_graceful_shutdown": 10,
            # Nothing here reads X-Forwarded-For; skipping that middleware saves CPU.
            "proxy_headers": False, "server_header": False}


def _run(app: ASGIApp, config: Config, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from routecast.server.workers import limit_blas_threads

    limit_blas_threads()
    err_console.print(f"routecast: serving {len(config.endpoint_names())} endpoints on "
                      f"http://{host}:{port}/v1", highlight=False)
    uvicorn.run(app, **_uvicorn_options(host, port, log_level))


def _run_workers(config_path: Path, config: Config, workers: int, host: str, port: int,
                 log_level: str) -> None:
    import gc
    import tempfile

    from routecast.server.worker_metrics import remove_folder
    from routecast.server.workers import supervise

    gc.collect()  # the routers loaded for the check: the supervisor keeps none of them
    err_console.print(f"routecast: serving {len(config.endpoint_names())} endpoints on "
                      f"http://{host}:{port}/v1 with {workers} workers", highlight=False)
    metrics_dir = Path(tempfile.mkdtemp(prefix="routecast-metrics-"))
    try:
        started = supervise(config_path, config.state.replicas, workers, metrics_dir,
                            **_uvicorn_options(host, port, log_level))
    finally:
        remove_folder(metrics_dir)
    if not started:
        raise ConfigError(f"{config_path}: a worker failed to start (its error is above); "
                          "the server stopped")


def _best(fast: str, fallback: str) -> str:
    """uvloop / httptools when installed (several times less CPU per request), else stdlib."""
    import importlib.util

    return fast if importlib.util.find_spec(fast) is not None else fallback


@click.command("stats")
@storage_options
@click.option("--since-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="only the last N hours")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def stats_cmd(db_path: str | None, config_file: str | None, since_hours: float | None,
              as_json: bool) -> None:
    """Spend, savings against each endpoint's strongest model, escalations and latency.

    Over every replica that writes to the storage named: --db FILE (SQLite), or --config FILE
    (the storage that config names, SQLite or PostgreSQL)."""
    from rich.console import Console

    from routecast.server.stats import request_stats, stats_table

    target = storage_target(db_path, config_file)
    db_path = describe(target)
    since = time.time() - since_hours * 3600 if since_hours else None
    rows = request_stats(target, since_ts=since)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if not rows:
        console.print(f"{db_path}: no requests logged yet", highlight=False)
        return
    console.print(stats_table(rows, f"requests in {db_path}"))
    from routecast.learning.store import learning_stats

    for s in learning_stats(target):  # endpoints with `learning:`: what learning cost
        console.print(f"learning {s.endpoint}: {s.labels} labels ("
                      + ", ".join(f"{k} {v}" for k, v in sorted(s.by_source.items()))
                      + f"), shadow ${s.shadow_usd:.6f}, judge ${s.judge_usd:.6f}, "
                      f"{s.refits} refits ({s.swaps} swapped in)", highlight=False)
    strongest = sorted({(r.endpoint, r.baseline_model) for r in rows
                        if r.baseline_model is not None})
    console.print("[dim]saved: 1 - spend / (the same tokens at the endpoint's strongest model: "
                  + ", ".join(f"{e} -> {m}" for e, m in strongest) + ")[/dim]",
                  highlight=False)


@click.group("config")
def config_group() -> None:
    """Check server config files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check_cmd(file: str) -> None:
    """Validate FILE and say what the server would serve (starts nothing, sends nothing).

    Beyond the file itself, it loads what the server would load at start-up -- saved routers,
    cascade files and their scorers -- so that whatever ``serve`` would refuse is reported here.
    """
    import os

    from routecast.errors import RoutecastError
    from routecast.server.config import load_config
    from routecast.server.endpoints import build_endpoints

    config = load_config(file)
    unset = [m.api_key_env for m in config.models.values()
             if m.api_key_env and not os.environ.get(m.api_key_env)]
    problems = [f"models.{name}.api_key_env: {m.api_key_env} is not set in this environment"
                for name, m in config.models.items() if m.api_key_env in unset]
    table = None
    try:
        # Stand-ins for the keys reported above, so the rest of the config is checked too.
        table = build_endpoints(config, env={**os.environ, **dict.fromkeys(unset, "unset")})
    except RoutecastError as error:
        problems.append(str(error))
    click.echo(f"{file}: {len(config.models)} models, "
               f"{len(config.endpoint_names())} endpoints")
    for name, m in config.models.items():
        click.echo(f"  model {name}: {m.kind} at {m.base_url}, ${m.input_usd_per_mtok:g} in / "
                   f"${m.output_usd_per_mtok:g} out per M tokens")
    for name, e in config.endpoints.items():
        backend = None if table is None else table.backends.get(name)
        click.echo(f"  endpoint {name}: {e.type}"
                   + ("" if backend is None else f" over {', '.join(backend.models)}"))
    if table is not None:
        from routecast.server.capability_check import capability_warnings

        for warning in capability_warnings(config, table.backends):
            click.echo(f"  warning: {warning}")
    if problems:
        raise ConfigError(f"{file}: " + "; ".join(problems))
    click.echo("ok")
