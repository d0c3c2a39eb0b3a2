"""What the request log costs the server, on SQLite and PostgreSQL, against the writer of the
release before :mod:`routecast.storage` (raw ``sqlite3``, loaded from git ``main``)::

    .venv/bin/python -m benchmarks.storage_writes [--rows 50000] [--pg postgresql://...]

For each writer, in one run:

* ``write() ns``: the request path's cost, one :meth:`RequestLog.write` call (best of 5 runs
  of ``--rows`` calls, writer thread stopped so it does not compete);
* ``rows/s``: the writer thread's throughput, ``--rows`` rows written as fast as the loop
  can (batches of 256), from the first ``write()`` until everything is committed;
* ``CPU us/row``: this process's CPU (both threads) per row over that run: what the log
  costs the server per request, which the event loop shares through the GIL.

PostgreSQL is a fresh database created on ``--pg`` (default the local server of
``tests/services.py``) and dropped afterwards; skipped, saying so, when none answers.
"""

from __future__ import annotations

import argparse
import importlib.util
import secrets
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from routecast.server.requestlog import LogRow, RequestLog
from routecast.storage.database import Database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def old_requestlog() -> ModuleType | None:
    """The request log module of git ``main`` (the writer before this package), or ``None``
    when it is the new one already (merged) or git is unavailable."""
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(["git", "-C", str(root), "show",
                                 "main:src/routecast/server/requestlog.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if "import sqlite3" not in source:
        return None
    path = Path(tempfile.mkdtemp()) / "old_requestlog.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_requestlog", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_requestlog"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def make_row(row_type: Any, i: int) -> Any:
    return row_type(ts=time.time(), endpoint="auto", model="small", route="small", status=200,
                    stream=False, prompt_tokens=120, completion_tokens=40, cost_usd=2.1e-5,
                    baseline_model="large", baseline_cost_usd=2.4e-3, latency_s=0.21,
                    routing_s=4e-5, request_id=f"req-0123abcd-{i:x}", key_name="alice")


def measure(name: str, make_log: Callable[[], Any], row_type: Any, n: int) -> dict[str, Any]:
    rows = [make_row(row_type, i) for i in range(n)]
    # The request path: write() alone (the writer thread not started, the list only grows).
    idle = make_log()
    per_call = min(timeit.repeat(lambda: [idle.write(r) for r in rows], number=1,
                                 repeat=5)) / n
    # The writer: everything written, committed, and the CPU both threads spent on it.
    log = make_log()
    log.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for r in rows:
        log.write(r)
    log.close(timeout_s=600)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"writer": name, "write_ns": per_call * 1e9, "rows_per_s": n / wall,
            "cpu_us_per_row": cpu / n * 1e6, "written": log.rows_written}


def pg_database(admin: str) -> tuple[str, Callable[[], None]] | None:
    try:
        import psycopg

        name = f"routecast_bench_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as e:
        print(f"PostgreSQL at {admin} not available ({e}); measuring SQLite only")
        return None

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlsplit(admin)._replace(path=f"/{name}").geturl(), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--pg", default=PG_ADMIN, help="a superuser's URL (maintenance db)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        old = old_requestlog()
        if old is not None:
            n = 0

            def make_old() -> Any:
                nonlocal n
                n += 1
                return old.RequestLog(Path(tmp) / f"old{n}.db")

            results.append(measure("sqlite3 (before)", make_old, old.LogRow, args.rows))
        else:
            print("the old writer is not on git main any more: no baseline from before")
        sqlite_db = Database.open(Path(tmp) / "new.db")
        results.append(measure("SQLite (storage)", lambda: RequestLog(sqlite_db), LogRow,
                               args.rows))
        sqlite_db.close()
        pg = pg_database(args.pg)
        if pg is not None:
            url, drop = pg
            try:
                pg_db = Database.open(url)
                results.append(measure("PostgreSQL (storage)", lambda: RequestLog(pg_db),
                                       LogRow, args.rows))
                pg_db.close()
            finally:
                drop()
    base = results[0]
    print(f"\n{args.rows} rows per writer (python {sys.version.split()[0]})")
    print(f"{'writer':<22}{'write() ns':>12}{'rows/s':>12}{'CPU us/row':>12}"
          f"{'CPU vs first':>14}")
    for r in results:
        assert r["written"] == args.rows, r
        print(f"{r['writer']:<22}{r['write_ns']:>12.0f}{r['rows_per_s']:>12.0f}"
              f"{r['cpu_us_per_row']:>12.2f}"
              f"{r['cpu_us_per_row'] / base['cpu_us_per_row']:>13.2f}x")


if __name__ == "__main__":
    main()
