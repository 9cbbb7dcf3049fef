"""`/api/v1`: the control room's JSON API, behind the admin token (`bot.web.auth`).

What an admin can do in a chat (subscribe, unsubscribe, list, search, read posts) and what the
operator does with the CLI (blogs to follow, pause and resume, dead deliveries, a test send), over
HTTP. Request bodies are pydantic models (an unknown or wrong field is 400 naming it); every error
is `{"error": …}` with its status; webhook URLs, Discord webhook tokens and secret query parameters
of feed URLs are masked in every answer, the way the CLI shows them.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.adapters.base import DeliveryError
from bot.platforms import mask_address, operator_target, platform, subscription_json
from bot.redact import clean, redact
from bot.web.auth import FailedLogins, bearer_auth, json_error
from bot.web.context import CONTEXT, WebContext, context_of
from storage.interface import Posts
from storage.models import Highlighted, Post, Subscription, SubscriptionState
from storage.query import QueryError
from storage.values import (
    MAX_BACKFILL,
    MAX_PER_PAGE,
    MIN_FEED_INTERVAL,
    DeadDelivery,
    Feed,
    FeedError,
    FeedExists,
    NewSubscription,
    SearchHit,
    SubscriptionError,
    feed_state,
)

MAX_LATEST = 100  # posts one GET /posts lists
MAX_INTERVAL = 7 * 86_400.0
DEAD_LISTED = 1000  # dead deliveries one GET /deliveries?state=dead lists

Body = TypeVar("Body", bound=BaseModel)


class BadRequest(Exception):
    """A request the client can fix: 400 with the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Missing(Exception):
    """No such subscription, blog or post: 404 saying which."""


# --- request bodies -----------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class NewSource(_Body):
    url: str = Field(min_length=1, max_length=2048)
    interval: float = Field(default=60.0, ge=MIN_FEED_INTERVAL, le=MAX_INTERVAL)


class SourceChange(_Body):
    interval: float | None = Field(default=None, ge=MIN_FEED_INTERVAL, le=MAX_INTERVAL)
    enabled: bool | None = None


class NewSubscriptionBody(_Body):
    platform: str = Field(min_length=1, max_length=40)
    target: str = Field(min_length=1, max_length=2048)
    thread: str | None = Field(default=None, max_length=100)
    flavor: str | None = Field(default=None, max_length=40)
    webhook: str | None = Field(default=None, max_length=2048)
    keywords: str | None = Field(default=None, max_length=1000)
    source: str | None = Field(default=None, max_length=300)
    edit_policy: str | None = Field(default=None, max_length=40)
    backfill: int | None = Field(default=None, ge=0, le=MAX_BACKFILL)


class SubscriptionChange(_Body):
    state: Literal["active", "paused"] | None = None
    keywords: str | None = Field(default=None, max_length=1000)
    """Absent: unchanged; null or "": every post."""


class Retry(_Body):
    ids: list[int] | None = Field(default=None, max_length=10_000)


# --- answers ----------------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def post_json(post: Post) -> dict[str, Any]:
    return post.model_dump(mode="json")


def dead_json(item: DeadDelivery) -> dict[str, Any]:
    return {
        "id": item.id,
        "subscription_id": item.subscription_id,
        "platform": item.target.platform,
        "target": mask_address(item.target),
        "post_id": item.post_id,
        "post_title": item.post_title,
        "event": item.event,
        "attempts": item.attempts,
        "reason": clean(item.last_error) if item.last_error else None,
        "created_at": item.created_at,
    }


def feed_json(feed: Feed) -> dict[str, Any]:
    """A followed blog; a secret in its URL (`?token=…`, `user:password@`) masked."""
    return {
        "id": feed.id,
        "url": redact(feed.location),
        "interval": feed.interval,
        "enabled": feed.enabled,
        "state": feed_state(feed),
        "origin": feed.origin,
        "title": feed.title,
        "source_id": feed.source_id,
        "added_at": _time(feed.added_at),
        "last_fetch_at": _time(feed.last_fetch_at),
        "last_error": clean(feed.last_error) if feed.last_error else None,
        "next_attempt_at": _time(feed.next_attempt_at),
        "failures": feed.failures,
    }


