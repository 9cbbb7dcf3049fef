"""Subscriptions and the outbox on a real PostgreSQL: what the store contract does not show, the
comparisons with SQLite's rows, and the leases.

The behaviours of tests/test_subscriptions.py and the store-level parts of tests/test_dispatcher.py
run on both backends in tests/test_store_contract.py. Here: what only a look at the rows shows (the
reason of a skipped delivery, errors cut, leases given up), whole scenarios compared row by row with
SQLite, where keyword filters differ, and what only PostgreSQL has: several processes claiming from
one outbox. Posts are written by the real PostgreSQL post store (storage.pg_posts.upsert_document)
with their deliveries in the same transaction, as the ingest does.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest

from bot.models import EditPolicy, ImportResult, SubscriptionState, Target
from storage.db import Database
from storage.interface import Outbox, Subscriptions
from storage.models import Post, Source, Subscription
from storage.outbox import Outbox as SqliteOutbox
from storage.pg_db import PgDatabase
from storage.pg_outbox import PgOutbox, default_owner, enqueue_for_changes
from storage.pg_posts import upsert_document
from storage.pg_search import tsquery
from storage.pg_subscriptions import PgSubscriptionStore
from storage.query import QueryError
from storage.subscriptions import SubscriptionStore
from storage.values import SAMPLE_SCHEME, NewSubscription, OutboxResults
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


# --- subscriptions: what the store contract does not show ---------------------------------------------


async def test_a_skipped_delivery_keeps_the_reason_it_was_skipped(pg: PgDatabase) -> None:
    """As tests/test_subscriptions.py's (the contract has no call that reads the reason)."""
    store = subs(pg)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(pg, [make_post(1)])
    await store.set_state(sub.id, SubscriptionState.PAUSED, "paused by alice")
    rows = await deliveries(pg)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice")
    ]
    await store.set_state(sub.id, SubscriptionState.ACTIVE)
    await import_posts(pg, [make_post(2)])
    assert await store.disable_target("fake", "a", "bot was blocked") == 1
    rows = await deliveries(pg)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice"),
        ("blog-2", "skipped", "bot was blocked"),
    ]


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


# --- what the dispatcher records: the leases and errors the contract does not show -------------------


async def test_settled_deliveries_lose_their_lease_and_errors_are_cut(pg: PgDatabase) -> None:
    """The rest of this record is asserted on both backends (tests/test_store_contract.py)."""
    store = subs(pg)
    await store.add(chat("a"), created_by="u")
    await store.add(chat("-100"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    outbox = PgOutbox(pg)
    ids = {(r["address"], r["post_id"]): r["id"] for r in await deliveries(pg)}
    await outbox.claim(sorted(ids.values()))
    await outbox.record(
        lambda: OutboxResults(
            retry=[(ids["-100", "blog-1"], 1, 2_000_000.0, "HTTP 502" * 100)],
            dead=[(ids["a", "blog-1"], 1, "bot was blocked by the user")],
            disable=[("fake", "a", "bot was blocked by the user")],
            moves=[("fake", "-100", "-100200")],
        )
    )
    rows = {(r["address"], r["post_id"]): r for r in await deliveries(pg)}
    assert rows["a", "blog-2"]["last_error"] == "bot was blocked by the user"
    retried = rows["-100200", "blog-1"]
    assert retried["state"] == "pending" and len(retried["last_error"]) == 500
    assert all(r["lease_owner"] is None for r in rows.values() if r["state"] != "pending")


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


async def test_letting_go_clears_only_this_processs_leases(pg: PgDatabase) -> None:
    await subs(pg).add(chat("a"), created_by="u")
    await subs(pg).add(chat("b"), created_by="u")
    await subs(pg).add(chat("c"), created_by="u")
    await import_posts(pg, [make_post(1)])
    a, b, c = sorted(await PgOutbox(pg).pending_ids())
    one, two = PgOutbox(pg, owner="one"), PgOutbox(pg, owner="two")
    assert len(await one.claim([a, b])) == 2 and len(await two.claim([c])) == 1
    await one.let_go([a])
    assert [job.id for job in await two.claim([a, b])] == [a]  # b is still one's
    await one.let_go()  # all it holds: b
    await one.let_go([c])  # not its lease: nothing
    owners = {r["id"]: r["lease_owner"] for r in await deliveries(pg)}
    assert owners == {a: "two", b: None, c: "two"}


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
