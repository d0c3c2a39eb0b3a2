"""The server's collaborators on their own: admission, recording, the stream's settling, the
fast path.

Each is used here without a ``RoutecastServer`` around it, as a new route or a new server
would compose them (in-process: echo backends from ``tests.fuzz_app``, no network).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from routecast.backends.base import Api, Backend, Price
from routecast.capabilities import Capabilities
from routecast.errors import RequestError
from routecast.server.admission import Admission, Ticket
from routecast.server.asgi import FastPath
from routecast.server.capability_check import CapabilityCheck
from routecast.server.endpoints import EndpointTable
from routecast.server.keys import KeyStore, add_key
from routecast.server.privacy import PrivacyRule
from routecast.server.prometheus import ServerMetrics
from routecast.server.recording import Recorder
from routecast.server.requestlog import RequestLog
from routecast.server.streaming import start_stream
from tests.fuzz_app import Echo


class Pair(Echo):
    """An endpoint that may answer with ``small`` or ``local`` (as a routed one would)."""

    def __init__(self) -> None:
        super().__init__("local")
        self.models = ("small", "local")


BACKENDS: dict[str, Backend] = {"small": Echo("small"), "local": Echo("local"), "pair": Pair()}
#: ``small`` writes at most 10 tokens; ``local`` declares nothing (not checked).
CAPABILITY = CapabilityCheck({"small": Capabilities(max_output_tokens=10)})


async def parts(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def chat(model: str, text: str = "hi", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       **extra}).encode()


def admit(admission: Admission, body: bytes, headers: dict[str, str] | None = None,
          api: Api = "chat") -> tuple[Ticket, Any]:
    ticket = Ticket(api, "req-test-1")
    try:
        result: Any = asyncio.run(admission.admit(ticket, headers or {}, parts(body)))
    except RequestError as e:
        result = e
    return ticket, result


def test_admission_fills_the_ticket_as_far_as_it_gets() -> None:
    admission = Admission(BACKENDS, max_body_bytes=2048, max_messages=4, capability=CAPABILITY,
                          privacy=PrivacyRule(["email"], ["local"]))
    ticket, (backend, request) = admit(admission, chat("small", stream=True))
    assert backend is BACKENDS["small"] and request.stream and ticket.endpoint == "small"
    assert ticket.verdict is None and ticket.key_name is None
    ticket, error = admit(admission, b"x" * 4096)
    assert error.status == 413 and ticket.endpoint == "" and ticket.body == {}
    ticket, error = admit(admission, chat("nope"))
    assert error.status == 404 and ticket.endpoint == "nope" and ticket.body["model"] == "nope"
    ticket, error = admit(admission, chat("small", "mail me at a@b.example"))
    assert error.status == 403 and error.code == "privacy_rule"
    ticket, (_, request) = admit(admission, chat("local", "mail me at a@b.example"))
    assert request.allowed == frozenset({"local"})
    # The capability check comes after the privacy rule: its verdict rides on the ticket.
    ticket, (backend, request) = admit(admission, chat("pair", max_tokens=100))
    assert backend is BACKENDS["pair"] and request.allowed == frozenset({"local"})
    assert ticket.verdict is not None and ticket.verdict.header().startswith("small (")
    ticket, error = admit(admission, chat("small", max_tokens=100))
    assert error.status == 400 and ticket.endpoint == "small"


def test_admission_runs_a_dialect_at_both_of_its_points() -> None:
    class Upper:
        """A dialect whose "API" is chat with the model's name in capitals."""

        async def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
            return {**body, "model": body["model"].lower()}

        async def before(self, backend: Backend, request: Any) -> Backend:
            return BACKENDS["local"]  # what to ask instead

    admission = Admission(BACKENDS, max_body_bytes=2048, max_messages=4, capability=CAPABILITY)
    ticket = Ticket("chat")
    backend, request = asyncio.run(admission.admit(ticket, {}, parts(chat("SMALL")),
                                                   Upper()))  # type: ignore[arg-type]
    assert backend is BACKENDS["local"] and ticket.endpoint == "small"
    assert request.body["model"] == "small" and ticket.body is request.body


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Admission, KeyStore, str]:
    db = tmp_path / "keys.db"
    token = add_key(db, "k", budget_usd=1.0)
    keys = KeyStore(db)
    keys.open()
    return Admission(BACKENDS, max_body_bytes=2048, max_messages=4, capability=CAPABILITY,
                     keys=keys), keys, token


