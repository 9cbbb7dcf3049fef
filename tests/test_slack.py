"""The Slack adapter against a fake webhook receiver on 127.0.0.1: delivery, errors, secrets, subscriptions.

Delivery tests go through the real Dispatcher, SubscriptionStore and PostStore; the receiver enforces a
per-hook rate scaled to 10/s, and the adapter declares the same scaled rate, so pacing is tested quickly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from bot.adapters.base import (
    AdapterContext,
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    TransientError,
)
from bot.adapters.slack import SlackAdapter
from bot.config import ConfigError, DispatchSettings, SlackSettings, WebhookSetting
from bot.dispatcher import Dispatcher
from bot.models import (
    Card,
    EditPolicy,
    ImportResult,
    Post,
    Reply,
    Request,
    Source,
    SourceKind,
    SubscriptionState,
    Target,
)
from bot.provision import sync_configured_webhooks
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.subscriptions import SubscriptionStore
from tests.fakes.webhooks import WebhookReceiver

SCALED = Rate(1, 0.1)  # Slack's 1/s per hook, ten times faster
SOURCE = Source(
    id="ukraine", title="Ukraine live", url="https://news.example/live", kind=SourceKind.RSS
)
START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
FAST_RETRIES = DispatchSettings(backoff_base=0.05, backoff_max=0.2, poll_interval=0.02)


async def no_commands(request: Request) -> Reply:
    raise AssertionError("no command expected")


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(rate=SCALED.count, per=SCALED.per, burst=2) as receiver:
        yield receiver


@pytest.fixture
async def slack() -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter(SlackSettings(), per_hook_rate=SCALED, timeout=2.0)
    await adapter.start(AdapterContext(handle=no_commands, timezone=ZoneInfo("Europe/London")))
    try:
        yield adapter
    finally:
        await adapter.stop()


def hook(url: str, flavor: str = "slack") -> Target:
    return Target(platform="slack", address=url, kind="webhook", options={"flavor": flavor})


def post(n: int, title: str | None = None, body: str = "Talks continue.") -> Post:
    return Post(
        id=f"p{n}",
        source_id=SOURCE.id,
        published_at=START + timedelta(minutes=n),
        title=title or f"Post {n}",
        body=(body,),
        permalink=f"https://news.example/live#p{n}",
    )


def card(title: str = "EU agrees sanctions") -> Card:
    return Card(
        post_id="p1", title=title, published_at=START, body=("Text.",), url="https://x.example/"
    )


async def import_posts(db: Database, *posts: Post) -> None:
    await ingest(db, ImportResult(source=SOURCE, posts=posts))


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What Livedesk itself logged (aiosqlite's debug lines echo SQL parameters; ours never do)."""
    ours = ("bot.", "storage.", "handlers.")
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(ours))


def titles(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["blocks"][0]["text"]["text"] for p in payloads]


# --- sending --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["slack", "mattermost", "teams"])
async def test_each_flavor_arrives_in_its_own_format(
    hooks: WebhookReceiver, slack: SlackAdapter, flavor: str
) -> None:
    url = hooks.url(f"desk-{flavor}")
    await slack.send(hook(url, flavor), card())
    [payload] = hooks.payloads(url)
    if flavor == "slack":
        assert payload["blocks"][0]["text"]["text"] == "EU agrees sanctions"
    elif flavor == "mattermost":
        assert payload["text"] == "**EU agrees sanctions**" and "blocks" not in payload
    else:
        assert payload["type"] == "message"
        assert payload["attachments"][0]["content"]["body"][0]["text"] == "EU agrees sanctions"


def test_capabilities_say_webhooks_cannot_edit_and_pace_one_a_second() -> None:
    caps = SlackAdapter(SlackSettings()).capabilities
    assert (caps.max_text, caps.markup, caps.can_edit) == (4000, "mrkdwn", False)
    assert caps.rate_limits.for_target(hook("https://hooks.slack.com/services/T/B/x")) == Rate(
        1, 1.0
    )


ERRORS = [
    # (status, body, headers, error type, what the error says)
    (429, "rate_limited", {"Retry-After": "7"}, RateLimited, "rate limited"),
    (404, "channel_not_found", {}, PermanentError, "404 channel_not_found"),
    (410, "channel_is_archived", {}, PermanentError, "410 channel_is_archived"),
    (403, "action_prohibited", {}, PermanentError, "403 action_prohibited"),
    (400, "invalid_payload", {}, InvalidPayload, "400 invalid_payload"),
    (503, "service unavailable", {}, TransientError, "503 service unavailable"),
    (500, "", {}, TransientError, "500 no reason given"),
]


