"""The control room's dashboard: server-rendered pages under `/` for the holder of the admin token.

Pages: the blogs with their health (add, pause, resume, remove), the live post stream (a fragment
the page polls, so posts another process imported appear too), search with the hits marked, the
subscriptions per platform (pause, resume, send a test) and the delivery queue (retry the dead).
Jinja2 renders every page with autoescape on; the only script is bot/web/static/dashboard.js,
served from here, and a Content-Security-Policy forbids any other. Every POST carries the session's
CSRF token (bot.web.sessions). Without LIVEDESK_ADMIN_TOKEN every page answers 404 saying so.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from bot.adapters.base import DeliveryError
from bot.redact import clean
from bot.web import views
from bot.web.auth import FailedLogins
from bot.web.context import WebContext, context_of
from bot.web.sessions import (
    COOKIE,
    FLASH_COOKIE,
    LOGIN_COOKIE,
    SESSION_SECONDS,
    Session,
    Sessions,
    new_token,
    same,
)
from storage.models import SubscriptionState
from storage.query import QueryError
from storage.values import MIN_FEED_INTERVAL, FeedExists, check_interval

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_INTERVAL = 60.0
STREAM_SIZE = 30
SEARCH_PER_PAGE = 10
DEAD_SHOWN = 100
POSTS_FOR_HEALTH = 1000
"""The newest posts per blog read to draw its 24-hour sparkline (the store returns at most 1000)."""

SESSIONS: web.AppKey[Sessions] = web.AppKey("dashboard_sessions", Sessions)
LIMITER: web.AppKey[FailedLogins] = web.AppKey("dashboard_failed_logins", FailedLogins)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=PackageLoader("bot.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.globals["segments"] = views.segments
_templates.globals["asset"] = hashlib.sha256(
    b"".join(path.read_bytes() for path in sorted(STATIC.iterdir()))
).hexdigest()[:12]
"""Part of the static files' URLs: a browser fetches them again when they change."""

Page = Callable[[web.Request, WebContext, Session], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    """Add the dashboard's routes under `/` and its static files under `/static/`."""
    app[SESSIONS] = Sessions()
    app[LIMITER] = FailedLogins()  # the API's rule: 10 failures a minute per address
    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", _page(logout))
    r.add_get("/", _page(blogs))
    r.add_post("/blogs", _page(add_blog))
    r.add_post("/blogs/{id}/{action}", _page(change_blog))
    r.add_get("/stream", _page(stream))
    r.add_get("/stream/fragment", _page(stream_fragment))
    r.add_get("/search", _page(search))
    r.add_get("/subscriptions", _page(subscriptions))
    r.add_post("/subscriptions/{id}/{action}", _page(change_subscription))
    r.add_get("/deliveries", _page(deliveries))
    r.add_post("/deliveries/retry", _page(retry))
    r.add_static("/static/", STATIC, name="dashboard_static")


# --- rendering and guards -------------------------------------------------------------------------


def render(
    name: str, status: int = 200, headers: Mapping[str, str] | None = None, **values: Any
) -> web.Response:
    text = _templates.get_template(name).render(**values)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def page(
    request: web.Request, session: Session, name: str, *, title: str, **values: Any
) -> web.Response:
    return render(
        name,
        title=title,
        here=request.path,
        csrf=session.csrf,
        flash=session.take_flash(),
        **values,
    )


def back(to: str) -> web.Response:
    """See the page `to` (after a form: reloading it does not post again)."""
    return web.Response(status=303, headers={"Location": to, "Cache-Control": "no-store"})


def _cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: int,
    path: str = "/",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def _dashboard_off() -> web.Response:
    return render("off.html", status=404, title="Dashboard off")


def _page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Only for a signed-in admin; a POST must carry the session's CSRF token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        ctx = context_of(request)
        token = ctx.admin_token
        if not token:
            return _dashboard_off()
        sessions = request.app[SESSIONS]
        session = sessions.read(
            token, request.cookies.get(COOKIE), request.cookies.get(FLASH_COOKIE)
        )
        if session is None:
            if request.method == "GET" and request.path != "/stream/fragment":
                return back("/login")
            return render(
                "refused.html",
                status=401,
                title="Signed out",
                reason="Your session has ended: sign in again.",
                link="/login",
            )
        if request.method == "POST":
            form = await request.post()
            given = form.get("csrf")
            if not isinstance(given, str) or not same(given, session.csrf):
                return render(
                    "refused.html",
                    status=403,
                    title="Refused",
                    reason="This form is out of date (its security token is missing or wrong). "
                    "Go back, reload the page and try again.",
                    link="/",
                )
        try:
            response = await handler(request, ctx, session)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.path)
            return render(
                "refused.html",
                status=500,
                title="Error",
                reason="The store did not answer as expected; the log has the details. "
                "Try again in a moment.",
                link="/",
            )
        if session.flash_out:
            _cookie(
                request, response, FLASH_COOKIE, sessions.flash_cookie(token, session), max_age=300
            )
        elif session.flash_shown and FLASH_COOKIE in request.cookies:
            response.del_cookie(FLASH_COOKIE, path="/")
        return response

    return guarded


