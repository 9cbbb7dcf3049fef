"""Subscriptions and the outbox on a real SQLite file: what the store contract does not show.

Their behaviours are tested on both backends by tests/test_store_contract.py; here only the reason
a skipped delivery keeps (`deliveries.last_error`), which the contract has no call to read.
"""

from __future__ import annotations

from typing import Any

from bot.models import SubscriptionState, Target
from storage.db import Database
from storage.subscriptions import SubscriptionStore
from tests.fakes.flaky import import_posts, make_post


def chat(address: str, thread: str | None = None) -> Target:
    return Target(platform="fake", address=address, thread=thread, kind="group")


async def deliveries(db: Database) -> list[dict[str, Any]]:
    async with db.reader.execute(
        "SELECT d.id, d.subscription_id, s.address, p.id AS post_id, d.event, d.state, "
        "d.last_error, d.version FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
        "JOIN posts p ON p.rowid = d.post_rowid ORDER BY d.id"
    ) as cur:
        return [dict(r) for r in await cur.fetchall()]


async def test_a_skipped_delivery_keeps_the_reason_it_was_skipped(db: Database) -> None:
    store = SubscriptionStore(db)
    sub, _ = await store.add(chat("a"), created_by="u")
    await import_posts(db, [make_post(1)])
    await store.set_state(sub.id, SubscriptionState.PAUSED, "paused by alice")
    rows = await deliveries(db)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice")
    ]
    await store.set_state(sub.id, SubscriptionState.ACTIVE)
    await import_posts(db, [make_post(2)])
    assert await store.disable_target("fake", "a", "bot was blocked") == 1
    rows = await deliveries(db)
    assert [(r["post_id"], r["state"], r["last_error"]) for r in rows] == [
        ("blog-1", "skipped", "paused by alice"),
        ("blog-2", "skipped", "bot was blocked"),
    ]
