"""Command replies and pushed posts share one budget per bot and per chat.

Real python-telegram-bot against the fake Bot API (which enforces 30/s overall, 1/s per chat and
20/min per group, all at once, with 429 + retry_after, counting replies like pushes), the real
handlers, a real SQLite store and the real dispatcher given the same `SendBudget` as the adapter.
The outcome asserted is the platform's: every message arrives, in the right order, and the fake never
had to answer 429 (except where a test forces one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.adapters.base import AdapterContext, Capabilities, Rate, RateLimits
from bot.adapters.telegram import TelegramAdapter
from bot.config import DispatchSettings, TelegramSettings
from bot.dispatcher import Dispatcher
from bot.models import ImportResult, Reply, Request, Target
from bot.ratelimit import RateLimiter, SendBudget, target_checks
from handlers import Deps, handle
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.store import SqliteStore
from tests.blog import BLOG, KYIV, POSTS, post
from tests.cli_process import spawn
from tests.fakes.telegram import FakeTelegram, Limits, Sent

USER = 4242
ADMIN = 777
GROUP = -1009001
FAST = DispatchSettings(backoff_base=0.05, backoff_max=0.2, poll_interval=0.05)


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(posts.db, ImportResult(source=BLOG, posts=tuple(POSTS)))
    return Deps(store=SqliteStore(db), timezone=KYIV)


def chat(chat_id: int, kind: str = "private") -> Target:
    return Target.model_validate({"platform": "telegram", "address": str(chat_id), "kind": kind})


@contextlib.asynccontextmanager
async def live_bot(
    db: Database,
    deps: Deps,
    limits: Limits,
    capabilities: Capabilities | None = None,
    budget: SendBudget | None = None,
) -> AsyncIterator[tuple[FakeTelegram, TelegramAdapter]]:
    """The fake, the adapter and a running dispatcher, the two sharing one budget (as `App` does)."""

    async def through_handlers(request: Request) -> Reply:
        return await handle(request, deps)

    async with FakeTelegram(limits=limits) as fake:
        settings = TelegramSettings.model_validate(
            {"token": fake.token, "base_url": fake.base_url, "rate_scale": limits.scale}
        )
        adapter = TelegramAdapter(settings, poll_timeout=0.5)
        if capabilities is not None:
            adapter.capabilities = capabilities
        budget = SendBudget() if budget is None else budget
        await adapter.start(AdapterContext(handle=through_handlers, timezone=KYIV, pacer=budget))
        dispatcher = Dispatcher(
            SqliteOutbox(db), {"telegram": adapter}, FAST, limiter=budget.limiter
        )
        running = asyncio.create_task(dispatcher.run())
        try:
            yield fake, adapter
        finally:
            await dispatcher.stop()
            await running
            await adapter.stop()


async def publish(deps: Deps, *posts_: int) -> None:
    fresh = tuple(post(n, f"Breaking {n}", f"Story number {n}.") for n in posts_)
    await deps.store.ingest(ImportResult(source=BLOG, posts=fresh))


def pushes(fake: FakeTelegram) -> list[Sent]:
    return [m for m in fake.sent if m.text.startswith("Breaking")]


async def test_a_search_during_a_broadcast_is_answered_before_it_ends_without_a_429(
    db: Database, deps: Deps
) -> None:
    # 30/s scaled ×2: 300 chats take five seconds; the /search comes after the first sixty.
    chats = [10_000 + n for n in range(300)]
    for chat_id in chats:
        await deps.subscriptions.add(chat(chat_id), created_by="test")
    async with live_bot(db, deps, Limits(scale=2.0)) as (fake, _):
        await publish(deps, 90)
        await fake.wait_for(lambda: len(pushes(fake)) >= 60, timeout=60)
        fake.command(USER, "/search sanctions")
        await fake.wait_for(lambda: bool(fake.messages_in(USER)), timeout=60)
        pushed_before_answer = len(pushes(fake))
        await fake.wait_for(lambda: len(pushes(fake)) == len(chats), timeout=60)

    [answer] = fake.messages_in(USER)
    assert "Sanctions package outlined" in answer.text
    assert pushed_before_answer < len(chats)  # answered while the broadcast was still going
    assert {m.chat_id for m in pushes(fake)} == set(chats)
    assert fake.rate_limited == 0


async def test_a_reply_and_pushes_to_the_same_chat_share_its_one_per_second(
    db: Database, deps: Deps
) -> None:
    await deps.subscriptions.add(chat(USER), created_by="test")
    async with live_bot(db, deps, Limits()) as (fake, _):
        await publish(deps, *range(91, 96))
        await fake.wait_for(lambda: len(pushes(fake)) >= 1, timeout=30)
        fake.command(USER, "/help")
        await fake.wait_for(lambda: len(fake.messages_in(USER)) == 6, timeout=30)

    texts = [m.text for m in fake.messages_in(USER)]
    assert sum(t.startswith("Breaking") for t in texts) == 5
    answer = next(i for i, t in enumerate(texts) if not t.startswith("Breaking"))
    assert answer < 5  # the reply went ahead of the pushes still queued for the chat
    assert fake.rate_limited == 0


async def test_a_reply_that_meets_a_429_is_sent_again_after_retry_after(
    db: Database, deps: Deps
) -> None:
    async with live_bot(db, deps, Limits(scale=10.0)) as (fake, _):
        fake.forced_429.append(1)
        fake.command(USER, "/latest 1")
        await fake.wait_for(lambda: bool(fake.messages_in(USER)), timeout=30)

    [answer] = fake.messages_in(USER)
    assert "Update 11" in answer.text
    tries = [p for method, p in fake.calls if method == "sendMessage" and p["chat_id"] == str(USER)]
    assert len(tries) == 2 and fake.errors == [(429, "Too Many Requests: retry after")]


async def test_a_reply_that_keeps_meeting_429s_is_given_up_with_one_log_line(
    db: Database, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_bot(db, deps, Limits(scale=10.0), budget=SendBudget(tries=2)) as (fake, _):
        fake.forced_429.extend([1, 1])
        fake.command(USER, "/latest 1")
        await fake.wait_for(lambda: fake.rate_limited == 2, timeout=30)
        fake.command(USER, "/latest 2")  # the bot goes on answering
        await fake.wait_for(lambda: bool(fake.messages_in(USER)), timeout=30)

    assert "Update 10" in fake.messages_in(USER)[0].text
    failed = [r.getMessage() for r in caplog.records if "reply to chat" in r.getMessage()]
    assert len(failed) == 1 and "Flood control exceeded" in failed[0]


async def test_a_backfill_into_a_new_group_keeps_the_chat_limit(db: Database, deps: Deps) -> None:
    async with live_bot(db, deps, Limits()) as (fake, _):
        fake.chat(GROUP, "supergroup", admins={ADMIN})
        fake.command(GROUP, "/subscribe", user_id=ADMIN)
        await fake.wait_for(lambda: len(fake.messages_in(GROUP)) == 4, timeout=30)

    texts = [m.text for m in fake.messages_in(GROUP)]
    assert any("Subscribed" in t for t in texts), texts
    assert sum("Update" in t for t in texts) == 3  # the latest three posts
    assert fake.rate_limited == 0


async def test_per_chat_and_per_group_limits_apply_together(db: Database, deps: Deps) -> None:
    # 2 per second per chat, 3 per 2 s per group: six posts break one limit or the other unless both
    # are kept (three at once break the first; two a second break the second).
    limits = Limits(per_chat=2, per_group_minute=3, group_window=2.0)
    capabilities = Capabilities(
        max_text=4096,
        markup="html",
        can_edit=True,
        rate_limits=RateLimits(
            overall=Rate(30, 1), per_target=Rate(2, 1), per_kind={"group": Rate(3, 2.0)}
        ),
    )
    fake_group, private = GROUP, USER
    await deps.subscriptions.add(chat(fake_group, "group"), created_by="test")
    await deps.subscriptions.add(chat(private), created_by="test")
    async with live_bot(db, deps, limits, capabilities) as (fake, _):
        fake.chat(fake_group, "supergroup")
        await publish(deps, *range(101, 107))
        await fake.wait_for(lambda: len(pushes(fake)) == 12, timeout=60)

    assert len(fake.messages_in(fake_group)) == 6 and len(fake.messages_in(private)) == 6
    assert fake.rate_limited == 0


async def test_forum_topics_of_one_group_share_its_chat_limit(db: Database, deps: Deps) -> None:
    for topic in ("1", "2"):
        target = Target.model_validate(
            {"platform": "telegram", "address": str(GROUP), "kind": "group", "thread": topic}
        )
        await deps.subscriptions.add(target, created_by="test")
    async with live_bot(db, deps, Limits()) as (fake, _):
        fake.chat(GROUP, "supergroup")
        await publish(deps, 111, 112)
        await fake.wait_for(lambda: len(pushes(fake)) == 4, timeout=30)

    assert sorted((m.thread_id, m.text.split()[1]) for m in pushes(fake)) == [
        (1, "111"),
        (1, "112"),
        (2, "111"),
        (2, "112"),
    ]
    assert fake.rate_limited == 0  # Telegram counts the chat, whatever the topic


def test_a_waiting_reply_takes_the_next_free_slot_ahead_of_pushes() -> None:
    now = [100.0]
    limiter = RateLimiter(lambda: now[0])
    overall = [(("platform", "telegram"), Rate(2, 1.0))]
    limits = RateLimits(per_target=Rate(1, 1.0), per_kind={"group": Rate(20, 60.0)})
    for done_at in (100.0, 100.5):  # a full window of pushes, completed half a second apart
        _, permit = limiter.acquire(overall)
        assert permit is not None
        now[0] = done_at
        limiter.release(permit)
    reply = [*overall, *target_checks("telegram", limits, "-5", "group")]
    assert [rate for _, rate in reply[1:]] == [Rate(1, 1.0), Rate(20, 60.0)]
    limiter.reserve(reply)
    now[0] = 101.0  # one slot opens: it is the reply's
    assert limiter.delay(overall) == pytest.approx(0.5)
    assert limiter.acquire(overall)[1] is None
    _, permit = limiter.acquire(reply, priority=True)
    assert permit is not None
    limiter.unreserve(reply)
    limiter.release(permit)
    assert limiter.acquire(overall)[1] is None  # the reply's slot is taken until 102.0
    now[0] = 101.5
    assert limiter.acquire(overall)[1] is not None  # the next slot goes to the next push


async def test_livedesk_run_answers_a_subscribe_and_paces_its_backfill(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "livedesk.db"
    database = await Database.open(db_path)
    try:
        await ingest(database, ImportResult(source=BLOG, posts=tuple(POSTS)))
    finally:
        await database.close()
    async with FakeTelegram() as fake:
        fake.chat(GROUP, "supergroup", admins={ADMIN})
        env = {
            "LIVEDESK_DB_PATH": str(db_path),
            "LIVEDESK_TELEGRAM__TOKEN": fake.token,
            "LIVEDESK_TELEGRAM__BASE_URL": fake.base_url,
        }
        fake.command(GROUP, "/subscribe", user_id=ADMIN)  # waiting for the bot's first poll
        child = spawn("run", cwd=tmp_path, env=env)
        try:
            await fake.wait_for(lambda: len(fake.messages_in(GROUP)) == 4, timeout=60)
            fake.command(GROUP, "/latest 1", user_id=ADMIN)
            await fake.wait_for(lambda: len(fake.messages_in(GROUP)) == 5, timeout=60)
        finally:
            child.terminate()
            fake.end_long_polls()
            _, err = await asyncio.to_thread(child.communicate, timeout=30)

    texts = [m.text for m in fake.messages_in(GROUP)]
    assert any("Subscribed" in t for t in texts[:4]), texts
    assert "Update 11" in texts[4]
    assert fake.rate_limited == 0
    assert child.returncode == 0, err
    assert "rate limited" not in err
