"""What the web routes see of the running app: one `WebContext`, stored on the aiohttp application."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.metrics import Metrics
from storage.interface import Feeds, Store
from storage.models import Subscription

SendTest = Callable[[Subscription], Awaitable[str]]
"""Sends a test message to a subscription's chat or webhook; returns a line saying where it went,
raises `bot.adapters.base.DeliveryError` (its text is safe to show: addresses masked) when it fails."""
Readiness = Callable[[], Awaitable[Mapping[str, bool]]]
"""Each check `/readyz` reports (store reachable, each adapter started) and whether it passes."""


@dataclass
class WebContext:
    store: Store
    feeds: Feeds
    metrics: Metrics
    zone: ZoneInfo
    admin_token: str | None
    """LIVEDESK_ADMIN_TOKEN; None: the API and the dashboard are off."""
    send_test: SendTest
    readiness: Readiness
    backfill: int = 3
    """Latest posts a subscription added from the control room is greeted with (LIVEDESK_BACKFILL)."""
    feeds_changed: Callable[[], None] = lambda: None
    """Tells this process's poller to re-read the feeds now (other processes notice on their own)."""
    started_at: float = field(default_factory=time.time)


CONTEXT: web.AppKey[WebContext] = web.AppKey("livedesk", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
