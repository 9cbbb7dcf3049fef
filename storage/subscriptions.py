"""Subscriptions: who gets which blog's posts, optionally filtered by a keyword query.

A subscription says: send the posts of one blog (or of every blog), optionally only those matching a keyword
query in the /search language, to one target. When the post store records an event, the delivery rows for
every matching subscription are written in the same transaction (`enqueue_for_changes`), so a crash can
neither lose nor invent a notification (storage.ingest, storage.outbox). The dispatcher (`bot/dispatcher.py`)
reads and settles those rows through `storage.outbox.Outbox`.

Decisions worth knowing:
- A paused or disabled subscription accrues nothing: pausing skips its pending deliveries, and posts arriving
  while it is paused are not queued for it. Resuming starts from the next post.
- One delivery per target and post event: when several subscriptions of one chat match the same post
  (one per blog and one per keyword, say), the chat gets the post once, through the oldest subscription.
- An edit reaches the subscriptions that already had the post (as an 'updated' delivery, unless their edit
  policy is 'ignore'); a subscription that matches the post only since the edit gets it as new ('created').
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

import aiosqlite

from storage.codecs import SUB_COLUMNS, subscription_from_row, to_db_time, utc_now
from storage.db import Database, run_in_thread
from storage.models import EditPolicy, Subscription, SubscriptionState, Target
from storage.query import CompiledQuery, compile_each, compile_query
from storage.values import (
    MAX_BACKFILL,
    SAMPLE_SCHEME,
    Added,
    NewSubscription,
    SubscriptionError,
    new_rows,
    normalize_query,
    same_keywords,
    subscription_changes,
)

log = logging.getLogger(__name__)


_CHUNK = 500  # ids per `IN (...)` list


class SubscriptionStore:
    """Add, list, pause, remove and move subscriptions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        target: Target,
        *,
        created_by: str,
        source_id: str | None = None,
        query: str | None = None,
        edit_policy: EditPolicy = EditPolicy.EDIT,
        backfill: int = 0,
    ) -> tuple[Subscription, bool]:
        """Subscribe `target`; return (subscription, created_new).

        The same target, source and query again returns the existing subscription (re-activated if it was
        paused or disabled). A new one is greeted with up to `backfill` latest matching posts, oldest first.
        Raises QueryError (from storage.search) for a query that cannot be read.
        """
        item = NewSubscription(target, created_by, source_id, query, edit_policy)
        (added,) = await self.put([item], backfill=backfill)
        return added.subscription, added.created

    async def add_many(
        self, items: Sequence[NewSubscription], *, backfill: int = 0
    ) -> builtins.list[Subscription]:
        """Add many subscriptions in one transaction (existing ones are returned re-activated)."""
        return [added.subscription for added in await self.put(items, backfill=backfill)]

    async def put(
        self, items: Sequence[NewSubscription], *, backfill: int = 0
    ) -> builtins.list[Added]:
        """Add subscriptions in one transaction, saying for each existing one what it changed.

        The whole batch is one call in the writer's thread (storage.db.run_in_thread): a file of
        100k targets is 100k short statements, not 100k round trips to that thread."""
        compile_each(normalize_query(item.query) for item in items)
        async with self.db.write() as conn:
            return await run_in_thread(conn, partial(_put_all, items=items, backfill=backfill))

    async def get(self, subscription_id: int) -> Subscription | None:
        async with self.db.reader.execute(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
        ) as cur:
            row = await cur.fetchone()
        return subscription_from_row(row) if row else None

    async def list(
        self, *, platform: str | None = None, address: str | None = None
    ) -> builtins.list[Subscription]:
        """Every subscription (of one platform, of one chat), oldest first."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if platform is not None:
            clauses.append("platform = ?")
            params.append(platform)
        if address is not None:
            clauses.append("address = ?")
            params.append(address)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self.db.reader.execute(
            f"SELECT {SUB_COLUMNS} FROM subscriptions {where} ORDER BY id", params
        ) as cur:
            return [subscription_from_row(r) for r in await cur.fetchall()]

    async def backfill_count(self, subscription_id: int) -> int:
        """How many latest posts a new subscription was greeted with (queued with it)."""
        async with self.db.reader.execute(
            "SELECT count(*) FROM deliveries WHERE subscription_id = ? AND event = 'backfill'",
            (subscription_id,),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def count_by_platform(self, *, active_only: bool = False) -> dict[str, int]:
        """How many subscriptions each platform has (only active ones, with `active_only`)."""
        return await self.db.read(partial(_count_by_platform, active_only=active_only))

    async def remove(self, subscription_id: int) -> bool:
        """Delete a subscription and its deliveries."""
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))
            return cur.rowcount > 0

    async def remove_for_target(self, target: Target, source_id: str | None = None) -> int:
        """Delete the target's subscriptions: all of them, or only those for `source_id`."""
        sql = (
            "DELETE FROM subscriptions WHERE platform = ? AND address = ? "
            "AND coalesce(thread, '') = coalesce(?, '')"
        )
        params: builtins.list[Any] = [target.platform, target.address, target.thread]
        if source_id is not None:
            sql += " AND source_id = ?"
            params.append(source_id)
        async with self.db.write() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    async def set_state(
        self, subscription_id: int, state: SubscriptionState, reason: str | None = None
    ) -> bool:
        """Pause, resume or disable. Pausing or disabling skips what is still pending for it."""
        async with self.db.write() as conn:
            cur = await conn.execute(
                "UPDATE subscriptions SET state = ?, reason = ? WHERE id = ?",
                (
                    state.value,
                    reason if state != SubscriptionState.ACTIVE else None,
                    subscription_id,
                ),
            )
            if cur.rowcount == 0:
                return False
            if state != SubscriptionState.ACTIVE:
                await _skip_pending(conn, [subscription_id], reason or state.value)
            return True

    async def set_query(self, subscription_id: int, query: str | None) -> Subscription | None:
        """Change a subscription's keywords in place (None or "": every post); what is already
        queued stays. None when there is no such subscription; QueryError for keywords that cannot
        be read; SubscriptionError when its chat already has a subscription with these keywords."""
        query = normalize_query(query)
        if query:
            compile_query(query)
        async with self.db.write() as conn:
            try:
                cur = await conn.execute(
                    "UPDATE subscriptions SET query = ? WHERE id = ?", (query, subscription_id)
                )
            except sqlite3.IntegrityError:
                raise SubscriptionError(same_keywords(query)) from None
            if cur.rowcount == 0:
                return None
            async with conn.execute(
                f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
            ) as found:
                row = await found.fetchone()
        return subscription_from_row(row) if row else None

    async def disable_target(self, platform: str, address: str, reason: str) -> int:
        """Disable every subscription of one chat/channel/webhook (e.g. the bot was blocked)."""
        async with self.db.write() as conn:
            return await disable_target(conn, platform, address, reason)

    async def move_target(self, platform: str, old_address: str, new_address: str) -> int:
        """A chat changed address (Telegram group → supergroup): move its subscriptions along."""
        async with self.db.write() as conn:
            return await move_target(conn, platform, old_address, new_address)


