"""The Discord adapter end to end: real discord.py against a fake Discord REST API on 127.0.0.1, real
handlers, a real SQLite store, the real dispatcher. Slash commands and button clicks arrive as real
INTERACTION_CREATE payloads (`client._connection.parse_interaction_create`)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.adapters.base import (
    AdapterContext,
    InvalidPayload,
    PermanentError,
    RateLimited,
    StartupError,
    TransientError,
)
from bot.adapters.discord import DiscordAdapter
from bot.cards import card_from_post
from bot.config import DiscordSettings, DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import (
    Card,
    Image,
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
from tests.blog import BLOG, KYIV, POSTS, post
from tests.fakes.discord import (
    MANAGE_CHANNELS,
    MANAGE_GUILD,
    FakeDiscord,
    Message,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # discord.py imports audioop (voice)
    import discord
    from discord.gateway import DiscordWebSocket

GUILD = 111111111111111111
CHANNEL = 222222222222222222
OTHER_CHANNEL = 222222222222222299
DM_CHANNEL = 333333333333333333
ADMIN = 777
MEMBER = 4242


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        # process-global in discord.py: monkeypatch restores it after the test whatever happens
        monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
        yield server


def settings_for(fake: FakeDiscord, **overrides: object) -> DiscordSettings:
    values: dict[str, object] = {"token": fake.token, "api_base": fake.api_base, **overrides}
    return DiscordSettings.model_validate(values)


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(posts.db, ImportResult(source=BLOG, posts=tuple(POSTS)))
    return Deps(store=SqliteStore(db), timezone=KYIV)


@pytest.fixture
async def bot(fake: FakeDiscord, deps: Deps) -> AsyncIterator[DiscordAdapter]:
    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    async def source_names() -> list[str]:
        return [s.title for s in await deps.posts.all_sources()]

    adapter = DiscordAdapter(settings_for(fake), connect_gateway=False)
    await adapter.start(
        AdapterContext(handle=through_handlers, timezone=KYIV, source_names=source_names)
    )
    await adapter.sync_commands()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def slash(
    fake: FakeDiscord,
    bot: DiscordAdapter,
    name: str,
    *,
    channel: int = CHANNEL,
    guild: int | None = GUILD,
    user: int = MEMBER,
    permissions: int = 0,
    **options: object,
) -> list[Message]:
    """Run a slash command as a user; the messages it answered with (first answer, then follow-ups)."""
    data = {
        "id": "1",
        "name": name,
        "type": 1,
        "options": [
            {"name": k, "type": 4 if isinstance(v, int) else 3, "value": v}
            for k, v in options.items()
        ],
    }
    if guild is not None:
        data["guild_id"] = str(guild)
    payload = fake.interaction(
        2, data, channel_id=channel, guild_id=guild, user_id=user, permissions=permissions
    )
    return await _answered(fake, bot, payload)


async def click(
    fake: FakeDiscord, bot: DiscordAdapter, message: Message, n: int = 0
) -> list[Message]:
    data = {"custom_id": message.custom_ids[n], "component_type": 2}
    payload = fake.interaction(
        3, data, channel_id=message.channel_id, guild_id=GUILD, message=message
    )
    return await _answered(fake, bot, payload)


def feed(bot: DiscordAdapter, payload: dict[str, Any]) -> None:
    """What the gateway does with an INTERACTION_CREATE event (private API, as in discord.py's tests)."""
    bot.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


async def _answered(
    fake: FakeDiscord, bot: DiscordAdapter, payload: dict[str, Any]
) -> list[Message]:
    via = f"interaction:{payload['token']}"

    def mine() -> list[Message]:
        return [m for m in fake.messages if m.via == via]

    feed(bot, payload)
    await fake.wait_for(lambda: bool(mine()))
    # A reply of several messages: until the adapter has sent all of it, whatever the load.
    await asyncio.wait_for(bot.answered(), timeout=30)
    return mine()


# --- start ----------------------------------------------------------------------------------------------


async def test_commands_are_synced_globally_or_to_the_development_guild(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps
) -> None:
    names = {c["name"] for c in fake.commands[None]}
    assert {
        "latest",
        "search",
        "post",
        "subscribe",
        "unsubscribe",
        "subscriptions",
        "help",
    } <= names
    subscribe = next(c for c in fake.commands[None] if c["name"] == "subscribe")
    assert int(subscribe["default_member_permissions"]) == MANAGE_CHANNELS

    guild_bot = DiscordAdapter(settings_for(fake, guild_id=GUILD), connect_gateway=False)
    await guild_bot.start(AdapterContext(handle=bot._context.handle))  # type: ignore[union-attr]
    try:
        await guild_bot.sync_commands()
    finally:
        await guild_bot.stop()
    assert {c["name"] for c in fake.commands[GUILD]} == names


async def test_search_answers_with_embeds_highlights_and_a_next_page_button(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    [answer] = await slash(fake, bot, "search", query="sanctions")
    assert answer.ephemeral
    assert "sanctions" in answer.content
    assert 1 <= len(answer.embeds) <= 5
    assert any("**sanctions**" in e.get("description", "").casefold() for e in answer.embeds)
    assert answer.custom_ids == ["ld:search sanctions 2"]
    assert all(e["url"].startswith("https://news.example/live/") for e in answer.embeds)

    [page2] = await click(fake, bot, answer)
    assert page2.embeds
    titles1 = {e["title"] for e in answer.embeds}
    assert titles1.isdisjoint(e["title"] for e in page2.embeds)


async def test_latest_shows_the_newest_posts_and_autocompletes_blogs(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    [answer] = await slash(fake, bot, "latest", count=3)
    assert [e["title"] for e in answer.embeds] == ["Update 11", "Update 10", "Update 9"]
    assert answer.ephemeral

    first, rest = await slash(fake, bot, "latest", count=20)  # 11 posts: over ten embeds
    assert [len(first.embeds), len(rest.embeds)] == [10, 1]
    assert first.ephemeral and rest.ephemeral and fake.invalid == 0

    [only] = await slash(fake, bot, "latest", count=1, source="Kyiv live")
    assert [e["title"] for e in only.embeds] == ["Update 11"]
    assert only.embeds[0]["footer"]["text"].startswith("Kyiv live · /post 11")  # its short number

    data = {
        "id": "1",
        "name": "subscribe",
        "type": 1,
        "options": [{"name": "source", "type": 3, "value": "kyi", "focused": True}],
    }
    before = len(fake.choices)
    feed(bot, fake.interaction(4, data, channel_id=CHANNEL, guild_id=GUILD))
    await fake.wait_for(lambda: len(fake.choices) > before)
    assert fake.choices[-1] == [{"name": "Kyiv live", "value": "Kyiv live"}]


async def test_post_shows_one_post_and_help_lists_the_commands(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    [answer] = await slash(fake, bot, "post", id="kyiv-002")
    [embed] = answer.embeds
    assert embed["title"] == "Sanctions package outlined"
    assert "The EU outlines new sanctions on banks." in embed["description"]
    assert "Published" in answer.content

    [missing] = await slash(fake, bot, "post", id="nope")
    assert "can't find a post" in missing.content and not missing.embeds

    [helped] = await slash(fake, bot, "help")
    for name in ("latest", "search", "subscribe", "unsubscribe", "subscriptions"):
        assert f"/{name}" in helped.content


async def test_only_members_who_manage_the_channel_subscribe_it(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps
) -> None:
    [refused] = await slash(fake, bot, "subscribe", keywords="sanctions")
    assert "Only an admin" in refused.content and refused.ephemeral
    assert await deps.subscriptions.list(platform="discord") == []

    [done] = await slash(
        fake,
        bot,
        "subscribe",
        source="Kyiv live",
        keywords="sanctions",
        user=ADMIN,
        permissions=MANAGE_CHANNELS,
    )
    assert "Subscribed this chat to Kyiv live matching" in done.content
    assert not done.ephemeral  # the whole channel sees subscription changes
    [subscription] = await deps.subscriptions.list(platform="discord")
    assert subscription.target.address == str(CHANNEL)
    assert (subscription.source_id, subscription.query) == (BLOG.id, "sanctions")

    [by_server_manager] = await slash(fake, bot, "subscribe", user=ADMIN, permissions=MANAGE_GUILD)
    assert "Subscribed this chat to all blogs" in by_server_manager.content

    [listed] = await slash(fake, bot, "subscriptions")
    assert f"#{subscription.id}" in listed.content and "all blogs" in listed.content

    [not_yours] = await slash(fake, bot, "unsubscribe")
    assert "Only an admin" in not_yours.content
    [gone] = await slash(
        fake,
        bot,
        "unsubscribe",
        which=str(subscription.id),
        user=ADMIN,
        permissions=MANAGE_CHANNELS,
    )
    assert "Unsubscribed" in gone.content
    assert len(await deps.subscriptions.list(platform="discord")) == 1


async def test_a_direct_message_subscribes_itself(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps
) -> None:
    [done] = await slash(fake, bot, "subscribe", channel=DM_CHANNEL, guild=None)
    assert "Subscribed" in done.content
    [subscription] = await deps.subscriptions.list(platform="discord")
    assert subscription.target.kind == "private"
    assert subscription.target.address == str(DM_CHANNEL)


async def test_a_slow_answer_shows_thinking_first_then_follows_up(
    fake: FakeDiscord, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.adapters.discord.DEFER_AFTER", 0.05)

    async def slow(request: Request) -> Reply:
        await asyncio.sleep(0.3)
        return await handle(request, deps)

    adapter = DiscordAdapter(settings_for(fake), connect_gateway=False)
    await adapter.start(AdapterContext(handle=slow))
    try:
        [answer] = await slash(fake, adapter, "latest", count=2)
    finally:
        await adapter.stop()
    assert fake.answers[-1]["type"] == 5  # deferred: "Livedesk is thinking…"
    assert len(answer.embeds) == 2


async def test_a_button_too_long_for_its_custom_id_still_works(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    query = "sanctions " + " ".join(["OR sanctions"] * 12)
    [answer] = await slash(fake, bot, "search", query=query)
    [custom_id] = answer.custom_ids
    assert custom_id.startswith("ld#") and len(custom_id) <= 100
    [page2] = await click(fake, bot, answer)
    assert page2.embeds


# --- pushing posts --------------------------------------------------------------------------------------


def channel_target(channel_id: int, **options: str) -> Target:
    return Target(platform="discord", address=str(channel_id), kind="channel", options=options)


def dispatcher(db: Database, adapter: DiscordAdapter) -> Dispatcher:
    settings = DispatchSettings(backoff_base=0.05, backoff_max=0.2, poll_interval=0.05)
    return Dispatcher(SqliteOutbox(db), {"discord": adapter}, settings)


async def test_new_and_edited_posts_reach_every_subscribed_channel(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps, db: Database
) -> None:
    hook_channel = 444444444444444444
    fake.add_webhook(555, "hook-token", hook_channel)
    targets = [
        channel_target(CHANNEL),
        channel_target(OTHER_CHANNEL),
        channel_target(hook_channel, webhook_id="555", webhook_token="hook-token"),
    ]
    for target in targets:
        await deps.subscriptions.add(target, created_by="test")
    fresh = post(
        50,
        "Convoy reaches Kyiv",
        "A convoy of trucks reached the city.",
        byline="Jane Doe",
        background="The convoy left on Monday.",
        images=[Image(caption="Trucks", url="https://img.example/1.jpg")],
    )
    await deps.store.ingest(ImportResult(source=BLOG, posts=(fresh,)))
    await dispatcher(db, bot).run_until_idle()

    for channel_id in (CHANNEL, OTHER_CHANNEL, hook_channel):
        [message] = fake.in_channel(channel_id)
        [embed] = message.embeds
        assert embed["title"] == "Convoy reaches Kyiv"
        assert embed["url"] == "https://news.example/live/kyiv-050"
        assert embed["author"]["name"] == "Jane Doe"
        assert embed["image"]["url"] == "https://img.example/1.jpg"
        assert embed["footer"]["text"].startswith("Kyiv live")
        assert embed["timestamp"].startswith("2022-01-21T12:50")
        assert {
            "name": "Some background",
            "value": "The convoy left on Monday.",
            "inline": False,
        } in embed["fields"]
    assert fake.in_channel(hook_channel)[0].via == "webhook:555"

    edited = fresh.model_copy(update={"body": ("A convoy of 40 trucks reached the city.",)})
    await deps.store.ingest(ImportResult(source=BLOG, posts=(edited,)))
    await dispatcher(db, bot).run_until_idle()
    for channel_id in (CHANNEL, OTHER_CHANNEL, hook_channel):
        [message] = fake.in_channel(channel_id)  # edited in place, not sent again
        assert "40 trucks" in message.embeds[0]["description"] and message.edits == 1


async def test_an_unknown_or_forbidden_channel_loses_its_subscription(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps, db: Database
) -> None:
    for channel_id in (CHANNEL, OTHER_CHANNEL, DM_CHANNEL):
        await deps.subscriptions.add(channel_target(channel_id), created_by="test")
    fake.unknown_channels.add(CHANNEL)
    fake.forbidden_channels.add(OTHER_CHANNEL)
    await deps.store.ingest(ImportResult(source=BLOG, posts=(post(60, "Blackout"),)))
    await dispatcher(db, bot).run_until_idle()

    states = {s.target.address: s for s in await deps.subscriptions.list(platform="discord")}
    assert states[str(CHANNEL)].state == SubscriptionState.DISABLED
    assert "Unknown Channel" in (states[str(CHANNEL)].reason or "")
    assert states[str(OTHER_CHANNEL)].state == SubscriptionState.DISABLED
    assert "Missing Access" in (states[str(OTHER_CHANNEL)].reason or "")
    assert states[str(DM_CHANNEL)].state == SubscriptionState.ACTIVE
    [delivered] = fake.in_channel(DM_CHANNEL)
    assert delivered.embeds[0]["title"] == "Blackout"


async def test_a_huge_post_arrives_as_one_valid_embed(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps, db: Database
) -> None:
    await deps.subscriptions.add(channel_target(CHANNEL), created_by="test")
    words = ("sanctions " * 1000).strip()  # 10,000 characters
    huge = post(
        90,
        "A very long headline " * 20,
        words,
        byline="Reporter " * 40,
        background="Context " * 300,
        images=[
            Image(caption=f"Photo {n} " * 30, credit="AP", url=f"https://img.example/{n}.jpg")
            for n in range(40)
        ],
    )
    await deps.store.ingest(ImportResult(source=BLOG, posts=(huge,)))
    await dispatcher(db, bot).run_until_idle()

    assert fake.invalid == 0
    [message] = fake.in_channel(CHANNEL)
    [embed] = message.embeds
    assert len(embed["title"]) <= 256 and embed["title"].endswith("…")
    assert len(embed["author"]["name"]) <= 256
    assert embed["description"].endswith(
        "[Read the whole post](https://news.example/live/kyiv-090)"
    )
    assert "sanctions…\n" in embed["description"]  # cut on a word
    assert len(discord.Embed.from_dict(embed)) <= 6000
    assert embed["image"]["url"] == "https://img.example/0.jpg"


async def test_mentions_in_a_post_ping_nobody_and_markdown_stays_text(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps, db: Database
) -> None:
    await deps.subscriptions.add(channel_target(CHANNEL), created_by="test")
    hostile = post(
        70, "**Breaking** @everyone", "Hey @here and <@&123456> — [click](https://evil.example)"
    )
    await deps.store.ingest(ImportResult(source=BLOG, posts=(hostile,)))
    await dispatcher(db, bot).run_until_idle()

    [message] = fake.in_channel(CHANNEL)
    assert message.allowed_mentions == {"parse": []}
    [embed] = message.embeds
    assert embed["title"] == "\\*\\*Breaking\\*\\* @\u200beveryone"
    assert "\\[click\\]\\(https://evil.example\\)" in embed["description"]  # no masked link

    [answer] = await slash(fake, bot, "post", id="kyiv-070")
    assert answer.allowed_mentions == {"parse": []}


async def test_a_broadcast_to_200_channels_gets_no_429(
    deps: Deps, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = [500_000_000_000_000_000 + n for n in range(200)]
    for channel_id in channels:
        await deps.subscriptions.add(channel_target(channel_id), created_by="test")
    async with FakeDiscord() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        adapter = DiscordAdapter(settings_for(fake), connect_gateway=False)
        await adapter.start(AdapterContext(handle=lambda r: handle(r, deps)))
        try:
            await deps.store.ingest(ImportResult(source=BLOG, posts=(post(80, "Ceasefire"),)))
            await dispatcher(db, adapter).run_until_idle(timeout=30)
        finally:
            await adapter.stop()
    assert {m.channel_id for m in fake.messages} == set(channels)
    assert fake.rate_limited == 0


# --- errors, start and stop -----------------------------------------------------------------------------


def card(n: int = 1, title: str | None = None) -> Card:
    return card_from_post(post(n, title or f"Post {n}"), source_title="Kyiv live")


async def test_send_errors_map_to_what_the_dispatcher_does(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    cases: list[tuple[int, dict[str, Any], dict[str, str], type[Exception]]] = [
        (400, {"code": 50035, "message": "Invalid Form Body"}, {}, InvalidPayload),
        (503, {"code": 0, "message": "Service Unavailable"}, {}, TransientError),
        (
            429,
            {"message": "You are being rate limited.", "retry_after": 7.5, "global": False},
            {"Retry-After": "8"},
            RateLimited,
        ),  # no Via header: discord.py does not retry it
        (404, {"code": 10003, "message": "Unknown Channel"}, {}, PermanentError),
        (403, {"code": 50013, "message": "Missing Permissions"}, {}, PermanentError),
    ]
    for n, (status, body, headers, expected) in enumerate(cases):
        channel_id = CHANNEL + n  # each its own rate-limit bucket
        fake.fail_next[channel_id] = [(status, body, headers)]
        with pytest.raises(expected) as raised:
            await bot.send(channel_target(channel_id), card())
        if status == 429:
            assert isinstance(raised.value, RateLimited) and raised.value.retry_after == 8
        if status in (403, 404):
            assert body["message"] in str(raised.value)


async def test_an_unreachable_api_is_retried_later_and_a_bad_reference_is_refused(
    fake: FakeDiscord, bot: DiscordAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidPayload):
        await bot.edit(channel_target(CHANNEL), "not-a-reference", card())
    monkeypatch.setattr(discord.http.Route, "BASE", "http://127.0.0.1:9/api/v10")
    with pytest.raises(TransientError):
        await bot.send(channel_target(CHANNEL), card())


async def test_an_edit_of_a_deleted_message_sends_it_again(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    target = channel_target(CHANNEL)
    reference = await bot.send(target, card())
    fake.messages.clear()  # someone deleted it
    new_reference = await bot.edit(target, reference, card(title="Post 1, corrected"))
    assert new_reference != reference
    [message] = fake.in_channel(CHANNEL)
    assert new_reference == f"{CHANNEL}:{message.id}"


async def test_a_wrong_token_is_one_clear_line(fake: FakeDiscord) -> None:
    adapter = DiscordAdapter(
        DiscordSettings.model_validate({"token": "wrong", "api_base": fake.api_base}),
        connect_gateway=False,
    )
    with pytest.raises(StartupError) as raised:
        await adapter.start(AdapterContext(handle=lambda r: handle(r, None)))  # type: ignore[arg-type]
    await adapter.stop()
    assert str(raised.value) == "Discord rejected the token (check LIVEDESK_DISCORD__TOKEN)"

    unreachable = DiscordAdapter(
        DiscordSettings.model_validate({"token": "t", "api_base": "http://127.0.0.1:9/api/v10"}),
        connect_gateway=False,
    )
    with pytest.raises(StartupError) as raised:
        await unreachable.start(AdapterContext(handle=lambda r: handle(r, None)))  # type: ignore[arg-type]
    await unreachable.stop()
    assert str(raised.value).startswith("cannot log in to Discord's API:")
    assert "\n" not in str(raised.value)


async def test_the_api_and_gateway_addresses_are_redirected_and_restored(fake: FakeDiscord) -> None:
    before_api, before_gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    adapter = DiscordAdapter(
        settings_for(fake, gateway_url="ws://127.0.0.1:9/gateway", sharded=True),
        connect_gateway=False,
    )
    await adapter.start(AdapterContext(handle=lambda r: handle(r, None)))  # type: ignore[arg-type]
    try:
        assert isinstance(adapter.client, discord.AutoShardedClient)
        assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
        assert fake.api_base == discord.http.Route.BASE
    finally:
        await adapter.stop()
    assert (
        before_api,
        before_gateway,
    ) == (discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)


@pytest.mark.parametrize("sharded", [False, True], ids=["client", "auto-sharded"])
async def test_through_the_gateway_a_slash_command_is_answered(
    fake: FakeDiscord, deps: Deps, sharded: bool
) -> None:
    settings = settings_for(fake, gateway_url=fake.gateway_url, sharded=sharded)
    adapter = DiscordAdapter(settings)  # connects the gateway, syncs at start
    await adapter.start(AdapterContext(handle=lambda r: handle(r, deps), timezone=KYIV))
    try:
        assert fake.commands[None]  # synced at start
        await fake.wait_for(lambda: bool(fake.sessions))
        data = {
            "id": "1",
            "name": "latest",
            "type": 1,
            "options": [{"name": "count", "type": 4, "value": 2}],
        }
        payload = fake.interaction(2, data, channel_id=CHANNEL, guild_id=GUILD)
        await fake.dispatch("INTERACTION_CREATE", payload)
        via = f"interaction:{payload['token']}"
        await fake.wait_for(lambda: any(m.via == via for m in fake.messages))
    finally:
        await adapter.stop()
    [answer] = [m for m in fake.messages if m.via == via]
    assert len(answer.embeds) == 2
    assert fake.identified[0]["intents"] == discord.Intents(guilds=True).value
    if sharded:
        assert fake.identified[0]["shard"] == [0, 1]
    await fake.wait_for(lambda: not fake.sessions)  # the connection was closed at stop


async def test_a_fleet_worker_holds_the_gateway_only_while_it_leads(
    fake: FakeDiscord, deps: Deps
) -> None:
    """In a fleet the gateway is one worker's (two sessions would answer every slash command):
    not connected at start, connected by start_receiving(), left by stop_receiving(), taken
    again later; sending works throughout (REST)."""
    settings = settings_for(fake, gateway_url=fake.gateway_url)
    adapter = DiscordAdapter(settings)
    adapter.polls = False
    await adapter.start(AdapterContext(handle=lambda r: handle(r, deps), timezone=KYIV))
    try:
        assert not fake.commands and not fake.identified  # no sync, no session: a follower
        await adapter.send(channel_target(CHANNEL), card())
        assert fake.in_channel(CHANNEL)
        await adapter.start_receiving()
        await fake.wait_for(lambda: len(fake.sessions) == 1)
        assert fake.commands[None]  # the leader syncs the commands
        await adapter.stop_receiving()
        await fake.wait_for(lambda: not fake.sessions)
        await adapter.start_receiving()
        await fake.wait_for(lambda: len(fake.sessions) == 1)
        assert len(fake.identified) == 2
    finally:
        await adapter.stop()
    await fake.wait_for(lambda: not fake.sessions)
