"""The dashboard's web server: the page, the JSON API under /api/, and /metrics.

Every endpoint reads the controller's database through the functions the CLI uses
(`repo.job_view`, `repo.get_view`, `api.read_attempt_log`, `ckpt.snapshot_rows`, ...), so
`GET /api/jobs` is `spotrun jobs --json` a page at a time and `GET /api/jobs/ID` is
`spotrun status ID --json`. Actions only record what the user wants, as the CLI's do; the
controller acts on them.

Guarding: on loopback only `Host: 127.0.0.1 / localhost` is served (a web page elsewhere
cannot reach it by DNS rebinding); with a token every request needs it (a bearer header, or a
cookie holding an HMAC of it, set by opening `/?token=...` once). Actions need the
`X-Spotrun-Action` header, which a cross-site form or image can never send.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from spotrun.controller import repo
from spotrun.controller.db import Database, DatabaseError
from spotrun.controller.models import JobStatus
from spotrun.dashboard import views
from spotrun.dashboard.metrics import make_registry

STATIC = Path(__file__).parent / "static"
ACTION_HEADER = "x-spotrun-action"
COOKIE = "spotrun_dashboard"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
INTERRUPTIBLE = ("local", "sim")  # providers whose market can reclaim on request
MAX_LOG_CHARS = 256 * 1024
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class BadRequest(ValueError):
    pass


class NotFound(LookupError):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int(request: Request, name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a whole number") from None
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{name}={value} is out of range ({lo}..{hi if hi is not None else ''})")
    return value


def _loopback_host(header: str) -> bool:
    try:
        return urlsplit(f"//{header}").hostname in LOOPBACK_HOSTS
    except ValueError:  # not even a host name
        return False


class Guard:
    """Host, token and action header checks, and security headers, in front of every route."""

    def __init__(self, app: ASGIApp, token: str | None, loopback: bool):
        self.app = app
        self.token = token
        self.loopback = loopback
        self.cookie = hmac.new(token.encode(), b"spotrun-dashboard", hashlib.sha256).hexdigest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.loopback and not _loopback_host(request.headers.get("host", "")):
            await _error(400, "this dashboard answers only to 127.0.0.1 / localhost")(scope, receive, send)
            return
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and request.method == "GET" and hmac.compare_digest(given.encode(), self.token.encode()):
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(COOKIE, self.cookie, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
            if not self._authorized(request):
                await _error(401, "this dashboard needs its token: open /?token=YOUR_TOKEN once in the browser, "
                                  "or send `Authorization: Bearer YOUR_TOKEN`")(scope, receive, send)
                return
        if request.method not in ("GET", "HEAD") and request.headers.get(ACTION_HEADER) != "1":
            await _error(403, f"actions need the header `{ACTION_HEADER}: 1` (it keeps other sites from posting here)")(
                scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, with_headers)

    def _authorized(self, request: Request) -> bool:
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and hmac.compare_digest(bearer[7:].strip().encode(), self.token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.cookie.encode())


class Dashboard:
    """The endpoints, sharing one database handle and one metrics registry."""

    def __init__(self, db: Database):
        self.db = db
        self.registry, self.snapshots = make_registry(db)

    def routes(self) -> list:
        page = self.page
        return [
            Route("/", page), Route("/jobs/{ref}", page), Route("/fleet", page),
            Route("/metrics", self.metrics),
            Route("/api/jobs", self.jobs),
            Route("/api/summary", self.summary),
            Route("/api/fleet", self.fleet),
            Route("/api/controller", self.controller),
            Route("/api/jobs/{ref}", self.job),
            Route("/api/jobs/{ref}/progress", self.progress),
            Route("/api/jobs/{ref}/snapshots", self.job_snapshots),
            Route("/api/jobs/{ref}/logs", self.logs),
            Route("/api/jobs/{ref}/{action:str}", self.act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]

    # --- pages and metrics -------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def metrics(self, request: Request) -> Response:
        await self.snapshots.refresh()
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # --- the API -------------------------------------------------------------------------

    def jobs(self, request: Request) -> Response:
        """`spotrun jobs --json`, a page at a time: X-Total-Count and a Link to the next page."""
        limit = _int(request, "limit", 100, 1, views.MAX_PAGE)
        offset = _int(request, "offset", 0)
        states = [s for s in request.query_params.getlist("state") for s in s.upper().split(",") if s]
        unknown = sorted(set(states) - {s.value for s in JobStatus})
        if unknown:
            raise BadRequest(f"state={','.join(unknown)} is not a job state (use {', '.join(s.value for s in JobStatus)})")
        order = request.query_params.get("order", "newest")
        if order not in ("newest", "oldest"):
            raise BadRequest(f"order={order!r}: use newest or oldest")
        rows, total = views.page_views(
            self.db, states=states or None, q=request.query_params.get("q") or None,
            provider=request.query_params.get("provider") or None, offset=offset, limit=limit,
            newest_first=order == "newest",
        )
        headers = {"x-total-count": str(total)}
        if offset + limit < total:
            nxt = urlencode([*((k, v) for k, v in request.query_params.multi_items() if k != "offset"), ("offset", offset + limit)])
            headers["link"] = f'<{request.url.path}?{nxt}>; rel="next"'
        return JSONResponse(rows, headers=headers)

    def summary(self, request: Request) -> Response:
        from spotrun.cli.jobs import controller_view

        return JSONResponse({"states": views.state_counts(self.db), "controller": controller_view(self.db),
                             "interruptible": list(INTERRUPTIBLE)})

    def controller(self, request: Request) -> Response:
        """`spotrun controller status --json`."""
        from spotrun.cli.jobs import controller_view

        return JSONResponse(controller_view(self.db))

    def fleet(self, request: Request) -> Response:
        return JSONResponse(views.fleet_view(self.db, buckets=_int(request, "buckets", 24, 1, 500)))

    def job(self, request: Request) -> Response:
        """`spotrun status REF --json`."""
        return JSONResponse(repo.get_view(self.db, request.path_params["ref"]))

    def progress(self, request: Request) -> Response:
        return JSONResponse(views.job_progress(self.db, request.path_params["ref"]))

    async def job_snapshots(self, request: Request) -> Response:
        """`spotrun ckpt ls STORE --job ID --json` for the job's own store."""
        from spotrun.cli.ckpt import snapshot_rows
        from spotrun.store import Store, StoreError

        def where() -> tuple[str, str | None]:
            with self.db.session() as s:
                job = repo.find_job(s, request.path_params["ref"])
                return job.id, views.store_url(job.spec)

        job_id, url = await run_in_threadpool(where)
        if url is None:
            return JSONResponse({"store": None, "snapshots": [], "note": "this job keeps no checkpoints"})
        try:
            rows = await snapshot_rows(Store.open(url), job_id)
        except StoreError as exc:
            return JSONResponse({"store": url, "snapshots": [], "note": str(exc)})
        return JSONResponse({"store": url, "snapshots": rows, "note": None if rows else "no snapshot yet"})

    def logs(self, request: Request) -> Response:
        """New text of one attempt's log from `offset` (characters): the page follows a log by
        asking again from `next_offset`. The first look at a long log starts at its tail."""
        from spotrun.controller.api import read_attempt_log

        offset = _int(request, "offset", 0)
        with self.db.session() as s:
            job = repo.find_job(s, request.path_params["ref"])
            launched = [(a.number, a.instance_log, a.ended_at) for a in repo.attempts_of(s, job.id) if a.instance_id]
            status = job.status
        numbers = [n for n, _, _ in launched]
        if not launched:
            return JSONResponse({"id": job.id, "attempt": None, "attempts": [], "offset": 0, "next_offset": 0,
                                 "text": "", "truncated": False, "live": False, "status": status})
        attempt = _int(request, "attempt", numbers[-1], 1)
        chosen = next((a for a in launched if a[0] == attempt), None)
        if chosen is None:
            raise NotFound(f"job {job.id} has no attempt {attempt} (it has: {', '.join(map(str, numbers))})")
        text = read_attempt_log(job.id, attempt, chosen[1])
        start, truncated = (0 if offset > len(text) else offset), False
        if start == 0 and len(text) > MAX_LOG_CHARS:
            start, truncated = len(text) - MAX_LOG_CHARS, True
        chunk = text[start:start + MAX_LOG_CHARS]
        return JSONResponse({
            "id": job.id, "attempt": attempt, "attempts": numbers, "offset": start, "next_offset": start + len(chunk),
            "text": chunk, "truncated": truncated, "live": chosen[2] is None, "status": status,
        })

    async def act(self, request: Request) -> Response:
        from spotrun.cli.jobs import interrupt_job
        from spotrun.controller.service import start_daemon
        from spotrun.durations import parse_duration

        ref, action = request.path_params["ref"], request.path_params["action"]
        body: dict[str, Any] = {}
        if await request.body():
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("the request body is not JSON") from None
        if action == "cancel":
            job_id = await run_in_threadpool(repo.request_cancel, self.db, ref)
        elif action == "resume":
            job_id = await run_in_threadpool(repo.request_resume, self.db, ref)
        elif action == "interrupt":
            lead = body.get("lead_time")
            try:
                lead_s = None if lead in (None, "") else parse_duration(lead)
            except ValueError as exc:
                raise BadRequest(f"lead_time: {exc}") from None
            sent = await run_in_threadpool(interrupt_job, self.db, ref, lead_s)
            return JSONResponse({"action": action, **sent})
        else:
            return _error(404, f"no action {action!r}: use cancel, resume or interrupt")
        # The status the request left, read before the controller can move it on (a reply that
        # depended on how fast the controller picked the job up would say different things).
        view = await run_in_threadpool(repo.get_view, self.db, job_id, False)
        await run_in_threadpool(start_daemon)  # as `spotrun cancel/resume`: someone must act on it
        return JSONResponse({"action": action, "id": job_id, "status": view["status"]})


def _exception_handlers() -> dict:
    from spotrun.controller.service import ControllerError
    from spotrun.store import StoreError

    def handler(status: int):
        async def handle(request: Request, exc: Exception) -> Response:
            return _error(status, str(exc).strip("'\""))

        return handle

    return {
        BadRequest: handler(400), repo.JobNotFound: handler(404), NotFound: handler(404),
        repo.JobStateError: handler(409),
        DatabaseError: handler(503), ControllerError: handler(503), StoreError: handler(502),
    }


def create_app(db_url: str | None = None, *, token: str | None = None, loopback: bool = True) -> Starlette:
    """The dashboard app; `loopback` serves only loopback Host names, `token` guards everything."""
    dashboard = Dashboard(Database(db_url))
    middleware = [Middleware(Guard, token=token, loopback=loopback)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.db.close()

    return Starlette(
        routes=dashboard.routes(), middleware=middleware, exception_handlers=_exception_handlers(), lifespan=lifespan,
    )