def test_a_key_is_charged_once_and_only_when_admitted(
        keyed: tuple[Admission, KeyStore, str]) -> None:
    admission, _, token = keyed
    auth = {"authorization": f"Bearer {token}"}
    ticket, error = admit(admission, chat("nope"), auth)
    assert isinstance(error, RequestError) and ticket.key is None  # refused: nothing taken
    assert ticket.key_name == "k"  # known from authentication on, for the refusal's log row
    ticket, _ = admit(admission, chat("small"), auth)
    key = ticket.key
    assert key is not None and key.in_flight == 1 and ticket.key_name == "k"
    admission.settle(ticket, 0.25)
    admission.settle(ticket, 0.25)  # whoever finishes second finds it settled
    assert key.in_flight == 0 and key.spent_usd == 0.25


def test_the_recorder_logs_what_the_ticket_learned(tmp_path: Path) -> None:
    table = EndpointTable(BACKENDS, {m: Price() for m in BACKENDS}, {m: m for m in BACKENDS})
    metrics = ServerMetrics()
    request_log = RequestLog(tmp_path / "log.db", batch_ms=5)
    recorder = Recorder(metrics, request_log, table)
    admission = Admission(BACKENDS, max_body_bytes=2048, max_messages=4, capability=CAPABILITY)
    request_log.start()
    try:
        ticket, _ = admit(admission, chat("pair", max_tokens=100))
        ticket.key_name = "alice"
        assert recorder.record(ticket, 0.01, stream=False, status=200) is None
        refused, error = admit(admission, chat("nope"))
        recorder.failed(refused, error)
    finally:
        request_log.close()
    with sqlite3.connect(tmp_path / "log.db") as db:
        rows = db.execute("SELECT request_id, key_name, endpoint, status, excluded "
                          "FROM requests ORDER BY id").fetchall()
    assert rows[0][:4] == ("req-test-1", "alice", "pair", 200)
    assert rows[0][4].startswith("small (")
    assert rows[1] == ("req-test-1", None, "nope", 404, None)
    assert 'status="404"' in metrics.render()


def test_a_stream_never_sent_still_settles_its_key(
        keyed: tuple[Admission, KeyStore, str]) -> None:
    admission, _, token = keyed
    table = EndpointTable(BACKENDS, {m: Price() for m in BACKENDS}, {m: m for m in BACKENDS})
    recorder = Recorder(ServerMetrics(), None, table)
    ticket, (backend, request) = admit(admission, chat("small", stream=True),
                                       {"authorization": f"Bearer {token}"})
    key = ticket.key
    assert key is not None

    async def run() -> None:
        response = await start_stream(backend, request, ticket, deadline_s=5.0,
                                      admission=admission, recorder=recorder)

        async def gone(message: Any) -> None:
            raise OSError("client gone")

        async def receive() -> Any:
            await asyncio.sleep(3600)

        with pytest.raises(OSError, match="client gone"):
            await response({"type": "http"}, receive, gone)

    asyncio.run(run())
    assert key.in_flight == 0 and ticket.key is None


def test_fast_path_wraps_a_plain_starlette_app() -> None:
    seen: list[tuple[str, Api]] = []

    async def answer(headers: Any, body: AsyncIterator[bytes], api: Api) -> Response:
        seen.append((b"".join([p async for p in body]).decode(), api))
        return PlainTextResponse("fast")

    async def slow(http: HTTPRequest) -> Response:
        return PlainTextResponse("starlette")

    inner = Starlette(routes=[Route("/v1/completions", slow, methods=["GET", "POST"]),
                              Route("/other", slow, methods=["POST"])])
    app = FastPath(inner, answer)

    async def call(method: str, path: str) -> bytes:
        out: list[Any] = []
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            out.append(message)

        scope = {"type": "http", "method": method, "path": path, "root_path": "",
                 "headers": [], "query_string": b"", "http_version": "1.1",
                 "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2)}
        await app(scope, receive, send)
        return b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")

    assert asyncio.run(call("POST", "/v1/completions")) == b"fast"
    assert seen == [("{}", "completions")]
    assert asyncio.run(call("GET", "/v1/completions")) == b"starlette"  # not a POST
    assert asyncio.run(call("POST", "/other")) == b"starlette"
    assert len(seen) == 1
