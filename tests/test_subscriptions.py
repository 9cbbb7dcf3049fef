"""Subscriptions and the transactional outbox, on a real SQLite file."""

from __future__ import annotations

from typing import Any

from bot.models import EditPolicy, SubscriptionState, Target
from storage.db import Database
from storage.outbox import Outbox
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription
from tests.fakes.flaky import import_posts, make_post, make_source


def chat(address: str, thread: str | None = None) -> Target:
    return Target(platform="fake", address=address, thread=thread, kind="group")


async def deliveries(db: Database) -> list[dict[str, Any]]:
    async with db.reader.execute(
        "SELECT d.id, d.subscription_id, s.address, p.id AS post_id, d.event, d.state, "
        "d.last_error, d.version FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
        "JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
    ) as cur:
        return [dict(r) for r in await cur.fetchall()]


async def test_add_list_pause_resume_remove(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, created = await store.add(chat("100"), created_by="alice", source_id="blog")
    assert created
    assert sub.target.address == "100" and sub.source_id == "blog" and sub.created_by == "alice"
    assert sub.state == SubscriptionState.ACTIVE and sub.edit_policy == EditPolicy.EDIT

    again, created_again = await store.add(chat("100"), created_by="bob", source_id="blog")
    assert not created_again and again.id == sub.id

    other, _ = await store.add(chat("200", thread="7"), created_by="bob")
    assert [s.id for s in await store.list()] == [sub.id, other.id]
    assert [s.id for s in await store.list(address="200")] == [other.id]

    assert await store.set_state(sub.id, SubscriptionState.PAUSED, "holiday")
    paused = await store.get(sub.id)
    assert paused is not None and paused.state == SubscriptionState.PAUSED
    assert paused.reason == "holiday"

    # Subscribing again re-activates it.
    revived, created_revived = await store.add(chat("100"), created_by="alice", source_id="blog")
    assert (
        not created_revived and revived.state == SubscriptionState.ACTIVE and revived.reason is None
    )

    assert await store.remove(sub.id)
    assert not await store.remove(sub.id)
    assert await store.remove_for_target(chat("200", thread="7")) == 1
    assert await store.list() == []


async def test_a_post_reaches_every_matching_subscription_once(db: Database) -> None:
    store = SubscriptionStore(db)
    a, _ = await store.add(chat("a"), created_by="u")  # every blog
    b, _ = await store.add(chat("b"), created_by="u", source_id="blog")
    await store.add(chat("c"), created_by="u", source_id="other-blog")
    # A second subscription of chat "a" that also matches: the chat still gets the post once.
    await store.add(chat("a"), created_by="u", source_id="blog")

    await import_posts(db, [make_post(1)])
    rows = await deliveries(db)
    assert sorted(r["address"] for r in rows) == ["a", "b"]
    assert {r["subscription_id"] for r in rows} == {a.id, b.id}
    assert all(r["event"] == "created" and r["state"] == "pending" for r in rows)

    # The same document again changes nothing and queues nothing.
    await import_posts(db, [make_post(1)])
    assert len(await deliveries(db)) == 2


async def test_paused_subscription_accrues_nothing_and_pausing_skips_pending(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(db, [make_post(1)])
    await store.set_state(sub.id, SubscriptionState.PAUSED, "paused by alice")
    await import_posts(db, [make_post(2)])
    rows = await deliveries(db)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice")
    ]
    await store.set_state(sub.id, SubscriptionState.ACTIVE)
    await import_posts(db, [make_post(3)])
    assert [r["post_id"] for r in await deliveries(db) if r["state"] == "pending"] == ["blog-3"]


async def test_backfill_greets_a_new_subscription_with_latest_posts_oldest_first(
    db: Database,
) -> None:
    await import_posts(db, [make_post(n) for n in range(1, 8)])
    await import_posts(db, [make_post(1, source_id="other-blog")], make_source("other-blog"))
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u", source_id="blog", backfill=3)
    rows = await deliveries(db)
    assert [r["post_id"] for r in rows] == ["blog-5", "blog-6", "blog-7"]
    assert {r["event"] for r in rows} == {"backfill"}
    # Subscribing again greets nobody twice.
    await store.add(chat("a"), created_by="u", source_id="blog", backfill=3)
    assert len(await deliveries(db)) == 3
    assert sub.id == rows[0]["subscription_id"]


async def test_add_many_in_one_go(db: Database) -> None:
    await import_posts(db, [make_post(1), make_post(2)])
    store = SubscriptionStore(db)
    subs = await store.add_many(
        [NewSubscription(chat(str(i)), created_by="ops") for i in range(50)], backfill=1
    )
    assert len(subs) == 50 and len({s.id for s in subs}) == 50
    rows = await deliveries(db)
    assert len(rows) == 50 and {r["post_id"] for r in rows} == {"blog-2"}


async def test_move_target_and_disable_target(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("-100"), created_by="u", source_id="blog")
    await store.add(chat("-100"), created_by="u", source_id="second")
    # The new address already has the same subscription: the two merge.
    twin, _ = await store.add(chat("-200"), created_by="u", source_id="second")
    await import_posts(db, [make_post(1)])
    assert await store.move_target("fake", "-100", "-200") == 2
    subs = await store.list()
    assert {s.target.address for s in subs} == {"-200"}
    assert {s.id for s in subs} == {sub.id, twin.id}
    rows = await deliveries(db)
    assert [(r["address"], r["state"]) for r in rows] == [("-200", "pending")]

    assert await store.disable_target("fake", "-200", "bot was blocked") == 2
    for s in await store.list():
        assert s.state == SubscriptionState.DISABLED and s.reason == "bot was blocked"
    rows = await deliveries(db)
    assert [(r["state"], r["last_error"]) for r in rows] == [("skipped", "bot was blocked")]


async def test_updated_post_goes_to_those_who_had_it_unless_they_ignore_edits(
    db: Database,
) -> None:
    store = SubscriptionStore(db)
    edit, _ = await store.add(chat("edit"), created_by="u")
    ignore, _ = await store.add(chat("ignore"), created_by="u", edit_policy=EditPolicy.IGNORE)
    await import_posts(db, [make_post(1)])
    late, _ = await store.add(chat("late"), created_by="u")
    await import_posts(db, [make_post(1, title="Post number 1, corrected")])
    rows = [(r["address"], r["event"], r["version"]) for r in await deliveries(db)]
    assert rows == [
        ("edit", "created", 1),
        ("ignore", "created", 1),
        ("edit", "updated", 2),
        # a subscription that never had the post gets it as new
        ("late", "created", 2),
    ]
    assert {edit.id, ignore.id, late.id}


async def test_keyword_filters_match_and_exclude(db: Database) -> None:
    store = SubscriptionStore(db)
    await store.add(chat("either"), created_by="u", query="sanctions OR NATO")
    await store.add(chat("blinken"), created_by="u", query="Blinken -Lavrov")
    await import_posts(
        db,
        [
            make_post(1, title="New sanctions announced", body=["The EU agreed on a package."]),
            make_post(2, title="Blinken meets Lavrov in Geneva", body=["Talks lasted 90 minutes."]),
            make_post(3, title="Blinken speaks to reporters", body=["No deal yet, he said."]),
            make_post(4, title="NATO allies meet", body=["Ministers gathered in Brussels."]),
            make_post(5, title="Weather in Kyiv", body=["Snow expected."]),
        ],
    )
    got = {(r["address"], r["post_id"]) for r in await deliveries(db)}
    assert got == {("either", "blog-1"), ("either", "blog-4"), ("blinken", "blog-3")}


async def test_backfill_with_a_keyword_filter(db: Database) -> None:
    await import_posts(
        db,
        [
            make_post(n, title=f"NATO update {n}" if n % 2 else f"Other news {n}")
            for n in range(1, 12)
        ],
    )
    store = SubscriptionStore(db)
    await store.add(chat("a"), created_by="u", query="NATO", backfill=3)
    assert [r["post_id"] for r in await deliveries(db)] == ["blog-7", "blog-9", "blog-11"]


async def test_dead_letters_are_listed_and_retried(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(db, [make_post(1), make_post(2)])
    outbox = Outbox(db)
    ids = [r["id"] for r in await deliveries(db)]
    from storage.values import OutboxResults

    await outbox.record(
        OutboxResults(dead=[(ids[0], 8, "HTTP 500")], sent=[(ids[1], "m1", 1, "x")])
    )
    dead = await outbox.dead()
    assert [(d.id, d.post_id, d.attempts, d.last_error) for d in dead] == [
        (ids[0], "blog-1", 8, "HTTP 500")
    ]
    assert await outbox.counts() == {"pending": 0, "sent": 1, "dead": 1, "skipped": 0}
    assert await outbox.retry_dead() == 1
    assert await outbox.dead() == []
    assert (await outbox.counts())["pending"] == 1
    assert sub.id
