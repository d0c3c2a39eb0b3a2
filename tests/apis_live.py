"""One routecast server for the Messages / Responses API tests: plain, routed and cascade
endpoints over the stub upstream, client keys required (the SDKs authenticate as clients do)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from routecast import Policy, make_router
from routecast.server.keys import add_key
from tests.routecast_live import make_config, serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset

#: The endpoints every API test runs against: a bare model, a routed one, a cascade.
ENDPOINTS = ["small", "auto", "smart"]


@dataclass
class Live:
    url: str
    key: str
    stub: StubUpstream
    db: Path


def live_server(tmp: Path) -> Iterator[Live]:
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    db = tmp / "requests.db"
    key = add_key(db, "agent")
    with StubUpstream() as stub:
        config = make_config(stub.url, db, auth={"required": True}, endpoints={
            "auto": {"type": "routed", "router": "unused-when-given"},
            "smart": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.8]},
        })
        with serve(config, routers={"auto": (router, policy)}) as url:
            yield Live(url, key, stub, db)


def live_fixture() -> Any:
    @pytest.fixture(scope="module", name="live")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
        yield from live_server(tmp_path_factory.mktemp("apis"))

    return fixture


@dataclass
class Answer:
    """An HTTP answer, read whole (the stdlib client: tests need no extra dependency)."""

    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
         ) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method=method, headers={
        "content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()},
                          r.read().decode())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def sse_events(response: Answer) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of a raw SSE body; an event without a name gets
    ``""``. Fails on a data line that is not JSON."""
    out: list[tuple[str, dict[str, Any]]] = []
    for block in response.text.split("\n\n"):
        name, data = "", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            out.append((name, data))
    return out


def hard_and_easy() -> tuple[str, str]:
    """A test prompt the toy router sends to ``large`` and one it sends to ``small``."""
    data = toy_dataset()
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    prompts = list(data.subset("test").prompts)
    picks = router.route(prompts, policy)
    hard = next(p for p, m in zip(prompts, picks, strict=True) if m == "large")
    easy = next(p for p, m in zip(prompts, picks, strict=True) if m == "small")
    return hard, easy
