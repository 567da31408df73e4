"""The dashboard as a Starlette app: one page, a JSON state endpoint, six POST actions.

    GET  /                      the page (sets the CSRF cookie); ?offset=N&name=TEXT&error=TEXT
                                page and filter the failed jobs
    GET  /api/state             the snapshot as JSON (?minutes=60 .. 1440 of throughput, and the
                                failed jobs' offset, name and error as for /)
    GET  /job?queue=Q&id=ID     one job: record, last error, runs in the event stream, its flow
    GET  /api/job?queue=Q&id=ID the same as JSON
    GET  /queue?queue=Q         one queue's ready, delayed and waiting jobs (&ready=N&delayed=N
                                &waiting=N: offsets)
    GET  /api/queue?queue=Q     the same as JSON
    POST /api/failed/retry      queue, id: run a failed job again with fresh attempts
    POST /api/failed/forget     queue, id: delete a failed job
    POST /api/failed/retry-all  queue: run every failed job of a queue again
    POST /api/abort             queue, id: abort a job not yet ended (it ends failed, "aborted")
    POST /api/queue/pause       queue: pause a known queue (and its shards): no job of it starts
    POST /api/queue/resume      queue: resume it
    GET  /static/<file>         dashboard.js, dashboard.css

POST bodies are form-encoded or JSON. An action answers JSON when the request accepts it,
else redirects back to the page (so the buttons work without JavaScript).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson

from ..context import current_engine
from ..engine import RedisEngine
from ..errors import ConfigurationError, EngineError, InvalidJobId, InvalidQueueName
from ..flow import unknown_queues
from ..keys import validate_job_id, validate_queue
from . import auth, page
from .data import FailedQuery, job_view, queue_view, snapshot

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "the dashboard needs the 'dashboard' extra: pip install 'aiojobs-redis[dashboard]'"
    ) from None

log = logging.getLogger(__name__)

EngineSource = RedisEngine | Callable[[], RedisEngine] | None
MAX_BODY = 16 * 1024
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True, slots=True)
class Options:
    access: auth.Access
    show_payloads: bool
    read_only: bool
    refresh_seconds: float
    title: str


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Guard:
    """ASGI middleware: the Host check, authentication, the ?token= login, security headers."""

    def __init__(self, app: ASGIApp, access: auth.Access, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.access = access
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        response = self._refusal(request)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        if self.allowed_hosts is not None and not auth.host_allowed(request.headers, self.allowed_hosts):
            # Another name for this address: a DNS rebinding page must not read or act here.
            return PlainTextResponse("unknown host", status_code=400)
        access = self.access
        if not access.required or access.allows(request.headers, request.cookies):
            return None
        given = request.query_params.get("token")
        if request.method == "GET" and given is not None and access.token_matches(given):
            # Log in once: a session cookie, then the same URL without the token.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            target = request.url.path + (f"?{query}" if query else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                auth.SESSION_COOKIE,
                access.session_value(),
                path=_cookie_path(request),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        headers = {"www-authenticate": 'Basic realm="aiojobs-redis", charset="UTF-8"'} if access.basic else {}
        return PlainTextResponse("authentication required", status_code=401, headers=headers)


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_path(request: Request) -> str:
    return _base(request) + "/"


_FILTER_MAX = 200  # characters of a failed-jobs filter


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, str(default)))
    except ValueError:
        return default


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


class Dashboard:
    """The endpoints; the engine is looked up per request (see create_app)."""

    def __init__(self, engine: EngineSource, options: Options) -> None:
        self._engine_source = engine
        self.options = options
        package = resources.files(__package__) / "static"
        self._static = {name: (package / name).read_bytes() for name in STATIC}

    def engine(self) -> RedisEngine:
        source = self._engine_source
        engine: object = source if isinstance(source, RedisEngine) else (source or current_engine)()
        if not isinstance(engine, RedisEngine):
            raise ConfigurationError("the dashboard needs the Redis engine (JOB_ENGINE=redis)")
        return engine

    def _minutes(self, request: Request) -> int:
        return max(1, min(1440, _int_param(request, "minutes", 60)))

    async def _snapshot(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        failed = FailedQuery(
            offset=max(0, _int_param(request, "offset", 0)),
            name=params.get("name", "")[:_FILTER_MAX],
            error=params.get("error", "")[:_FILTER_MAX],
        )
        return await snapshot(
            self.engine(),
            minutes=self._minutes(request),
            failed=failed,
            show_payloads=self.options.show_payloads,
        )

    async def page(self, request: Request) -> Response:
        try:
            state = await self._snapshot(request)
        except (EngineError, ConfigurationError) as exc:
            return PlainTextResponse(f"cannot read the job server: {exc}", status_code=503)
        chrome = self._chrome(request)
        html = page.render(state, refresh_seconds=self.options.refresh_seconds, **chrome)
        return self._html(request, html, chrome["csrf"])

    async def state(self, request: Request) -> Response:
        try:
            return JSONResponse(await self._snapshot(request))
        except (EngineError, ConfigurationError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    async def _job(self, request: Request) -> dict[str, Any] | Response:
        try:
            queue = validate_queue(request.query_params.get("queue"))
            job_id = validate_job_id(request.query_params.get("id"))
            view = await job_view(self.engine(), queue, job_id, self.options.show_payloads)
        except (InvalidQueueName, InvalidJobId) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        except (EngineError, ConfigurationError) as exc:
            return PlainTextResponse(f"cannot read the job server: {exc}", status_code=503)
        if view is None:
            return PlainTextResponse(f"no job {job_id} in queue {queue}", status_code=404)
        return view

    async def job_page(self, request: Request) -> Response:
        view = await self._job(request)
        if isinstance(view, Response):
            return view
        chrome = self._chrome(request)
        return self._html(request, page.render_job(view, **chrome), chrome["csrf"])

    async def job_api(self, request: Request) -> Response:
        view = await self._job(request)
        if isinstance(view, Response):
            return JSONResponse({"error": bytes(view.body).decode()}, status_code=view.status_code)
        return JSONResponse(view)

    async def _queue(self, request: Request) -> dict[str, Any] | Response:
        try:
            queue = validate_queue(request.query_params.get("queue"))
            return await queue_view(
                self.engine(),
                queue,
                ready_offset=max(0, _int_param(request, "ready", 0)),
                delayed_offset=max(0, _int_param(request, "delayed", 0)),
                waiting_offset=max(0, _int_param(request, "waiting", 0)),
                show_payloads=self.options.show_payloads,
            )
        except InvalidQueueName as exc:
            return PlainTextResponse(str(exc), status_code=400)
        except (EngineError, ConfigurationError) as exc:
            return PlainTextResponse(f"cannot read the job server: {exc}", status_code=503)

    async def queue_page(self, request: Request) -> Response:
        view = await self._queue(request)
        if isinstance(view, Response):
            return view
        chrome = self._chrome(request)
        return self._html(request, page.render_queue(view, **chrome), chrome["csrf"])

    async def queue_api(self, request: Request) -> Response:
        view = await self._queue(request)
        if isinstance(view, Response):
            return JSONResponse({"error": bytes(view.body).decode()}, status_code=view.status_code)
        return JSONResponse(view)

    def _chrome(self, request: Request) -> dict[str, Any]:
        """What every page's frame needs: base path, CSRF token, title, whether read-only."""
        return {
            "base": _base(request),
            "csrf": request.cookies.get(auth.CSRF_COOKIE) or auth.new_csrf_token(),
            "title": self.options.title,
            "read_only": self.options.read_only,
        }

    def _html(self, request: Request, html: str, csrf: str) -> Response:
        """A page, setting the CSRF cookie its forms carry the token of when it is not set yet."""
        response = Response(html, media_type="text/html; charset=utf-8")
        if request.cookies.get(auth.CSRF_COOKIE) != csrf:
            response.set_cookie(
                auth.CSRF_COOKIE,
                csrf,
                path=_cookie_path(request),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        return Response(self._static[name], media_type=STATIC[name], headers={"cache-control": "no-cache"})

    # -- actions ----------------------------------------------------------------------------

    async def retry(self, request: Request) -> Response:
        return await self._act(request, "retry")

    async def forget(self, request: Request) -> Response:
        return await self._act(request, "forget")

    async def retry_all(self, request: Request) -> Response:
        return await self._act(request, "retry-all")

    async def abort(self, request: Request) -> Response:
        return await self._act(request, "abort")

    async def pause(self, request: Request) -> Response:
        return await self._act(request, "pause")

    async def resume(self, request: Request) -> Response:
        return await self._act(request, "resume")

    async def _act(self, request: Request, action: str) -> Response:
        if self.options.read_only:
            return self._answer(request, {"error": "the dashboard is read-only"}, 403)
        fields = await _fields(request)
        if fields is None:
            return self._answer(request, {"error": "the body must be a small form or JSON object"}, 400)
        if not self._csrf_passes(request, fields):
            log.warning("dashboard: %s refused (CSRF check failed)", action)
            return self._answer(request, {"error": "CSRF check failed: reload the page"}, 403)
        try:
            queue = validate_queue(fields.get("queue"))
            engine = self.engine()
            if action == "retry-all":
                count = await engine.failed_retry(None, queue=queue)
                log.info("dashboard: retried all %d failed job(s) of %s", count, queue)
                return self._answer(request, {"requeued": count})
            if action in ("pause", "resume"):
                if unknown_queues([queue], await engine.known_queues()):
                    return self._answer(request, {"error": f"unknown queue {queue!r}"}, 404)
                changed = await (engine.pause if action == "pause" else engine.resume)(queue)
                log.info("dashboard: %s of queue %s (changed: %s)", action, queue, changed)
                return self._answer(
                    request, {"queue": queue, "paused": action == "pause", "changed": changed}
                )
            job_id = validate_job_id(fields.get("id"))
            if action == "abort":
                aborted = await engine.abort(job_id, queue, reason="aborted from the dashboard")
                log.info("dashboard: abort of job %s of %s: %s", job_id, queue, aborted)
                return self._answer(request, {"aborted": aborted})
            if action == "retry":
                count = await engine.failed_retry([job_id], queue=queue)
                log.info("dashboard: retried failed job %s of %s (%d)", job_id, queue, count)
                return self._answer(request, {"requeued": count})
            count = await engine.failed_forget([job_id], queue=queue)
            log.info("dashboard: forgot failed job %s of %s (%d)", job_id, queue, count)
            return self._answer(request, {"forgotten": count})
        except (InvalidQueueName, InvalidJobId) as exc:
            return self._answer(request, {"error": str(exc)}, 400)
        except (EngineError, ConfigurationError) as exc:
            return self._answer(request, {"error": str(exc)}, 503)

    def _csrf_passes(self, request: Request, fields: Mapping[str, str]) -> bool:
        if self.options.access.bearer_ok(request.headers):
            return True  # a header browsers never send by themselves
        if not auth.same_origin(request.headers):
            return False
        given = request.headers.get(auth.CSRF_HEADER) or fields.get(auth.CSRF_FIELD)
        return auth.csrf_ok(request.cookies.get(auth.CSRF_COOKIE), given)

    def _answer(self, request: Request, body: dict[str, Any], status: int = 200) -> Response:
        if _wants_json(request) or status != 200:
            return JSONResponse(body, status_code=status)
        return RedirectResponse(_base(request) + "/", status_code=303)


async def _fields(request: Request) -> dict[str, str] | None:
    """A small form-encoded or JSON object body as strings; None when it is neither."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int)}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    return {k: v[0] for k, v in parsed.items()}


def create_app(
    engine: EngineSource = None,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | str | None = None,
    show_payloads: bool = False,
    read_only: bool = False,
    refresh_seconds: float = 2.0,
    title: str = "aiojobs-redis",
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app, to serve alone or mount: `app.mount("/jobs", create_app())`.

    `engine`: a RedisEngine, a callable returning one, or None for the engine `connect()`
    installed (for example by the `integrations.asgi.lifespan` of the app you mount it in),
    looked up on each request. `token` and/or `basic_auth` ((user, password) or
    "user:password") protect it; without them anyone who can reach it may use it.
    `show_payloads` shows payloads (of failed jobs, on a job's page and a queue's page; never
    otherwise); `read_only` removes the buttons and refuses
    the actions. `allowed_hosts` (names or addresses, without port) refuses requests whose
    Host header names anything else (`aiojobs-redis dashboard` on loopback allows only the
    loopback names, so a DNS-rebinding page cannot reach it).
    """
    if isinstance(basic_auth, str):
        basic_auth = auth.parse_basic_auth(basic_auth)
    options = Options(
        access=auth.Access(token=token, basic=basic_auth),
        show_payloads=show_payloads,
        read_only=read_only,
        refresh_seconds=refresh_seconds,
        title=title,
    )
    dashboard = Dashboard(engine, options)
    routes = [
        Route("/", dashboard.page, methods=["GET"]),
        Route("/api/state", dashboard.state, methods=["GET"]),
        Route("/job", dashboard.job_page, methods=["GET"]),
        Route("/api/job", dashboard.job_api, methods=["GET"]),
        Route("/queue", dashboard.queue_page, methods=["GET"]),
        Route("/api/queue", dashboard.queue_api, methods=["GET"]),
        Route("/api/failed/retry", dashboard.retry, methods=["POST"]),
        Route("/api/failed/forget", dashboard.forget, methods=["POST"]),
        Route("/api/failed/retry-all", dashboard.retry_all, methods=["POST"]),
        Route("/api/abort", dashboard.abort, methods=["POST"]),
        Route("/api/queue/pause", dashboard.pause, methods=["POST"]),
        Route("/api/queue/resume", dashboard.resume, methods=["POST"]),
        Route("/static/{name}", dashboard.static, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
    app.add_middleware(Guard, access=options.access, allowed_hosts=hosts)
    app.state.dashboard = dashboard
    return app
