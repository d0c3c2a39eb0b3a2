"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a running
server over the stub upstream.

Needs ``apt-get install chromium`` (``.ci/run`` installs it) and the ``playwright`` Python
package (the dev extra); no browser is downloaded. Without them the module skips and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from routecast.server.keys import add_key
from tests.routecast_live import db_fixture, log_rows, make_config, serve, stub_fixture
from tests.stub_upstream import StubUpstream
from tests.ui_fixtures import endpoints, router_dir

__all__ = ["router_dir"]  # a fixture, imported for pytest

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install playwright "
                                  "(the dev extra has it)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed: apt-get install chromium (.ci/run does)",
                allow_module_level=True)

stub = stub_fixture()
db = db_fixture()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def url(stub: StubUpstream, db: Path, router_dir: Path) -> Iterator[str]:
    config = make_config(stub.url, db, endpoints=endpoints(router_dir),
                         ui={"refresh_s": 0.5})
    config.storage.log_prompts = True
    with serve(config) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def test_overview_shows_the_log_and_refreshes_itself(page: Any, url: str, db: Path,
                                                     client: openai.OpenAI) -> None:
    before = len(log_rows(db, 0))
    for i in range(4):
        client.chat.completions.create(model="small",
                                       messages=[{"role": "user", "content": f"a{i}"}])
    log_rows(db, before + 4)
    page.goto(f"{url}/ui")
    assert page.locator("#requests").inner_text() == str(before + 4)
    assert page.locator("svg.chart").count() >= 2
    for i in range(3):
        client.chat.completions.create(model="medium",
                                       messages=[{"role": "user", "content": f"b{i}"}])
    log_rows(db, before + 7)
    # No reload: the page's script fetches the live part again within a refresh or two.
    page.wait_for_function(
        f"document.getElementById('requests').innerText === '{before + 7}'", timeout=10_000)
    mix = page.locator("#mix").inner_text()
    assert "medium" in mix and "small" in mix


def test_a_request_story_matches_its_headers(page: Any, url: str, db: Path,
                                             client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "question 1: integral proof"}])
    sent = {k: v for k, v in raw.headers.items() if k.startswith("x-routecast-")}
    request_id = sent["x-routecast-request-id"]
    log_rows(db, 1, lambda r: r["request_id"] == request_id)
    page.goto(f"{url}/ui/requests?endpoint=auto")
    page.click(f"text={request_id}")
    page.wait_for_url(f"**/ui/requests/{request_id}")
    assert page.locator("#model").inner_text() == sent["x-routecast-model"]
    assert page.locator("#route").inner_text() == sent["x-routecast-route"]
    shown = {}
    for row in page.locator("#headers tr").all():
        shown[row.locator("th").inner_text()] = row.locator("td").inner_text()
    assert shown == sent
    chosen = page.locator("#estimates tr.chosen td").first.inner_text()
    assert chosen == sent["x-routecast-model"]
    assert page.locator("#why li").count() >= 1


def test_what_if_matches_routecast_route(page: Any, url: str, router_dir: Path) -> None:
    prompt = "question 7: hello weather thanks song"
    cli = subprocess.run([sys.executable, "-m", "routecast.cli", "route", str(router_dir),
                          prompt, "--json"], capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout)
    page.goto(f"{url}/ui/whatif")
    page.fill("#prompt", prompt)
    page.click("#ask")
    card = page.locator(".whatif[data-endpoint='auto']")
    card.wait_for()
    assert card.locator(".model").inner_text() == expected["model"]
    shown = card.locator("li").all_inner_texts()
    assert shown == expected["why"]


def test_admin_pages_refuse_a_client_key(browser: Any, stub: StubUpstream, router_dir: Path,
                                         tmp_path: Path) -> None:
    auth_db = tmp_path / "auth.db"
    admin = add_key(auth_db, "ops")
    client_key = add_key(auth_db, "app", budget_usd=1.0)
    config = make_config(stub.url, auth_db, endpoints=endpoints(router_dir),
                         auth={"required": True}, ui={"admin_keys": ["ops"]})
    with serve(config) as base:
        context = browser.new_context()
        try:
            tab = context.new_page()
            tab.goto(f"{base}/ui/keys")
            assert tab.url.endswith("/ui/login")
            tab.fill("input[name=key]", client_key)
            tab.click("button[type=submit]")
            assert "not an admin key" in tab.locator("#message").inner_text()
            tab.goto(f"{base}/ui/login")
            tab.fill("input[name=key]", admin)
            tab.click("button[type=submit]")
            tab.wait_for_selector("#requests")
            tab.goto(f"{base}/ui/keys")
            keys = tab.locator("#keys").inner_text()
            assert "app" in keys and "$1.0000" in keys
        finally:
            context.close()


def test_the_overview_loads_fast(page: Any, url: str) -> None:
    t0 = time.perf_counter()
    page.goto(f"{url}/ui", wait_until="load")
    elapsed = time.perf_counter() - t0
    # A loose bound for a loaded CI machine; the measured figure is in docs/dashboard.md.
    assert elapsed < 5.0, elapsed
    sizes = page.evaluate(
        "performance.getEntriesByType('resource').map(e => e.transferSize || e.encodedBodySize)")
    assert sum(sizes) < 100_000