def _form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


# --- login ---------------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    if not ctx.admin_token:
        return _dashboard_off()
    if request.app[SESSIONS].read(ctx.admin_token, request.cookies.get(COOKIE)) is not None:
        return back("/")
    return _login_page(request)


def _login_page(
    request: web.Request, status: int = 200, error: str | None = None, **headers: str
) -> web.Response:
    token = new_token()
    response = render(
        "login.html",
        status=status,
        headers=headers,
        title="Sign in",
        csrf=token,
        flash=[("error", error)] if error else [],
    )
    _cookie(request, response, LOGIN_COOKIE, token, max_age=3600, path="/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    if not ctx.admin_token:
        return _dashboard_off()
    limiter = request.app[LIMITER]
    client = request.remote or "unknown"
    wait = math.ceil(limiter.retry_after(client))
    if wait:
        log.warning("dashboard: sign-in from %s refused: too many wrong tokens", client)
        return _login_page(
            request,
            429,
            f"Too many wrong tokens from here: wait {wait} s before trying again.",
            **{"Retry-After": str(wait)},
        )
    form = await request.post()
    given = form.get("csrf")
    if not isinstance(given, str) or not same(given, request.cookies.get(LOGIN_COOKIE, "")):
        return _login_page(request, 403, "The sign-in form had expired: try again.")
    token = form.get("token")
    if not isinstance(token, str) or not same(token.strip(), ctx.admin_token):
        limiter.failed(client)
        log.warning("dashboard: sign-in from %s refused: wrong token", client)
        return _login_page(request, 401, "That is not the admin token (LIVEDESK_ADMIN_TOKEN).")
    limiter.forget(client)
    _session, cookie = request.app[SESSIONS].open(ctx.admin_token)
    response = back("/")
    _cookie(request, response, COOKIE, cookie, max_age=SESSION_SECONDS)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    request.app[SESSIONS].end(session)
    response = back("/login")
    response.del_cookie(COOKIE, path="/")
    return response


# --- blogs ---------------------------------------------------------------------------------------


async def blogs(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    now = views.now_utc()
    feeds = await ctx.feeds.list()
    sources = {s.id: s for s in await ctx.store.posts.all_sources()}
    rows = []
    for feed in feeds:
        published = (
            [p.published_at for p in await ctx.store.posts.latest(POSTS_FOR_HEALTH, feed.source_id)]
            if feed.source_id
            else []
        )
        rows.append(views.blog_row(feed, published, now))
    titles = {
        row.feed.id: row.feed.title
        or (sources[s].title if (s := row.feed.source_id) in sources else None)
        for row in rows
    }
    followed = {f.source_id for f in feeds if f.source_id}
    others = [info for info in await ctx.store.posts.sources() if info.source.id not in followed]
    return page(
        request,
        session,
        "blogs.html",
        title="Blogs",
        rows=rows,
        titles=titles,
        others=others,
        when=lambda at: views.when(at, ctx.zone),
        clean=clean,
        default_interval=int(DEFAULT_INTERVAL),
        min_interval=int(MIN_FEED_INTERVAL),
    )


def _location(text: str) -> str:
    """The location to follow, or ValueError with one line saying what is wrong."""
    if not text:
        raise ValueError("Give the blog's address: an http(s) URL or a file path on this server.")
    parts = urlsplit(text)
    if parts.scheme.lower() in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"{clean(text)}: a URL needs a host.")
        return text
    if parts.scheme and len(parts.scheme) > 1:  # "C:" is a drive, not a scheme
        raise ValueError(f"{parts.scheme}: only http(s) URLs and files can be followed.")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{text}: give the file's full path on the server (it starts with /).")
    if not path.is_file():
        raise ValueError(f"{text}: no such file on the server.")
    return str(path.resolve())


def _interval(text: str) -> float:
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"interval: {text!r} is not a number of seconds.") from None
    check_interval(seconds)  # FeedError: at least 10 seconds
    if seconds > 7 * 86400:
        raise ValueError("interval: at most a week (604800 seconds).")
    return seconds


