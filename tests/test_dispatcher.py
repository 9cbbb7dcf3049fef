"""The dispatcher against a fault-injecting fake adapter, on a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from bot.adapters.base import (
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    RateLimits,
    TargetMoved,
    TransientError,
)
from bot.config import DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import EditPolicy, SubscriptionState, Target
from storage.db import Database
from storage.outbox import Outbox
from storage.outbox import Outbox as SqliteOutbox
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription
from tests.fakes.flaky import FlakyAdapter, import_posts, make_post, note_reads, note_sends


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat(address: str, kind: Any = "group") -> Target:
    return Target(platform="fake", address=address, kind=kind)


SETTINGS = DispatchSettings(concurrency=8, max_attempts=4, backoff_base=2.0, backoff_max=60.0)


def dispatcher(
    db: Database, adapter: FlakyAdapter, clock: FakeClock | None = None, **settings: Any
) -> Dispatcher:
    merged = SETTINGS.model_copy(update=settings)
    if clock is None:
        return Dispatcher(SqliteOutbox(db), {adapter.platform: adapter}, merged)
    return Dispatcher(SqliteOutbox(db), {adapter.platform: adapter}, merged, clock=clock)


async def states(db: Database) -> list[tuple[str, str, str, str | None]]:
    async with db.reader.execute(
        "SELECT s.address, p.id, d.state, d.last_error FROM deliveries d "
        "JOIN subscriptions s ON s.id = d.subscription_id JOIN posts p ON p.rowid = d.post_rowid "
        "ORDER BY d.id"
    ) as cur:
        return [(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]


async def test_a_post_reaches_every_matching_subscription_once(db: Database) -> None:
    store = SubscriptionStore(db)
    for address in ("a", "b", "c"):
        await store.add(chat(address), created_by="u")
    await store.add(chat("nato"), created_by="u", query="NATO OR sanctions")
    await store.add(chat("weather"), created_by="u", query="snow")
    adapter = FlakyAdapter()
    await import_posts(db, [make_post(1, title="New sanctions on Russia")])
    await dispatcher(db, adapter).run_until_idle()

    assert sorted(c.target.address for c in adapter.calls) == ["a", "b", "c", "nato"]
    nato = adapter.sent_to("nato")[0]
    assert nato.source_title == "Ukraine live" and nato.title == "New sanctions on Russia"
    assert nato.matched_terms == ("sanctions",)
    assert adapter.sent_to("a")[0].matched_terms == ()
    assert {s for _, _, s, _ in await states(db)} == {"sent"}

    # A second dispatcher (a restart) finds nothing left to send.
    await dispatcher(db, adapter).run_until_idle()
    assert len(adapter.calls) == 4


async def test_posts_reach_a_target_in_publication_order_even_across_retries(db: Database) -> None:
    store = SubscriptionStore(db)
    await store.add(chat("a"), created_by="u")
    await store.add(chat("b"), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", TransientError("HTTP 502"))
    # One document lists them out of order; another adds an older post later.
    await import_posts(db, [make_post(n) for n in (4, 2, 5, 1, 3)])
    d = dispatcher(db, adapter, clock, concurrency=16)
    await d.run_until_idle()
    assert adapter.post_ids_to("b") == [f"blog-{n}" for n in range(1, 6)]
    assert adapter.post_ids_to("a") == []  # the first failed: nothing later may overtake it
    clock.advance(60)
    await d.run_until_idle()
    assert adapter.post_ids_to("a") == [f"blog-{n}" for n in range(1, 6)]


async def test_429_retry_after_is_honoured_then_delivered_once(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    await SubscriptionStore(db).add(chat("b"), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", RateLimited(30.0))
    await import_posts(db, [make_post(1)])
    d = dispatcher(db, adapter, clock)
    await d.run_until_idle()
    assert adapter.attempts["a"] == 1 and adapter.sent_to("b")  # others are not held up
    clock.advance(29.5)
    await d.run_until_idle()
    assert adapter.attempts["a"] == 1  # no early retry
    clock.advance(1.0)
    await d.run_until_idle()
    assert adapter.attempts["a"] == 2 and len(adapter.sent_to("a")) == 1


async def test_global_429_holds_the_whole_platform(db: Database) -> None:
    store = SubscriptionStore(db)
    for address in ("a", "b"):
        await store.add(chat(address), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", RateLimited(10.0, global_=True))
    await import_posts(db, [make_post(1), make_post(2)])
    d = dispatcher(db, adapter, clock, concurrency=1)
    await d.run_until_idle()
    calls_before = len(adapter.calls)
    clock.advance(9)
    await d.run_until_idle()
    assert len(adapter.calls) == calls_before  # nobody on the platform was tried meanwhile
    clock.advance(2)
    await d.run_until_idle()
    assert adapter.post_ids_to("a") == ["blog-1", "blog-2"]
    assert adapter.post_ids_to("b") == ["blog-1", "blog-2"]


async def test_bursts_of_5xx_and_timeouts_then_success_with_backoff(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", TransientError("HTTP 502"), TimeoutError(), TransientError("HTTP 503"))
    await import_posts(db, [make_post(1)])
    d = dispatcher(db, adapter, clock, max_attempts=5)
    for _ in range(20):
        await d.run_until_idle()
        clock.advance(1.0)
    assert len(adapter.sent_to("a")) == 1
    times = adapter.attempt_times["a"]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # exponential backoff with jitter: 2, 4, 8 s, each between half and all of it
    for gap, full in zip(gaps, (2.0, 4.0, 8.0), strict=True):
        assert full / 2 - 1 <= gap <= full + 1
    assert [s for _, _, s, _ in await states(db)] == ["sent"]


async def test_a_hanging_send_times_out_and_is_retried(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    adapter = FlakyAdapter(delay=5.0)
    await import_posts(db, [make_post(1)])
    clock = FakeClock()
    d = Dispatcher(SqliteOutbox(db), {"fake": adapter}, SETTINGS, clock=clock, send_timeout=0.05)
    await d.run_until_idle()
    assert adapter.calls == []
    assert (await Outbox(db).counts())["pending"] == 1
    rows = await states(db)
    assert rows[0][3] is not None and "no answer" in rows[0][3]


async def test_permanent_error_disables_the_subscription_with_the_reason(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u")
    await store.add(chat("b"), created_by="u")
    adapter = FlakyAdapter()
    adapter.fail("a", PermanentError("bot was blocked by the user"))
    await import_posts(db, [make_post(1), make_post(2), make_post(3)])
    d = dispatcher(db, adapter)
    await d.run_until_idle()
    found = await store.get(sub.id)
    assert found is not None and found.state == SubscriptionState.DISABLED
    assert found.reason == "bot was blocked by the user"
    assert adapter.attempts["a"] == 1
    assert adapter.post_ids_to("b") == ["blog-1", "blog-2", "blog-3"]
    rows = [(a, s, e) for a, _, s, e in await states(db) if a == "a"]
    assert rows == [
        ("a", "dead", "bot was blocked by the user"),
        ("a", "skipped", "bot was blocked by the user"),
        ("a", "skipped", "bot was blocked by the user"),
    ]
    await import_posts(db, [make_post(4)])
    await d.run_until_idle()
    assert adapter.attempts["a"] == 1  # no more tries


async def test_invalid_payload_kills_only_that_delivery(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    adapter = FlakyAdapter()
    adapter.fail("a", InvalidPayload("invalid_blocks"))
    await import_posts(db, [make_post(1), make_post(2)])
    await dispatcher(db, adapter).run_until_idle()
    assert [(p, s) for _, p, s, _ in await states(db)] == [("blog-1", "dead"), ("blog-2", "sent")]


async def test_n_failures_make_a_delivery_dead_and_retry_redrives_it(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", *[TransientError(f"HTTP 50{i}") for i in range(4)])
    await import_posts(db, [make_post(1)])
    d = dispatcher(db, adapter, clock, max_attempts=4)
    for _ in range(6):
        await d.run_until_idle()
        clock.advance(120)
    assert adapter.attempts["a"] == 4 and adapter.calls == []
    outbox = Outbox(db)
    dead = await outbox.dead()
    assert [(x.post_id, x.attempts, x.last_error) for x in dead] == [("blog-1", 4, "HTTP 503")]
    assert await outbox.retry_dead() == 1
    await d.run_until_idle()
    assert adapter.post_ids_to("a") == ["blog-1"]
    assert await outbox.dead() == []


async def test_unexpected_adapter_exception_is_transient_and_isolated(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store = SubscriptionStore(db)
    await store.add(chat("a"), created_by="u")
    await store.add(chat("b"), created_by="u")
    clock = FakeClock()
    adapter = FlakyAdapter(clock=clock)
    adapter.fail("a", KeyError("surprise"))
    await import_posts(db, [make_post(1)])
    d = dispatcher(db, adapter, clock)
    await d.run_until_idle()
    assert adapter.post_ids_to("b") == ["blog-1"]
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback
    clock.advance(60)
    await d.run_until_idle()
    assert adapter.post_ids_to("a") == ["blog-1"]


@pytest.mark.parametrize(
    ("policy", "can_edit", "expected"),
    [
        (EditPolicy.EDIT, True, "edit"),
        (EditPolicy.EDIT, False, "follow-up"),
        (EditPolicy.FOLLOW_UP, True, "follow-up"),
        (EditPolicy.IGNORE, True, "nothing"),
    ],
)
async def test_edit_flow(db: Database, policy: EditPolicy, can_edit: bool, expected: str) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u", edit_policy=policy)
    adapter = FlakyAdapter(can_edit=can_edit)
    d = dispatcher(db, adapter)
    await import_posts(db, [make_post(1)])
    await d.run_until_idle()
    first = adapter.calls[0]
    await import_posts(db, [make_post(1, title="Post number 1 (corrected)")])
    await d.run_until_idle()
    later = adapter.calls[1:]
    if expected == "nothing":
        assert later == []
        return
    assert len(later) == 1
    call = later[0]
    assert call.card.title == "Post number 1 (corrected)" and call.card.version == 2
    if expected == "edit":
        assert call.kind == "edit" and call.reference == first.reference
        assert not call.card.is_update
    else:
        assert call.kind == "send" and call.card.is_update


async def test_an_edit_before_the_first_send_is_not_sent_twice(db: Database) -> None:
    await SubscriptionStore(db).add(chat("a"), created_by="u", edit_policy=EditPolicy.FOLLOW_UP)
    adapter = FlakyAdapter()
    await import_posts(db, [make_post(1)])
    await import_posts(db, [make_post(1, title="Post number 1 (corrected)")])
    await dispatcher(db, adapter).run_until_idle()
    assert [(c.kind, c.card.title) for c in adapter.calls] == [
        ("send", "Post number 1 (corrected)")
    ]


async def test_backfill_on_subscribe_latest_three_oldest_first(db: Database) -> None:
    await import_posts(db, [make_post(n) for n in range(1, 10)])
    adapter = FlakyAdapter()
    await SubscriptionStore(db).add(chat("a"), created_by="u", backfill=3)
    await dispatcher(db, adapter).run_until_idle()
    assert adapter.post_ids_to("a") == ["blog-7", "blog-8", "blog-9"]


async def test_target_moved_is_followed(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("-100"), created_by="u")
    adapter = FlakyAdapter()
    adapter.fail("-100", TargetMoved("-100200"))
    await import_posts(db, [make_post(1), make_post(2)])
    await dispatcher(db, adapter).run_until_idle()
    assert adapter.post_ids_to("-100200") == ["blog-1", "blog-2"]
    moved = await store.get(sub.id)
    assert moved is not None and moved.target.address == "-100200"


async def test_rate_limits_are_kept_before_sending(db: Database) -> None:
    store = SubscriptionStore(db)
    for n in range(6):
        await store.add(chat(f"c{n}"), created_by="u")
    limits = RateLimits(overall=Rate(10, 0.2), per_target=Rate(1, 0.05))
    adapter = FlakyAdapter(limits=limits, enforce=limits, clock=time.time)
    await import_posts(db, [make_post(n) for n in range(1, 4)])
    started = time.monotonic()
    await dispatcher(db, adapter, concurrency=32).run_until_idle()
    elapsed = time.monotonic() - started
    assert adapter.rate_limited == 0
    assert len(adapter.calls) == 18
    assert elapsed >= 0.2  # 18 sends at 10 per 0.2 s need a second window
    for n in range(6):
        assert adapter.post_ids_to(f"c{n}") == ["blog-1", "blog-2", "blog-3"]


@pytest.mark.parametrize("started", ["after a pause", "by run_until_idle"])
async def test_run_delivers_in_process_imports_when_woken_and_stops_cleanly(
    db: Database, started: str
) -> None:
    """`by run_until_idle`: awaited right after `create_task(run())`, before that task first ran;
    its look must not start a second loop, whose end stopped the run's workers."""
    await SubscriptionStore(db).add(chat("a"), created_by="u")
    adapter = FlakyAdapter()
    d = dispatcher(db, adapter, poll_interval=5.0 if started == "after a pause" else 0.2)
    task = asyncio.create_task(d.run())
    if started == "after a pause":
        await asyncio.sleep(0.05)
    else:
        await d.run_until_idle()  # nothing pending yet
    await import_posts(db, [make_post(1)])
    d.wake()
    async with asyncio.timeout(2.0):
        while not adapter.calls:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await d.stop()
    await task
    assert [s for _, _, s, _ in await states(db)] == ["sent"]


