"""The dashboard after a few hundred requests: screenshots of every page, load time, size.

Starts the tests' stub upstream (three toy models, small/medium/large, answering at once) and
routecast with a routed endpoint (a linear router fitted and calibrated on the toy data through
the CLI), a cascade (small, then large when small's log-prob confidence is below 0.8) and a
fallback chain; sends ``--requests`` chat requests through the official ``openai`` client (a
seeded mix of endpoints, streamed and not, a few to an unknown endpoint), then opens each page
in Debian's Chromium (Playwright, ``/usr/bin/chromium``) and

* saves a screenshot of each page to ``--out`` (``docs/ui/`` by default);
* loads the overview ``--loads`` times and prints the median and max of the browser's
  ``loadEventEnd`` (navigation start to load event) and the bytes transferred per load.

    python benchmarks/dashboard.py [--requests 300] [--out docs/ui] [--loads 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' stub upstream and fixtures

PAGES = {"overview": "/ui", "requests": "/ui/requests", "routers": "/ui/routers",
         "keys": "/ui/keys"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import openai
    from playwright.sync_api import sync_playwright
    from tests.routecast_live import log_rows, make_config, serve
    from tests.stub_upstream import StubUpstream
    from tests.toy import toy_dataset
    from tests.ui_fixtures import endpoints, saved_router

    from routecast.server.keys import add_key

    rng = random.Random(args.seed)
    prompts = list(toy_dataset().subset("test").prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, StubUpstream() as stub:
        work = Path(tmp)
        router_dir = saved_router(work)
        db = work / "routecast.db"
        admin = add_key(db, "ops")
        app_key = add_key(db, "app", budget_usd=0.5, rpm=6000)
        add_key(db, "batch-jobs", budget_usd=2.0)
        config = make_config(stub.url, db, endpoints=endpoints(router_dir),
                             auth={"required": True}, ui={"admin_keys": ["ops"]})
        config.storage.log_prompts = True
        with serve(config) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=app_key, max_retries=0)
            t0 = time.perf_counter()
            for i in range(args.requests):
                endpoint = rng.choice(["auto", "auto", "auto", "smart", "smart", "guarded"])
                stub.logprob["small"] = rng.choice([-0.05, -0.1, -1.0])
                messages = [{"role": "user", "content": rng.choice(prompts)}]
                try:
                    if i % 50 == 49:
                        client.chat.completions.create(model="no-such-endpoint",
                                                       messages=messages)  # type: ignore[arg-type]
                    elif i % 5 == 0:
                        stream = client.chat.completions.create(
                            model=endpoint, messages=messages, stream=True)  # type: ignore[arg-type]
                        for _ in stream:
                            pass
                    else:
                        client.chat.completions.create(model=endpoint, messages=messages)  # type: ignore[arg-type]
                except openai.APIError:
                    pass
            sent_s = time.perf_counter() - t0
            log_rows(db, args.requests, timeout_s=10)
            print(f"sent {args.requests} requests in {sent_s:.1f} s")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                            args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/ui/login")
                page.fill("input[name=key]", admin)
                page.click("button[type=submit]")
                page.wait_for_selector("#requests")
                for name, path in PAGES.items():
                    page.goto(f"{url}{path}")
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                page.goto(f"{url}/ui/requests?endpoint=auto&status=ok")
                first = page.locator("#requests a").first.inner_text()
                page.goto(f"{url}/ui/requests/{first}")
                page.screenshot(path=str(args.out / "request.png"), full_page=True)
                page.goto(f"{url}/ui/requests?endpoint=smart&status=ok")
                smart = page.locator("#requests a").first.inner_text()
                page.goto(f"{url}/ui/requests/{smart}")
                page.screenshot(path=str(args.out / "request-cascade.png"), full_page=True)
                page.goto(f"{url}/ui/whatif")
                page.fill("#prompt", prompts[1])
                page.click("#ask")
                page.wait_for_selector(".whatif")
                page.screenshot(path=str(args.out / "whatif.png"), full_page=True)
                loads, sizes = [], []
                for _ in range(args.loads):
                    page.goto(f"{url}/ui", wait_until="load")
                    timing = page.evaluate(
                        "(() => { const n = performance.getEntriesByType('navigation')[0];"
                        " const r = performance.getEntriesByType('resource');"
                        " return [n.loadEventEnd, n.transferSize + r.reduce("
                        "(s, e) => s + e.transferSize, 0)]; })()")
                    loads.append(float(timing[0]))
                    sizes.append(int(timing[1]))
                browser.close()
    print(f"screenshots: {', '.join(sorted(p.name for p in args.out.glob('*.png')))} "
          f"in {args.out}")
    print(f"overview load (navigation start to load event), {args.loads} loads: "
          f"median {statistics.median(loads):.0f} ms, max {max(loads):.0f} ms")
    print(f"bytes transferred per overview load (page + assets, after the first, cached): "
          f"median {statistics.median(sizes):.0f}, first {sizes[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
