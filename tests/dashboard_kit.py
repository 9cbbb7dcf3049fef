"""What the dashboard tests share: the app over a real store, a test sender, a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Middleware

from bot.metrics import Metrics
from bot.web import dashboard
from bot.web.context import CONTEXT, WebContext
from storage.interface import Store
from storage.models import Subscription

TOKEN = "dashboard-admin-token-0123456789"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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
    *,
    token: str | None = TOKEN,
    send_test: Callable[[Subscription], Awaitable[str]] | None = None,
    feeds_changed: Callable[[], None] = lambda: None,
    middlewares: tuple[Middleware, ...] = (),
) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app[CONTEXT] = WebContext(
        store=store,
        feeds=store.feeds,
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
