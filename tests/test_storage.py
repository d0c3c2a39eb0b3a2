"""The server's storage on SQLite and on a real PostgreSQL: the schema and its migrations, the
request log, keys, the outcome store, stats, the dashboard's queries, the Responses store and
published routers that replicas pick up.

PostgreSQL tests get a fresh database each (``tests/services.py``) and skip, saying why, where
no PostgreSQL server runs (CI fails them instead)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import func, inspect, select, text

from routecast.cli import cli
from routecast.errors import ConfigError
from routecast.learning.store import LabelRow, OutcomeStore, export_outcomes, learning_stats
from routecast.server.apis.store import ResponseStore, Stored
from routecast.server.endpoints import build_endpoints
from routecast.server.keys import KeyStore, add_key, list_keys, revoke_key
from routecast.server.learning import LearningService
from routecast.server.requestlog import LogRow, RequestLog
from routecast.server.stats import ALL, request_stats
from routecast.server.ui import queries
from routecast.storage.artifacts import ArtifactStore
from routecast.storage.database import Database, normalize_url
from routecast.storage.migrate import current, head, upgrade
from routecast.storage.schema import artifacts, metadata, requests
from tests.routecast_live import make_config, model_entry
from tests.services import pg_url

__all__ = ["pg_url"]  # the fixture, imported for pytest to find


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind (PostgreSQL: skipped where none runs)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'routecast.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database.open(url)
    try:
        yield database
    finally:
        database.close()


def row(i: int, **overrides: Any) -> LogRow:
    fields: dict[str, Any] = {
        "ts": 1000.0 + i, "endpoint": "auto", "model": "small" if i % 3 else "large",
        "route": "small" if i % 4 else "small,large", "status": 200 if i % 5 else 502,
        "stream": bool(i % 2), "prompt_tokens": 10 + i, "completion_tokens": 5,
        "usage_estimated": i % 7 == 0, "cost_usd": 0.001 * i, "baseline_model": "large",
        "baseline_cost_usd": 0.01 * i, "latency_s": 0.01 * (i + 1), "request_id": f"req-{i}",
        "key_name": "alice" if i % 2 else None, "prompt": f"prompt {i}"}
    fields.update(overrides)
    return LogRow(**fields)


def count(db: Database, table: Any = requests) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# -- URLs, schema, migrations ------------------------------------------------------------------


def test_user_urls_become_psycopg_urls_and_paths_sqlite() -> None:
    assert normalize_url("postgres://u:pw@h:5433/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///a/b.db").database == "a/b.db"
    assert normalize_url(Path("x/y.db")).drivername == "sqlite"
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL"):
        normalize_url("mysql://u:secret@h/d")
    with pytest.raises(ConfigError) as err:
        normalize_url("mysql://u:secret@h/d")
    assert "secret" not in str(err.value)


def test_a_new_database_matches_the_schema_and_a_second_start_changes_nothing(
        db: Database) -> None:
    with db.connect() as conn:
        assert current(conn) == head()
        # The migrations produce exactly what schema.py declares (no drift either way).
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert upgrade(db) is False  # the second start: nothing to do
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_servers_starting_together_migrate_once(url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Database.open(url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = Database.open(url, migrate=False)
    try:
        with db.connect() as conn:
            assert current(conn) == head()
    finally:
        db.close()


#: The DDL of the release before Alembic (each module's CREATE statements, as they were), for
#: a file the old server wrote: a version-1 request log (no excluded/request_id/key_name/trace).
OLD_DDL = """
CREATE TABLE requests (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, model TEXT,
    route TEXT NOT NULL, status INTEGER NOT NULL, stream INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    usage_estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, baseline_model TEXT,
    baseline_cost_usd REAL NOT NULL, latency_s REAL NOT NULL, routing_s REAL NOT NULL,
    error TEXT, session TEXT, prompt TEXT
);
CREATE INDEX requests_ts ON requests (ts);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL,
    budget_usd REAL, spent_usd REAL NOT NULL DEFAULT 0, rpm INTEGER, created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, prompt TEXT NOT NULL,
    model TEXT NOT NULL, quality REAL NOT NULL, cost_usd REAL, source TEXT NOT NULL,
    response_id TEXT, client TEXT
);
CREATE INDEX labels_endpoint ON labels (endpoint, id);
CREATE TABLE learning_spend (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, kind TEXT NOT NULL,
    model TEXT NOT NULL, cost_usd REAL NOT NULL
);
PRAGMA user_version=1;
"""


def old_file(path: Path, ddl: str = OLD_DDL) -> None:
    con = sqlite3.connect(path)
    con.executescript(ddl)
    con.executemany(
        "INSERT INTO requests (ts, endpoint, model, route, status, stream, prompt_tokens, "
        "completion_tokens, cached_tokens, reasoning_tokens, usage_estimated, cost_usd, "
        "baseline_model, baseline_cost_usd, latency_s, routing_s) "
        "VALUES (?, 'auto', 'small', 'small', 200, 0, 10, 5, 0, 0, 0, 0.001, 'large', 0.01, "
        "0.2, 0.001)", [(float(i),) for i in range(50)])
    con.execute("INSERT INTO api_keys (id, name, salt, hash, budget_usd, spent_usd, created) "
                "VALUES ('0badcafe', 'ops', x'00', x'01', 5.0, 1.25, 1.0)")
    con.execute("INSERT INTO labels (ts, endpoint, prompt, model, quality, source) "
                "VALUES (1.0, 'auto', 'p', 'small', 0.5, 'judge')")
    con.commit()
    con.close()


def test_a_file_from_the_release_before_alembic_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_file(path)
    db = Database.open(path)
    try:
        with db.connect() as conn:
            assert current(conn) == head()
            names = set(inspect(conn).get_table_names())
            columns = {c["name"] for c in inspect(conn).get_columns("requests")}
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("requests")}
        assert {"learning_refits", "responses", "artifacts"} <= names  # created: missing
        assert {"excluded", "request_id", "key_name", "trace"} <= columns  # version 2 added
        assert "requests_request_id" in indexes
        assert count(db) == 50  # no row lost
        assert list_keys(db)[0]["spent_usd"] == 1.25
        assert [r.model for r in OutcomeStore(db).labels("auto")] == ["small"]
        # ... and the old rows read and new rows write as the server does.
        log = RequestLog(db, batch_ms=5)
        log.start()
        log.write(row(1, excluded="large (no tools)"))
        log.close()
        assert count(db) == 51
        stats = {r.model: r for r in request_stats(db)}
        assert stats[ALL].requests == 51 and stats["small"].requests == 51
    finally:
        db.close()
    again = Database.open(path)  # a second start: already current
    assert upgrade(again) is False
    again.close()


def test_a_version_2_file_keeps_its_columns_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    v2 = OLD_DDL.replace("error TEXT, session TEXT, prompt TEXT",
                         "error TEXT, session TEXT, prompt TEXT, excluded TEXT, "
                         "request_id TEXT, key_name TEXT, trace TEXT"
                         ).replace("user_version=1", "user_version=2")
    old_file(path, v2)
    con = sqlite3.connect(path)
    con.execute("UPDATE requests SET request_id = 'req-' || id, key_name = 'bob'")
    con.commit()
    con.close()
    Database.open(path).close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT request_id) FROM requests "
                           "WHERE key_name = 'bob'").fetchone() == (50, 50)
    finally:
        con.close()


# -- the request log -------------------------------------------------------------------------


def test_request_log_rows_land_whole(db: Database) -> None:
    log = RequestLog(db, batch_rows=16, batch_ms=10, log_prompts=True)
    log.start()
    for i in range(1, 101):
        log.write(row(i))
    log.close()
    assert log.error is None and log.rows_written == 100
    with db.connect() as conn:
        got = conn.execute(select(requests).order_by(requests.c.id)).mappings().all()
    assert len(got) == 100
    first = got[0]
    assert first["request_id"] == "req-1" and first["stream"] == 1
    assert first["usage_estimated"] == 0 and got[6]["usage_estimated"] == 1
    assert first["prompt"] == "prompt 1" and first["key_name"] == "alice"
    assert sum(r["cost_usd"] for r in got) == pytest.approx(0.001 * sum(range(1, 101)))


def test_prompts_are_not_logged_unless_asked(db: Database) -> None:
    log = RequestLog(db, batch_ms=5)
    log.start()
    log.write(row(1))
    log.close()
    with db.connect() as conn:
        assert conn.execute(select(requests.c.prompt)).scalar_one() is None


def test_durable_writes_resolve_after_the_commit(db: Database) -> None:
    # batch_ms is long: only the durable path's wake-up can commit within the test.
    log = RequestLog(db, batch_ms=60_000, durable=True)
    log.start()

    async def serve() -> list[int]:
        seen = []
        for i in range(1, 6):
            await log.write_durable(row(i))
            seen.append(count(db))  # committed before the future resolved
        return seen

    try:
        assert asyncio.run(serve()) == [1, 2, 3, 4, 5]
    finally:
        log.close()


def test_a_failed_batch_is_retried_not_lost(db: Database) -> None:
    log = RequestLog(db, batch_ms=5)
    log.start()
    with db.begin() as conn:  # the table away (a full disk, a database restarting)
        conn.execute(text("ALTER TABLE requests RENAME TO requests_away"))
    log.write(row(1))
    deadline = time.monotonic() + 10
    while log.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE requests_away RENAME TO requests"))
    log.write(row(2))
    log.close()
    assert log.error is not None  # it failed, and said so
    assert count(db) == 2 and log.rows_written == 2


# -- keys ------------------------------------------------------------------------------------


def test_keys_add_list_revoke_and_flush_deltas(db: Database) -> None:
    token = add_key(db, "alice", budget_usd=1.0, rpm=60)
    add_key(db, "bob")
    with pytest.raises(ConfigError, match="exists already"):
        add_key(db, "alice")
    listed = {k["name"]: k for k in list_keys(db)}
    assert listed["alice"]["budget_usd"] == 1.0 and listed["alice"]["rpm"] == 60
    assert listed["bob"]["revoked"] == 0
    # Two servers (replicas) sharing the table: their spend adds up.
    one, two = KeyStore(db), KeyStore(db)
    one.open()
    two.open()
    a1 = one.cached(f"Bearer {token}")
    a2 = two.cached(f"Bearer {token}")
    assert a1 is not None and a2 is not None
    for store, key, cost in ((one, a1, 0.25), (two, a2, 0.125)):
        store.admit(key)
        store.settle(key, cost)
        store.flush()
    assert {k["name"]: k["spent_usd"] for k in list_keys(db)}["alice"] == 0.375
    one.reload()
    assert a1.spent_usd == 0.375  # the other replica's spend, seen on reload
    assert revoke_key(db, "alice") and not revoke_key(db, "nobody")
    one.reload()
    with pytest.raises(Exception, match="invalid API key"):
        one.cached(f"Bearer {token}")
    one.close()
    two.close()


def test_an_async_flush_keeps_spend_when_the_write_fails(db: Database) -> None:
    token = add_key(db, "carol", budget_usd=10.0)
    store = KeyStore(db)
    store.open()
    key = store.cached(f"Bearer {token}")
    assert key is not None
    store.admit(key)
    store.settle(key, 0.5)

    def broken(deltas: list[dict[str, Any]]) -> None:
        raise RuntimeError("database away")

    real = store._write
    store._write = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        asyncio.run(store.flush_async())
    assert key.unflushed_usd == 0.5 and key.flushing_usd == 0.0
    store._write = real  # type: ignore[method-assign]
    asyncio.run(store.flush_async())
    asyncio.run(store.reload_async())
    assert key.unflushed_usd == 0.0 and key.spent_usd == 0.5
    assert list_keys(db)[0]["spent_usd"] == 0.5
    store.close()


# -- outcome store, stats, dashboard ---------------------------------------------------------


def test_outcome_store_and_export(db: Database) -> None:
    store = OutcomeStore(db)
    ids = [store.add_label(LabelRow("auto", f"p{i}", m, q, 0.001, "judge"))
           for i in range(3) for m, q in (("small", 0.2), ("large", 0.9))]
    assert ids == sorted(ids) and len(set(ids)) == 6
    store.add_label(LabelRow("auto", "p0", "small", 0.4, None, "feedback"))
    store.add_spend("auto", "judge", "grader", 0.5)
    store.add_spend("auto", "shadow", "large", 0.25)
    store.add_refit("auto", 1, True, "zero", 7, {"zero": 0.1, "current": float("inf")}, 3.0,
                    0.01)
    assert [i for i, _ in store.labels_since("auto", ids[3])] == [ids[4], ids[5], ids[5] + 1]
    data = export_outcomes(db, "auto")
    assert data.models == ("large", "small") and data.n_prompts == 3
    assert data.quality[0].tolist() == [0.9, 0.4]  # the latest label of (p0, small)
    (stats,) = learning_stats(db)
    assert stats.by_source == {"judge": 6, "feedback": 1} and stats.refits == 1
    assert stats.swaps == 1 and stats.judge_usd == 0.5 and stats.shadow_usd == 0.25
    with pytest.raises(ConfigError, match="endpoints with labels: auto"):
        export_outcomes(db, "nope")
    store.close()


def fill(db: Database, n: int = 60) -> None:
    log = RequestLog(db, batch_ms=5)
    log.start()
    for i in range(1, n + 1):
        log.write(row(i, ts=time.time() - n + i))
    log.close()


def test_dashboard_queries_agree_across_databases(db: Database) -> None:
    fill(db)
    o = queries.overview(db, window_s=3600)
    assert o.requests == 60 and o.errors == 12
    assert o.escalation_rate == pytest.approx(12 / 48)
    assert o.mix == {"auto": {"small": 32, "large": 16}}
    assert sum(p.requests for p in o.series) == 60
    newest = queries.recent(db, queries.Filters(key="alice", status="ok"), limit=3)
    assert [r["request_id"] for r in newest] == ["req-59", "req-57", "req-53"]
    assert queries.choices(db) == {"endpoint": ["auto"], "model": ["large", "small"],
                                   "key": ["alice"]}
    one = queries.request(db, "req-7")
    assert one is not None and one["stream"] is True and one["status"] == 200
    assert queries.request(db, "req-nope") is None
    assert queries.live_point(db, "auto")["requests"] == 48  # type: ignore[index]
    assert queries.learning(db) == []


def write_config(tmp_path: Path, storage: dict[str, Any]) -> Path:
    path = tmp_path / "routecast.yaml"
    path.write_text(yaml.safe_dump({
        "models": {"small": {"base_url": "http://127.0.0.1:9/v1"}}, "storage": storage}))
    return path


def test_stats_and_keys_through_the_config(url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database.open(url)
    fill(db)
    db.close()
    monkeypatch.setenv("ROUTECAST_TEST_DB_URL", url)
    config = write_config(tmp_path, {"url_env": "ROUTECAST_TEST_DB_URL"})
    runner = CliRunner()
    shown = runner.invoke(cli, ["stats", "--config", str(config), "--json"])
    assert shown.exit_code == 0, shown.output
    rows = {r["model"]: r for r in json.loads(shown.output)}
    assert rows[ALL]["requests"] == 60 and rows[ALL]["errors"] == 12
    assert rows["small"]["requests"] + rows["large"]["requests"] == 60
    table = runner.invoke(cli, ["stats", "--config", str(config)])
    assert table.exit_code == 0 and "requests in" in table.output
    assert "secret" not in table.output

    added = runner.invoke(cli, ["keys", "add", "ci", "--config", str(config), "--rpm", "5"])
    assert added.exit_code == 0 and added.output.startswith("rc-")
    listed = runner.invoke(cli, ["keys", "list", "--config", str(config)])
    assert listed.exit_code == 0 and listed.output.startswith("ci\t") and "rpm 5" in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "ci", "--config", str(config)])
    assert revoked.exit_code == 0 and "(revoked)" in runner.invoke(
        cli, ["keys", "list", "--config", str(config)]).output

    store = OutcomeStore(url)
    store.add_label(LabelRow("auto", "p", "small", 0.5, None, "feedback"))
    store.close()
    out = tmp_path / "labels.jsonl"
    exported = runner.invoke(cli, ["outcomes", "export", "--config", str(config),
                                   "--endpoint", "auto", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "1 prompts, 1 labels" in exported.output and out.is_file()


def test_db_and_config_together_is_a_clear_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"url_env": "ROUTECAST_NOT_SET_ANYWHERE"})
    both = CliRunner().invoke(cli, ["stats", "--db", "x.db", "--config", str(config)])
    assert isinstance(both.exception, ConfigError)
    assert "give --db or --config, not both" in str(both.exception)
    unset = CliRunner().invoke(cli, ["keys", "list", "--config", str(config)])
    assert isinstance(unset.exception, ConfigError)
    assert "ROUTECAST_NOT_SET_ANYWHERE is not set" in str(unset.exception)


def test_stats_on_a_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        request_stats(tmp_path / "nothing.db")
    assert not (tmp_path / "nothing.db").exists()  # reading creates nothing


# -- the Responses store ---------------------------------------------------------------------


def test_responses_store(db: Database) -> None:
    store = ResponseStore(db)
    item = Stored("resp_1", "auto", "conv", [{"role": "user", "content": "hi"}],
                  {"id": "resp_1", "output": []}, owner="k1")
    store.put_sync(item)
    store.put_sync(Stored("resp_1", "auto", "conv2", [], {"id": "resp_1"}, owner="k1"))

    async def both() -> tuple[Stored | None, Stored | None]:
        return await store.get("resp_1", "k1"), await store.get("resp_1", "k2")

    mine, theirs = asyncio.run(both())
    assert mine is not None and mine.conversation == "conv2" and theirs is None
    assert store.get_sync("resp_nope") is None
    store.close()


# -- published routers ------------------------------------------------------------------------


def test_artifact_versions_grow_and_concurrent_publishers_get_distinct_ones(
        db: Database) -> None:
    store = ArtifactStore(db)
    assert store.latest("auto", "router") is None
    assert store.publish("auto", "router", b"one") == 1
    assert store.publish("auto", "router", b"two", publisher="r2") == 2
    assert store.publish("other", "router", b"x") == 1
    latest = store.latest("auto", "router")
    assert latest is not None and (latest.version, latest.payload) == (2, b"two")
    assert latest.publisher == "r2" and store.latest_version("auto", "router") == 2
    versions: list[int] = []

    def publish() -> None:
        versions.append(store.publish("auto", "router", b"concurrent"))

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [3, 4, 5, 6, 7, 8]
    with db.begin() as conn:  # a corrupted payload is refused, not served
        conn.execute(artifacts.update().where(artifacts.c.version == 8)
                     .values(payload=b"tampered"))
    with pytest.raises(Exception, match="SHA-256"):
        store.latest("auto", "router")


def learning_config(url: str, poll_s: float) -> Any:
    spec = {"models": ["small", "large"], "judge": {"model": "grader"}, "first_refit": 10,
            "refit_every": 10, "spend_fraction": None, "timeout_s": 1.0,
            "max_learned_per_s": 0}
    return make_config("http://127.0.0.1:9/v1", None,
                       models={"grader": model_entry("http://127.0.0.1:9/v1", "grader")},
                       endpoints={"auto": {"type": "routed", "learning": spec}},
                       storage={"url": url, "artifact_poll_s": poll_s})


def test_a_refit_on_one_replica_reaches_another_within_the_poll_interval(pg_url: str) -> None:
    poll_s = 0.5
    config = learning_config(pg_url, poll_s)
    assert config.storage.artifact_poll_s == poll_s
    db = Database.open(pg_url)

    async def run() -> tuple[float, Any, Any]:
        a = LearningService(config, build_endpoints(config, env={}), db, None)
        b = LearningService(config, build_endpoints(config, env={}), db, None)
        await a.start()
        await b.start()
        try:
            ea, eb = a.routed("auto"), b.routed("auto")
            assert eb.backend.router is not None and eb.learner.current.kind == "cold"
            for i in range(40):  # labels that replica A collected (and stored)
                prompt = f"question {i} on topic {i % 4}"
                for model, quality in (("small", 0.2), ("large", 0.9)):
                    ea.learner.record(prompt, model, quality, 0.001)
                    await a.add_label(ea, LabelRow("auto", prompt, model, quality, 0.001,
                                                    "judge"))
            await a.refit(ea)
            published = time.monotonic()
            assert ea.artifact_version == 1 and ea.counters["published"] == 1
            while eb.artifact_version < 1 and time.monotonic() - published < 10 * poll_s:
                await asyncio.sleep(0.02)
            took = time.monotonic() - published
            await asyncio.sleep(3 * poll_s)  # and nothing more happens meanwhile
            return took, ea, eb
        finally:
            await a.aclose()
            await b.aclose()

    took, ea, eb = asyncio.run(run())
    try:
        assert eb.artifact_version == 1 and eb.counters.get("loaded") == 1
        assert took < poll_s + 1.0, took  # one poll interval, plus loading the router
        assert eb.learner.current.kind == ea.learner.current.kind != "cold"
        prompts = ["question 3 on topic 3", "something new"]
        assert (eb.backend.router.predict(prompts) == ea.backend.router.predict(prompts)).all()
        assert (eb.backend.router.predict_cost(prompts)
                == ea.backend.router.predict_cost(prompts)).all()
        assert type(eb.backend.router) is type(ea.backend.router)
        assert eb.backend.policy.cost_weight == ea.backend.policy.cost_weight
        assert eb.backend.batcher.router is eb.backend.router
        # B learned A's labels from the shared store, and published nothing itself; A did not
        # reload its own version.
        assert eb.learner.labels.n_labels == 80
        assert "loaded" not in ea.counters and "published" not in eb.counters
        assert count(db, artifacts) == 1
    finally:
        db.close()


# -- a real server on PostgreSQL ---------------------------------------------------------------


def test_a_server_on_postgresql_logs_authenticates_and_flushes_spend(pg_url: str) -> None:
    from tests.routecast_live import serve
    from tests.stub_upstream import StubUpstream

    token = add_key(pg_url, "app", budget_usd=1.0)
    db = Database.open(pg_url, migrate=False)
    try:
        with StubUpstream() as stub:
            config = make_config(stub.url, None, auth={"required": True},
                                 storage={"url": pg_url, "batch_ms": 20})
            with serve(config) as base:
                import urllib.request

                for _ in range(3):
                    request = urllib.request.Request(
                        f"{base}/v1/chat/completions", method="POST",
                        data=json.dumps({"model": "small", "messages": [
                            {"role": "user", "content": "hi"}]}).encode(),
                        headers={"content-type": "application/json",
                                 "authorization": f"Bearer {token}"})
                    with urllib.request.urlopen(request, timeout=10) as r:
                        assert r.status == 200
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and (
                        count(db) < 3 or list_keys(db)[0]["spent_usd"] == 0):
                    time.sleep(0.05)
        with db.connect() as conn:
            logged = conn.execute(select(requests.c.key_name, requests.c.model,
                                         requests.c.cost_usd)).all()
        assert [(k, m) for k, m, _ in logged] == [("app", "small")] * 3
        spent = list_keys(db)[0]["spent_usd"]
        assert isinstance(spent, float) and spent > 0
        assert spent == pytest.approx(sum(c for _, _, c in logged))
        (total,) = [r for r in request_stats(pg_url) if r.model == ALL]
        assert total.requests == 3
    finally:
        db.close()


def test_labels_committed_out_of_id_order_are_read_once(url: str) -> None:
    from routecast.storage.schema import labels

    config = learning_config(url, 3600.0)  # no poll during the test: the syncs are called
    db = Database.open(url)

    def label(label_id: int) -> None:  # another replica's label, committed now
        with db.begin() as conn:
            conn.execute(labels.insert().values(
                id=label_id, ts=time.time(), endpoint="auto", prompt=f"p{label_id}",
                model="small", quality=0.5, source="judge"))

    async def run() -> list[tuple[int, int, set[int]]]:
        service = LearningService(config, build_endpoints(config, env={}), db, None)
        await service.start()
        e = service.routed("auto")
        seen = []

        async def sync() -> None:
            await service._sync_labels(e)
            seen.append((e.learner.labels.n_labels, e.label_cursor, set(e.labels_seen)))

        try:
            label(1)
            label(2)
            label(4)  # 3 is handed out but not committed yet
            await sync()
            label(3)
            await sync()
            label(6)  # 5 was rolled back: the gap never fills
            await sync()
            assert e.gap_since is not None
            e.gap_since -= 60.0
            await sync()
            label(7)
            await sync()
        finally:
            await service.aclose()
        return seen

    try:
        assert asyncio.run(run()) == [(3, 2, {4}), (4, 4, set()), (5, 4, {6}), (5, 6, set()),
                                      (6, 7, set())]
    finally:
        db.close()


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot open the database") as err:
        Database.open("postgresql://routecast:hunter2@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(err.value) and "storage.url" in str(err.value)
    with pytest.raises(ConfigError, match="cannot open the database"):
        request_stats("postgresql://routecast@127.0.0.1:1/nowhere")


def test_two_servers_on_one_database_serve_the_same_refitted_router(pg_url: str) -> None:
    """Replica A answers the traffic and refits; replica B, with no traffic, serves A's
    router version (its /metrics says which) within the poll interval."""
    import re
    import urllib.request

    from tests.stub_upstream import LiveServer, StubUpstream
    from tests.test_learning_server import Grader

    def version(base: str) -> int:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            found = re.search(r'routecast_router_version\{endpoint="auto"\} (\d+)',
                              r.read().decode())
        return int(found.group(1)) if found else -1

    grader = Grader()
    with StubUpstream() as stub, LiveServer(grader.app, lifespan="off") as g:
        spec = {"models": ["small", "large"], "judge": {"model": "grader"}, "first_refit": 6,
                "refit_every": 6, "spend_fraction": None, "timeout_s": 1.0,
                "max_learned_per_s": 0}
        config = make_config(stub.url, None,
                             models={"grader": model_entry(f"{g.url}/v1", "grader",
                                                           max_retries=0)},
                             endpoints={"auto": {"type": "routed", "learning": spec}},
                             storage={"url": pg_url, "batch_ms": 20, "artifact_poll_s": 0.5})
        from tests.routecast_live import serve

        with serve(config) as a, serve(config) as b:
            assert version(a) == version(b) == 0
            for i in range(20):
                request = urllib.request.Request(
                    f"{a}/v1/chat/completions", method="POST",
                    data=json.dumps({"model": "auto", "messages": [
                        {"role": "user", "content": f"question {i} about {i % 5}"}]}).encode(),
                    headers={"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as r:
                    assert r.status == 200
            deadline = time.monotonic() + 20
            while version(a) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            published = version(a)
            assert published >= 1
            started = time.monotonic()
            while version(b) < published and time.monotonic() - started < 5:
                time.sleep(0.05)
            assert version(b) >= published, "replica B never loaded A's router"
            assert time.monotonic() - started < 0.5 + 1.5