async def add_blog(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    form = await request.post()
    try:
        location = _location(_form_text(form, "location"))
        interval = _interval(_form_text(form, "interval"))
        feed = await ctx.feeds.add(location, interval, origin="dashboard")
    except (ValueError, FeedExists) as error:
        session.say("error", str(error))
    else:
        ctx.feeds_changed()
        session.say("ok", f"Following {clean(feed.location)} every {feed.interval:g} s.")
    return back("/")


async def change_blog(
    request: web.Request, ctx: WebContext, session: Session
) -> web.StreamResponse:
    feed_id, action = _number(request.match_info["id"]), request.match_info["action"]
    if action not in ("pause", "resume", "remove", "interval"):
        raise web.HTTPNotFound()
    feed = await ctx.feeds.get(feed_id) if feed_id is not None else None
    if feed is None:
        session.say("error", f"No blog #{request.match_info['id']} is followed.")
        return back("/")
    shown = feed.title or clean(feed.location)
    if action == "remove":
        await ctx.feeds.remove(feed.id)
        session.say("ok", f"No longer following {shown} (its posts stay in the store).")
    elif action == "interval":
        try:
            interval = _interval(_form_text(await request.post(), "interval"))
        except ValueError as error:
            session.say("error", str(error))
            return back("/")
        await ctx.feeds.update(feed.id, interval=interval)
        session.say("ok", f"{shown}: now every {interval:g} s.")
    else:
        await ctx.feeds.update(feed.id, enabled=action == "resume")
        session.say("ok", f"{shown}: {'resumed' if action == 'resume' else 'paused'}.")
    ctx.feeds_changed()
    return back("/")


# --- posts and search ----------------------------------------------------------------------------


async def _post_lines(ctx: WebContext, after: int = 0) -> list[views.PostLine]:
    titles = {s.id: s.title for s in await ctx.store.posts.all_sources()}
    return [
        views.post_line(post, titles.get(post.source_id, post.source_id), ctx.zone)
        for post in await ctx.store.posts.latest(STREAM_SIZE)
        if (post.number or 0) > after
    ]


async def stream(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    lines = await _post_lines(ctx)
    newest = max((line.number or 0 for line in lines), default=0)
    return page(request, session, "stream.html", title="Live", posts=lines, newest=newest)


async def stream_fragment(
    request: web.Request, ctx: WebContext, session: Session
) -> web.StreamResponse:
    after = _number(request.query.get("after", "0")) or 0
    lines = await _post_lines(ctx, after)
    newest = max((line.number or 0 for line in lines), default=after)
    return render("_posts.html", posts=lines, fresh=True, headers={"X-Newest": str(newest)})


async def search(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    query = request.query.get("q", "").strip()
    number = _number(request.query.get("page", "1")) or 1
    results, error = None, None
    if query:
        started = time.perf_counter()
        try:
            results = await ctx.store.search(query, page=number, per_page=SEARCH_PER_PAGE)
        except QueryError as e:
            error = str(e)
        finally:
            ctx.metrics.searched(time.perf_counter() - started)
    titles = {s.id: s.title for s in await ctx.store.posts.all_sources()} if results else {}
    return page(
        request,
        session,
        "search.html",
        title="Search",
        query=query,
        results=results,
        error=error,
        titles=titles,
        when=lambda at: views.when(at, ctx.zone),
        link=views.safe_link,
        page_url=lambda n: "/search?" + urlencode({"q": query, "page": n}),
    )


# --- subscriptions and deliveries ----------------------------------------------------------------


async def subscriptions(
    request: web.Request, ctx: WebContext, session: Session
) -> web.StreamResponse:
    titles = {s.id: s.title for s in await ctx.store.posts.all_sources()}
    groups = views.subscription_groups(await ctx.store.subscriptions.list(), titles)
    return page(request, session, "subscriptions.html", title="Subscriptions", groups=groups)


async def change_subscription(
    request: web.Request, ctx: WebContext, session: Session
) -> web.StreamResponse:
    sub_id, action = _number(request.match_info["id"]), request.match_info["action"]
    if action not in ("pause", "resume", "test"):
        raise web.HTTPNotFound()
    sub = await ctx.store.subscriptions.get(sub_id) if sub_id is not None else None
    if sub is None:
        session.say("error", f"No subscription #{request.match_info['id']}.")
        return back("/subscriptions")
    if action == "test":
        try:
            where = await ctx.send_test(sub)
        except DeliveryError as error:
            session.say("error", f"Subscription #{sub.id}: the test was not delivered: {error}")
        except Exception:
            log.exception("dashboard: test message for subscription #%s failed", sub.id)
            session.say("error", f"Subscription #{sub.id}: the test failed; the log says why.")
        else:
            session.say("ok", f"Subscription #{sub.id}: {clean(where)}")
    elif action == "pause":
        await ctx.store.subscriptions.set_state(
            sub.id, SubscriptionState.PAUSED, "paused from the dashboard"
        )
        session.say("ok", f"Subscription #{sub.id} paused.")
    else:
        await ctx.store.subscriptions.set_state(sub.id, SubscriptionState.ACTIVE)
        session.say("ok", f"Subscription #{sub.id} resumed.")
    return back("/subscriptions")


async def deliveries(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    counts = await ctx.store.outbox.counts()
    dead = [views.dead_line(d, ctx.zone) for d in await ctx.store.outbox.dead(DEAD_SHOWN)]
    return page(
        request,
        session,
        "deliveries.html",
        title="Deliveries",
        pending=counts.get("pending", 0),
        dead_count=counts.get("dead", 0),
        counts=counts,
        dead=dead,
    )


async def retry(request: web.Request, ctx: WebContext, session: Session) -> web.StreamResponse:
    form = await request.post()
    if _form_text(form, "all"):
        moved = await ctx.store.outbox.retry_dead(None)
    elif (delivery_id := _number(_form_text(form, "id"))) is not None:
        moved = await ctx.store.outbox.retry_dead([delivery_id])
    else:
        session.say("error", "Say which delivery to retry.")
        return back("/deliveries")
    session.say(
        "ok" if moved else "error",
        f"{moved} {'delivery' if moved == 1 else 'deliveries'} back in the queue."
        if moved
        else "Nothing to retry: that delivery is no longer dead.",
    )
    return back("/deliveries")