async def test_a_big_fan_out_starts_sending_after_its_first_page_is_read(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher runs with nothing to do; one post reaches 600 subscriptions. Its first sends
    go out after one page of the new deliveries is read, before the rest: at 100,000 a full read
    took 0.6 s. Then every subscription gets the post once."""
    monkeypatch.setattr("bot.dispatcher.FIRST_PAGE", 64)
    store = SubscriptionStore(db)
    await store.add_many([NewSubscription(chat(f"c{n}"), created_by="u") for n in range(600)])
    events: list[str] = []
    outbox = note_reads(SqliteOutbox(db), events)
    adapter = note_sends(FlakyAdapter(), events)
    d = Dispatcher(
        outbox, {adapter.platform: adapter}, SETTINGS.model_copy(update={"poll_interval": 5.0})
    )
    task = asyncio.create_task(d.run())
    await asyncio.sleep(0.05)  # started: its first look found nothing pending
    events.clear()
    await import_posts(db, [make_post(1)])
    d.wake()
    async with asyncio.timeout(10.0):
        while len(adapter.calls) < 600 or not d._idle(d.clock()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await d.stop()
    await task

    assert events[:3] == ["read 64", "send", "read 536"]
    assert sorted(c.target.address for c in adapter.calls) == sorted(f"c{n}" for n in range(600))
    assert {state for _, _, state, _ in await states(db)} == {"sent"}


async def test_a_backlog_at_start_is_sent_from_its_first_page_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 deliveries are pending when the dispatcher starts (a restart after a crash): the oldest
    page goes out before the rest is read, then every one is sent once."""
    monkeypatch.setattr("bot.dispatcher.FIRST_PAGE", 64)
    store = SubscriptionStore(db)
    await store.add_many([NewSubscription(chat(f"c{n}"), created_by="u") for n in range(600)])
    await import_posts(db, [make_post(1)])
    events: list[str] = []
    outbox = note_reads(SqliteOutbox(db), events)
    adapter = note_sends(FlakyAdapter(), events)
    await Dispatcher(outbox, {adapter.platform: adapter}, SETTINGS).run_until_idle()

    assert events[:3] == ["read 64", "send", "read 536"]
    assert sorted(c.target.address for c in adapter.calls) == sorted(f"c{n}" for n in range(600))
    assert {state for _, _, state, _ in await states(db)} == {"sent"}


async def test_imports_by_another_process_are_noticed_by_polling(tmp_path: Any) -> None:
    async with await Database.open(tmp_path / "shared.db") as db:
        await SubscriptionStore(db).add(chat("a"), created_by="u")
        adapter = FlakyAdapter()
        d = dispatcher(db, adapter, poll_interval=0.05)
        task = asyncio.create_task(d.run())
        # A separate connection stands in for another process.
        async with await Database.open(tmp_path / "shared.db") as other:
            await import_posts(other, [make_post(1)])
        async with asyncio.timeout(2.0):
            while not adapter.calls:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await d.stop()
        await task


async def test_paused_subscription_gets_nothing(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u")
    await store.set_state(sub.id, SubscriptionState.PAUSED, "paused")
    adapter = FlakyAdapter()
    await import_posts(db, [make_post(1)])
    await dispatcher(db, adapter).run_until_idle()
    assert adapter.calls == []


def test_rate_limiter_counts_a_send_from_its_completion_and_honours_blocks() -> None:
    from bot.ratelimit import RateLimiter

    clock = FakeClock(100.0)
    limiter = RateLimiter(clock)
    checks: list[Any] = [("overall", Rate(2, 1.0))]
    _, first = limiter.acquire(checks)
    _, second = limiter.acquire(checks)
    assert first is not None and second is not None
    wait, third = limiter.acquire(checks)
    assert third is None and wait == float("inf")  # both slots held by sends in flight
    clock.advance(0.2)
    limiter.release(first)  # completed at 100.2: its slot frees at 101.2
    clock.advance(0.9)
    wait, _ = limiter.acquire(checks)
    assert wait == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.acquire(checks)[1] is not None
    limiter.block("overall", clock() + 5)
    assert limiter.delay([("overall", None)]) == pytest.approx(5)


def test_a_smaller_share_of_the_bot_limit_holds_from_the_next_send_on() -> None:
    """A worker sending at the whole of Telegram's 30/s learns that two more joined: from then on
    no window of a second holds more than its 10, though it took 30 slots at the old rate."""
    from bot.ratelimit import RateLimiter, platform_key

    clock = FakeClock(100.0)
    limiter = RateLimiter(clock)
    checks: list[Any] = [(platform_key("telegram"), Rate(30, 1.0))]
    for _ in range(30):
        wait, permit = limiter.acquire(checks)
        assert wait == 0.0 and permit is not None
        limiter.release(permit)
    limiter.share_among(3)
    sent: list[float] = []
    while clock() < 104.0:
        wait, permit = limiter.acquire(checks)
        if permit is None:
            clock.advance(max(wait, 0.001))
            continue
        limiter.release(permit)
        sent.append(clock())
    assert len(sent) >= 30  # it goes on sending, at its share
    every_window = [sum(1 for t in sent if start <= t < start + 1.0) for start in sent]
    assert max(every_window) == 10


class _UnreachableFor(SqliteOutbox):
    """The outbox of a store that stops answering for a while (a database server restarting)."""

    def __init__(self, db: Database, failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("server closed the connection unexpectedly")

    async def data_version(self) -> int:
        self._maybe_fail()
        return await super().data_version()

    async def pending_ids(self) -> set[int]:
        self._maybe_fail()
        return await super().pending_ids()

    async def claim(self, ids: Any) -> Any:
        self._maybe_fail()
        return await super().claim(ids)


async def test_an_unreachable_store_is_one_line_and_delivery_goes_on(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store = SubscriptionStore(db)
    for address in ("a", "b"):
        await store.add(chat(address), created_by="u")
    await import_posts(db, [make_post(1, title="Storm warning")])
    adapter = FlakyAdapter()
    outbox = _UnreachableFor(db, failures=5)
    running = Dispatcher(
        outbox, {adapter.platform: adapter}, SETTINGS.model_copy(update={"poll_interval": 0.01})
    )
    task = asyncio.create_task(running.run())
    try:
        for _ in range(500):
            if len(adapter.calls) == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await running.stop()
        await task
    assert sorted(c.target.address for c in adapter.calls) == ["a", "b"]
    assert outbox.failures == 0
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.dispatcher" and r.levelname == "WARNING"
    ]
    assert len([line for line in lines if line.startswith("could not")]) == 1, lines
    assert "trying again until the store answers" in lines[0]
    assert not [r for r in caplog.records if r.exc_info and r.levelname != "DEBUG"]
