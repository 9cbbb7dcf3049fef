"""The Telegram adapter end to end: real python-telegram-bot against a fake Bot API on 127.0.0.1, real
handlers, a real SQLite store, the real dispatcher. Updates arrive through getUpdates as real JSON."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from bot.adapters.base import (
    AdapterContext,
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    StartupError,
    TargetMoved,
)
from bot.adapters.telegram import TelegramAdapter
from bot.config import DispatchSettings, TelegramSettings
from bot.dispatcher import Dispatcher
from bot.models import (
    Button,
    Card,
    ImportResult,
    Reply,
    Request,
    SubscriptionState,
    Target,
)
from handlers import Deps, handle
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.store import SqliteStore
from tests.blog import BLOG, KYIV, POSTS, T0, post
from tests.fakes.telegram import FakeTelegram, Limits, Sent

SCALE = 10.0  # the fake and the adapter both run Telegram's limits ten times faster
USER = 4242
ADMIN = 777
GROUP = -1001234


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(limits=Limits(scale=SCALE)) as server:
        yield server


def settings_for(fake: FakeTelegram, **overrides: object) -> TelegramSettings:
    values: dict[str, object] = {
        "token": fake.token,
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "rate_scale": SCALE,
        **overrides,
    }
    return TelegramSettings.model_validate(values)


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(posts.db, ImportResult(source=BLOG, posts=tuple(POSTS)))
    return Deps(store=SqliteStore(db), timezone=KYIV)


Handle = Callable[[Request], Awaitable[Reply]]


# The adapter serving each fake: a reply is complete when that adapter has no update in hand.
_SERVING: dict[int, TelegramAdapter] = {}


async def running(fake: FakeTelegram, handler: Handle, **settings: object) -> TelegramAdapter:
    adapter = TelegramAdapter(settings_for(fake, **settings), poll_timeout=0.5)
    await adapter.start(AdapterContext(handle=handler, timezone=KYIV))
    _SERVING[id(fake)] = adapter
    return adapter


@pytest.fixture
async def bot(fake: FakeTelegram, deps: Deps) -> AsyncIterator[TelegramAdapter]:
    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    adapter = await running(fake, through_handlers)
    try:
        yield adapter
    finally:
        await adapter.stop()


async def ask(fake: FakeTelegram, chat_id: int, line: str, **kwargs: object) -> Sent:
    """Send a command as a user and wait for the bot's (last) answer in that chat."""
    before = len(fake.messages_in(chat_id))
    fake.command(chat_id, line, **kwargs)  # type: ignore[arg-type]
    await fake.wait_for(lambda: len(fake.messages_in(chat_id)) > before)
    await _settle(fake, chat_id)
    return fake.messages_in(chat_id)[-1]


async def _settle(fake: FakeTelegram, chat_id: int) -> None:
    """A multi-message reply: until the adapter has finished handling the command (every message of
    its reply sent), whatever the machine's load."""
    adapter = _SERVING[id(fake)]
    # Re-checked at each call the bot makes, and long polling keeps calling getUpdates.
    await fake.wait_for(lambda: adapter.updates_in_progress == 0, timeout=30)


# --- commands -------------------------------------------------------------------------------------------