@pytest.mark.parametrize(("status", "body", "headers", "error", "says"), ERRORS)
async def test_webhook_answers_map_to_delivery_errors_with_masked_url(
    hooks: WebhookReceiver,
    slack: SlackAdapter,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: str,
    headers: dict[str, str],
    error: type[Exception],
    says: str,
) -> None:
    url = hooks.url("XXXXsecretTOKENabcd")
    hooks.respond(url, status, body, headers=headers)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(error) as raised:
        await slack.send(hook(url), card())
    assert says in str(raised.value)
    assert "secretTOKEN" not in str(raised.value)
    assert f"http://127.0.0.1:{hooks.port}/…/abcd" in str(raised.value)
    assert "secretTOKEN" not in our_logs(caplog)
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == 7.0


async def test_unreachable_and_hanging_hooks_are_transient(hooks: WebhookReceiver) -> None:
    adapter = SlackAdapter(SlackSettings(), timeout=0.2)
    try:
        hanging = hooks.url("hangingSECRET1234")
        hooks.respond(hanging, 200, "ok", delay=0.6)
        with pytest.raises(TransientError, match="timed out") as raised:
            await adapter.send(hook(hanging), card())
        assert "SECRET" not in str(raised.value)
        closed = "http://127.0.0.1:9/hooks/T/B/closedSECRET"  # the discard port: nothing listens
        with pytest.raises(TransientError, match="network error") as raised:
            await adapter.send(hook(closed), card())
        assert "SECRET" not in str(raised.value)
    finally:
        await adapter.stop()


async def test_a_non_webhook_target_is_refused(slack: SlackAdapter) -> None:
    with pytest.raises(PermanentError, match="webhook"):
        await slack.send(Target(platform="slack", address="C0123", kind="channel"), card())
    for address in ("ftp://127.0.0.1/hooks/SECRET1234", "hooks/SECRET1234"):
        with pytest.raises(PermanentError, match="not a webhook URL") as raised:
            await slack.send(hook(address, "slack"), card())
        assert "SECRET1234" not in str(raised.value)


async def test_a_scheme_in_capitals_is_still_http(
    hooks: WebhookReceiver, slack: SlackAdapter
) -> None:
    url = hooks.url("desk-caps")
    await slack.send(hook("HTTP://" + url.removeprefix("http://"), "mattermost"), card())
    assert len(hooks.payloads(url)) == 1


# --- subscriptions from the settings ------------------------------------------------------------


async def test_settings_webhooks_become_subscriptions_once(db: Database) -> None:
    store = SubscriptionStore(db)
    settings = SlackSettings(
        webhooks=[
            WebhookSetting(url=SecretStr("https://hooks.slack.com/services/T/B/aaaa")),
            WebhookSetting(
                url=SecretStr("https://chat.example/hooks/bbbb"),
                keywords="sanctions OR NATO",
                source="ukraine",
                flavor="mattermost",
            ),
        ]
    )
    assert await sync_configured_webhooks(store, settings) == 2
    assert await sync_configured_webhooks(store, settings) == 0
    subs = await store.list(platform="slack")
    assert [(s.target.options["flavor"], s.query, s.source_id, s.created_by) for s in subs] == [
        ("slack", None, None, "settings"),
        ("mattermost", "sanctions OR NATO", "ukraine", "settings"),
    ]
    assert all(s.edit_policy == EditPolicy.FOLLOW_UP for s in subs)
    # A hook disabled because its channel was archived stays disabled after a restart.
    await store.set_state(subs[0].id, SubscriptionState.DISABLED, "410 channel_is_archived")
    assert await sync_configured_webhooks(store, settings) == 0
    assert (await store.list(platform="slack"))[0].state == SubscriptionState.DISABLED


async def test_bad_keywords_in_settings_are_one_line_without_the_url(db: Database) -> None:
    settings = SlackSettings(
        webhooks=[WebhookSetting(url=SecretStr("https://hooks.slack.com/T/B/SECRET"), keywords='"')]
    )
    with pytest.raises(ConfigError) as raised:
        await sync_configured_webhooks(SubscriptionStore(db), settings)
    assert "SECRET" not in str(raised.value) and "\n" not in str(raised.value)


# --- through the dispatcher -----------------------------------------------------------------------