_Key = tuple[str, str, str, str, str]
"""A subscription's identity, as the unique index `subscriptions_unique` has it: platform,
address, thread, blog and keywords (NULL as '')."""


def _key(target: Target, source_id: str | None, query: str | None) -> _Key:
    return (target.platform, target.address, target.thread or "", source_id or "", query or "")


def _put_all(
    conn: sqlite3.Connection, items: Sequence[NewSubscription], backfill: int
) -> builtins.list[Added]:
    """Every item subscribed on `conn` (in the open write transaction, in its thread), in order.

    New subscriptions are inserted together (executemany) and built from what was inserted, so a
    file of 100k targets costs about what raw inserts do; one that is already there (in the store,
    or earlier in the batch) takes the one-by-one path, which re-activates it and says what changed.
    """
    greetings: dict[tuple[str | None, str | None, bool], builtins.list[Any]] = {}
    stored = _stored_keys(conn, items)
    results: builtins.list[Added] = []
    fresh: builtins.list[tuple[NewSubscription, str | None]] = []
    for item in items:
        query = normalize_query(item.query)
        key = _key(item.target, item.source_id, query)
        if key in stored:
            results += _insert_new(conn, fresh, backfill, greetings)
            fresh = []
            results.append(_add(conn, item, backfill, greetings))
        else:
            stored.add(key)
            fresh.append((item, query))
    results += _insert_new(conn, fresh, backfill, greetings)
    return results