async def test_search_lists_matching_posts_with_highlighted_snippets(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    answer = await ask(fake, USER, "/search sanctions")
    assert "Sanctions package outlined" in answer.text
    assert "<b>sanctions</b>" in answer.html.lower()
    assert "Troops near the border" not in answer.text
    assert [b["text"] for b in answer.buttons] == ["More ›"]


async def test_more_button_brings_the_next_page(fake: FakeTelegram, bot: TelegramAdapter) -> None:
    first = await ask(fake, USER, "/search sanctions")
    before = len(fake.messages_in(USER))
    fake.press(first, first.buttons[0]["callback_data"])
    await fake.wait_for(lambda: len(fake.messages_in(USER)) > before)
    second = fake.messages_in(USER)[-1]
    assert "showing 6–" in second.text
    assert not set(_titles(first)) & set(_titles(second))
    assert fake.callback_answers  # the spinner on the button stops


def _titles(message: Sent) -> list[str]:
    return [line for line in message.text.splitlines() if line.startswith(("Update", "Sanctions"))]


async def test_a_long_query_keeps_its_more_button_working(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    words = "routine update number sanctions -troops -geneva -blinken -lavrov -satellite"
    first = await ask(fake, USER, f"/search {words}")
    data = first.buttons[0]["callback_data"]
    assert len(data.encode()) <= 64
    fake.press(first, data)
    await fake.wait_for(lambda: len(fake.messages_in(USER)) > 1)
    assert "showing 6–" in fake.messages_in(USER)[-1].text


async def test_latest_three(fake: FakeTelegram, bot: TelegramAdapter) -> None:
    answer = await ask(fake, USER, "/latest 3")
    titles = [t for t in ("Update 11", "Update 10", "Update 9", "Update 8") if t in answer.text]
    assert titles == ["Update 11", "Update 10", "Update 9"]
    assert "21 Jan 2022, 14:11 EET" in answer.text  # shown in the configured time zone


@pytest.mark.parametrize("line", ['/search "', "/search NEAR(", "/search"])
async def test_a_broken_query_gets_a_helpful_line(
    fake: FakeTelegram, bot: TelegramAdapter, line: str
) -> None:
    answer = await ask(fake, USER, line)
    assert "went wrong" not in answer.text
    assert "sanctions" in answer.text or "NEAR" in answer.text


async def test_commands_addressed_to_the_bot_in_a_group(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    fake.chat(GROUP, "supergroup")
    answer = await ask(fake, GROUP, f"/search@{fake.username} sanctions", user_id=USER)
    assert "Sanctions package outlined" in answer.text
    fake.command(GROUP, "/search@SomeOtherBot sanctions", user_id=USER)
    fake.command(GROUP, "/nonsense", user_id=USER)
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda: len(fake.messages_in(GROUP)) > 1, timeout=0.5)


async def test_an_unknown_command_in_private_gets_a_polite_answer(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    answer = await ask(fake, USER, "/frobnicate")
    assert "/help" in answer.text


async def test_replies_stay_in_the_forum_topic(fake: FakeTelegram, bot: TelegramAdapter) -> None:
    fake.chat(GROUP, "supergroup")
    answer = await ask(fake, GROUP, "/latest 1", user_id=USER, thread_id=77)
    assert answer.thread_id == 77


async def test_the_command_menu_is_registered(fake: FakeTelegram, bot: TelegramAdapter) -> None:
    names = [c["command"] for c in fake.commands]
    assert {"search", "latest", "subscribe", "unsubscribe", "subscriptions", "sources"} <= set(
        names
    )
    assert all(c["description"] for c in fake.commands)


async def test_a_wrong_token_is_one_clear_line(fake: FakeTelegram) -> None:
    settings = settings_for(fake, token="999:not-the-token")
    adapter = TelegramAdapter(settings)

    async def unused(request: Request) -> Reply:
        raise AssertionError("no command may arrive")

    with pytest.raises(StartupError) as caught:
        await adapter.start(AdapterContext(handle=unused))
    message = str(caught.value)
    assert message == "Telegram rejected the token (check LIVEDESK_TELEGRAM__TOKEN)"
    assert "not-the-token" not in message and "\n" not in message
    await adapter.stop()  # harmless after a failed start


async def test_an_unreachable_api_is_one_clear_line(fake: FakeTelegram) -> None:
    closed = free_port()
    settings = settings_for(fake, base_url=f"http://127.0.0.1:{closed}/bot")
    adapter = TelegramAdapter(settings)

    async def unused(request: Request) -> Reply:
        raise AssertionError("no command may arrive")

    with pytest.raises(StartupError, match="Telegram is unreachable") as caught:
        await adapter.start(AdapterContext(handle=unused))
    assert fake.token not in str(caught.value) and "\n" not in str(caught.value)


async def test_webhook_mode_needs_a_secret(fake: FakeTelegram) -> None:
    adapter = TelegramAdapter(settings_for(fake, webhook_url="https://bot.example/telegram"))

    async def unused(request: Request) -> Reply:
        raise AssertionError("no command may arrive")

    with pytest.raises(StartupError, match="WEBHOOK_SECRET"):
        await adapter.start(AdapterContext(handle=unused))


async def test_webhook_mode_without_its_extra_is_one_clear_line(
    fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on an install without python-telegram-bot[webhooks] (tornado).
    monkeypatch.setattr("telegram.ext._updater.WEBHOOKS_AVAILABLE", False)
    settings = settings_for(
        fake, webhook_url="https://bot.example/telegram", webhook_secret="s3cret", webhook_port=0
    )
    adapter = TelegramAdapter(settings)

    async def unused(request: Request) -> Reply:
        raise AssertionError("no command may arrive")

    with pytest.raises(StartupError, match="webhook mode is unavailable") as caught:
        await adapter.start(AdapterContext(handle=unused))
    assert "s3cret" not in str(caught.value) and fake.token not in str(caught.value)
    await adapter.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_answers_updates_posted_with_the_secret(
    fake: FakeTelegram, deps: Deps
) -> None:
    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    port = free_port()
    adapter = await running(
        fake,
        through_handlers,
        webhook_url="https://bot.example/telegram/hook",
        webhook_secret="s3cret",
        webhook_port=port,
    )
    try:
        assert fake.webhook is not None
        assert fake.webhook["url"] == "https://bot.example/telegram/hook"
        assert fake.webhook["secret_token"] == "s3cret"
        fake.command(USER, "/latest 1")
        [update] = fake.take_updates()
        hook = f"http://127.0.0.1:{port}/telegram/hook"
        async with aiohttp.ClientSession() as session:
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            async with session.post(hook, json=update, headers=wrong) as response:
                assert response.status == 403
            right = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
            async with session.post(hook, json=update, headers=right) as response:
                assert response.status == 200
        await fake.wait_for(lambda: bool(fake.messages_in(USER)))
    finally:
        await adapter.stop()
    [answer] = fake.messages_in(USER)
    assert "Update 11" in answer.text


# --- who may subscribe -------------------------------------------------------------------------------


async def test_only_group_admins_subscribe_the_group(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    fake.chat(GROUP, "supergroup", admins={ADMIN})
    refused = await ask(fake, GROUP, "/subscribe", user_id=USER)
    assert "Only an admin" in refused.text
    assert await deps.subscriptions.list(platform="telegram") == []

    accepted = await ask(fake, GROUP, "/subscribe sanctions", user_id=ADMIN)
    assert "Subscribed this chat" in accepted.text
    [subscription] = await deps.subscriptions.list(platform="telegram")
    assert subscription.target.address == str(GROUP) and subscription.target.kind == "group"
    assert subscription.query == "sanctions"

    listed = await ask(fake, GROUP, "/subscriptions", user_id=USER)
    assert "sanctions" in listed.text

    refused = await ask(fake, GROUP, "/unsubscribe", user_id=USER)
    assert "Only an admin" in refused.text
    done = await ask(fake, GROUP, "/unsubscribe", user_id=ADMIN)
    assert "Unsubscribed" in done.text
    assert await deps.subscriptions.list(platform="telegram") == []


async def test_a_private_chat_subscribes_itself(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    answer = await ask(fake, USER, "/subscribe")
    assert "Subscribed this chat" in answer.text
    [subscription] = await deps.subscriptions.list(platform="telegram")
    assert subscription.target.kind == "private"
    assert not any(method == "getChatAdministrators" for method, _ in fake.calls)


async def test_a_channel_subscribes_by_a_post_where_the_bot_is_admin(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    channel = -100777
    fake.chat(channel, "channel", admins={fake.bot_id})
    answer = await ask(fake, channel, "/subscribe")
    assert "Subscribed this chat" in answer.text
    [subscription] = await deps.subscriptions.list(platform="telegram")
    assert subscription.target.kind == "channel"


async def test_an_anonymous_group_admin_may_subscribe(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    fake.chat(GROUP, "supergroup", admins={ADMIN})
    answer = await ask(fake, GROUP, "/subscribe", anonymous=True)
    assert "Subscribed this chat" in answer.text


async def test_a_channel_where_the_bot_cannot_post_is_not_subscribed(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    channel = -100778
    fake.chat(channel, "channel", admins=set())
    answer = await ask(fake, channel, "/subscribe")
    assert "Only an admin" in answer.text
    assert await deps.subscriptions.list(platform="telegram") == []


async def test_admin_lists_are_cached_briefly(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps
) -> None:
    fake.chat(GROUP, "supergroup", admins={ADMIN})
    await ask(fake, GROUP, "/subscribe", user_id=ADMIN)
    await ask(fake, GROUP, "/unsubscribe", user_id=ADMIN)
    assert sum(method == "getChatAdministrators" for method, _ in fake.calls) == 1


# --- push -------------------------------------------------------------------------------------------------


def dispatcher(db: Database, adapter: TelegramAdapter) -> Dispatcher:
    settings = DispatchSettings(backoff_base=0.05, backoff_max=0.2, poll_interval=0.05)
    return Dispatcher(SqliteOutbox(db), {"telegram": adapter}, settings)


def chat_target(chat_id: int, kind: str = "private", thread: str | None = None) -> Target:
    return Target.model_validate(
        {"platform": "telegram", "address": str(chat_id), "kind": kind, "thread": thread}
    )


async def test_new_and_edited_posts_reach_every_subscribed_chat(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps, db: Database
) -> None:
    fake.chat(GROUP, "supergroup")
    chats = [chat_target(101), chat_target(102), chat_target(GROUP, "group", thread="9")]
    for target in chats:
        await deps.subscriptions.add(target, created_by="test")
    fresh = post(50, "Convoy reaches Kyiv", "A convoy of trucks reached the city.")
    await deps.store.ingest(ImportResult(source=BLOG, posts=(fresh,)))
    await dispatcher(db, bot).run_until_idle()

    for chat_id in (101, 102, GROUP):
        [message] = fake.messages_in(chat_id)
        assert "Convoy reaches Kyiv" in message.text
        assert 'href="https://news.example/live/kyiv-050"' in message.html
    assert fake.messages_in(GROUP)[0].thread_id == 9  # the forum topic is honoured

    edited = fresh.model_copy(update={"body": ("A convoy of 40 trucks reached the city.",)})
    await deps.store.ingest(ImportResult(source=BLOG, posts=(edited,)))
    await dispatcher(db, bot).run_until_idle()
    for chat_id in (101, 102, GROUP):
        [message] = fake.messages_in(chat_id)  # edited in place, not sent again
        assert "40 trucks" in message.text and message.edits


async def test_a_blocked_chat_loses_its_subscription_and_a_migrated_group_moves(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps, db: Database
) -> None:
    old_group, new_group = -555, -1005550
    fake.chat(old_group, "group")
    fake.chat(new_group, "supergroup")
    await deps.subscriptions.add(chat_target(101), created_by="test")
    await deps.subscriptions.add(chat_target(old_group, "group"), created_by="test")
    fake.blocked.add(101)
    fake.migrated[old_group] = new_group
    await deps.store.ingest(ImportResult(source=BLOG, posts=(post(60, "Blackout"),)))
    await dispatcher(db, bot).run_until_idle()

    states = {s.target.address: s for s in await deps.subscriptions.list(platform="telegram")}
    assert states["101"].state == SubscriptionState.DISABLED
    assert "blocked" in (states["101"].reason or "")
    assert str(old_group) not in states and str(new_group) in states
    [moved] = fake.messages_in(new_group)
    assert "Blackout" in moved.text


async def test_hostile_post_text_arrives_as_plain_escaped_text(
    fake: FakeTelegram, bot: TelegramAdapter, deps: Deps, db: Database
) -> None:
    await deps.subscriptions.add(chat_target(101), created_by="test")
    nasty = post(
        70,
        "<b>Breaking</b> & <i>more",
        "<script>alert('x')</script> Tom & Jerry @everyone </b> <a href='javascript:x'>go</a>",
    )
    await deps.store.ingest(ImportResult(source=BLOG, posts=(nasty,)))
    await dispatcher(db, bot).run_until_idle()
    [message] = fake.messages_in(101)
    assert "<b>Breaking</b> & <i>more" in message.text  # shown literally, not as markup
    assert "<script>alert('x')</script> Tom & Jerry @everyone </b>" in message.text
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert "javascript:" not in message.html.split("&lt;a")[0]


async def test_a_broadcast_to_300_chats_runs_at_the_limit_without_a_429(
    deps: Deps, db: Database
) -> None:
    # Telegram's 30/s overall, scaled ×2 → 60/s: 300 chats take five windows, so the ideal is 4 s.
    # (Not ×10: PTB and the fake together push about 300 messages/s on a 2-core box, so at 300/s
    # the test would time the machine, not our pacing.)
    scale = 2.0
    chats = [chat_target(10_000 + n) for n in range(300)]
    for target in chats:
        await deps.subscriptions.add(target, created_by="test")
    async with FakeTelegram(limits=Limits(scale=scale)) as fake:

        async def through_handlers(request: Request) -> Reply:
            return await handle(request, deps)

        adapter = await running(fake, through_handlers, rate_scale=scale)
        try:
            await deps.store.ingest(ImportResult(source=BLOG, posts=(post(80, "Ceasefire"),)))
            await dispatcher(db, adapter).run_until_idle(timeout=30)
        finally:
            await adapter.stop()

    assert {m.chat_id for m in fake.sent} == {10_000 + n for n in range(300)}
    assert fake.rate_limited == 0
    overall = adapter.capabilities.rate_limits.overall
    assert overall == Rate(60, 1.0)
    ideal = (math.ceil(len(chats) / overall.count) - 1) * overall.per
    sends = sorted(m.at for m in fake.sent)
    assert sends[-1] - sends[0] >= 0.9 * ideal  # never faster than Telegram allows
    # How close to the limit it runs is for `bench/` (a loaded machine is only ever slower).


# --- errors as the dispatcher sees them ----------------------------------------------------------------


def card(n: int = 1, **extra: object) -> Card:
    return Card.model_validate(
        {"post_id": f"p{n}", "title": f"Post {n}", "published_at": T0, "body": ("Text.",), **extra}
    )


async def test_send_errors_map_to_what_the_dispatcher_does(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    fake.blocked.add(201)
    fake.missing.add(202)
    fake.migrated[-203] = -1000203
    with pytest.raises(PermanentError, match=r"(?i)blocked"):
        await bot.send(chat_target(201), card())
    with pytest.raises(PermanentError, match=r"(?i)chat not found"):
        await bot.send(chat_target(202), card())
    with pytest.raises(TargetMoved) as moved:
        await bot.send(chat_target(-203, "group"), card())
    assert moved.value.new_address == "-1000203"
    with pytest.raises(InvalidPayload, match=r"(?i)message to edit not found"):
        await bot.edit(chat_target(204), "204:999", card())


async def test_a_429_reaches_the_dispatcher_with_its_retry_after(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    fake.forced_429.append(7)
    with pytest.raises(RateLimited) as limited:
        await bot.send(chat_target(301), card())
    assert limited.value.retry_after == 7
    assert sum(method == "sendMessage" for method, _ in fake.calls) == 1  # no hidden retry
    assert fake.messages_in(301) == []


async def test_an_edit_with_nothing_new_is_a_success(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    reference = await bot.send(chat_target(401), card())
    assert await bot.edit(chat_target(401), reference, card()) == reference
    assert (
        await bot.edit(chat_target(401), reference, card(title="Post 1 (corrected)")) == reference
    )
    assert "corrected" in fake.messages_in(401)[0].text


async def test_link_previews_follow_the_setting(fake: FakeTelegram, deps: Deps) -> None:
    async def nothing(request: Request) -> Reply:
        return Reply(text="hi", buttons=(Button(label="Again", command="help"),))

    for previews in (False, True):
        adapter = await running(fake, nothing, link_previews=previews)
        try:
            await adapter.send(chat_target(501), card())
        finally:
            await adapter.stop()
        assert fake.messages_in(501)[-1].link_preview_disabled is (not previews)


# --- inline mode ----------------------------------------------------------------------------------------


async def test_inline_query_offers_matching_posts_to_share(
    fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    fake.inline("sanctions")
    await fake.wait_for(lambda: bool(fake.inline_answers))
    results = fake.inline_answers[0]["results"]
    titles = {r["title"] for r in results}
    assert "Sanctions package outlined" in titles and "Troops near the border" not in titles
    assert len(results) == len({r["id"] for r in results}) > 5  # more than one page of /search
    content = results[0]["input_message_content"]
    assert content["parse_mode"] == "HTML" and "<b><a href=" in content["message_text"]


async def test_an_inline_query_never_offers_more_than_fifty(
    fake: FakeTelegram, deps: Deps, db: Database
) -> None:
    many = [post(100 + n, f"Sanctions item {n}") for n in range(70)]
    await deps.store.ingest(ImportResult(source=BLOG, posts=tuple(many)))

    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    adapter = await running(fake, through_handlers)
    try:
        fake.inline("sanctions item")
        await fake.wait_for(lambda: bool(fake.inline_answers))
    finally:
        await adapter.stop()
    assert len(fake.inline_answers[0]["results"]) == 50


async def test_a_fleet_worker_polls_only_while_it_leads(fake: FakeTelegram, deps: Deps) -> None:
    """In a fleet one worker polls (Telegram answers a second poller with a conflict): a follower
    sends but never calls getUpdates; start_receiving() makes it answer commands;
    stop_receiving() stops its polling, and a later start polls again."""

    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    adapter = TelegramAdapter(settings_for(fake), poll_timeout=0.5)
    adapter.polls = False
    await adapter.start(AdapterContext(handle=through_handlers, timezone=KYIV))
    try:
        assert not any(method == "getUpdates" for method, _ in fake.calls)
        fake.command(USER, "/latest 1", user_id=USER)
        with pytest.raises(TimeoutError):
            await fake.wait_for(lambda: bool(fake.messages_in(USER)), timeout=0.5)
        await adapter.start_receiving()
        await fake.wait_for(lambda: bool(fake.messages_in(USER)), timeout=10)
        await adapter.stop_receiving()
        polls = sum(method == "getUpdates" for method, _ in fake.calls)
        fake.command(USER, "/latest 1", user_id=USER)
        await asyncio.sleep(0.8)
        assert sum(method == "getUpdates" for method, _ in fake.calls) == polls
        assert len(fake.messages_in(USER)) == 1
        await adapter.start_receiving()
        await fake.wait_for(lambda: len(fake.messages_in(USER)) == 2, timeout=10)
    finally:
        fake.end_long_polls()
        await adapter.stop()