async def test_twenty_alerts_to_one_hook_arrive_in_order_without_429(
    db: Database, hooks: WebhookReceiver, slack: SlackAdapter
) -> None:
    url = hooks.url("desk")
    await SubscriptionStore(db).add(hook(url), created_by="test")
    await import_posts(db, *(post(n) for n in range(20)))
    await Dispatcher(SqliteOutbox(db), {"slack": slack}, FAST_RETRIES).run_until_idle(timeout=20)
    assert titles(hooks.payloads(url)) == [f"Post {n}" for n in range(20)]
    assert hooks.rejected[hooks.path_of(url)] == []


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "channel_not_found"), (410, "channel_is_archived")]
)
async def test_a_gone_channel_disables_its_subscription(
    db: Database,
    hooks: WebhookReceiver,
    slack: SlackAdapter,
    caplog: pytest.LogCaptureFixture,
    status: int,
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    gone, alive = hooks.url("goneSECRETwxyz"), hooks.url("alive")
    store = SubscriptionStore(db)
    await store.add(hook(gone), created_by="test")
    await store.add(hook(alive), created_by="test")
    hooks.respond(gone, status, reason, times=None)
    await import_posts(db, post(1), post(2))
    await Dispatcher(SqliteOutbox(db), {"slack": slack}, FAST_RETRIES).run_until_idle(timeout=20)
    subs = {s.target.address: s for s in await store.list(platform="slack")}
    assert subs[gone].state == SubscriptionState.DISABLED
    assert reason in (subs[gone].reason or "")
    assert "SECRET" not in (subs[gone].reason or "")
    assert "SECRET" not in our_logs(caplog)
    assert hooks.rejected[hooks.path_of(gone)] == [status]  # tried once, then left alone
    assert titles(hooks.payloads(alive)) == ["Post 1", "Post 2"]  # the other desk is unaffected


async def test_a_burst_of_5xx_is_retried_and_delivered_once(
    db: Database, hooks: WebhookReceiver, slack: SlackAdapter
) -> None:
    url = hooks.url("flaky")
    await SubscriptionStore(db).add(hook(url), created_by="test")
    hooks.respond(url, 503, "service unavailable", times=3)
    await import_posts(db, post(1))
    dispatcher = Dispatcher(SqliteOutbox(db), {"slack": slack}, FAST_RETRIES)
    running = asyncio.create_task(dispatcher.run())
    try:
        await hooks.wait_for(url, 1, within=10)
        await dispatcher.run_until_idle(timeout=10)
    finally:
        await dispatcher.stop()
        await running
    assert titles(hooks.payloads(url)) == ["Post 1"]
    assert hooks.rejected[hooks.path_of(url)] == [503, 503, 503]


async def test_keyword_alert_reaches_only_the_desk_whose_terms_match(
    db: Database, hooks: WebhookReceiver, slack: SlackAdapter
) -> None:
    desk = hooks.url("sanctions-desk")
    await SubscriptionStore(db).add(hook(desk), created_by="test", query="sanctions OR NATO")
    await import_posts(
        db,
        post(1, "EU widens sanctions", "The EU agreed new sanctions on Monday."),
        post(2, "Weather in Kyiv", "Snow is expected overnight."),
    )
    await Dispatcher(SqliteOutbox(db), {"slack": slack}, FAST_RETRIES).run_until_idle(timeout=20)
    [alert] = hooks.payloads(desk)
    assert alert["blocks"][0]["text"]["text"] == "EU widens sanctions"
    assert "*sanctions*" in alert["blocks"][1]["text"]["text"]
    matched = [b for b in alert["blocks"] if b["type"] == "context"][-1]
    assert matched["elements"][0]["text"] == "Matched: *sanctions*"


async def test_an_edited_post_follows_up_as_an_update(
    db: Database, hooks: WebhookReceiver, slack: SlackAdapter
) -> None:
    url = hooks.url("desk")
    await SubscriptionStore(db).add(hook(url), created_by="test", edit_policy=EditPolicy.EDIT)
    dispatcher = Dispatcher(SqliteOutbox(db), {"slack": slack}, FAST_RETRIES)
    await import_posts(db, post(1, body="First version."))
    await dispatcher.run_until_idle(timeout=10)
    await import_posts(db, post(1, body="Second version."))
    await dispatcher.run_until_idle(timeout=10)
    assert titles(await hooks.wait_for(url, 2)) == ["Post 1", "Updated: Post 1"]
