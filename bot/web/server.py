"""The one HTTP server of `livedesk run`, on LIVEDESK_HTTP_HOST:LIVEDESK_HTTP_PORT: the control room.

Routes:
- `/healthz` (alive), `/readyz` (store reachable, adapters started; 503 naming what fails) and
  `/metrics` (Prometheus text format) are always on: load balancers and monitoring need no token;
- `/api/v1/…` (`bot.web.api`) and the dashboard at `/` only with LIVEDESK_ADMIN_TOKEN, behind it;
- the routes adapters mount at start (`mount`: Slack's slash command at `/slack/commands`, signed by
  Slack, so not behind the admin token).

Errors of the API and the operational routes are JSON with their status (`{"error": …}`), never a
traceback page; a handler that fails is logged with its traceback and answers 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.metrics import CONTENT_TYPE
from bot.web import api, dashboard
from bot.web.auth import FailedLogins, json_error
from bot.web.context import CONTEXT, WebContext, context_of

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # bytes a request body may have (413 beyond)
API_PREFIX = "/api/v1"
OPERATIONAL = ("/healthz", "/readyz", "/metrics")
READY_TIMEOUT = 5.0  # seconds the readiness checks may take before they count as failing
SCRAPE_TIMEOUT = 5.0  # seconds the outbox count may take at a scrape

Mounted = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/") or path in OPERATIONAL


def _reason(error: web.HTTPException) -> str:
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return f"the request body is larger than {MAX_BODY // 1024} KiB"
    if isinstance(error, web.HTTPMethodNotAllowed):
        return f"{error.method} is not allowed here; use {', '.join(sorted(error.allowed_methods))}"
    if isinstance(error, web.HTTPNotFound):
        return "no such route"
    return error.reason


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors on the API and the operational routes; no traceback anywhere."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or not _json_path(request.path):
            raise
        headers = {k: v for k, v in error.headers.items() if k in ("Allow", "Retry-After")}
        return json_error(error.status, _reason(error), headers=headers or None)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the control room failed on %s %s", request.method, request.path)
        if _json_path(request.path):
            return json_error(500, "internal error (the server log has the details)")
        return web.Response(status=500, text="internal error (the server log has the details)")


async def healthz(request: web.Request) -> web.Response:
    context = context_of(request)
    return web.json_response({"alive": True, "uptime": round(time.time() - context.started_at, 3)})


async def readyz(request: web.Request) -> web.Response:
    context = context_of(request)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            checks = dict(await context.readiness())
    except TimeoutError:
        checks = {"checks": False}
    failing = sorted(name for name, ok in checks.items() if not ok)
    if failing:
        return web.json_response({"ready": False, "failing": failing, "checks": checks}, status=503)
    return web.json_response({"ready": True, "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    context = context_of(request)
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            context.metrics.set_depth(await context.store.outbox.counts())
    except Exception as error:  # the store is away: the scrape shows the last depth known
        log.debug("outbox depth not refreshed: %s", error)
    context.metrics.refresh()
    return web.Response(body=context.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


async def api_off(request: web.Request) -> web.Response:
    return json_error(404, "the HTTP API is off: set LIVEDESK_ADMIN_TOKEN to turn it on")


def build_app(context: WebContext, *, failures: FailedLogins | None = None) -> web.Application:
    """The control room's aiohttp application over `context` (not yet serving)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors])
    app[CONTEXT] = context
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if context.admin_token:
        app.add_subapp(API_PREFIX, api.build(context, failures or FailedLogins()))
    else:
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", api_off)
    # Login, blogs, posts, search, subscriptions, deliveries under `/`; without the token its
    # pages say that it is off and how to turn it on.
    dashboard.setup(app)
    return app


class ControlRoom:
    """The server `livedesk run` starts: `mount` adapters' routes, then `start`, then `stop`."""

    def __init__(self, context: WebContext, *, host: str, port: int) -> None:
        self.context = context
        self.host = host
        self._port = port
        self.app = build_app(context)
        self.mounted: list[tuple[str, str]] = []  # (what, path)
        self._runner: web.AppRunner | None = None

    def mount(self, path: str, handler: Mounted, what: str) -> None:
        """Serve POST `path` with `handler` (before `start`): e.g. Slack's slash command."""
        self.app.router.add_post(path, handler)
        self.mounted.append((what, path))

    @property
    def port(self) -> int:
        """The bound port (the one asked for, until started; LIVEDESK_HTTP_PORT=0 picks one)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; OSError when the address is taken or cannot be bound."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for what, path in self.mounted:
            log.info("%s on %s%s", what, self.url, path)

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