def highlighted_json(text: Highlighted) -> dict[str, Any]:
    return {
        "text": text.plain,
        "segments": [{"text": run, "match": match} for run, match in text.segments],
        "where": text.where,
    }


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "post": post_json(hit.post),
        "title": highlighted_json(hit.title),
        "snippet": highlighted_json(hit.snippet),
    }


# --- reading requests -------------------------------------------------------------------------------


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """The JSON body as `model`; BadRequest naming the field that is wrong."""
    raw = await request.read()  # 413 past the server's limit
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            raise BadRequest("body", "the body is not JSON") from None
        if first["type"] == "extra_forbidden":
            raise BadRequest(field, f"unknown field {field!r}") from None
        if first["type"] == "model_type":
            raise BadRequest("body", "the body must be a JSON object") from None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BadRequest(field, f"{field}: {message}") from None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise BadRequest(name, f"{name} must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(name, f"{name} must be from {low} to {high}")
    return value


def path_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise Missing(f"no such id {text!r}")
    return int(text)


async def source_id_of(posts: Posts, text: str, field: str) -> str:
    """The id of the blog `text` names, as `--source` does: its number, id, or a unique word of
    its title; BadRequest naming `field` when none or several match."""
    found = await posts.find_sources(text)
    if not found:
        raise BadRequest(field, f"no blog matches {text!r}")
    if len(found) > 1:
        shown = "; ".join(f"#{s.number} {s.source.title} ({s.source.id})" for s in found[:5])
        raise BadRequest(field, f"{text!r} matches {len(found)} blogs: {shown}; give its number")
    return found[0].source.id


async def _subscription(request: web.Request) -> Subscription:
    found = await context_of(request).store.subscriptions.get(path_id(request))
    if found is None:
        raise Missing(f"no subscription #{path_id(request)}")
    return found


@web.middleware
async def bad_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except BadRequest as error:
        return json_error(400, error.message, field=error.field)
    except Missing as error:
        return json_error(404, clean(str(error)))
    return response


# --- sources ----------------------------------------------------------------------------------------


async def list_sources(request: web.Request) -> web.Response:
    feeds = await context_of(request).feeds.list()
    return web.json_response({"sources": [feed_json(f) for f in feeds]})


async def add_source(request: web.Request) -> web.Response:
    """Follow an http(s) feed or live page. Files on the server are the CLI's to add (`livedesk
    sources add PATH`): over HTTP a path would let the caller read any file the server can."""
    context = context_of(request)
    body = await read_body(request, NewSource)
    parts = urlsplit(body.url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or " " in body.url:
        raise BadRequest(
            "url", "url must be an http(s) URL (add a file with `livedesk sources add PATH`)"
        )
    try:
        feed = await context.feeds.add(body.url, body.interval, origin="api")
    except FeedExists as error:
        return json_error(
            409, f"{redact(error.feed.location)} is already followed", source=feed_json(error.feed)
        )
    except FeedError as error:
        raise BadRequest("interval", clean(str(error))) from None
    context.feeds_changed()
    return web.json_response(feed_json(feed), status=201)


async def get_source(request: web.Request) -> web.Response:
    feed = await context_of(request).feeds.get(path_id(request))
    if feed is None:
        raise Missing(f"no followed blog #{path_id(request)}")
    return web.json_response(feed_json(feed))


async def change_source(request: web.Request) -> web.Response:
    context = context_of(request)
    feed_id = path_id(request)
    body = await read_body(request, SourceChange)
    try:
        feed = await context.feeds.update(feed_id, interval=body.interval, enabled=body.enabled)
    except FeedError as error:
        raise BadRequest("interval", clean(str(error))) from None
    if feed is None:
        raise Missing(f"no followed blog #{feed_id}")
    context.feeds_changed()
    return web.json_response(feed_json(feed))


async def remove_source(request: web.Request) -> web.Response:
    context = context_of(request)
    feed_id = path_id(request)
    if not await context.feeds.remove(feed_id):
        raise Missing(f"no followed blog #{feed_id}")
    context.feeds_changed()
    return web.json_response({"removed": feed_id})


# --- posts and search -------------------------------------------------------------------------------


async def list_posts(request: web.Request) -> web.Response:
    store = context_of(request).store
    limit = int_param(request, "limit", 20, 1, MAX_LATEST)
    source_id: str | None = None
    if blog := request.query.get("source", "").strip():
        source_id = await source_id_of(store.posts, blog, "source")
    posts = await store.posts.latest(limit, source_id=source_id)
    return web.json_response({"posts": [post_json(p) for p in posts]})


async def get_post(request: web.Request) -> web.Response:
    posts = context_of(request).store.posts
    post = await posts.get(request.match_info["number"])
    if post is None:
        raise Missing(f"no post {request.match_info['number']!r}")
    versions = await posts.history(post.id)
    source = await posts.source(post.source_id)
    return web.json_response(
        {
            "post": post_json(post),
            "source": source.model_dump(mode="json") if source else None,
            "versions": [
                {
                    "version": v.version,
                    "recorded_at": v.recorded_at.isoformat(),
                    "post": post_json(v.post),
                }
                for v in versions
            ],
        }
    )


async def search(request: web.Request) -> web.Response:
    context = context_of(request)
    text = request.query.get("q", "").strip()
    if not text:
        raise BadRequest("q", 'q is the search query, e.g. ?q=sanctions or ?q="energy prices"')
    if len(text) > 1000:
        raise BadRequest("q", "q is at most 1000 characters")
    page = int_param(request, "page", 1, 1, 10_000)
    per_page = int_param(request, "per_page", 10, 1, MAX_PER_PAGE)
    started = time.perf_counter()
    try:
        result = await context.store.search(text, page=page, per_page=per_page)
    except QueryError as error:
        raise BadRequest("q", str(error)) from None
    finally:
        context.metrics.searched(time.perf_counter() - started)
    return web.json_response(
        {
            "query": result.query,
            "page": result.page,
            "per_page": result.per_page,
            "total": result.total,
            "total_is_estimate": result.total_is_estimate,
            "has_more": result.has_more,
            "notice": result.notice,
            "hits": [hit_json(hit) for hit in result.hits],
        }
    )


# --- subscriptions ----------------------------------------------------------------------------------


async def list_subscriptions(request: web.Request) -> web.Response:
    store = context_of(request).store
    wanted = request.query.get("platform") or None
    if wanted is not None:
        try:
            wanted = platform(wanted).name
        except ValueError as error:
            raise BadRequest("platform", str(error)) from None
    found = await store.subscriptions.list(platform=wanted)
    return web.json_response({"subscriptions": [subscription_json(s) for s in found]})


async def add_subscription(request: web.Request) -> web.Response:
    context = context_of(request)
    store = context.store
    body = await read_body(request, NewSubscriptionBody)
    try:
        entry = platform(body.platform)
    except ValueError as error:
        raise BadRequest("platform", str(error)) from None
    try:
        policy = entry.edit_policy(body.edit_policy)
    except ValueError as error:
        raise BadRequest("edit_policy", str(error)) from None
    try:
        target = operator_target(
            entry.name, body.target, thread=body.thread, flavor=body.flavor, webhook=body.webhook
        )
    except ValueError as error:
        field = "webhook" if body.webhook and "webhook" in str(error) else "target"
        raise BadRequest(field, str(error)) from None
    source_id: str | None = None
    if body.source:
        source_id = await source_id_of(store.posts, body.source, "source")
    try:
        [added] = await store.subscriptions.put(
            [
                NewSubscription(
                    target=target,
                    created_by="api",
                    source_id=source_id,
                    query=body.keywords,
                    edit_policy=policy,
                )
            ],
            backfill=context.backfill if body.backfill is None else body.backfill,
        )
    except QueryError as error:
        raise BadRequest("keywords", str(error)) from None
    except SubscriptionError as error:
        raise BadRequest("target", str(error)) from None
    answer = {**subscription_json(added.subscription), "created": added.created}
    if not added.created:
        answer["changed"] = list(added.changed)
    return web.json_response(answer, status=201 if added.created else 200)


async def get_subscription(request: web.Request) -> web.Response:
    return web.json_response(subscription_json(await _subscription(request)))


async def change_subscription(request: web.Request) -> web.Response:
    subscriptions = context_of(request).store.subscriptions
    subscription = await _subscription(request)
    body = await read_body(request, SubscriptionChange)
    if "keywords" in body.model_fields_set:
        try:
            changed = await subscriptions.set_query(subscription.id, body.keywords)
        except QueryError as error:
            raise BadRequest("keywords", str(error)) from None
        except SubscriptionError as error:
            return json_error(409, str(error))
        if changed is None:
            raise Missing(f"no subscription #{subscription.id}")
    if body.state is not None:
        state = SubscriptionState(body.state)
        if not await subscriptions.set_state(subscription.id, state):
            raise Missing(f"no subscription #{subscription.id}")
    return web.json_response(subscription_json(await _subscription(request)))


async def remove_subscription(request: web.Request) -> web.Response:
    subscription = await _subscription(request)
    if not await context_of(request).store.subscriptions.remove(subscription.id):
        raise Missing(f"no subscription #{subscription.id}")
    return web.json_response({"removed": subscription.id})


async def test_subscription(request: web.Request) -> web.Response:
    """Send a test message to the subscription's chat or webhook, through its platform's adapter."""
    context = context_of(request)
    subscription = await _subscription(request)
    try:
        line = await context.send_test(subscription)
    except DeliveryError as error:
        return json_error(502, clean(str(error)) or type(error).__name__, id=subscription.id)
    return web.json_response({"id": subscription.id, "sent": line})


# --- deliveries -------------------------------------------------------------------------------------


async def list_deliveries(request: web.Request) -> web.Response:
    outbox = context_of(request).store.outbox
    state = request.query.get("state", "").strip().lower()
    if state not in ("", "dead"):
        raise BadRequest("state", "state=dead lists dead deliveries; counts are always given")
    # The dead ones are read before the counts: a delivery that dies between the two reads is then
    # counted though not listed, never listed though not counted.
    answer: dict[str, Any] = {}
    if state == "dead":
        limit = int_param(request, "limit", 100, 1, DEAD_LISTED)
        answer["dead"] = [dead_json(d) for d in await outbox.dead(limit=limit)]
    answer = {"counts": await outbox.counts(), **answer}
    return web.json_response(answer)


async def retry_deliveries(request: web.Request) -> web.Response:
    """Queue dead deliveries again: those named in `ids`, or every one."""
    outbox = context_of(request).store.outbox
    body = await read_body(request, Retry)
    ids = list(dict.fromkeys(body.ids)) if body.ids else None
    if ids:
        dead = {item.id for item in await outbox.dead(limit=100_000)}
        unknown = [i for i in ids if i not in dead]
        if unknown:
            return json_error(404, "no such dead deliveries; nothing queued", unknown=unknown)
    return web.json_response({"retried": await outbox.retry_dead(ids=ids)})


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/sources", list_sources),
    ("POST", "/sources", add_source),
    ("GET", "/sources/{id}", get_source),
    ("PATCH", "/sources/{id}", change_source),
    ("DELETE", "/sources/{id}", remove_source),
    ("GET", "/posts", list_posts),
    ("GET", "/posts/{number}", get_post),
    ("GET", "/search", search),
    ("GET", "/subscriptions", list_subscriptions),
    ("POST", "/subscriptions", add_subscription),
    ("GET", "/subscriptions/{id}", get_subscription),
    ("PATCH", "/subscriptions/{id}", change_subscription),
    ("DELETE", "/subscriptions/{id}", remove_subscription),
    ("POST", "/subscriptions/{id}/test", test_subscription),
    ("GET", "/deliveries", list_deliveries),
    ("POST", "/deliveries/retry", retry_deliveries),
)


def build(context: WebContext, failures: FailedLogins) -> web.Application:
    """The API as an aiohttp sub-application: every route behind the admin token."""
    assert context.admin_token, "the API is only built with an admin token"
    api = web.Application(middlewares=[bearer_auth(context.admin_token, failures), bad_requests])
    api[CONTEXT] = context
    for method, path, handler in ROUTES:
        api.router.add_route(method, path, handler)
    return api
