"""The Discord adapter end to end: real discord.py against a fake Discord REST API on 127.0.0.1, real
handlers, a real SQLite store, the real dispatcher. Slash commands and button clicks arrive as real
INTERACTION_CREATE payloads (`client._connection.parse_interaction_create`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.base import (
    AdapterContext,
    InvalidPayload,
    PermanentError,
    RateLimited,
    StartupError,
    TransientError,
)
from bot.adapters.discord import DiscordAdapter, discord  # discord.py, imported quietly
from bot.cards import card_from_post
from bot.config import DiscordSettings, DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import (
    Image,
    ImportResult,
    Post,
    Reply,
    Request,
    Source,
    SourceKind,
    SubscriptionState,
    Target,
)
from handlers import Deps, handle
from storage.db import Database
from storage.posts import PostStore
from storage.subscriptions import SubscriptionStore
from tests.fakes.discord import (
    APPLICATION_ID,
    MANAGE_CHANNELS,
    MANAGE_GUILD,
    Bucket,
    FakeDiscord,
    Limits,
    Message,
)

KYIV = ZoneInfo("Europe/Kyiv")
T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
BLOG = Source(id="kyiv-live", title="Kyiv live", kind=SourceKind.PAGE_TEXT)
GUILD = 111111111111111111
CHANNEL = 222222222222222222
OTHER_CHANNEL = 222222222222222299
DM_CHANNEL = 333333333333333333
ADMIN = 777
MEMBER = 4242


def post(n: int, title: str, *body: str, **extra: object) -> Post:
    return Post.model_validate(
        {
            "id": f"kyiv-{n:03d}",
            "source_id": BLOG.id,
            "published_at": T0 + timedelta(minutes=n),
            "title": title,
            "body": body or (f"Routine update number {n}.",),
            "permalink": f"https://news.example/live/kyiv-{n:03d}",
            **extra,
        }
    )


POSTS = [
    post(1, "Blinken meets Lavrov in Geneva", "Talks on sanctions and troops."),
    post(2, "Sanctions package outlined", "The EU outlines new sanctions on banks."),
    post(3, "Troops near the border", "Satellite images show troops."),
    *[post(n, f"Update {n}", f"Routine update number {n} on sanctions.") for n in range(4, 12)],
]


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
    await posts.import_result(ImportResult(source=BLOG, posts=tuple(POSTS)))
    return Deps(db=db, posts=posts, subscriptions=SubscriptionStore(db), timezone=KYIV)


@pytest.fixture
async def bot(fake: FakeDiscord, deps: Deps) -> AsyncIterator[DiscordAdapter]:
    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    async def source_names() -> list[str]:
        return [s.title for s in await deps.posts.all_sources()]

    adapter = DiscordAdapter(
        settings_for(fake), timezone=KYIV, source_names=source_names, connect_gateway=False
    )
    await adapter.start(AdapterContext(handle=through_handlers))
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


async def click(fake: FakeDiscord, bot: DiscordAdapter, message: Message, n: int = 0) -> list[Message]:
    data = {"custom_id": message.custom_ids[n], "component_type": 2}
    payload = fake.interaction(
        3, data, channel_id=message.channel_id, guild_id=GUILD, message=message
    )
    return await _answered(fake, bot, payload)


async def _answered(fake: FakeDiscord, bot: DiscordAdapter, payload: dict[str, Any]) -> list[Message]:
    via = f"interaction:{payload['token']}"

    def mine() -> list[Message]:
        return [m for m in fake.messages if m.via == via]

    bot.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    await fake.wait_for(lambda: bool(mine()))
    while True:  # a reply of several messages: until no more arrive for a moment
        seen = len(mine())
        try:
            await fake.wait_for(lambda: len(mine()) > seen, timeout=0.3)
        except TimeoutError:
            return mine()


# --- start ----------------------------------------------------------------------------------------------


async def test_commands_are_synced_globally_or_to_the_development_guild(
    fake: FakeDiscord, bot: DiscordAdapter, deps: Deps
) -> None:
    names = {c["name"] for c in fake.commands[None]}
    assert {"latest", "search", "post", "subscribe", "unsubscribe", "subscriptions", "help"} <= names
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
