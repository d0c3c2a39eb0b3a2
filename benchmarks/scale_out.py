"""Scale-out on one machine: throughput and added latency of routecast replicas, against a
stub upstream measured directly in the same run::

    python -m benchmarks.scale_out [--duration 5] [--repeats 3] [--connections 64]
        [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres | --pg-url URL]
        [--redis-url redis://127.0.0.1:6379/0] [--json out.json]

Rows (every replica forwards to one stub upstream that answers at once: a few lines of raw
asyncio from benchmarks/proxy_overhead.py, in its own process):

* **direct**: the load generator straight to the stub: the baseline of "added" latency;
* **1 replica, SQLite**: one ``routecast serve`` logging to SQLite (the embedded default),
  asked directly, and the same replica **via HAProxy** (what the balancer's hop costs);
* **1 replica, PostgreSQL + Redis**: ``storage.url`` on a scratch PostgreSQL database
  (created, then dropped) and ``state.redis_url`` (a key prefix of its own, deleted after);
* **2 / 3 replicas via HAProxy** on one shared SQLite file, and on PostgreSQL + Redis;
* **budget key**: 1 and 3 replicas on PostgreSQL + Redis with ``auth.required`` and every
  request carrying a key with a budget (never reached): each is admitted and settled in Redis,
  the cost of admission across replicas.

Latency (p50 / p99) is from ``wrk`` at one connection; "added" is that minus the direct run's
(the stub asked just before, in each round: the machine's load drifts).
Throughput is ``wrk`` at ``--connections`` connections. Without ``wrk`` an aiohttp client in
this process generates the load (it costs more CPU, so throughput reads lower). Each row also
gives the CPU the replicas used per 1000 requests and the requests per second one core of
replica CPU serves (``rps/core``), from ``/proc``, and the share of the machine's CPU time
taken by the replicas, HAProxy, and the load generator plus the stub: on a machine of few
cores these share the cores, so adding replicas adds throughput only while cores are idle.

The PostgreSQL + Redis rows run when the server accepts and uses that storage; before it does
(older servers ignore ``storage.url``, or refuse the config), the row says why it was skipped
instead of failing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.replicas import Replicas

from benchmarks.proxy_overhead import cpu_s, free_port, lua_script, run_wrk

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "small", "messages": [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}]})


@dataclass
class Row:
    name: str
    replicas: int
    storage: str
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    #: Minus the direct run's p50 / p99 measured just before, in the same round.
    added_p50_ms: float = 0.0
    added_p99_ms: float = 0.0
    rps: float = float("nan")
    errors: int = 0
    #: CPU seconds of the replicas (together) per 1000 requests, during the throughput run.
    replica_cpu_ms_per_req: float = float("nan")
    #: CPU shares of the machine (all cores) during the throughput run.
    share: dict[str, float] = field(default_factory=dict)
    #: PostgreSQL transactions (commits + rollbacks of the database stored in) per 1000
    #: requests of the throughput run: a round trip per request would make this >= 1000.
    pg_tx_per_1000: float = float("nan")
    note: str = ""


# -- load ------------------------------------------------------------------------------------


class Load:
    """wrk when installed, else an aiohttp client loop in this process; ``token``: a client
    key every request carries."""

    def __init__(self, folder: Path, token: str | None = None) -> None:
        self.wrk = shutil.which("wrk")
        self.headers = {"Content-Type": "application/json"}
        self.script = folder / ("body.lua" if token is None else "body-key.lua")
        lua_script(self.script, [BODY.encode()])
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
            with self.script.open("a") as script:
                script.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')

    def run(self, url: str, connections: int, duration_s: int) -> dict[str, Any]:
        target = f"{url}/v1/chat/completions"
        if self.wrk is not None:
            result = run_wrk(target, self.script, connections, duration_s, pin=False)
            result["errors"] = result["non_2xx"] + (1 if result["socket_errors"] else 0)
            return result
        return asyncio.run(_aiohttp_load(target, connections, duration_s, self.headers))


async def _aiohttp_load(url: str, connections: int, duration_s: int,
                        headers: dict[str, str]) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration_s

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except (aiohttp.ClientError, OSError):
                errors += 1
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"rps": len(latencies) / wall, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "errors": errors,
            "requests": len(latencies)}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(row: Row, load: Load, url: str, replica_pids: list[int], other_pids: dict[str, int],
            args: argparse.Namespace, baseline: str | None = None, pg: str | None = None
            ) -> Row:
    """Latency at one connection, then throughput at ``args.connections`` with CPU shares,
    ``args.repeats`` times; each figure is the median over the repeats (the machine is
    shared, so single runs are noisy). ``baseline``: the stub's URL, asked at one connection
    just before each latency run, to subtract (the machine's load drifts between rows).
    ``pg``: the PostgreSQL database the replicas store in, whose transactions during the
    throughput run are counted (:func:`pg_transactions`)."""
    load.run(url, 4, 1)  # warm up: connections, caches, the first rows' tables
    cores = os.cpu_count() or 1
    pids = {"replicas": replica_pids, **{k: [v] for k, v in other_pids.items()}}
    rounds: list[dict[str, float]] = []
    for _ in range(args.repeats):
        base = load.run(baseline, 1, args.duration) if baseline else {"p50_ms": 0.0,
                                                                        "p99_ms": 0.0}
        one = load.run(url, 1, args.duration)
        tx_before = pg_transactions(pg) if pg else 0
        before = {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}
        gen_before, here_before = children_cpu_s(), time.process_time()
        t0 = time.perf_counter()
        many = load.run(url, args.connections, args.duration)
        wall = time.perf_counter() - t0
        used = {k: sum(cpu_s(p) for p in v) - before[k] for k, v in pids.items()}
        # wrk is reaped inside the run: its CPU shows up in the children's usage; without wrk
        # the load is generated by this process.
        used["load generator"] = (children_cpu_s() - gen_before) + (time.process_time()
                                                                     - here_before)
        requests = many.get("requests") or many["rps"] * wall
        # The two reads' own transactions and the batches still in flight at each end are
        # within a few per run.
        tx = pg_transactions(pg) - tx_before if pg else float("nan")
        rounds.append({"pg_tx": tx * 1000 / requests if requests else float("nan"),
                       "p50": one["p50_ms"], "p99": one["p99_ms"], "rps": many["rps"],
                       "added_p50": one["p50_ms"] - base["p50_ms"],
                       "added_p99": one["p99_ms"] - base["p99_ms"],
                       "errors": one["errors"] + many["errors"],
                       "cpu": used["replicas"] * 1000 / requests if requests else float("nan"),
                       **{f"share:{k}": v / (wall * cores) for k, v in used.items()}})

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    row.p50_ms, row.p99_ms, row.rps = median("p50"), median("p99"), median("rps")
    row.added_p50_ms, row.added_p99_ms = median("added_p50"), median("added_p99")
    row.errors = int(sum(r["errors"] for r in rounds))
    row.replica_cpu_ms_per_req = median("cpu")
    row.pg_tx_per_1000 = median("pg_tx")
    row.share = {k.removeprefix("share:"): median(k) for k in rounds[0] if k.startswith("share:")}
    return row


# -- PostgreSQL and Redis --------------------------------------------------------------------


def _listening(url: str, port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), 1):
            return True
    except OSError:
        return False


@contextmanager
def scratch_database(args: argparse.Namespace) -> Any:
    """A PostgreSQL URL to store in (``--pg-url``, or a database created on ``--pg-admin-url``
    and dropped after), or a string saying why there is none."""
    if args.pg_url:
        yield args.pg_url
        return
    if not _listening(args.pg_admin_url, 5432):
        yield f"no PostgreSQL at {args.pg_admin_url} (start it, or pass --pg-admin-url)"
        return
    try:
        import psycopg
    except ImportError:
        yield "psycopg is not installed: pip install 'routecast[scale]'"
        return
    name = f"routecast_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(args.pg_admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_rows(url: str) -> int | None:
    """Rows of the request log in PostgreSQL (``None``: no such table: nothing logged there)."""
    import psycopg

    with psycopg.connect(url) as con:
        found = con.execute("SELECT to_regclass('requests')").fetchone()
        if found is None or found[0] is None:
            return None
        count = con.execute("SELECT count(*) FROM requests").fetchone()
        return int(count[0]) if count else 0


def pg_transactions(url: str) -> int:
    """Transactions committed or rolled back so far in the database at ``url``, every client
    together (``pg_stat_database``). Backends report their counts when idle, at most once a
    second: waits that long first, so the count covers what just ran."""
    import psycopg

    time.sleep(1.1)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SELECT pg_stat_clear_snapshot()")
        found = con.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()
        return int(found[0]) if found else 0


def redis_keys(url: str, prefix: str, delete: bool = False) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if delete and keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# -- the run ---------------------------------------------------------------------------------


def config(stub_url: str, storage: dict[str, Any], state: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    doc: dict[str, Any] = {"models": {"small": {
        "base_url": stub_url, "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.4,
        "max_retries": 0}}, "storage": storage}
    if state:
        doc["state"] = state
    return doc


def run_fleet(rows: list[Row], name: str, doc: dict[str, Any], n: int, storage: str,
              load: Load, args: argparse.Namespace, haproxy: str | None, stub_pid: int, *,
              also_direct: bool = False, check: Any = None, pg: str | None = None) -> None:
    """Start ``n`` replicas of ``doc`` behind HAProxy and measure them (``also_direct``: the
    first replica asked directly too); ``check(fleet)`` after the runs returns a reason to
    drop the rows (the server did not use the storage asked for), or ``None``; ``pg``: the
    PostgreSQL database they store in (its transactions are counted)."""
    stub = doc["models"]["small"]["base_url"].removesuffix("/v1")
    if haproxy is None:
        rows.append(Row(name, n, storage, note="skipped: needs haproxy (apt-get install "
                                                "haproxy)"))
        return
    try:
        with Replicas(doc, n, haproxy, start_timeout_s=90) as fleet:
            assert fleet.haproxy is not None
            pids = [r.proc.pid for r in fleet.replicas]
            measured: list[Row] = []
            if also_direct:
                measured.append(measure(Row(f"{name}, direct", n, storage), load,
                                        fleet.replicas[0].url, pids, {"stub": stub_pid}, args,
                                        stub, pg))
            measured.append(measure(Row(f"{name}, via HAProxy", n, storage), load, fleet.url,
                                    pids, {"stub": stub_pid, "haproxy": fleet.haproxy.pid},
                                    args, stub, pg))
            reason = check(fleet) if check is not None else None
            if reason is not None:
                rows.append(Row(name, n, storage, note=f"skipped: {reason}"))
                return
            rows.extend(measured)
    except RuntimeError as e:  # the server refused the config, or did not start
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if "rror" in line),
                   lines[0] if lines else "it did not start")
        rows.append(Row(name, n, storage, note=f"skipped: the server refused it: "
                                               f"{why.strip()[:200]}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--duration", type=int, default=5, help="seconds per load run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each measurement (figures are medians)")
    parser.add_argument("--connections", type=int, default=64,
                        help="connections of the throughput runs")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a superuser on the maintenance database: a scratch database is "
                             "created there and dropped after")
    parser.add_argument("--pg-url", default=None,
                        help="use this database as is instead of a scratch one")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                          if Path("/usr/sbin/haproxy").exists() else None)
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="routecast-scale-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        load = Load(folder)
        stub_port = free_port()
        stub = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "proxy_overhead.py"),
                                 "--stub", str(stub_port)])
        stack.callback(stub.wait, 10)
        stack.callback(stub.terminate)
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        _wait_port(stub_port)

        direct = measure(Row("direct to the stub", 0, "-"), load, stub_url.removesuffix("/v1"),
                         [], {"stub": stub.pid}, args)
        rows.append(direct)
        sqlite = {"db": str(folder / "requests.db")}
        run_fleet(rows, "1 replica", config(stub_url, sqlite), 1, "SQLite", load, args,
                  haproxy, stub.pid, also_direct=True)

        pg = stack.enter_context(scratch_database(args))
        prefix = f"routecast-bench-{secrets.token_hex(4)}:"
        if not pg.startswith("postgresql"):
            rows.append(Row("1 replica", 1, "PostgreSQL + Redis", note=f"skipped: {pg}"))
        elif not _listening(args.redis_url, 6379):
            rows.append(Row("1 replica", 1, "PostgreSQL + Redis",
                            note=f"skipped: no Redis at {args.redis_url}"))
        else:
            stack.callback(redis_keys, args.redis_url, prefix, True)

            def logged_in_pg(fleet: Replicas) -> str | None:
                count = pg_rows(pg)
                if not count:
                    beside = (fleet.folder / "routecast.db").exists()
                    return ("the server accepted storage.url but logged nothing to PostgreSQL"
                            + (" (it wrote routecast.db beside the config: storage.url is "
                               "not implemented in this server yet)" if beside else ""))
                return None

            for n in (1, 2, 3):
                state = {"redis_url": args.redis_url, "key_prefix": prefix, "replicas": n}
                run_fleet(rows, f"{n} replica{'s' if n > 1 else ''}",
                          config(stub_url, {"url": pg}, state), n, "PostgreSQL + Redis", load,
                          args, haproxy, stub.pid, also_direct=n == 1,
                          check=logged_in_pg, pg=pg)
                if rows[-1].note.startswith("skipped"):
                    break
            keys = redis_keys(args.redis_url, prefix)
            for row in rows:
                if row.storage == "PostgreSQL + Redis" and not row.note:
                    row.note = f"{keys} Redis keys written"
            if not rows[-1].note.startswith("skipped"):
                # Requests that need admission: every one carries a key with a budget (never
                # reached), admitted and settled in Redis across the replicas.
                from routecast.server.keys import add_key

                keyed = Load(folder, add_key(pg, "bench", budget_usd=1e9))
                for n in (1, 3):
                    state = {"redis_url": args.redis_url, "key_prefix": prefix, "replicas": n}
                    doc = {**config(stub_url, {"url": pg}, state), "auth": {"required": True}}
                    run_fleet(rows, f"{n} replica{'s' if n > 1 else ''}, budget key", doc, n,
                              "PostgreSQL + Redis", keyed, args, haproxy, stub.pid,
                              also_direct=n == 1, pg=pg)
                keys = redis_keys(args.redis_url, prefix)
                for row in rows:
                    if "budget key" in row.name and not row.note:
                        row.note = f"admitted in Redis ({keys} keys)"

        for n in (2, 3):
            run_fleet(rows, f"{n} replicas", config(stub_url, sqlite), n, "SQLite (one file)",
                      load, args, haproxy, stub.pid)

    report(rows, args, load_before, haproxy)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def _wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def report(rows: list[Row], args: argparse.Namespace, load_before: float,
           haproxy: str | None) -> None:
    cores = os.cpu_count() or 1
    generator = "wrk" if shutil.which("wrk") else "aiohttp (this process)"
    print(f"\nscale-out on {cores} cores; load: {generator}, latency at 1 connection, "
          f"throughput at {args.connections}, {args.duration} s each, medians of "
          f"{args.repeats}; load average before {load_before:.2f}, after "
          f"{os.getloadavg()[0]:.2f}; HAProxy: {haproxy or 'none'}\n")
    base = next((r for r in rows if r.name == "1 replica, direct" and r.storage == "SQLite"),
                None)
    head = (f"{'setup':<36} {'storage':<19} {'p50 ms':>7} {'p99 ms':>7} {'+p50':>6} "
            f"{'+p99':>6} {'req/s':>7} {'x 1':>5} {'cpu ms/req':>10} {'rps/core':>8} "
            f"{'replicas%':>9} {'haproxy%':>8} {'gen+stub%':>9} {'pg tx/1k':>8}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.note.startswith("skipped"):
            print(f"{r.name:<36} {r.storage:<19} {r.note}")
            continue
        added50, added99 = r.added_p50_ms, r.added_p99_ms
        ratio = r.rps / base.rps if base is not None and r.replicas else float("nan")
        per_core = 1000 / r.replica_cpu_ms_per_req if r.replica_cpu_ms_per_req else float("nan")
        gen = r.share.get("load generator", 0) + r.share.get("stub", 0)
        name = r.name if len(r.name) <= 36 else r.name[:35] + "…"
        added = (f"{added50:6.2f} {added99:6.2f}" if r.replicas else f"{'-':>6} {'-':>6}")
        print(f"{name:<36} {r.storage:<19} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {added} "
              f"{r.rps:7.0f} {ratio:5.2f} {r.replica_cpu_ms_per_req:10.3f} {per_core:8.0f} "
              f"{100 * r.share.get('replicas', 0):9.0f} {100 * r.share.get('haproxy', 0):8.0f} "
              f"{100 * gen:9.0f} {r.pg_tx_per_1000:8.1f}  {r.note or ''}"
              f"{f' {r.errors} errors' if r.errors else ''}")
    print(f"\n+p50/+p99: added to the direct run's latency (asked just before, each round); "
          "x 1: throughput over one SQLite replica asked directly; cpu ms/req: the replicas' "
          "CPU per request; rps/core: requests one core of replica CPU serves; the % columns: "
          f"shares of all {cores} cores during the throughput run (the rest: other processes "
          "on the machine); pg tx/1k: PostgreSQL transactions per 1000 requests of the "
          "throughput run (every client of the database; one round trip per request would "
          "read 1000 or more).")
    if cores <= 4:
        print(f"On {cores} cores the load generator, the stub, HAProxy and the replicas share "
              "the same cores: once they are busy, another replica adds no throughput; "
              "rps/core is the figure that carries over to a machine (or pod) per replica.")


if __name__ == "__main__":
    raise SystemExit(main())
