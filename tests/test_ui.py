"""The dashboard over HTTP: request stories against the headers clients got, the overview
against a known set of requests, what-if against ``routecast route``, admin-only access, the
request log's migration, and the charts' escaping. The same pages in a real browser:
tests/test_ui_browser.py."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from routecast.server.keys import add_key
from routecast.server.requestlog import COLUMNS
from routecast.server.ui import svg
from routecast.storage.database import Database
from routecast.storage.migrate import head
from tests.http_client import Http, Reply
from tests.routecast_live import db_fixture, log_rows, make_config, serve, stub_fixture
from tests.stub_upstream import StubUpstream
from tests.ui_fixtures import dashboard_server, endpoints, router_dir

__all__ = ["router_dir"]  # a fixture, imported for pytest

stub = stub_fixture()
db = db_fixture()

EASY = "question 0: hello weather greeting thanks"
HARD = "question 1: integral theorem proof matrix"


@pytest.fixture(scope="module")
def url(stub: StubUpstream, db: Path, router_dir: Path) -> Iterator[str]:
    with dashboard_server(stub, db, router_dir) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def story(url: str, request_id: str) -> dict[str, Any]:
    log_rows_until(url, request_id)
    response = Http(url).get(f"/v1/routecast/requests/{request_id}")
    assert response.status == 200, response.text
    data = response.json()
    assert isinstance(data, dict)
    return data


def log_rows_until(url: str, request_id: str, timeout_s: float = 5.0) -> None:
    """Wait until the batched log writer has committed the request."""
    deadline = time.monotonic() + timeout_s
    while Http(url).get(f"/v1/routecast/requests/{request_id}").status == 404:
        assert time.monotonic() < deadline, f"{request_id} never reached the log"
        time.sleep(0.02)


def test_a_routed_request_story_matches_its_headers(client: openai.OpenAI, url: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": HARD}])
    headers = {k: v for k, v in raw.headers.items() if k.startswith("x-routecast-")}
    s = story(url, headers["x-routecast-request-id"])
    assert s["headers"] == headers
    trace = s["request"]["trace"]
    assert trace["kind"] == "routed" and trace["reason"] == "router"
    assert trace["chosen"] == raw.parse().model == s["request"]["model"]
    # The chosen model has the best score under the policy's weight.
    w = trace["cost_weight"]
    scores = {m: q - w * trace["costs"][m] for m, q in trace["estimates"].items()}
    assert max(scores, key=lambda m: scores[m]) == trace["chosen"]
    assert set(trace["estimates"]) == {"small", "medium", "large"}
    assert s["why"] and trace["chosen"] in s["why"][0]
    assert s["request"]["prompt"] is not None and HARD in s["request"]["prompt"]


def test_a_cascade_stream_story_has_each_step(client: openai.OpenAI, url: str,
                                              stub: StubUpstream) -> None:
    stub.logprob["small"] = -1.0  # confidence 0.37 < 0.8: escalates to large
    try:
        with client.chat.completions.with_streaming_response.create(
                model="smart", messages=[{"role": "user", "content": EASY}],
                stream=True) as response:
            headers = {k: v for k, v in response.headers.items()
                       if k.startswith("x-routecast-")}
            text = "".join(c.choices[0].delta.content or "" for c in response.parse()
                           if c.choices)
    finally:
        stub.logprob.pop("small")
    assert text.startswith("large says")
    s = story(url, headers["x-routecast-request-id"])
    assert s["headers"] == headers
    steps = s["request"]["trace"]["steps"]
    assert [st["model"] for st in steps] == ["small", "large"]
    assert steps[0]["threshold"] == 0.8 and steps[0]["accepted"] is False
    assert steps[0]["score"] == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert steps[1]["accepted"] is True and steps[1]["threshold"] is None
    assert s["request"]["cost_usd"] == pytest.approx(sum(st["cost_usd"] for st in steps))


def test_an_unknown_request_id_is_a_404_in_openai_shape(url: str) -> None:
    response = Http(url).get("/v1/routecast/requests/req-nope")
    assert response.status == 404
    assert response.json()["error"]["code"] == "request_not_found"  # type: ignore[index]
    page = Http(url).get("/ui/requests/req-nope")
    assert page.status == 404 and "no request with that id" in page.text


def test_overview_counts_a_known_set_of_requests(stub: StubUpstream, router_dir: Path,
                                                 tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with dashboard_server(stub, db, router_dir) as base:
        c = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        costs = []
        for i in range(5):
            raw = c.chat.completions.with_raw_response.create(
                model="small", messages=[{"role": "user", "content": f"hi {i}"}])
            costs.append(float(raw.headers["x-routecast-cost-usd"]))
        for _ in range(2):
            with pytest.raises(openai.NotFoundError):
                c.chat.completions.create(model="nope", messages=[{"role": "user",
                                                                  "content": "x"}])
        log_rows(db, 7)
        live = Http(base).get("/ui/live")
    assert live.status == 200
    html = live.text
    assert 'id="requests">7<' in html and 'id="errors">2<' in html
    spend = sum(costs)
    assert f'id="spend">${spend:.3g}<' in html
    # small was the only answering model; its row shows 5 of 5.
    assert "<td>small</td><td>small</td><td class=\"n\">5</td>" in html


def test_what_if_matches_routecast_route(url: str, router_dir: Path) -> None:
    for prompt in (EASY, HARD, "something else entirely"):
        answer: Any = Http(url).post("/ui/whatif?format=json", form={"prompt": prompt}).json()
        auto = next(e for e in answer["endpoints"] if e["endpoint"] == "auto")
        cli = subprocess.run([sys.executable, "-m", "routecast.cli", "route", str(router_dir),
                              prompt, "--json"], capture_output=True, text=True, check=True)
        expected = json.loads(cli.stdout)
        assert auto["model"] == expected["model"]
        assert auto["why"] == expected["why"]
        assert auto["cost_weight"] == pytest.approx(expected["cost_weight"])
        got = {e["model"]: e["quality"] for e in auto["models"]}
        assert got == pytest.approx({m["name"]: m["quality"] for m in expected["models"]})
        smart = next(e for e in answer["endpoints"] if e["endpoint"] == "smart")
        assert smart["model"] == "small" and "0.8" in smart["why"][0]


def test_what_if_page_renders_the_decision(url: str) -> None:
    page = Http(url).post("/ui/whatif", form={"prompt": HARD})
    assert page.status == 200
    assert 'data-endpoint="auto"' in page.text and 'data-endpoint="smart"' in page.text
    empty = Http(url).post("/ui/whatif", form={"prompt": "  "})
    assert "type a prompt first" in empty.text


def test_every_page_renders(url: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="guarded", messages=[{"role": "user", "content": "x"}])
    for path in ("/ui", "/ui/live", "/ui/requests", "/ui/requests?endpoint=auto&status=ok",
                 "/ui/whatif", "/ui/routers", "/ui/keys", "/ui/login",
                 "/ui/static/ui.css", "/ui/static/ui.js"):
        assert Http(url).get(path).status == 200, path
    assert Http(url).get("/ui/static/secret.py").status == 404


def test_the_router_card_draws_the_saved_curve(url: str, router_dir: Path) -> None:
    saved = json.loads((router_dir / "router.json").read_text())["policy"]["calibration"]
    assert len(saved["curve"]) >= 2 and {m["name"] for m in saved["models"]} == {
        "small", "medium", "large"}
    page = Http(url).get("/ui/routers").text
    assert 'data-endpoint="auto"' in page and "saved curve (calibration data)" in page
    assert f"quality {saved['realised']['quality']:.3f}" in page


def test_assets_are_small(url: str) -> None:
    sizes = [len(Http(url).get(p).body) for p in
             ("/ui", "/ui/static/ui.css", "/ui/static/ui.js")]
    assert sum(sizes) < 100_000, sizes


def test_the_dashboard_can_be_switched_off(stub: StubUpstream, router_dir: Path,
                                           tmp_path: Path) -> None:
    config = make_config(stub.url, tmp_path / "x.db", endpoints=endpoints(router_dir),
                         ui={"enabled": False})
    with serve(config) as base:
        assert Http(base).get("/ui").status == 404
        assert Http(base).get("/v1/routecast/requests/x").status == 404
        assert Http(base).get("/health").status == 200


def test_admin_pages_refuse_a_client_key(stub: StubUpstream, router_dir: Path,
                                         tmp_path: Path) -> None:
    db = tmp_path / "auth.db"
    admin = add_key(db, "ops")
    client_key = add_key(db, "app")
    config = make_config(stub.url, db, endpoints=endpoints(router_dir),
                         auth={"required": True}, ui={"admin_keys": ["ops"]})
    with serve(config) as base:
        def get(path: str, key: str | None = None) -> Reply:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            return Http(base).get(path, headers=headers)

        for path in ("/ui", "/ui/requests", "/ui/whatif", "/ui/routers", "/ui/keys"):
            assert get(path, client_key).status == 403, path
            assert get(path, admin).status == 200, path
            no_key = get(path)
            assert no_key.status == 303 and no_key.headers["location"] == "/ui/login"
        assert get("/v1/routecast/requests/x").status == 401
        assert get("/v1/routecast/requests/x", client_key).status == 403
        assert get("/v1/routecast/requests/x", admin).status == 404
        keys_page = get("/ui/keys", admin).text
        assert "app" in keys_page and "ops" in keys_page and "(admin)" in keys_page
        # The login form keeps the key in a cookie the pages accept.
        browser = Http(base)
        login = browser.post("/ui/login", form={"key": client_key})
        assert login.status == 303
        assert browser.get("/ui").status == 403
        browser.post("/ui/login", form={"key": admin})
        assert browser.get("/ui").status == 200
        browser.post("/ui/login", form={"key": "rc-00000000-" + "x" * 40})
        bad = browser.get("/ui")
        assert bad.status == 303 and "failed" in bad.headers["location"]


def test_a_version_1_log_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old_columns = COLUMNS[:COLUMNS.index("excluded")]
    old.execute(f"CREATE TABLE requests (id INTEGER PRIMARY KEY, "
                f"{', '.join(old_columns)})")
    old.execute(f"INSERT INTO requests ({', '.join(old_columns)}) VALUES "
                f"({', '.join('?' * len(old_columns))})",
                (1.0, "e", "m", "m", 200, 0, 1, 2, 0, 0, 0, 0.5, None, 0.0, 0.1, 0.0, None,
                 None, None))
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    Database.open(path).close()  # what the server does at start-up: migrate in place
    db = sqlite3.connect(path)
    try:
        names = [r[1] for r in db.execute("PRAGMA table_info(requests)")]
        assert {"excluded", "request_id", "key_name", "trace"} <= set(names)
        assert db.execute("SELECT endpoint, cost_usd, trace FROM requests").fetchall() == [
            ("e", 0.5, None)]
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
    finally:
        db.close()


def test_charts_escape_labels() -> None:
    chart = svg.curve_chart({"<script>alert(1)</script>": [(0.001, 0.5), (0.01, 0.9)]},
                            {"a&b": (0.002, 0.6)}, title="t<")
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "a&amp;b" in chart
    assert svg.time_chart({"p50": []}, title="x", y_label="ms").count("no answered") == 1
