"""The outbox gives the same answers whatever plan PostgreSQL picks for its statements.

psycopg prepares a statement after its fifth run on a connection, and PostgreSQL may then keep one
generic plan, made from the statistics of a table that nobody has analyzed since a fan-out filled
it. The claim and the reloads (storage.pg_outbox) are written to read by key under any plan; here
they run with every plan generic and with every plan made for its parameters, each call often
enough to be prepared, and must claim, lease and reload exactly the same deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from bot.models import SubscriptionState
from storage.pg_db import PgDatabase
from storage.pg_outbox import PgOutbox
from storage.values import NewSubscription, OutboxResults
from tests.fakes.flaky import make_post
from tests.test_pg_outbox import chat, deliveries, import_posts, subs

RUNS = 7
"""More than psycopg's prepare threshold (5): the later runs go through the prepared statement."""


@pytest.fixture(params=["force_generic_plan", "force_custom_plan"])
async def pg(request: pytest.FixtureRequest, postgres_url: str) -> AsyncIterator[PgDatabase]:
    name = postgres_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("ALTER DATABASE {} SET plan_cache_mode = {}").format(
                sql.Identifier(name), sql.SQL(request.param)
            )
        )
    db = await PgDatabase.open(postgres_url, size=2)
    try:
        async with db.read() as conn:
            cur = await conn.execute("SHOW plan_cache_mode")
            assert await cur.fetchone() == {"plan_cache_mode": request.param}
        yield db
    finally:
        await db.close()


async def test_reloads_return_the_pending_deliveries_of_active_subscriptions(
    pg: PgDatabase,
) -> None:
    store = subs(pg)
    await store.add_many([NewSubscription(chat(f"c{n}"), created_by="u") for n in range(30)])
    paused, _ = await store.add(chat("paused"), created_by="u")
    await import_posts(pg, [make_post(1), make_post(2)])
    await store.set_state(paused.id, SubscriptionState.PAUSED, "away")
    rows = await deliveries(pg)
    pending = [r["id"] for r in rows if r["state"] == "pending"]
    assert len(pending) == 60 and all(r["address"] != "paused" for r in rows if r["id"] in pending)
    outbox = PgOutbox(pg)
    for _ in range(RUNS):
        assert [p.id for p in await outbox.pending_after(0)] == pending
        assert [p.id for p in await outbox.pending_after(pending[9], 5)] == pending[10:15]
        assert [p.id for p in await outbox.pending_after(pending[-1])] == []
        every = [r["id"] for r in rows]
        asked = [*reversed(every), *every]  # in any order, and twice: each one once, by id
        assert [p.id for p in await outbox.pending_by_ids(asked)] == pending
    [first] = await outbox.pending_by_ids([pending[0]])
    assert (first.platform, first.address, first.thread, first.target_kind) == (
        "fake",
        "c0",
        "",
        "group",
    )


async def test_claims_lease_free_heads_and_keep_each_targets_order(pg: PgDatabase) -> None:
    store = subs(pg)
    await store.add_many([NewSubscription(chat(f"c{n}"), created_by="u") for n in range(RUNS)])
    await import_posts(pg, [make_post(1), make_post(2)])
    ids = {(r["address"], r["post_id"]): r["id"] for r in await deliveries(pg)}
    one, two = PgOutbox(pg, owner="one"), PgOutbox(pg, owner="two")
    for n in range(RUNS):
        first, second = ids[f"c{n}", "blog-1"], ids[f"c{n}", "blog-2"]
        # Another process may not overtake the first post it does not hold.
        assert await two.claim([second]) == []
        jobs = await one.claim([first, second])
        assert [(j.id, j.state, j.target.address, j.post_version) for j in jobs] == [
            (first, "pending", f"c{n}", 1),
            (second, "pending", f"c{n}", 1),
        ]
        assert await two.claim([first, second]) == []  # leased to one
        await one.record(OutboxResults(sent=[(first, "m", 1, "x")]))
        # Settled: returned as it is, to whoever asks, and leased to nobody.
        [settled] = await two.claim([first])
        assert (settled.id, settled.state) == (first, "sent")
    owners = {r["id"]: (r["state"], r["lease_owner"]) for r in await deliveries(pg)}
    assert {owners[ids[f"c{n}", "blog-1"]] for n in range(RUNS)} == {("sent", None)}
    assert {owners[ids[f"c{n}", "blog-2"]] for n in range(RUNS)} == {("pending", "one")}


async def test_a_targets_order_holds_across_its_subscriptions(pg: PgDatabase) -> None:
    store = subs(pg)
    await store.add(chat("a"), created_by="u", source_id="blog")
    await store.add(chat("a"), created_by="u", source_id="other")
    await import_posts(pg, [make_post(1)])
    await import_posts(pg, [make_post(2, source_id="other")])
    ids = {r["post_id"]: r["id"] for r in await deliveries(pg)}
    first, second = ids["blog-1"], ids["other-2"]
    one, two = PgOutbox(pg, owner="one"), PgOutbox(pg, owner="two")
    for _ in range(RUNS):
        # The chat's later post, through its other subscription, waits for the earlier one.
        assert await two.claim([second]) == []
    assert [j.id for j in await one.claim([first])] == [first]
    for _ in range(RUNS):
        assert await two.claim([second]) == []  # the earlier one is another's, in flight
    assert [j.id for j in await one.claim([second])] == [second]  # its holder sends in turn
