"""``routecast stats`` and the dashboard's overview on a large request log: figures computed
by the database (now) against fetching every row and computing them in Python (before), in
the same run, on SQLite and on PostgreSQL.

The "before" code is :mod:`routecast.server.stats` and :mod:`routecast.server.ui.queries` as
they are at git ``main``'s merge base with this tree (``--before REV`` to pick another); both
versions read the same database, and the script checks they give the same figures (floats to
1e-9 relative: sums add in another order).

    python benchmarks/stats_queries.py [--rows 200000] [--repeats 3] [--before REV]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]   (--pg '' : SQLite only)

Prints, per database and query, the median wall time of ``--repeats`` calls (the query and
the Python around it; a fresh connection each call, as the CLI and the dashboard do), the
median CPU time of this process (on SQLite, all the work; on PostgreSQL, the client's
share), and the ratios now / before. On a busy machine the CPU figures are the steadier.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from routecast.server import stats as new_stats
from routecast.server.requestlog import LogRow, _values, inserter
from routecast.server.ui import queries as new_queries
from routecast.storage.database import Database

ROOT = Path(__file__).resolve().parents[1]
NOW = time.time()


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout


def load_before(rev: str) -> tuple[ModuleType, ModuleType]:
    """``stats`` and ``ui.queries`` of ``rev``, loaded beside the current ones."""
    folder = Path(tempfile.mkdtemp())
    modules = []
    for name, path in (("before_stats", "src/routecast/server/stats.py"),
                       ("before_queries", "src/routecast/server/ui/queries.py")):
        source = _git("show", f"{rev}:{path}").replace(
            "from routecast.server.stats import", "from before_stats import")
        file = folder / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def rows(n: int, seed: int = 1) -> Iterator[LogRow]:
    """``n`` requests over the last two hours: four endpoints, three models, 5 % failed."""
    rng = random.Random(seed)
    for i in range(n):
        ok = rng.random() < 0.95
        model = rng.choice(("small", "small", "medium", "large")) if ok else None
        yield LogRow(ts=NOW - rng.uniform(0, 7200), endpoint=rng.choice(("auto", "chat",
                                                                          "code", "agent")),
                     model=model, route=rng.choice((model or "small", f"small,{model}")),
                     status=200 if ok else 502, stream=False,
                     prompt_tokens=rng.randint(10, 2000), completion_tokens=rng.randint(0, 800),
                     cost_usd=rng.random() * 1e-3 if ok else 0.0, baseline_model="large",
                     baseline_cost_usd=rng.random() * 5e-3, latency_s=rng.uniform(0.05, 8.0),
                     request_id=f"req-{i:x}")


def fill(db: Database, n: int) -> None:
    insert = inserter(db)
    batch: list[tuple[object, ...]] = []
    with db.connect() as conn:
        for row in rows(n):
            batch.append(_values(row))
            if len(batch) == 10_000:
                with conn.begin():
                    insert(conn, batch)
                batch = []
        if batch:
            with conn.begin():
                insert(conn, batch)


@contextmanager
def pg_database(admin_url: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped afterwards), or ``None`` when none answers."""
    try:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            name = f"routecast_bench_{secrets.token_hex(4)}"
            admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as e:  # no server, no driver: SQLite only
        print(f"(PostgreSQL at {admin_url} not used: {e})")
        yield None
        return
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(call: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall time and median CPU time of this process per call, and its result."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), result


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


Case = tuple[str, Callable[[], Any], Callable[[], Any]]


def _cases(db: Database, before_stats: ModuleType, before_queries: ModuleType) -> list[Case]:
    """(name, the call before, the call now) for each query measured."""
    return [
        ("stats (all time)",
         lambda: [asdict(r) for r in before_stats.request_stats(db)],
         lambda: [asdict(r) for r in new_stats.request_stats(db)]),
        ("stats (--since 1 h)",
         lambda: [asdict(r) for r in before_stats.request_stats(db, NOW - 3600)],
         lambda: [asdict(r) for r in new_stats.request_stats(db, NOW - 3600)]),
        ("overview (1 h)",
         lambda: before_queries.overview(db, 3600.0, now=NOW).as_dict(),
         lambda: new_queries.overview(db, 3600.0, now=NOW).as_dict()),
        ("overview (24 h)",
         lambda: before_queries.overview(db, 86400.0, now=NOW).as_dict(),
         lambda: new_queries.overview(db, 86400.0, now=NOW).as_dict()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=None,
                        help="git revision of the 'before' code (default: merge base with main)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rev = args.before or _git("merge-base", "HEAD", "main").strip()
    before_stats, before_queries = load_before(rev)
    print(f"{args.rows:,} rows; before = {rev[:10]}; median of {args.repeats} calls")
    print(f"{'database':<12}{'query':<22}{'before ms':>11}{'now ms':>9}{'now/before':>12}"
          f"{'CPU before':>12}{'CPU now':>9}{'now/before':>12}{'same figures':>14}")
    with tempfile.TemporaryDirectory() as tmp, pg_database(args.pg) as pg_url:
        urls = [("SQLite", str(Path(tmp) / "log.db"))]
        if pg_url is not None:
            urls.append(("PostgreSQL", pg_url))
        for label, url in urls:
            db = Database.open(url)
            t0 = time.perf_counter()
            fill(db, args.rows)
            print(f"({label}: {args.rows:,} rows written in {time.perf_counter() - t0:.1f} s)")
            cases = _cases(db, before_stats, before_queries)
            for name, before, now in cases:
                before_s, before_cpu, want = timed(before, args.repeats)
                now_s, now_cpu, got = timed(now, args.repeats)
                print(f"{label:<12}{name:<22}{before_s * 1000:>11.0f}{now_s * 1000:>9.0f}"
                      f"{now_s / before_s:>11.2f}x{before_cpu * 1000:>12.0f}"
                      f"{now_cpu * 1000:>9.0f}{now_cpu / max(before_cpu, 1e-9):>11.2f}x"
                      f"{'yes' if close(got, want) else 'NO':>14}")
            db.close()


if __name__ == "__main__":
    main()
