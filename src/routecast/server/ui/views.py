"""The dashboard's pages: server-rendered HTML (Jinja2 templates), SVG charts, one small script.

Pages (all read-only, ``GET`` unless noted):

=========================== =========================================================
``/ui``                     overview: traffic, spend, saving, model mix, latency over
                            time, circuit breakers; refreshes itself every
                            ``ui.refresh_s`` seconds (``/ui/live`` is the part it reloads)
``/ui/requests``            the latest requests, filtered by endpoint, model, key, status
``/ui/requests/{id}``       one request's story: route, each step, the router's estimates,
                            the policy's trade-off, cost and latency, the headers sent
``/ui/whatif`` (+ POST)     what every endpoint would do with a prompt, calling no model
``/ui/routers``             a card per routed and cascade endpoint: its saved cost-quality
                            curve, the calibrated point and the live one
``/ui/keys``                client keys: spend against budget, rate limits, revoked keys
``/v1/routecast/requests/{id}``  the story as JSON
=========================== =========================================================

Access: with ``auth.required`` every page needs a client key named in ``ui.admin_keys``, sent as
``Authorization: Bearer`` or through the login form (``/ui/login`` keeps it in an HttpOnly,
SameSite=Strict cookie scoped to ``/ui``); any other key gets 403. Without ``auth.required`` the
dashboard is open to whoever can reach the port, like the API itself. Prompts appear only when
the log keeps them (``storage.log_prompts``), as stored (redacted by the privacy rule when
``privacy.redact_log`` is on).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from routecast.backends.cascade import CascadeBackend
from routecast.backends.openai_http import OpenAIHTTPBackend
from routecast.backends.routed import RoutedBackend
from routecast.errors import RequestError
from routecast.explain import explain, mixed_reason
from routecast.server.asgi import json_response
from routecast.server.ui import queries, svg
from routecast.server.ui.whatif import what_if
from routecast.server.wire import error_body

if TYPE_CHECKING:
    from jinja2 import Environment

    from routecast.server.app import RoutecastServer

COOKIE = "routecast_ui"
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_MAX_PROMPT_CHARS = 20_000


class Dashboard:
    """The ``/ui`` pages of one server; reads the server's live state and its request log."""

    def __init__(self, server: RoutecastServer) -> None:
        self.server = server
        self._env: Environment | None = None
        self._static: dict[str, bytes] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/ui", self.overview, methods=["GET"]),
            Route("/ui/live", self.live, methods=["GET"]),
            Route("/ui/requests", self.requests, methods=["GET"]),
            Route("/ui/requests/{request_id}", self.story, methods=["GET"]),
            Route("/v1/routecast/requests/{request_id}", self.story_json, methods=["GET"]),
            Route("/ui/whatif", self.whatif, methods=["GET", "POST"]),
            Route("/ui/routers", self.routers, methods=["GET"]),
            Route("/ui/keys", self.keys, methods=["GET"]),
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/logout", self.logout, methods=["GET"]),
            Route("/ui/static/{name}", self.static, methods=["GET"]),
        ]

    # -- access ----------------------------------------------------------------------------

    async def _denied(self, request: Request, *, page: bool = True) -> Response | None:
        """``None`` when the caller may see the dashboard, else the response to send."""
        server = self.server
        if not server.config.auth.required or server.keys is None:
            return None
        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if not header and not cookie:
            if page:
                return RedirectResponse("/ui/login", status_code=303)
            return json_response(error_body("the dashboard needs an admin key: send "
                                            "`Authorization: Bearer <key>`", 401,
                                            code="missing_api_key"), 401)
        try:
            key = await server.keys.authenticate(header or f"Bearer {cookie}")
        except RequestError as e:
            if page and not header:
                return RedirectResponse("/ui/login?failed=1", status_code=303)
            return json_response(error_body(str(e), 401, code=e.code), 401)
        if key.name not in server.config.ui.admin_keys:
            message = (f"the key {key.name!r} is not an admin key of this dashboard; list it "
                       "in ui.admin_keys")
            if page:
                return self._render("denied.html", {"message": message}, status=403)
            return json_response(error_body(message, 403, code="not_admin"), 403)
        return None

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
            token = (form.get("key") or [""])[0].strip()
            response = RedirectResponse("/ui", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui")
            return response
        return self._render("login.html", {"failed": "failed" in request.query_params,
                                           "open": not self.server.config.auth.required})

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    # -- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        context = await self._live_context(request)
        context["refresh_s"] = self.server.config.ui.refresh_s
        return self._render("overview.html", context)

    async def live(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        return self._render("live.html", await self._live_context(request))

    async def _live_context(self, request: Request) -> dict[str, Any]:
        window = _window(request.query_params.get("window"))
        data = await asyncio.to_thread(queries.overview, self._db(), window)
        chart = svg.time_chart(
            {f"p{q}": [(p.t, getattr(p, f"p{q}_ms")) for p in data.series] for q in (50, 95, 99)},
            title="latency over time (ms)", y_label="ms")
        traffic = svg.time_chart(
            {"requests": [(p.t, float(p.requests)) for p in data.series],
             "errors": [(p.t, float(p.errors)) for p in data.series]},
            title="requests per bucket", y_label="requests", height=160)
        learning = (await asyncio.to_thread(queries.learning, self._db())
                    if getattr(self.server, "learning", None) is not None else [])
        return {"o": data, "latency_chart": chart, "traffic_chart": traffic,
                "breakers": self._breakers(), "window": window, "learning": learning,
                "logged": self._logged()}

    def _breakers(self) -> list[dict[str, Any]]:
        out = []
        for backend in self.server.table.members:
            if isinstance(backend, OpenAIHTTPBackend):
                breaker = backend.breaker
                out.append({"model": backend.model, "state": breaker.state,
                            "opened_total": breaker.opened_total})
        return out

    async def requests(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        params = request.query_params
        filters = queries.Filters(params.get("endpoint", ""), params.get("model", ""),
                                  params.get("key", ""), params.get("status", ""))
        rows, menus = await asyncio.gather(
            asyncio.to_thread(queries.recent, self._db(), filters, 200),
            asyncio.to_thread(queries.choices, self._db()))
        return self._render("requests.html", {"rows": rows, "f": filters, "menus": menus})

    async def story(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        story = await self._story(request.path_params["request_id"])
        if story is None:
            return self._render("denied.html", {"message": "no request with that id in the "
                                                "log (ids are in the x-routecast-request-id "
                                                "header)"}, status=404)
        return self._render("request.html", story)

    async def story_json(self, request: Request) -> Response:
        if (denied := await self._denied(request, page=False)) is not None:
            return denied
        story = await self._story(request.path_params["request_id"])
        if story is None:
            return json_response(error_body(
                f"no request {request.path_params['request_id']!r} in the log", 404,
                param="request_id", code="request_not_found"), 404)
        req = dict(story["r"])
        if not self.server.log_prompts:
            req.pop("prompt", None)
        return json_response({"request": req, "headers": story["headers"],
                              "why": story["why"]})

    async def _story(self, request_id: str) -> dict[str, Any] | None:
        req = await asyncio.to_thread(queries.request, self._db(), request_id)
        if req is None:
            return None
        trace = req["trace"] or {}
        why: list[str] = []
        estimates = trace.get("estimates")
        if estimates and trace.get("chosen") in estimates:
            models = tuple(estimates)
            quality = [float(estimates[m]) for m in models]
            cost = [float((trace.get("costs") or {}).get(m, 0.0)) for m in models]
            weight = trace.get("cost_weight")
            w = math.inf if weight is None else float(weight)
            why = (explain(models, quality, cost, w, models.index(trace["chosen"]))
                   if not trace.get("policy") else [mixed_reason(trace["policy"],
                                                                trace["chosen"])])
        return {"r": req, "trace": trace, "why": why,
                "headers": queries.client_headers(req), "log_prompts": self.server.log_prompts,
                "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(req["ts"]))}

    async def whatif(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        prompt, answers, error = "", None, None
        if request.method == "POST":
            form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
            prompt = (form.get("prompt") or [""])[0][:_MAX_PROMPT_CHARS]
            if not prompt.strip():
                error = "type a prompt first"
            else:
                answers = [w.as_dict() for w in what_if(self.server.table.backends, prompt)]
        if request.query_params.get("format") == "json" and answers is not None:
            return json_response({"prompt": prompt, "endpoints": answers})
        return self._render("whatif.html", {"prompt": prompt, "answers": answers,
                                            "error": error})

    async def routers(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        cards = []
        for name, backend in self.server.table.backends.items():
            if isinstance(backend, RoutedBackend | CascadeBackend):
                cards.append(await self._card(name, backend))
        return self._render("routers.html", {"cards": cards})

    async def _card(self, name: str, backend: RoutedBackend | CascadeBackend) -> dict[str, Any]:
        spec = self.server.config.endpoints.get(name)
        record = _saved_record(spec)
        live = await asyncio.to_thread(queries.live_point, self._db(), name)
        curves: dict[str, list[tuple[float, float]]] = {}
        points: dict[str, tuple[float, float]] = {}
        if record.get("curve"):
            curves["saved curve (calibration data)"] = [(float(c), float(q))
                                                        for c, q in record["curve"]]
        for m in record.get("models") or []:
            points[m["name"]] = (float(m["cost_usd"]), float(m["quality"]))
        calibrated = record.get("realised") or record.get("validation")
        if calibrated:
            points["calibrated"] = (float(calibrated["cost_usd"]), float(calibrated["quality"]))
        if live and live["estimated_quality"] is not None:
            points["live (estimated quality)"] = (live["cost_usd"], live["estimated_quality"])
        kind = "routed" if isinstance(backend, RoutedBackend) else "cascade"
        chart = svg.curve_chart(curves, points, title=f"{name}: cost and quality")
        return {"name": name, "kind": kind, "chart": chart, "record": record, "live": live,
                "models": list(backend.models),
                "describe": (backend.cascade.describe() if isinstance(backend, CascadeBackend)
                             else f"{backend.router.name} router, cost weight "
                                  f"{backend.policy.cost_weight:.4g}")}

    async def keys(self, request: Request) -> Response:
        if (denied := await self._denied(request)) is not None:
            return denied
        store = self.server.keys
        rows: list[dict[str, Any]] = []
        if store is not None:
            for key in sorted(store.keys.values(), key=lambda k: k.name):
                rows.append({"name": key.name, "id": key.id, "budget_usd": key.budget_usd,
                             "spent_usd": key.spent_usd, "rpm": key.rpm,
                             "revoked": key.revoked, "in_flight": key.in_flight,
                             "admin": key.name in self.server.config.ui.admin_keys})
        return self._render("keys.html", {"rows": rows, "keys_on": store is not None})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        suffix = Path(name).suffix
        if suffix not in _STATIC_TYPES or "/" in name:
            return Response("not found", status_code=404)
        body = self._static.get(name)
        if body is None:
            try:
                body = (resources.files("routecast.server.ui") / "static" / name).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                return Response("not found", status_code=404)
            self._static[name] = body
        return Response(body, media_type=_STATIC_TYPES[suffix],
                        headers={"cache-control": "max-age=3600"})

    # -- helpers ---------------------------------------------------------------------------

    def _db(self) -> queries.Source:
        """The server's database (once its request log has started), else a path that is
        never a file (nothing logged)."""
        log = self.server.request_log
        if log is not None and log.db is not None:
            return log.db
        return (log.path if log is not None and log.path is not None
                else Path("/nonexistent/routecast.db"))

    def _logged(self) -> bool:
        db = self._db()
        return not isinstance(db, Path) or db.is_file()

    def _render(self, template: str, context: dict[str, Any], status: int = 200
                ) -> HTMLResponse:
        if self._env is None:
            from jinja2 import Environment, PackageLoader, select_autoescape

            env = Environment(loader=PackageLoader("routecast.server.ui", "templates"),
                              autoescape=select_autoescape(["html"]))
            env.filters["usd"] = _usd
            env.filters["ms"] = lambda v: "-" if v is None else f"{v:.1f}"
            env.filters["pct"] = lambda v: "-" if v is None else f"{v:.1%}"
            env.filters["num"] = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
            env.filters["when"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t))
            env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, sort_keys=True)
            self._env = env
        page = self._env.get_template(template).render(
            auth=self.server.config.auth.required, **context)
        return HTMLResponse(page, status_code=status)


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if abs(value) >= 0.01 else f"${value:.3g}"


def _window(raw: str | None) -> float:
    """The overview's window in seconds (``?window=``), 60 s to a week; an hour by default."""
    try:
        value = float(raw) if raw else 3600.0
    except ValueError:
        value = 3600.0
    return min(max(value, 60.0), 7 * 86400.0) if math.isfinite(value) else 3600.0


def _saved_record(spec: Any) -> dict[str, Any]:
    """The calibration record saved with a routed endpoint's router (``routecast calibrate``)
    or the tuning record of a cascade file (``routecast tune-cascade``); ``{}`` when none."""
    path: Path | None = None
    key = "calibration"
    if spec is not None and getattr(spec, "router", None) is not None:
        path = Path(spec.router) / "router.json"
    elif spec is not None and getattr(spec, "file", None) is not None:
        file = Path(spec.file)
        path, key = (file / "cascade.json" if file.is_dir() else file), "tuning"
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if key == "calibration":
        data = (data.get("policy") or {}) if isinstance(data, dict) else {}
    record = data.get(key) if isinstance(data, dict) else None
    return record if isinstance(record, dict) else {}