def _stored_keys(conn: sqlite3.Connection, items: Sequence[NewSubscription]) -> set[_Key]:
    """The keys of the subscriptions already stored for the items' targets."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        wanted.setdefault(item.target.platform, set()).add(item.target.address)
    found: set[_Key] = set()
    for platform, addresses in wanted.items():
        any_there = "SELECT 1 FROM subscriptions WHERE platform = ? LIMIT 1"
        if conn.execute(any_there, (platform,)).fetchone() is None:
            continue  # the platform's first subscriptions: nothing to look up
        listed = sorted(addresses)
        for start in range(0, len(listed), _CHUNK):
            chunk = listed[start : start + _CHUNK]
            rows = conn.execute(
                "SELECT platform, address, coalesce(thread, ''), coalesce(source_id, ''), "
                "coalesce(query, '') FROM subscriptions "
                f"WHERE platform = ? AND address IN ({','.join('?' * len(chunk))})",
                (platform, *chunk),
            ).fetchall()
            found.update(tuple(row) for row in rows)
    return found


def _insert_new(
    conn: sqlite3.Connection,
    fresh: Sequence[tuple[NewSubscription, str | None]],
    backfill: int,
    greetings: dict[tuple[str | None, str | None, bool], builtins.list[Any]],
) -> builtins.list[Added]:
    """Insert subscriptions known to be new, in order; each as inserted, greeted with `backfill`."""
    if not fresh:
        return []
    now = utc_now()
    stamp = to_db_time(now)
    rows = [(*row, stamp) for row in new_rows(fresh)]
    (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM subscriptions").fetchone()
    conn.executemany(
        "INSERT INTO subscriptions (platform, address, thread, target_kind, options, source_id, "
        "query, edit_policy, created_by, created_at, state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active')",
        rows,
    )
    # One writer holds the transaction: the new rows are the ids above `last`, in insert order.
    ids = [
        int(r[0])
        for r in conn.execute("SELECT id FROM subscriptions WHERE id > ? ORDER BY id", (last,))
    ]
    assert len(ids) == len(fresh), "rows appeared beside this transaction's inserts"
    count = max(0, min(backfill, MAX_BACKFILL))
    added: builtins.list[Added] = []
    for subscription_id, (item, query) in zip(ids, fresh, strict=True):
        if count:
            _greet(conn, subscription_id, item, query, count, greetings)
        added.append(Added(item.written(subscription_id, query, now), True))
    return added


def _greet(
    conn: sqlite3.Connection,
    subscription_id: int,
    item: NewSubscription,
    query: str | None,
    count: int,
    greetings: dict[tuple[str | None, str | None, bool], builtins.list[Any]],
) -> None:
    """Queue a new subscription's greeting: the latest `count` matching posts. The same blog and
    keywords greet every new subscription of a batch with the same posts: one look-up for all."""
    with_samples = item.target.kind == "terminal"
    key = (item.source_id, query, with_samples)
    if key not in greetings:
        compiled = compile_query(query) if query else None
        greetings[key] = _latest_matching(
            conn, item.source_id, compiled, count, with_samples=with_samples
        )
    _enqueue_backfill(conn, subscription_id, greetings[key])


def _add(
    conn: sqlite3.Connection,
    item: NewSubscription,
    backfill: int,
    greetings: dict[tuple[str | None, str | None, bool], builtins.list[Any]],
) -> Added:
    target = item.target
    query = normalize_query(item.query)
    row = conn.execute(
        f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE platform = ? AND address = ? "
        "AND coalesce(thread, '') = coalesce(?, '') AND coalesce(source_id, '') = coalesce(?, '') "
        "AND coalesce(query, '') = coalesce(?, '')",
        (target.platform, target.address, target.thread, item.source_id, query),
    ).fetchone()
    if row is not None:
        (fresh,) = conn.execute(
            "UPDATE subscriptions SET state = 'active', reason = NULL, edit_policy = ?, "
            f"target_kind = ?, options = ? WHERE id = ? RETURNING {SUB_COLUMNS}",
            (item.edit_policy.value, target.kind, json.dumps(target.options), row["id"]),
        ).fetchall()
        before, after = subscription_from_row(row), subscription_from_row(fresh)
        return Added(after, False, subscription_changes(before, after))

    (fresh,) = conn.execute(
        "INSERT INTO subscriptions (platform, address, thread, target_kind, options, source_id, "
        "query, edit_policy, created_by, created_at, state) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active') RETURNING {SUB_COLUMNS}",
        (
            target.platform,
            target.address,
            target.thread,
            target.kind,
            json.dumps(target.options),
            item.source_id,
            query,
            item.edit_policy.value,
            item.created_by,
            to_db_time(utc_now()),
        ),
    ).fetchall()
    count = max(0, min(backfill, MAX_BACKFILL))
    if count:
        _greet(conn, int(fresh["id"]), item, query, count, greetings)
    return Added(subscription_from_row(fresh), True)


def _latest_matching(
    conn: sqlite3.Connection,
    source_id: str | None,
    compiled: CompiledQuery | None,
    count: int,
    *,
    with_samples: bool,
) -> builtins.list[Any]:
    """(rowid, version, published_at) of the latest `count` posts matching, newest first. A
    bundled sample blog's invented posts greet only the terminal: never a real chat or webhook."""
    params: list[Any] = []
    if compiled is None:
        sql = "SELECT p.rowid, p.version, p.published_at FROM posts p"
        where = []
    else:
        sql = (
            "SELECT p.rowid, p.version, p.published_at FROM posts_fts f "
            "JOIN posts p ON p.rowid = f.rowid"
        )
        where = ["posts_fts MATCH ?"]
        params.append(compiled.match)
    if not with_samples:
        where.append(
            "p.source_id NOT IN (SELECT id FROM sources WHERE location LIKE ? ESCAPE '\\')"
        )
        params.append(SAMPLE_SCHEME + "%")
    if source_id is not None:
        where.append("p.source_id = ?")
        params.append(source_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY p.published_at DESC, p.rowid DESC LIMIT ?"
    params.append(count)
    return list(conn.execute(sql, params).fetchall())


def _enqueue_backfill(
    conn: sqlite3.Connection, subscription_id: int, latest: builtins.list[Any]
) -> None:
    """Queue the latest matching posts (newest first) to a new subscription, oldest first."""
    if not latest:
        return
    now = to_db_time(utc_now())
    conn.executemany(
        "INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key, "
        "next_attempt_at, created_at) VALUES (?, ?, ?, 'backfill', ?, 0, ?)",
        [(subscription_id, r[0], r[1], r[2], now) for r in reversed(latest)],
    )


def _count_by_platform(conn: sqlite3.Connection, *, active_only: bool) -> dict[str, int]:
    """Counted from the indexes alone: each platform is found by a seek in `subscriptions_unique`
    and counted there (covering), the few subscriptions not active by `subscriptions_by_state`.
    `GROUP BY platform` over the table read every row: ~0.5 s at start with 1M subscriptions,
    against ~0.1 s so."""
    counts: dict[str, int] = {}
    (platform,) = conn.execute("SELECT min(platform) FROM subscriptions").fetchone()
    while platform is not None:
        (counts[platform],) = conn.execute(
            "SELECT count(*) FROM subscriptions WHERE platform = ?", (platform,)
        ).fetchone()
        (platform,) = conn.execute(
            "SELECT min(platform) FROM subscriptions WHERE platform > ?", (platform,)
        ).fetchone()
    if active_only:
        for platform, inactive in conn.execute(
            "SELECT platform, count(*) FROM (SELECT platform FROM subscriptions "
            "WHERE state < 'active' UNION ALL SELECT platform FROM subscriptions "
            "WHERE state > 'active') GROUP BY platform"
        ):
            counts[platform] -= inactive
    return {platform: n for platform, n in counts.items() if n > 0}


async def _skip_pending(
    conn: aiosqlite.Connection, subscription_ids: Sequence[int], reason: str
) -> None:
    for start in range(0, len(subscription_ids), _CHUNK):
        chunk = list(subscription_ids[start : start + _CHUNK])
        marks = ",".join("?" * len(chunk))
        await conn.execute(
            f"UPDATE deliveries SET state = 'skipped', last_error = ? "
            f"WHERE state = 'pending' AND subscription_id IN ({marks})",
            (reason[:500], *chunk),
        )


async def disable_target(
    conn: aiosqlite.Connection, platform: str, address: str, reason: str
) -> int:
    """Inside a write transaction: disable a target's subscriptions and skip their pending deliveries."""
    async with conn.execute(
        "SELECT id FROM subscriptions WHERE platform = ? AND address = ? AND state != 'disabled'",
        (platform, address),
    ) as cur:
        ids = [r[0] for r in await cur.fetchall()]
    if not ids:
        return 0
    await conn.execute(
        "UPDATE subscriptions SET state = 'disabled', reason = ? "
        "WHERE platform = ? AND address = ? AND state != 'disabled'",
        (reason[:500], platform, address),
    )
    await _skip_pending(conn, ids, reason)
    return len(ids)


async def move_target(
    conn: aiosqlite.Connection, platform: str, old_address: str, new_address: str
) -> int:
    """Inside a write transaction: move subscriptions to a new address, merging with any already there."""
    async with conn.execute(
        "SELECT id, thread, source_id, query FROM subscriptions WHERE platform = ? AND address = ?",
        (platform, old_address),
    ) as cur:
        rows = list(await cur.fetchall())
    moved = 0
    for row in rows:
        async with conn.execute(
            "SELECT id FROM subscriptions WHERE platform = ? AND address = ? "
            "AND coalesce(thread, '') = coalesce(?, '') AND coalesce(source_id, '') = coalesce(?, '') "
            "AND coalesce(query, '') = coalesce(?, '')",
            (platform, new_address, row["thread"], row["source_id"], row["query"]),
        ) as cur:
            twin = await cur.fetchone()
        if twin is None:
            await conn.execute(
                "UPDATE subscriptions SET address = ? WHERE id = ?", (new_address, row["id"])
            )
        else:
            await conn.execute(
                "UPDATE deliveries SET subscription_id = ? WHERE subscription_id = ?",
                (twin[0], row["id"]),
            )
            await conn.execute("DELETE FROM subscriptions WHERE id = ?", (row["id"],))
        moved += 1
    return moved
