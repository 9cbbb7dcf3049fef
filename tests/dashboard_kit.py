"""What the dashboard tests share: the app over a real store, a signed-in client, and the feeds.

`MemoryFeeds` keeps the feeds in memory with the `storage.interface.Feeds` contract, for the
in-process tests, until the store's own feeds table is merged here.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Middleware

from bot.metrics import Metrics
from bot.web import dashboard
from bot.web.context import CONTEXT, WebContext
from storage.interface import Store
from storage.models import Subscription
from storage.values import Feed, FeedExists

TOKEN = "dashboard-admin-token-0123456789"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class MemoryFeeds:
    def __init__(self) -> None:
        self._feeds: dict[int, Feed] = {}
        self._version = 0

    async def list(self) -> builtins.list[Feed]:
        return [self._feeds[k] for k in sorted(self._feeds)]

    async def get(self, feed_id: int) -> Feed | None:
        return self._feeds.get(feed_id)

    async def add(
        self, location: str, interval: float, *, origin: str, title: str | None = None
    ) -> Feed:
        for feed in self._feeds.values():
            if feed.location == location:
                raise FeedExists(feed)
        feed = Feed(
            id=max(self._feeds, default=0) + 1,
            location=location,
            interval=interval,
            enabled=True,
            origin=origin,
            added_at=datetime.now(UTC),
            title=title,
        )
        self._feeds[feed.id] = feed
        self._version += 1
        return feed

    async def update(
        self, feed_id: int, *, interval: float | None = None, enabled: bool | None = None
    ) -> Feed | None:
        feed = self._feeds.get(feed_id)
        if feed is None:
            return None
        feed = replace(
            feed,
            interval=feed.interval if interval is None else interval,
            enabled=feed.enabled if enabled is None else enabled,
        )
        self._feeds[feed_id] = feed
        self._version += 1
        return feed

    async def remove(self, feed_id: int) -> bool:
        self._version += 1
        return self._feeds.pop(feed_id, None) is not None

    async def record_fetch(
        self,
        feed_id: int,
        *,
        at: datetime,
        error: str | None,
        next_attempt_at: datetime,
        source_id: str | None = None,
    ) -> None:
        feed = self._feeds[feed_id]
        self._feeds[feed_id] = replace(
            feed,
            last_fetch_at=at,
            last_error=error,
            next_attempt_at=next_attempt_at,
            failures=feed.failures + 1 if error else 0,
            source_id=source_id or feed.source_id,
        )

    async def version(self) -> int:
        return self._version


class SendTests:
    """The send_test the dashboard is given: records the subscriptions, answers or fails."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failure: Exception | None = None

    async def __call__(self, subscription: Subscription) -> str:
        if self.failure is not None:
            raise self.failure
        self.sent.append(subscription.id)
        return f"a test message went to subscription #{subscription.id}"


async def _ready() -> dict[str, bool]:
    return {"store": True}


def dashboard_app(
    store: Store,
    feeds: MemoryFeeds,
    *,
    token: str | None = TOKEN,
    send_test: Callable[[Subscription], Awaitable[str]] | None = None,
    feeds_changed: Callable[[], None] = lambda: None,
    middlewares: tuple[Middleware, ...] = (),
) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app[CONTEXT] = WebContext(
        store=store,
        feeds=feeds,
        metrics=Metrics(),
        zone=ZoneInfo("UTC"),
        admin_token=token,
        send_test=send_test or SendTests(),
        readiness=_ready,
        feeds_changed=feeds_changed,
    )
    dashboard.setup(app)
    return app


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: TestClient[web.Request, web.Application], token: str = TOKEN) -> str:
    """Sign in through the login form; returns the session's CSRF token (from the next page)."""
    form = await client.get("/login")
    assert form.status == 200
    answer = await client.post(
        "/login", data={"csrf": csrf_of(await form.text()), "token": token}, allow_redirects=False
    )
    assert answer.status == 303, await answer.text()
    home = await client.get("/")
    assert home.status == 200
    return csrf_of(await home.text())
