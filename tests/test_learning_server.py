"""Learning endpoints end to end: a real routecast server over real HTTP upstreams (the stub
for the models, a small grading server for the judge), labels in the SQLite store, a refit
swapped in, /v1/feedback, a failing or slow judge that changes nothing for clients, and
streamed answers judged on their whole text."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from routecast.learning.store import export_outcomes, learning_stats
from tests.http_client import Http
from tests.routecast_live import make_config, model_entry, serve
from tests.stub_upstream import LiveServer, Step, StubUpstream, iter_sse


class Grader:
    """A judge upstream: scores 9 an answer from `large`, 2 any other; or fails / stalls."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.answers: list[str] = []  # the answers it was asked to grade, as it saw them
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat,
                                           methods=["POST"])])

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls += 1
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "grader down", "type": "x"}}, 500)
        if self.mode == "slow":
            await asyncio.sleep(3.0)
        answer = body["messages"][-1]["content"]
        graded = re.search(r"<answer>\n(.*)\n</answer>", answer, re.S)
        self.answers.append(graded.group(1) if graded else answer)
        score = "9" if "large says:" in answer else "2"
        return JSONResponse({"id": "g", "object": "chat.completion", "model": "grader",
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": score}}],
                             "usage": {"prompt_tokens": 50, "completion_tokens": 1}})


@pytest.fixture
def upstreams() -> Iterator[tuple[StubUpstream, Grader, str]]:
    grader = Grader()
    with StubUpstream() as stub, LiveServer(grader.app, lifespan="off") as g:
        yield stub, grader, f"{g.url}/v1"


