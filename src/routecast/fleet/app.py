"""The fleet's HTTP face: an OpenAI-compatible Starlette app over a :class:`Fleet`.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON, or SSE with
``stream: true``; ``stream_options.include_usage`` adds the usage chunk), ``GET /v1/models``
(each model with the price its usage is computed for), ``GET /health``. The request's ``model``
picks the replayed model, or the judge. Errors are OpenAI-shaped:
``{"error": {"message", "type", "param", "code"}}``, 404 ``prompt_not_found`` /
``model_not_found`` / ``response_not_recorded``, 422 ``answer_not_recorded`` (the judge),
400 for a malformed request.

An answer is the recorded text whatever ``max_tokens``, ``temperature``, ``seed`` or ``n``
say (one choice), after the recorded latency times the fleet's speed (a stream spreads it
evenly over its chunks). So cascade signals that resample (``agreement``) always agree, and
``self-verification``'s questions are unknown prompts (404): over a fleet, cascades use the
``confidence`` or ``learned`` signal. ``logprobs`` (chat: ``logprobs: true`` with
``top_logprobs: k``; completions: ``logprobs: k``) are synthesised from the recorded confidence
(:mod:`routecast.fleet.logprobs`) and ``null`` where the data has none. A judge answer's text
is the score, e.g. ``1`` or ``0`` (see :meth:`Fleet.judge`), and its body carries a
``fleet_judge`` object saying which model's answer it recognised and whether noise flipped it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from routecast.backends.base import Request as BackendRequest
from routecast.backends.routed import routing_text
from routecast.errors import RequestError
from routecast.fleet.judge import read_chat, read_prompt
from routecast.fleet.logprobs import (
    chat_entry,
    chat_logprobs,
    completion_logprobs,
    pieces,
    token_logprob,
)
from routecast.fleet.replay import Answer, Fleet, Verdict
from routecast.server.wire import DONE, check_chat, check_completions, dumps, error_body, parse_json

#: The most messages a fleet request may carry (a judge conversation is short).
_MAX_MESSAGES = 4096


def _json(data: Mapping[str, Any], status: int = 200) -> Response:
    return Response(dumps(data), status, media_type="application/json")


def _error(e: RequestError) -> Response:
    return _json(error_body(str(e), e.status, param=e.param, code=e.code), e.status)


def _sse(data: Mapping[str, Any]) -> bytes:
    return b"data: " + dumps(data) + b"\n\n"


class FleetApp:
    """Request handlers over one :class:`Fleet`; :attr:`app` is the ASGI app."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                    Route("/v1/completions", self.completions, methods=["POST"]),
                    Route("/v1/models", self.list_models, methods=["GET"]),
                    Route("/health", self.health, methods=["GET"])],
            exception_handlers={HTTPException: self._http_error})

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = (f"no route {request.method} {request.url.path} on the fleet; it serves "
                   "POST /v1/chat/completions, POST /v1/completions, GET /v1/models")
        return _json(error_body(message, status, code="not_found"), status)

    async def list_models(self, request: Request) -> Response:
        return _json({"object": "list", "data": self.fleet.model_cards()})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(self.fleet.models),
                             "prompts": self.fleet.n_prompts})

    async def chat(self, request: Request) -> Response:
        return await self._handle(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, "completions")

    async def _handle(self, request: Request, api: str) -> Response:
        try:
            body = parse_json(await request.body())
            model = (check_chat(body, _MAX_MESSAGES) if api == "chat"
                     else check_completions(body))
            if model == self.fleet.judge_model:
                return await self._judge(body, api)
            text = routing_text(BackendRequest(body, "chat" if api == "chat" else
                                               "completions"), "last_user")
            answer = self.fleet.answer(model, text)
        except RequestError as e:
            return _error(e)
        if body.get("stream"):
            return StreamingResponse(self._stream(body, api, answer),
                                     media_type="text/event-stream")
        if answer.latency_s > 0:
            await asyncio.sleep(answer.latency_s)
        return _json(self._body(body, api, answer))

    # -- plain answers -----------------------------------------------------------------------

    def _usage(self, prompt: int, completion: int, cost: float) -> dict[str, Any]:
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "cost_usd": cost}

    def _head(self, api: str, model: str, stream: bool) -> dict[str, Any]:
        kind = {("chat", False): "chat.completion", ("chat", True): "chat.completion.chunk"}
        prefix = "chatcmpl" if api == "chat" else "cmpl"
        return {"id": f"{prefix}-fleet-{next(self._ids)}",
                "object": kind.get((api, stream), "text_completion"),
                "created": int(time.time()), "model": model}

    def _logprobs(self, body: Mapping[str, Any], api: str, answer: Answer,
                  parts: list[str]) -> tuple[bool, float | None, int]:
        """(asked for log-probs, the token log-prob or None, top alternatives asked)."""
        if api == "chat":
            asked = body.get("logprobs") is True
            top = body.get("top_logprobs")
        else:
            raw = body.get("logprobs")
            asked = isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0
            top = raw
        k = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0
        if not asked or answer.confidence is None:
            return asked, None, k
        return asked, token_logprob(answer.confidence, len(parts)), k

    def _body(self, body: Mapping[str, Any], api: str, answer: Answer) -> dict[str, Any]:
        parts = pieces(answer.text)
        asked, lp, top = self._logprobs(body, api, answer, parts)
        choice: dict[str, Any]
        if api == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": answer.text},
                      "finish_reason": "stop"}
            if asked:
                choice["logprobs"] = None if lp is None else chat_logprobs(parts, lp, top)
        else:
            choice = {"index": 0, "text": answer.text, "finish_reason": "stop",
                      "logprobs": None if lp is None else completion_logprobs(parts, lp, top)}
        return {**self._head(api, answer.model, False), "choices": [choice],
                "usage": self._usage(answer.prompt_tokens, answer.completion_tokens,
                                     answer.cost_usd),
                "system_fingerprint": "routecast-fleet"}

    # -- streams -----------------------------------------------------------------------------

    async def _stream(self, body: Mapping[str, Any], api: str, answer: Answer
                      ) -> AsyncIterator[bytes]:
        parts = pieces(answer.text)
        asked, lp, top = self._logprobs(body, api, answer, parts)
        head = self._head(api, answer.model, True)
        pause = answer.latency_s / len(parts)
        at = 0
        for i, part in enumerate(parts):
            if pause > 0:
                await asyncio.sleep(pause)
            finish = "stop" if i == len(parts) - 1 else None
            choice: dict[str, Any]
            if api == "chat":
                delta = {"role": "assistant", "content": part} if i == 0 else {"content": part}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                if asked:
                    choice["logprobs"] = (None if lp is None else
                                          {"content": [chat_entry(part, lp, top)]})
            else:
                choice = {"index": 0, "text": part, "finish_reason": finish,
                          "logprobs": None if lp is None else
                          completion_logprobs([part], lp, top, offset=at)}
            at += len(part)
            yield _sse({**head, "choices": [choice]})
        options = body.get("stream_options")
        if isinstance(options, Mapping) and options.get("include_usage"):
            yield _sse({**head, "choices": [],
                        "usage": self._usage(answer.prompt_tokens, answer.completion_tokens,
                                             answer.cost_usd)})
        yield DONE

    # -- the judge ---------------------------------------------------------------------------

    async def _judge(self, body: Mapping[str, Any], api: str) -> Response:
        if api == "chat":
            messages = body["messages"]
            ask = read_chat(messages)
            read = "\n".join(str(m.get("content") or "") for m in messages)
        else:
            prompt = body["prompt"]
            read = prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))
            ask = read_prompt(read)
        verdict = self.fleet.judge(ask)
        text = f"{verdict.score:g}"
        p, c, cost = self.fleet.judge_usage(read, text)
        extra = _verdict_info(verdict)
        usage = self._usage(p, c, cost)
        if body.get("stream"):
            return StreamingResponse(self._judge_stream(body, api, text, usage, extra),
                                     media_type="text/event-stream")
        head = self._head(api, self.fleet.judge_model, False)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"} if api == "chat"
            else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
        return _json({**head, "choices": [choice], "usage": usage, "fleet_judge": extra})

    async def _judge_stream(self, body: Mapping[str, Any], api: str, text: str,
                            usage: dict[str, Any], extra: dict[str, Any]
                            ) -> AsyncIterator[bytes]:
        head = self._head(api, self.fleet.judge_model, True)
        choice: dict[str, Any] = (
            {"index": 0, "delta": {"role": "assistant", "content": text},
             "finish_reason": "stop"} if api == "chat"
            else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
        yield _sse({**head, "choices": [choice], "fleet_judge": extra})
        options = body.get("stream_options")
        if isinstance(options, Mapping) and options.get("include_usage"):
            yield _sse({**head, "choices": [], "usage": usage})
        yield DONE


def _verdict_info(v: Verdict) -> dict[str, Any]:
    return {"score": v.score, "quality": v.quality, "models": list(v.models),
            "prompt_id": v.prompt_id, "matched": v.matched, "flipped": v.flipped}


def create_fleet_app(fleet: Fleet) -> Starlette:
    """The ASGI app serving ``fleet``."""
    return FleetApp(fleet).app

