"""Subscriptions and the outbox on a real PostgreSQL: the SQLite tests' assertions, and the leases.

The tests of tests/test_subscriptions.py are ported one for one (same names, same assertions), then
the store-level parts of tests/test_dispatcher.py (what the dispatcher reads, claims and records),
then what only PostgreSQL has: several processes claiming from one outbox. Posts are written by the
real PostgreSQL post store (storage.pg_posts.upsert_document) with their deliveries in the same
transaction, as the ingest does.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest

from bot.models import EditPolicy, ImportResult, SubscriptionState, Target
from storage import subscriptions as sqlite_subscriptions
from storage import values
from storage.db import Database
from storage.interface import Outbox, Subscriptions
from storage.models import Post, Source, Subscription
from storage.outbox import Outbox as SqliteOutbox
from storage.pg_db import PgDatabase
from storage.pg_outbox import PgOutbox, default_owner, enqueue_for_changes
from storage.pg_posts import upsert_document
from storage.pg_search import tsquery
from storage.pg_subscriptions import MAX_BACKFILL, SAMPLE_SCHEME, PgSubscriptionStore
from storage.query import QueryError
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription, OutboxResults
from tests.fakes.flaky import import_posts as sqlite_import_posts
from tests.fakes.flaky import make_post, make_source


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(postgres_url, size=4)
    try:
        yield db
    finally:
        await db.close()


def subs(db: PgDatabase) -> PgSubscriptionStore:
    return PgSubscriptionStore(db, tsquery=tsquery)


def test_the_stores_keep_the_contract(pg: PgDatabase) -> None:
    """mypy checks these assignments: the PostgreSQL stores satisfy storage.interface."""
    subscriptions: Subscriptions = subs(pg)
    outbox: Outbox = PgOutbox(pg)
    assert subscriptions is not None and outbox is not None


def chat(address: str, thread: str | None = None, kind: Any = "group") -> Target:
    return Target(platform="fake", address=address, thread=thread, kind=kind)


async def import_posts(
    db: PgDatabase,
    posts: Iterable[Post],
    source: Source | None = None,
    *,
    location: str | None = None,
    new_source_deliveries: int | None = None,
) -> int:
    """Store posts as one imported document with their deliveries, in one transaction (the ingest's
    shape, storage.ingest); how many deliveries were queued."""
    posts = tuple(posts)
    source = source or make_source(posts[0].source_id if posts else "blog")
    async with db.write() as conn:
        upserted = await upsert_document(
            conn, ImportResult(source=source, posts=posts), location=location
        )
        limit = new_source_deliveries if upserted.new_source else None
        return await enqueue_for_changes(conn, upserted.changes, newest_per_subscription=limit)


async def deliveries(db: PgDatabase) -> list[dict[str, Any]]:
    async with db.read() as conn:
        cur = await conn.execute(
            "SELECT d.id, d.subscription_id, s.address, p.id AS post_id, d.event, d.state, "
            "d.last_error, d.version, d.lease_owner FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id "
            "JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
        )
        return list(await cur.fetchall())


# --- tests/test_subscriptions.py, on PostgreSQL -------------------------------------------------------


def test_the_rules_constants_are_sqlites() -> None:
    assert SAMPLE_SCHEME == values.SAMPLE_SCHEME
    assert MAX_BACKFILL == sqlite_subscriptions.MAX_BACKFILL


async def test_add_list_pause_resume_remove(pg: PgDatabase) -> None:
    store = subs(pg)
    sub, created = await store.add(chat("100"), created_by="alice", source_id="blog")
    assert created
    assert sub.target.address == "100" and sub.source_id == "blog" and sub.created_by == "alice"
    assert sub.state == SubscriptionState.ACTIVE and sub.edit_policy == EditPolicy.EDIT

    again, created_again = await store.add(chat("100"), created_by="bob", source_id="blog")
    assert not created_again and again.id == sub.id

    other, _ = await store.add(chat("200", thread="7"), created_by="bob")
    assert [s.id for s in await store.list()] == [sub.id, other.id]
    assert [s.id for s in await store.list(address="200")] == [other.id]
    assert other.id == sub.id + 1  # a repeat used up no id, as in SQLite

    assert await store.set_state(sub.id, SubscriptionState.PAUSED, "holiday")
    paused = await store.get(sub.id)
    assert paused is not None and paused.state == SubscriptionState.PAUSED
    assert paused.reason == "holiday"

    revived, created_revived = await store.add(chat("100"), created_by="alice", source_id="blog")
    assert (
        not created_revived and revived.state == SubscriptionState.ACTIVE and revived.reason is None
    )
    assert await store.count_by_platform() == {"fake": 2}

    assert await store.remove(sub.id)
    assert not await store.remove(sub.id)
    assert await store.remove_for_target(chat("200", thread="7")) == 1
    assert await store.list() == []
    assert await store.get(sub.id) is None


async def test_a_post_reaches_every_matching_subscription_once(pg: PgDatabase) -> None:
    store = subs(pg)
    a, _ = await store.add(chat("a"), created_by="u")  # every blog
    b, _ = await store.add(chat("b"), created_by="u", source_id="blog")
    await store.add(chat("c"), created_by="u", source_id="other-blog")
    await store.add(chat("a"), created_by="u", source_id="blog")

    await import_posts(pg, [make_post(1)])
    rows = await deliveries(pg)
    assert sorted(r["address"] for r in rows) == ["a", "b"]
    assert {r["subscription_id"] for r in rows} == {a.id, b.id}
    assert all(r["event"] == "created" and r["state"] == "pending" for r in rows)

    await import_posts(pg, [make_post(1)])
    assert len(await deliveries(pg)) == 2


async def test_paused_subscription_accrues_nothing_and_pausing_skips_pending(
    pg: PgDatabase,
) -> None:
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(pg, [make_post(1)])
    await store.set_state(sub.id, SubscriptionState.PAUSED, "paused by alice")
    await import_posts(pg, [make_post(2)])
    rows = await deliveries(pg)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice")
    ]
    await store.set_state(sub.id, SubscriptionState.ACTIVE)
    await import_posts(pg, [make_post(3)])
    assert [r["post_id"] for r in await deliveries(pg) if r["state"] == "pending"] == ["blog-3"]
    assert not await store.set_state(sub.id + 99, SubscriptionState.PAUSED)


async def test_backfill_greets_a_new_subscription_with_latest_posts_oldest_first(
    pg: PgDatabase,
) -> None:
    await import_posts(pg, [make_post(n) for n in range(1, 8)])
    await import_posts(pg, [make_post(1, source_id="other-blog")], make_source("other-blog"))
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u", source_id="blog", backfill=3)
    rows = await deliveries(pg)
    assert [r["post_id"] for r in rows] == ["blog-5", "blog-6", "blog-7"]
    assert {r["event"] for r in rows} == {"backfill"}
    await store.add(chat("a"), created_by="u", source_id="blog", backfill=3)
    assert len(await deliveries(pg)) == 3
    assert sub.id == rows[0]["subscription_id"]
    assert await store.backfill_count(sub.id) == 3


async def test_add_many_in_one_go(pg: PgDatabase) -> None:
    await import_posts(pg, [make_post(1), make_post(2)])
    store = subs(pg)
    added = await store.add_many(
        [NewSubscription(chat(str(i)), created_by="ops") for i in range(50)], backfill=1
    )
    assert len(added) == 50 and len({s.id for s in added}) == 50
    rows = await deliveries(pg)
    assert len(rows) == 50 and {r["post_id"] for r in rows} == {"blog-2"}


async def test_move_target_and_disable_target(pg: PgDatabase) -> None:
    store = subs(pg)
    sub, _ = await store.add(chat("-100"), created_by="u", source_id="blog")
    await store.add(chat("-100"), created_by="u", source_id="second")
    twin, _ = await store.add(chat("-200"), created_by="u", source_id="second")
    await import_posts(pg, [make_post(1)])
    assert await store.move_target("fake", "-100", "-200") == 2
    found = await store.list()
    assert {s.target.address for s in found} == {"-200"}
    assert {s.id for s in found} == {sub.id, twin.id}
    rows = await deliveries(pg)
    assert [(r["address"], r["state"]) for r in rows] == [("-200", "pending")]

    assert await store.disable_target("fake", "-200", "bot was blocked") == 2
    for s in await store.list():
        assert s.state == SubscriptionState.DISABLED and s.reason == "bot was blocked"
    rows = await deliveries(pg)
    assert [(r["state"], r["last_error"]) for r in rows] == [("skipped", "bot was blocked")]
    assert await store.disable_target("fake", "-200", "again") == 0


async def test_updated_post_goes_to_those_who_had_it_unless_they_ignore_edits(
    pg: PgDatabase,
) -> None:
    store = subs(pg)
    await store.add(chat("edit"), created_by="u")
    await store.add(chat("ignore"), created_by="u", edit_policy=EditPolicy.IGNORE)
    await import_posts(pg, [make_post(1)])
    await store.add(chat("late"), created_by="u")
    await import_posts(pg, [make_post(1, title="Post number 1, corrected")])
    rows = [(r["address"], r["event"], r["version"]) for r in await deliveries(pg)]
    assert rows == [
        ("edit", "created", 1),
        ("ignore", "created", 1),
        ("edit", "updated", 2),
        ("late", "created", 2),
    ]


KEYWORD_POSTS = [
    make_post(1, title="New sanctions announced", body=["The EU agreed on a package."]),
    make_post(2, title="Blinken meets Lavrov in Geneva", body=["Talks lasted 90 minutes."]),
    make_post(3, title="Blinken speaks to reporters", body=["No deal yet, he said."]),
    make_post(4, title="NATO allies meet", body=["Ministers gathered in Brussels."]),
    make_post(5, title="Weather in Kyiv", body=["Snow expected."]),
]
KEYWORD_MATCHES = {("either", "blog-1"), ("either", "blog-4"), ("blinken", "blog-3")}


async def test_keyword_filters_match_and_exclude(pg: PgDatabase) -> None:
    store = subs(pg)
    await store.add(chat("either"), created_by="u", query="sanctions OR NATO")
    await store.add(chat("blinken"), created_by="u", query="Blinken -Lavrov")
    await import_posts(pg, KEYWORD_POSTS)
    got = {(r["address"], r["post_id"]) for r in await deliveries(pg)}
    assert got == KEYWORD_MATCHES


async def test_keyword_filters_give_what_sqlite_gives(db: Database, pg: PgDatabase) -> None:
    """The same subscriptions and posts on both backends queue the same deliveries."""
    for store in (SubscriptionStore(db), subs(pg)):
        await store.add(chat("either"), created_by="u", query="sanctions OR NATO")
        await store.add(chat("blinken"), created_by="u", query="Blinken -Lavrov")
        await store.add(chat("phrase"), created_by="u", query='"Blinken meets"')
        await store.add(chat("prefix"), created_by="u", query="Brus*")
    await sqlite_import_posts(db, KEYWORD_POSTS)
    await import_posts(pg, KEYWORD_POSTS)
    async with db.reader.execute(
        "SELECT s.address, p.id, d.event FROM deliveries d JOIN subscriptions s "
        "ON s.id = d.subscription_id JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
    ) as cur:
        on_sqlite = [tuple(r) for r in await cur.fetchall()]
    on_pg = [(r["address"], r["post_id"], r["event"]) for r in await deliveries(pg)]
    assert on_pg == on_sqlite
    assert ("phrase", "blog-2", "created") in on_pg and ("prefix", "blog-4", "created") in on_pg


async def _scenario(
    store: Subscriptions,
    outbox: Outbox,
    ingest: Callable[[list[Post]], Awaitable[Any]],
) -> None:
    """Subscribe, import, edit, greet, pause, move, fail: the same calls on either backend."""
    await store.add(chat("all"), created_by="u")
    await ingest([make_post(n) for n in (3, 1, 2)])
    await store.add(chat("blog", thread="4"), created_by="u", source_id="blog")
    await store.add(chat("kw"), created_by="u", query="corrected OR number", backfill=2)
    await store.add(chat("quiet"), created_by="u", edit_policy=EditPolicy.IGNORE, backfill=1)
    paused, _ = await store.add(chat("paused"), created_by="u", backfill=3)
    await store.set_state(paused.id, SubscriptionState.PAUSED, "away")
    await ingest([make_post(1, title="Post number 1, corrected"), make_post(4)])
    await store.add(chat("moving"), created_by="u", source_id="blog", backfill=1)
    await store.move_target("fake", "moving", "moved")
    # As the dispatcher claims: the head of each target's queue (publication order, then id).
    heads: dict[tuple[str, str, str], int] = {}
    for row in sorted(await outbox.pending_after(0), key=lambda p: (p.order_key, p.id)):
        heads.setdefault((row.platform, row.address, row.thread), row.id)
    jobs = await outbox.claim(sorted(heads.values())[:3])
    assert len(jobs) == 3
    await outbox.record(
        OutboxResults(
            sent=[(jobs[0].id, "m1", jobs[0].version, "2022-01-21T10:00:00.000000Z")],
            retry=[(jobs[1].id, 1, 5.0, "HTTP 502")],
            dead=[(jobs[2].id, 4, "HTTP 500")],
            disable=[("fake", "quiet", "blocked")],
        )
    )


async def test_a_whole_scenario_leaves_what_sqlite_leaves(db: Database, pg: PgDatabase) -> None:
    """Same calls, same rows: subscriptions, deliveries (event, state, version, error), counts."""

    async def on_sqlite(posts: list[Post]) -> None:
        await sqlite_import_posts(db, posts)

    async def on_pg(posts: list[Post]) -> None:
        await import_posts(pg, posts)

    await _scenario(SubscriptionStore(db), SqliteOutbox(db), on_sqlite)
    await _scenario(subs(pg), PgOutbox(pg), on_pg)

    def shown(found: list[Subscription]) -> list[tuple[Any, ...]]:
        return [
            (s.id, s.target, s.source_id, s.query, s.edit_policy, s.state, s.reason) for s in found
        ]

    assert shown(await subs(pg).list()) == shown(await SubscriptionStore(db).list())
    async with db.reader.execute(
        "SELECT d.id, d.subscription_id, p.id, d.event, d.state, d.version, d.attempts, "
        "d.last_error, d.message_ref, d.order_key, d.next_attempt_at FROM deliveries d "
        "JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
    ) as cur:
        sqlite_rows = [tuple(r) for r in await cur.fetchall()]
    async with pg.read() as conn:
        cur2 = await conn.execute(
            "SELECT d.id, d.subscription_id, p.id AS post_id, d.event, d.state, d.version, "
            "d.attempts, d.last_error, d.message_ref, d.order_key, d.next_attempt_at "
            "FROM deliveries d JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
        )
        pg_rows = [tuple(r.values()) for r in await cur2.fetchall()]
    assert pg_rows == sqlite_rows
    assert {r[3] for r in pg_rows} == {"created", "updated", "backfill"}
    assert {r[4] for r in pg_rows} == {"pending", "sent", "dead", "skipped"}
    assert await PgOutbox(pg).counts() == await SqliteOutbox(db).counts()
    assert await PgOutbox(pg).pending_after(0) == await SqliteOutbox(db).pending_after(0)
    pg_dead, sqlite_dead = await PgOutbox(pg).dead(), await SqliteOutbox(db).dead()
    assert [(d.id, d.target, d.post_id, d.last_error) for d in pg_dead] == [
        (d.id, d.target, d.post_id, d.last_error) for d in sqlite_dead
    ]
    for sub in await subs(pg).list():
        assert await subs(pg).backfill_count(sub.id) == await SubscriptionStore(db).backfill_count(
            sub.id
        )
    assert await subs(pg).count_by_platform(active_only=True) == await SubscriptionStore(
        db
    ).count_by_platform(active_only=True)


async def test_where_keyword_filters_differ_from_sqlite(db: Database, pg: PgDatabase) -> None:
    """PostgreSQL's English configuration has stop words (storage.pg_search): a filter that is only
    a stop word matches nothing there, where FTS5 matches every post holding the word; beside
    another word it is left out (`the OR NATO` is `NATO`). Should the schema drop the stop words,
    the two agree, and this test says so."""
    posts = [
        make_post(1, title="The talks begin", body=["Nothing new."]),
        make_post(2, title="NATO allies meet", body=["Ministers gathered."]),
    ]
    for store in (SubscriptionStore(db), subs(pg)):
        await store.add(chat("stop"), created_by="u", query="the")
        await store.add(chat("mixed"), created_by="u", query="the OR NATO")
    await sqlite_import_posts(db, posts)
    await import_posts(pg, posts)
    async with db.reader.execute(
        "SELECT s.address, p.id FROM deliveries d JOIN subscriptions s "
        "ON s.id = d.subscription_id JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
    ) as cur:
        on_sqlite = {tuple(r) for r in await cur.fetchall()}
    on_pg = {(r["address"], r["post_id"]) for r in await deliveries(pg)}
    assert on_sqlite == {("stop", "blog-1"), ("mixed", "blog-1"), ("mixed", "blog-2")}
    async with pg.read() as conn:
        found = await conn.execute(
            "SELECT numnode(plainto_tsquery('livedesk_english', 'the')) AS n"
        )
        row = await found.fetchone()
    if row is not None and row["n"]:  # a configuration without stop words: no difference left
        assert on_pg == on_sqlite
    else:
        assert on_pg == {("mixed", "blog-2")}


async def test_backfill_with_a_keyword_filter(pg: PgDatabase) -> None:
    await import_posts(
        pg,
        [
            make_post(n, title=f"NATO update {n}" if n % 2 else f"Other news {n}")
            for n in range(1, 12)
        ],
    )
    store = subs(pg)
    await store.add(chat("a"), created_by="u", query="NATO", backfill=3)
    assert [r["post_id"] for r in await deliveries(pg)] == ["blog-7", "blog-9", "blog-11"]


async def test_dead_letters_are_listed_and_retried(pg: PgDatabase) -> None:
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    outbox = PgOutbox(pg)
    ids = [r["id"] for r in await deliveries(pg)]
    await outbox.record(
        OutboxResults(dead=[(ids[0], 8, "HTTP 500")], sent=[(ids[1], "m1", 1, "x")])
    )
    dead = await outbox.dead()
    assert [(d.id, d.post_id, d.attempts, d.last_error) for d in dead] == [
        (ids[0], "blog-1", 8, "HTTP 500")
    ]
    assert dead[0].subscription_id == sub.id and dead[0].target == chat("a")
    assert dead[0].post_title == "Post number 1" and dead[0].event == "created"
    assert await outbox.counts() == {"pending": 0, "sent": 1, "dead": 1, "skipped": 0}
    assert await outbox.retry_dead() == 1
    assert await outbox.dead() == []
    assert (await outbox.counts())["pending"] == 1


async def test_retry_dead_takes_these_ids_of_active_subscriptions_only(pg: PgDatabase) -> None:
    store = subs(pg)
    await store.add(chat("a"), created_by="u")
    stopped, _ = await store.add(chat("b"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    ids = {(r["address"], r["post_id"]): r["id"] for r in await deliveries(pg)}
    outbox = PgOutbox(pg)
    await outbox.record(OutboxResults(dead=[(i, 4, "HTTP 500") for i in ids.values()]))
    await store.set_state(stopped.id, SubscriptionState.DISABLED, "gone")
    assert await outbox.retry_dead([]) == 0
    assert await outbox.retry_dead([ids["a", "blog-2"], ids["b", "blog-2"]]) == 1
    assert await outbox.retry_dead() == 1  # a's first; b's stay dead: b is disabled
    assert {(d.target.address, d.post_id) for d in await outbox.dead()} == {
        ("b", "blog-1"),
        ("b", "blog-2"),
    }
    assert await outbox.dead(limit=1) == (await outbox.dead())[:1]


# --- more of storage.subscriptions' rules -------------------------------------------------------------


async def test_a_bad_query_is_refused_before_anything_is_written(
    db: Database, pg: PgDatabase
) -> None:
    store = subs(pg)
    items = [
        NewSubscription(chat("a"), created_by="u", query="fine"),
        NewSubscription(chat("b"), created_by="u", query='"'),
    ]
    with pytest.raises(QueryError) as on_pg:
        await store.put(items)
    assert await store.list() == []
    with pytest.raises(QueryError) as on_sqlite:
        await SubscriptionStore(db).put(items)
    assert str(on_pg.value) == str(on_sqlite.value)


async def test_subscribing_again_says_what_changed(pg: PgDatabase) -> None:
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u", query="  NATO   OR sanctions ")
    assert sub.query == "NATO OR sanctions"
    await store.set_state(sub.id, SubscriptionState.PAUSED, "holiday")
    [added] = await store.put(
        [
            NewSubscription(
                chat("a"), created_by="u", query="NATO OR sanctions", edit_policy=EditPolicy.IGNORE
            )
        ]
    )
    assert not added.created and added.subscription.id == sub.id
    assert added.changed == ("edits ignore (was edit)", "resumed (was paused: holiday)")


async def test_the_bundled_sample_greets_only_the_terminal(pg: PgDatabase) -> None:
    sample = make_source("sample")
    posts = [make_post(n, source_id="sample") for n in (1, 2)]
    await import_posts(pg, posts, sample, location=f"{SAMPLE_SCHEME}sample_blog.txt")
    store = subs(pg)
    chat_sub, _ = await store.add(chat("a"), created_by="u", backfill=5)
    terminal, _ = await store.add(chat("t", kind="terminal"), created_by="u", backfill=5)
    assert await store.backfill_count(chat_sub.id) == 0
    assert await store.backfill_count(terminal.id) == 2


async def test_a_first_import_gives_each_subscription_only_its_newest_posts(
    pg: PgDatabase,
) -> None:
    await subs(pg).add(chat("a"), created_by="u")
    queued = await import_posts(pg, [make_post(n) for n in range(1, 6)], new_source_deliveries=2)
    assert queued == 2
    assert [r["post_id"] for r in await deliveries(pg)] == ["blog-4", "blog-5"]
    await import_posts(pg, [make_post(6)], new_source_deliveries=2)  # no longer new: all of it
    assert [r["post_id"] for r in await deliveries(pg)][-1] == "blog-6"


async def test_two_processes_subscribing_the_same_target_get_one_subscription(
    pg: PgDatabase, postgres_url: str
) -> None:
    other = await PgDatabase.open(postgres_url, size=2)
    try:
        results = await asyncio.gather(
            *(subs(db).add(chat("a"), created_by="u") for db in (pg, other, pg, other))
        )
    finally:
        await other.close()
    assert len({sub.id for sub, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]


# --- what the dispatcher reads, claims and records (tests/test_dispatcher.py, store level) ------------


async def test_the_dispatcher_reads_pending_work_of_active_subscriptions(pg: PgDatabase) -> None:
    store = subs(pg)
    a, _ = await store.add(chat("a", thread="9"), created_by="u")
    paused, _ = await store.add(chat("p"), created_by="u")
    await store.set_state(paused.id, SubscriptionState.PAUSED, "paused")
    await import_posts(pg, [make_post(2), make_post(1)])
    outbox = PgOutbox(pg)
    pending = await outbox.pending_after(0)
    assert [(p.subscription_id, p.thread, p.order_key) for p in pending] == [
        (a.id, "9", "2022-01-21T09:01:00.000000Z"),
        (a.id, "9", "2022-01-21T09:02:00.000000Z"),
    ]
    first, second = pending
    assert await outbox.pending_after(first.id) == [second]
    assert await outbox.pending_after(0, limit=1) == [first]
    assert await outbox.pending_ids() == {first.id, second.id}
    assert await outbox.pending_by_ids([second.id, 12345]) == [second]
    assert first.platform == "fake" and first.address == "a" and first.target_kind == "group"
    assert first.next_attempt_at == 0.0

    [job] = await outbox.claim([first.id])
    assert (job.id, job.subscription_id, job.event, job.attempts, job.state) == (
        first.id,
        a.id,
        "created",
        0,
        "pending",
    )
    assert job.target == chat("a", thread="9") and job.edit_policy == EditPolicy.EDIT
    assert job.subscription_state == "active" and job.version == job.post_version == 1
    cards = await outbox.posts([job.post_rowid, job.post_rowid])
    assert list(cards) == [job.post_rowid]
    assert cards[job.post_rowid].post.id == "blog-1"
    assert cards[job.post_rowid].source_title == "Ukraine live"
    assert cards[job.post_rowid].post.number == job.post_rowid


async def test_an_edit_finds_the_message_it_updates(pg: PgDatabase) -> None:
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(pg, [make_post(1)])
    outbox = PgOutbox(pg)
    [first] = await outbox.claim(list(await outbox.pending_ids()))
    assert await outbox.last_sent(sub.id, first.post_rowid) is None
    await outbox.record(OutboxResults(sent=[(first.id, "msg-1", 1, "2022-01-21T09:00:00Z")]))
    await import_posts(pg, [make_post(1, title="Post number 1 (corrected)")])
    [edit] = await outbox.claim(list(await outbox.pending_ids()))
    assert (edit.event, edit.version, edit.post_version) == ("updated", 2, 2)
    ref = await outbox.last_sent(sub.id, edit.post_rowid)
    assert ref is not None and (ref.message_ref, ref.version) == ("msg-1", 1)


async def test_retries_permanent_errors_and_moves_are_recorded(pg: PgDatabase) -> None:
    store = subs(pg)
    blocked, _ = await store.add(chat("a"), created_by="u")
    moving, _ = await store.add(chat("-100"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    outbox = PgOutbox(pg)
    ids = {(r["address"], r["post_id"]): r["id"] for r in await deliveries(pg)}
    await outbox.claim(sorted(ids.values()))
    # A retry in a function, called once the transaction has begun (the dispatcher's group commit).
    await outbox.record(
        lambda: OutboxResults(
            retry=[(ids["-100", "blog-1"], 1, 2_000_000.0, "HTTP 502" * 100)],
            dead=[(ids["a", "blog-1"], 1, "bot was blocked by the user")],
            disable=[("fake", "a", "bot was blocked by the user")],
            moves=[("fake", "-100", "-100200")],
        )
    )
    rows = {(r["address"], r["post_id"]): r for r in await deliveries(pg)}
    assert rows["a", "blog-1"]["state"] == "dead"
    assert rows["a", "blog-2"]["state"] == "skipped"
    assert rows["a", "blog-2"]["last_error"] == "bot was blocked by the user"
    retried = rows["-100200", "blog-1"]
    assert retried["state"] == "pending" and len(retried["last_error"]) == 500
    assert all(r["lease_owner"] is None for r in rows.values() if r["state"] != "pending")
    found = await store.get(blocked.id)
    assert found is not None and found.state == SubscriptionState.DISABLED
    moved = await store.get(moving.id)
    assert moved is not None and moved.target.address == "-100200"
    pending = await outbox.pending_by_ids([retried["id"]])
    assert [(p.next_attempt_at, p.address) for p in pending] == [(2_000_000.0, "-100200")]
    await outbox.record(OutboxResults())  # nothing to write: no transaction at all


async def test_data_version_moves_when_another_process_commits(
    pg: PgDatabase, postgres_url: str
) -> None:
    outbox = PgOutbox(pg)
    await subs(pg).add(chat("a"), created_by="u")
    reads = [await outbox.data_version() for _ in range(3)]
    # Reading changes nothing (two reads in a row agree, even if autovacuum wrote in between).
    assert reads[0] == reads[1] or reads[1] == reads[2]
    before = reads[2]
    other = await PgDatabase.open(postgres_url, size=1)
    try:
        await import_posts(other, [make_post(1)])
    finally:
        await other.close()
    after = await outbox.data_version()
    assert after != before
    [delivery] = await outbox.pending_ids()
    await PgOutbox(pg, owner="elsewhere").record(OutboxResults(skipped=[(delivery, "test")]))
    assert await outbox.data_version() not in (before, after)


# --- several processes, one outbox --------------------------------------------------------------------


async def test_two_outboxes_never_claim_the_same_delivery(
    pg: PgDatabase, postgres_url: str
) -> None:
    store = subs(pg)
    await store.add_many([NewSubscription(chat(f"c{n}"), created_by="u") for n in range(40)])
    await import_posts(pg, [make_post(1)])
    ids = sorted(await PgOutbox(pg).pending_ids())
    assert len(ids) == 40
    other = await PgDatabase.open(postgres_url, size=4)
    try:
        first, second = PgOutbox(pg, owner="first"), PgOutbox(other, owner="second")
        boxes = [box for _ in range(4) for box in (first, second)]
        claims = await asyncio.gather(
            *(box.claim(ids[n % 4 :: 4]) for n, box in enumerate(boxes)),
            *(box.claim(ids) for box in boxes),
        )
    finally:
        await other.close()
    held: dict[str, set[int]] = {"first": set(), "second": set()}
    for box, jobs in zip(boxes + boxes, claims, strict=True):
        held[box.owner].update(job.id for job in jobs)
    assert held["first"] & held["second"] == set()  # never one delivery to both
    assert held["first"] | held["second"] == set(ids)  # and every one to somebody
    owners = {r["id"]: r["lease_owner"] for r in await deliveries(pg)}
    assert {i for i, owner in owners.items() if owner == "first"} == held["first"]
    # What one holds the other cannot take, however often it asks.
    assert await PgOutbox(pg, owner="third").claim(ids) == []


async def test_an_expired_lease_is_taken_over(pg: PgDatabase) -> None:
    await subs(pg).add(chat("a"), created_by="u")
    await import_posts(pg, [make_post(1)])
    [delivery] = await PgOutbox(pg).pending_ids()
    dying = PgOutbox(pg, owner="dying", lease_seconds=0.5)
    survivor = PgOutbox(pg, owner="survivor")
    assert [job.id for job in await dying.claim([delivery])] == [delivery]
    assert await survivor.claim([delivery]) == []
    # The holder may claim again (it renews its lease).
    assert [job.id for job in await dying.claim([delivery])] == [delivery]
    await asyncio.sleep(0.7)
    assert [job.id for job in await survivor.claim([delivery])] == [delivery]
    assert [r["lease_owner"] for r in await deliveries(pg)] == ["survivor"]
    # The dead worker's late retry does not undo the takeover; its lease is gone.
    await dying.record(OutboxResults(retry=[(delivery, 1, 9e9, "late")]))
    [row] = await deliveries(pg)
    assert row["lease_owner"] == "survivor" and row["last_error"] is None
    await survivor.record(OutboxResults(sent=[(delivery, "m1", 1, "x")]))
    [row] = await deliveries(pg)
    assert (row["state"], row["lease_owner"]) == ("sent", None)
    # A settled delivery is returned as it is, as SQLite returns it, and leased to nobody.
    [job] = await dying.claim([delivery])
    assert job.state == "sent"


async def test_a_targets_order_is_kept_across_processes(pg: PgDatabase) -> None:
    await subs(pg).add(chat("a"), created_by="u")
    await subs(pg).add(chat("b"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    ids = {(r["address"], r["post_id"]): r["id"] for r in await deliveries(pg)}
    one, two = PgOutbox(pg, owner="one"), PgOutbox(pg, owner="two")
    assert [j.id for j in await one.claim([ids["a", "blog-1"]])] == [ids["a", "blog-1"]]
    # While "one" may still be sending a's first post, nobody else sends a's second; b is free.
    assert [j.id for j in await two.claim([ids["a", "blog-2"], ids["b", "blog-1"]])] == [
        ids["b", "blog-1"]
    ]
    assert await one.claim([ids["b", "blog-2"]]) == []  # b's first post is two's, in flight
    # A retry keeps the first post pending: the second still may not overtake it.
    await one.record(OutboxResults(retry=[(ids["a", "blog-1"], 1, 0.0, "HTTP 502")]))
    assert await two.claim([ids["a", "blog-2"]]) == []
    # The one process holding both may send them in turn.
    held = await one.claim([ids["a", "blog-1"], ids["a", "blog-2"]])
    assert [j.id for j in held] == [ids["a", "blog-1"], ids["a", "blog-2"]]
    await one.record(OutboxResults(sent=[(ids["a", "blog-1"], "m", 1, "x")]))
    await one.record(OutboxResults(skipped=[(ids["a", "blog-2"], "test")]))
    await two.record(OutboxResults(sent=[(ids["b", "blog-1"], "m", 1, "x")]))
    assert [j.id for j in await one.claim([ids["b", "blog-2"]])] == [ids["b", "blog-2"]]


def test_a_lease_names_this_process_by_default() -> None:
    assert default_owner() == f"{socket.gethostname()}:{os.getpid()}"