def config(stub: StubUpstream, grader_url: str, db: Path, *, models: Any = None,
           extra: Any = None, **learning: Any) -> Any:
    spec = {"models": ["small", "large"], "judge": {"model": "grader"}, "first_refit": 6,
            "refit_every": 6, "spend_fraction": None, "timeout_s": 1.0,
            "max_learned_per_s": 0, **learning}
    return make_config(stub.url, db, models={"grader": model_entry(grader_url, "grader",
                                                                   max_retries=0),
                                             **(models or {})},
                       endpoints={"auto": {"type": "routed", "learning": spec}},
                       **(extra or {}))


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.text = status, headers, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """A few lines of urllib: real HTTP to the server, no extra dependency."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def post(self, path: str, json: Any, token: str | None = None) -> Reply:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base_url + path, data=_dumps(json), method="POST",
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def ask(client: Client, text: str, token: str | None = None) -> Reply:
    r = client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": text}]}, token=token)
    assert r.status_code == 200, r.text
    return r


def wait_for(check: Any, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_labels_land_in_the_store_a_refit_swaps_in_and_feedback_works(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    stub, _grader, grader_url = upstreams
    db = tmp_path / "log.db"
    with serve(config(stub, grader_url, db)) as url:
        client = Client(url)
        first = ask(client, "what is two plus two")
        # Cold start answers with the strongest (dearest) model.
        assert first.json()["model"] == "large"
        rid = first.headers["x-routecast-request-id"]
        for i in range(30):
            ask(client, f"question number {i} about topic {i % 5}")
        labels = wait_for(lambda: rows(db, "SELECT model, quality, source FROM labels")
                          if len(rows(db, "SELECT id FROM labels")) >= 12 else None)
        by_model = {m: {q for mm, q, _ in labels if mm == m} for m, _, _ in labels}
        # The judge's verdicts, as the grader gave them: 0.9 for large, 0.2 for small.
        assert by_model.get("large") == {0.9} and by_model.get("small") == {0.2}
        assert {s for _, _, s in labels} >= {"judge", "shadow"}
        refits = wait_for(lambda: rows(db, "SELECT swapped, router FROM learning_refits"))
        assert any(swapped for swapped, _ in refits)
        spend = rows(db, "SELECT kind, SUM(cost_usd) FROM learning_spend GROUP BY kind")
        assert {k for k, _ in spend} == {"judge", "shadow"} and all(v > 0 for _, v in spend)
        # After the refit the endpoint knows small is bad here... and large is worth it.
        assert ask(client, "question number 99 about topic 1").json()["model"] == "large"

        ok = client.post("/v1/feedback", json={"response_id": rid, "score": 0.0})
        assert ok.status_code == 200, ok.text
        assert ok.json()["model"] == "large"
        fb = wait_for(lambda: rows(db, "SELECT model, quality FROM labels "
                                       "WHERE source = 'feedback'"))
        assert fb == [("large", 0.0)]
        missing = client.post("/v1/feedback", json={"response_id": "rc-nope", "score": 1})
        assert missing.status_code == 404 and "request id" in missing.json()["error"]["message"]
        bad = client.post("/v1/feedback", json={"response_id": rid, "score": 7})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
        # The dashboard's overview shows what the store holds (labels may still be landing).
        before = len(rows(db, "SELECT id FROM labels"))
        live = Http(url).get("/ui/live").text
        after = len(rows(db, "SELECT id FROM labels"))
        shown = re.search(r'class="n labels">(\d+)<', live)
        assert 'id="learning"' in live and shown is not None
        assert before <= int(shown.group(1)) <= after

    data = export_outcomes(db, "auto")
    assert data.sparse and set(data.models) == {"small", "large"}
    assert data.labelled.sum() == len(rows(db, "SELECT DISTINCT prompt, model FROM labels"))
    (stats,) = learning_stats(db)
    assert stats.endpoint == "auto" and stats.by_source["feedback"] == 1
    assert stats.judge_usd > 0 and stats.refits >= 1


@pytest.mark.parametrize("mode", ["fail", "slow"])
def test_a_failing_or_slow_judge_changes_no_answer_and_no_latency(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path, mode: str) -> None:
    stub, grader, grader_url = upstreams
    grader.mode = mode
    db = tmp_path / "log.db"
    with serve(config(stub, grader_url, db)) as url:
        client = Client(url)
        for i in range(8):
            t0 = time.perf_counter()
            r = ask(client, f"tell me about {i}")
            took = time.perf_counter() - t0
            assert r.json()["choices"][0]["message"]["content"] == f"large says: tell me about {i}"
            assert took < 1.0, f"the client waited {took:.2f} s behind the judge"
        wait_for(lambda: grader.calls >= 3)
    assert rows(db, "SELECT id FROM labels") == []


def test_a_sensitive_prompt_is_never_shadowed_to_a_non_local_model(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    stub, _grader, grader_url = upstreams
    db = tmp_path / "log.db"
    local = {"small": {**model_entry(stub.url, "small"), "local": True},
             "grader": {**model_entry(grader_url, "grader", max_retries=0), "local": True}}
    cfg = config(stub, grader_url, db, models=local, max_labels_per_request=4,
                 extra={"privacy": {"patterns": ["email"]}})
    with serve(cfg) as url:
        client = Client(url)
        for i in range(6):
            assert ask(client, f"mail ann{i}@example.com about it").json()["model"] == "small"
            ask(client, f"an ordinary question {i}")
        wait_for(lambda: len(rows(db, "SELECT id FROM labels")) >= 8)
        time.sleep(0.3)  # let shadows still in flight arrive
    to_large = [r.body for r in stub.received if r.body.get("model") == "large"]
    assert to_large and not any("example.com" in json.dumps(b) for b in to_large)
    stored = [p for (p,) in rows(db, "SELECT prompt FROM labels")]
    assert any("[REDACTED:email]" in p for p in stored)
    assert not any("example.com" in p for p in stored)


def test_feedback_needs_the_key_that_asked(upstreams: tuple[StubUpstream, Grader, str],
                                           tmp_path: Path) -> None:
    from routecast.server.keys import add_key

    stub, _grader, grader_url = upstreams
    db = tmp_path / "log.db"
    alice, bob = add_key(db, "alice"), add_key(db, "bob")
    with serve(config(stub, grader_url, db, extra={"auth": {"required": True}})) as url:
        client = Client(url)
        rid = ask(client, "hello there", token=alice).headers["x-routecast-request-id"]
        other = client.post("/v1/feedback", {"response_id": rid, "score": 1}, token=bob)
        assert other.status_code == 403 and other.json()["error"]["code"] == "not_your_response"
        assert client.post("/v1/feedback", {"response_id": rid, "score": 1}).status_code == 401
        mine = client.post("/v1/feedback", {"response_id": rid, "score": 1}, token=alice)
        assert mine.status_code == 200
        assert wait_for(lambda: rows(db, "SELECT client FROM labels WHERE source='feedback'")) \
            == [("alice",)]


def test_a_prior_router_on_public_names_starts_the_endpoint(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    from routecast import Policy, make_router
    from routecast.routers.persist import save_router
    from tests.toy import toy_dataset

    stub, _grader, grader_url = upstreams
    toy = toy_dataset()
    public = toy.select_models(["small", "large"])
    public = type(public)(**{**public.__dict__, "models": ("tiny-public", "huge-public")})
    router = make_router("linear").fit(public.subset("train"))
    save_router(router, tmp_path / "prior", policy=Policy(0.0))
    db = tmp_path / "log.db"
    cfg = make_config(stub.url, db, models={"grader": model_entry(grader_url, "grader")},
                      endpoints={"auto": {
                          "type": "routed", "router": str(tmp_path / "prior"),
                          "model_map": {"tiny-public": "small", "huge-public": "large"},
                          "learning": {"judge": {"model": "grader"}}}})
    hard = next(p for p, t in zip(toy.prompts, toy.task or (), strict=True) if t == "hard")
    with serve(cfg) as url:
        client = Client(url)
        # Before any label: the prior's predictions, under the endpoint's own model names.
        assert ask(client, hard).json()["model"] == "large"


def test_at_most_max_learned_per_s_requests_are_learned_from(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    stub, _, grader_url = upstreams
    db = tmp_path / "log.db"
    with serve(config(stub, grader_url, db, max_learned_per_s=1)) as url:
        client = Client(url)
        t0 = time.monotonic()
        replies = [ask(client, f"burst question {i}") for i in range(12)]
        took = time.monotonic() - t0
        assert all("x-routecast-request-id" in r.headers for r in replies)  # feedback still
        wait_for(lambda: rows(db, "SELECT id FROM labels"))
        time.sleep(0.5)
    learned = rows(db, "SELECT COUNT(DISTINCT response_id) FROM labels")[0][0]
    # A full bucket (1) plus one token per second elapsed.
    assert 1 <= learned <= 2 + int(took)


def test_observe_only_appends_and_the_intake_files_the_request_off_the_path() -> None:
    from routecast.backends.base import Completion, Usage
    from routecast.backends.base import Request as Asked
    from routecast.server.endpoints import build_endpoints
    from routecast.server.learning import LearningService

    cfg = make_config("http://127.0.0.1:9/v1", None, models={"grader": model_entry(
        "http://127.0.0.1:9/v1", "grader")}, endpoints={"auto": {"type": "routed", "learning": {
            "models": ["small", "large"], "judge": {"model": "grader"}, "queue_size": 2}}})
    service = LearningService(cfg, build_endpoints(cfg), None, None)
    asked = Asked({"model": "auto", "messages": [{"role": "user", "content": "what is 2+2?"}]})
    done = Completion({"choices": [{"message": {"content": "4"}}]}, "small", Usage(5, 1), 0.0,
                      0.0, ["small"])
    assert not service.observe("plain", asked, done, None, "r0")  # not a learning endpoint
    for rid in ("r1", "r2", "r3"):
        assert service.observe("auto", asked, done, None, rid)
    # On the request's path: appended as is, nothing extracted or indexed yet; the third
    # request was over queue_size and is counted, not kept.
    assert len(service._inbox) == 2 and not service._responses
    assert service.endpoints["auto"].counters == {"dropped": 1}

    async def drain() -> None:
        await service.start()
        for _ in range(20):
            await asyncio.sleep(0)
        await service.aclose()

    asyncio.run(drain())
    assert not service._inbox
    assert service._responses["r1"] == ("auto", "what is 2+2?", "small", None)
    assert "r2" in service._responses and "r3" not in service._responses


# -- streamed answers ----------------------------------------------------------------------

#: A learning endpoint that judges every served answer and shadows none.
JUDGE_ONLY = {"strategy": "uniform", "shadow_fraction": 0.0}
LONG = "tell me about rivers and seas and mountains and the long winding roads between them"


def stream(client: Client, model: str, text: str) -> tuple[str, str]:
    """A streamed chat answer: (its text, as the client assembled it; its request id)."""
    req = urllib.request.Request(client.base_url + "/v1/chat/completions", method="POST",
                                 data=_dumps({"model": model, "stream": True, "messages": [
                                     {"role": "user", "content": text}]}),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        rid, raw = r.headers["x-routecast-request-id"], r.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    events = list(iter_sse(raw))
    return "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events if e.get("choices")), rid


def judged(db: Path, rid: str) -> list[tuple[Any, ...]]:
    return rows(db, f"SELECT model, quality, source FROM labels WHERE response_id = '{rid}'")


class CountedAnswers:
    """Counts the streamed answers the learning intake assembles (those it learns from)."""

    made = 0

    @classmethod
    def answered(cls, final: Any, seen: list[Any], api: Any) -> Any:
        from routecast.server.stream_answer import answered

        cls.made += 1
        return answered(final, seen, api)


def test_a_streamed_answer_is_judged_on_its_whole_text(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stub, grader, grader_url = upstreams
    monkeypatch.setattr("routecast.server.learning.answered", CountedAnswers.answered)
    CountedAnswers.made = 0
    db = tmp_path / "log.db"
    with serve(config(stub, grader_url, db, **JUDGE_ONLY)) as url:
        client = Client(url)
        # Slow chunks: the answer reaches the server in several reads, not one block.
        stub.then(Step(chunk_delay_s=0.01))
        text, rid = stream(client, "auto", LONG)
        assert text == f"large says: {LONG}"  # cold start: the strongest model
        assert wait_for(lambda: judged(db, rid)) == [("large", 0.9, "judge")]
        # The judge graded the whole answer, as the client received it.
        assert grader.answers == [text]
        assert CountedAnswers.made == 1
        # A stream to an endpoint that does not learn keeps nothing and is never judged.
        plain, plain_rid = stream(client, "small", LONG)
        assert plain == f"small says: {LONG}"
        time.sleep(0.3)
        assert CountedAnswers.made == 1 and judged(db, plain_rid) == []
        assert grader.calls == 1
    (stats,) = learning_stats(db)
    assert stats.by_source == {"judge": 1}


def test_a_stream_the_client_or_the_upstream_cuts_short_is_not_learned_from(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    stub, grader, grader_url = upstreams
    db = tmp_path / "log.db"
    with serve(config(stub, grader_url, db, **JUDGE_ONLY)) as url:
        stub.then(Step(chunk_delay_s=0.05))
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=_dumps(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": LONG}]}),
            headers={"content-type": "application/json"})
        resp = conn.getresponse()
        cut = resp.headers["x-routecast-request-id"]
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        wait_for(lambda: rows(db, "SELECT status FROM requests WHERE stream = 1"))
        # A stream the upstream breaks off midway is not learned from either.
        stub.then(Step(cut_after=3))
        req = urllib.request.Request(url + "/v1/chat/completions", method="POST", data=_dumps(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": LONG}]}),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            broken, events = r.headers["x-routecast-request-id"], list(iter_sse(r.read()))
        assert "error" in events[-1]
        # The same server learns from the next stream, which ends normally.
        text, rid = stream(Client(url), "auto", "a short one")
        assert wait_for(lambda: judged(db, rid)) == [("large", 0.9, "judge")]
        time.sleep(0.2)
    assert judged(db, cut) == judged(db, broken) == [] and grader.answers == [text]
    assert rows(db, "SELECT status FROM requests WHERE stream = 1 ORDER BY ts") == [
        (499,), (502,), (200,)]


def test_the_answer_of_a_stream_is_assembled_from_every_event_of_choice_0() -> None:
    from routecast.backends.base import Chunk, Completion, Usage
    from routecast.server.learning import answer_text
    from routecast.server.stream_answer import answered

    def event(index: int, content: str) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": {"content": content}}]}

    def sse(*events: dict[str, Any]) -> bytes:
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)

    route = ["m"]
    last = event(0, " b")
    chunks = [
        Chunk(event(0, "a"), "m", route),  # a plain chunk: its data
        Chunk(last, "m", route, raw=sse(event(1, "X"), last)),  # a block: every event read
        Chunk(event(0, " c"), "m", route, raw=sse(event(0, " c"))),  # one event: its data
        Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "m", route),
    ]
    final = Completion({}, "m", Usage(3, 4), 0.5, 0.1, route)
    # The final chunk's data is the usage chunk; its raw, what came with the end.
    chunks.append(Chunk({"choices": [], "usage": {}}, "m", route, final,
                        raw=sse(event(0, " d"), event(1, "Y"))))
    whole = answered(final, chunks, "chat")
    assert answer_text(whole.body) == "a b c d"
    assert (whole.model, whole.usage, whole.cost_usd, whole.route) == ("m", Usage(3, 4), 0.5,
                                                                         route)
    assert final.body == {}  # the stream's own summary is left as it was
    text = [Chunk({"choices": [{"index": 0, "text": t}]}, "m", route) for t in ("x", "y")]
    assert answer_text(answered(final, text, "completions").body) == "xy"
    tools = [Chunk({"choices": [{"index": 0, "delta": {"tool_calls": []}}]}, "m", route)]
    assert answer_text(answered(final, tools, "chat").body) is None


def test_a_streamed_answer_is_assembled_by_the_intake_only_when_it_is_learned_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from routecast.backends.base import Chunk, Completion, Usage
    from routecast.backends.base import Request as Asked
    from routecast.server.endpoints import build_endpoints
    from routecast.server.learning import LearningService
    from routecast.server.stream_answer import answered

    cfg = make_config("http://127.0.0.1:9/v1", None, models={"grader": model_entry(
        "http://127.0.0.1:9/v1", "grader")}, endpoints={"auto": {"type": "routed", "learning": {
            "models": ["small", "large"], "judge": {"model": "grader"},
            "max_learned_per_s": 1}}})
    service = LearningService(cfg, build_endpoints(cfg), None, None)
    asked = Asked({"model": "auto", "stream": True,
                   "messages": [{"role": "user", "content": "what is 2+2?"}]})
    route = ["small"]
    chunks = [Chunk({"choices": [{"index": 0, "delta": {"content": t}}]}, "small", route)
              for t in ("it is", " 4")]
    final = Completion({}, "small", Usage(5, 2), 0.0, 0.0, route)
    for rid in ("r1", "r2"):
        assert service.observe("auto", asked, final, None, rid, chunks=chunks)
    # On the request's path: the chunks are handed over as they are, nothing assembled.
    assert [entry[-1] for entry in service._inbox] == [chunks, chunks]
    made: list[str] = []

    def counted(*args: Any) -> Completion:
        made.append("x")
        return answered(*args)

    monkeypatch.setattr("routecast.server.learning.answered", counted)
    service._queue = asyncio.Queue()
    while service._inbox:
        service._admit(*service._inbox.popleft())
    # One token a second: the first request is learned from, on its whole text; the second
    # is over the rate and its answer is never assembled.
    assert made == ["x"] and service._queue.qsize() == 1
    item = service._queue.get_nowait()
    assert (item.answer, item.model, item.response_id) == ("it is 4", "small", "r1")
    assert service.endpoints["auto"].counters == {"over_rate": 1}
    assert final.body == {} and set(service._responses) == {"r1", "r2"}


def test_the_learning_block_sets_the_calibration_mix_swap_tolerance_and_anchor(
        upstreams: tuple[StubUpstream, Grader, str], tmp_path: Path) -> None:
    from routecast.server.learning import make_learner

    stub, _grader, grader_url = upstreams
    cfg = config(stub, grader_url, tmp_path / "log.db", calibration_recent=0,
                 swap_tolerance_se=2.5, anchor_labels=7)
    s = make_learner("auto", cfg.endpoints["auto"], cfg).settings
    assert (s.calibration_recent, s.swap_tolerance_se, s.anchor_labels) == (0, 2.5, 7)
    cfg = config(stub, grader_url, tmp_path / "log2.db")
    s = make_learner("auto", cfg.endpoints["auto"], cfg).settings
    assert (s.calibration_recent, s.swap_tolerance_se, s.anchor_labels) == (100, 1.0, 100)
