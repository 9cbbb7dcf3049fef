"""Subscriptions and the outbox on a real SQLite file: what the store contract does not show.

Their behaviours are tested on both backends by tests/test_store_contract.py; here only the reason
a skipped delivery keeps (`deliveries.last_error`), which the contract has no call to read.
"""

from __future__ import annotations

import re
from typing import Any

import aiosqlite
import pytest

from bot.models import Post, SubscriptionState, Target
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


async def test_a_document_is_queued_in_calls_that_do_not_grow_with_its_posts(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call to SQLite's thread is a round trip: a document's deliveries (its keyword matches
    included) take the same few calls for 10 posts as for 2,000, not one or more a post."""
    store = SubscriptionStore(db)
    await store.add(chat("all"), created_by="u")
    await store.add(chat("sanctions"), created_by="u", query="sanctions")
    await store.add(chat("nato"), created_by="u", query="NATO OR Brus*")
    calls: list[str] = []
    for name in ("execute", "executemany"):
        method = getattr(aiosqlite.Connection, name)

        def counted(self: aiosqlite.Connection, sql: str, *args: Any, _m: Any = method) -> Any:
            calls.append(sql)
            return _m(self, sql, *args)

        monkeypatch.setattr(aiosqlite.Connection, name, counted)

    def queuing() -> list[str]:
        """The calls of the last import that read subscriptions or matches, or write deliveries."""
        found = [c for c in calls if re.search(r"subscriptions|posts_fts|deliveries", c)]
        calls.clear()
        return found

    def posts(count: int, start: int) -> list[Post]:
        return [
            make_post(n, body=["New sanctions." if n % 3 == 0 else "NATO in Brussels."])
            for n in range(start, start + count)
        ]

    await import_posts(db, posts(10, 1))
    few = queuing()
    await import_posts(db, posts(2_000, 11))
    assert queuing() == few
    assert len(few) == 4  # the subscriptions' queries, a match for each keyword, the deliveries
    rows = await deliveries(db)
    assert len(rows) == 2 * 2_010
    assert sum(r["address"] == "sanctions" for r in rows) == 2_010 // 3
