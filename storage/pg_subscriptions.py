"""Subscriptions on PostgreSQL: storage.subscriptions' rules, row for row.

Everything storage.subscriptions says holds here (read it: it is the specification): the same target,
blog and keyword filter is one subscription (the unique index `subscriptions_unique`), subscribing
again re-activates it and says what changed, pausing or disabling skips what is pending for it, a new
subscription is greeted with up to `backfill` (at most MAX_BACKFILL) latest matching posts, oldest
first, and a bundled sample blog's invented posts greet only the terminal.

Where PostgreSQL differs:
- Keyword backfill selects posts with `posts.search @@ <tsquery>`, the tsquery translated from the
  FTS5 MATCH string by `storage.pg_search.tsquery`. That module sits in this one's layer
  (tests/test_layering.py), so it may not be imported here: the store is given the translator
  (`PgSubscriptionStore(db, tsquery=storage.pg_search.tsquery)`, wired by the layer above). Its
  matches are PostgreSQL's (Snowball stemming, stop words: see storage.pg_search): a filter that is
  only a stop word (`the`) matches no post, where SQLite matches every post holding the word; the
  same holds for the new posts storage.pg_outbox matches (tests/test_pg_outbox.py shows both).
- Several processes may subscribe the same target at once: the insert is `ON CONFLICT DO NOTHING`
  on the unique index and the loser reads the winner's row, so both get the one subscription
  instead of a unique violation.
- A skipped delivery also loses its lease (storage.pg_outbox): it is no longer anyone's work.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from storage.codecs import (
    BACKFILL,
    PENDING,
    SKIPPED,
    SUB_COLUMNS,
    subscription_from_row,
    to_db_time,
    utc_now,
)
from storage.models import EditPolicy, Subscription, SubscriptionState, Target
from storage.pg_db import Connection, PgDatabase
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

TsQueryTranslator = Callable[[str], tuple[str, tuple[str, ...]]]
"""An FTS5 MATCH string → (tsquery SQL with `%s` placeholders, its parameters):
`storage.pg_search.tsquery`."""

_SAME_SUBSCRIPTION = (
    "platform = %s AND address = %s AND coalesce(thread, '') = coalesce(%s, '') "
    "AND coalesce(source_id, '') = coalesce(%s, '') AND coalesce(query, '') = coalesce(%s, '')"
)


class PgSubscriptionStore:
    """Add, list, pause, remove and move subscriptions (storage.subscriptions.SubscriptionStore)."""

    def __init__(self, db: PgDatabase, *, tsquery: TsQueryTranslator) -> None:
        self.db = db
        self.tsquery = tsquery

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
        """Subscribe `target`; return (subscription, created_new). See SubscriptionStore.add."""
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
        """Add subscriptions in one transaction, saying for each existing one what it changed."""
        compile_each(normalize_query(item.query) for item in items)
        async with self.db.write() as conn:
            return await _put_all(conn, items, backfill, self.tsquery)

    async def get(self, subscription_id: int) -> Subscription | None:
        async with self.db.read() as conn:
            cur = await conn.execute(
                f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = %s", (subscription_id,)
            )
            row = await cur.fetchone()
        return subscription_from_row(row) if row else None

    async def list(
        self, *, platform: str | None = None, address: str | None = None
    ) -> builtins.list[Subscription]:
        """Every subscription (of one platform, of one chat), oldest first."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if platform is not None:
            clauses.append("platform = %s")
            params.append(platform)
        if address is not None:
            clauses.append("address = %s")
            params.append(address)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self.db.read() as conn:
            cur = await conn.execute(
                f"SELECT {SUB_COLUMNS} FROM subscriptions {where} ORDER BY id", params
            )
            return [subscription_from_row(r) for r in await cur.fetchall()]

    async def backfill_count(self, subscription_id: int) -> int:
        """How many latest posts a new subscription was greeted with (queued with it)."""
        async with self.db.read() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM deliveries WHERE subscription_id = %s AND event = %s",
                (subscription_id, BACKFILL),
            )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def count_by_platform(self, *, active_only: bool = False) -> dict[str, int]:
        """How many subscriptions each platform has (only active ones, with `active_only`)."""
        where = "WHERE state = 'active'" if active_only else ""
        async with self.db.read() as conn:
            cur = await conn.execute(
                f"SELECT platform, count(*) AS n FROM subscriptions {where} GROUP BY platform "
                "ORDER BY platform"
            )
            return {r["platform"]: int(r["n"]) for r in await cur.fetchall()}

    async def remove(self, subscription_id: int) -> bool:
        """Delete a subscription and its deliveries (ON DELETE CASCADE)."""
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM subscriptions WHERE id = %s", (subscription_id,))
            return cur.rowcount > 0

    async def remove_for_target(self, target: Target, source_id: str | None = None) -> int:
        """Delete the target's subscriptions: all of them, or only those for `source_id`."""
        sql = (
            "DELETE FROM subscriptions WHERE platform = %s AND address = %s "
            "AND coalesce(thread, '') = coalesce(%s, '')"
        )
        params: builtins.list[Any] = [target.platform, target.address, target.thread]
        if source_id is not None:
            sql += " AND source_id = %s"
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
                "UPDATE subscriptions SET state = %s, reason = %s WHERE id = %s",
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
        """Change a subscription's keywords in place; see SubscriptionStore.set_query."""
        query = normalize_query(query)
        if query:
            compile_query(query)
        try:
            async with self.db.write() as conn:
                cur = await conn.execute(
                    f"UPDATE subscriptions SET query = %s WHERE id = %s RETURNING {SUB_COLUMNS}",
                    (query, subscription_id),
                )
                row = await cur.fetchone()
        except psycopg.errors.UniqueViolation:
            raise SubscriptionError(same_keywords(query)) from None
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

_Greetings = dict[tuple[str | None, str | None, bool], builtins.list[dict[str, Any]]]
"""The latest matching posts per (blog, keywords, with samples), looked up once per batch."""


def _key(target: Target, source_id: str | None, query: str | None) -> _Key:
    return (target.platform, target.address, target.thread or "", source_id or "", query or "")


async def _put_all(
    conn: Connection, items: Sequence[NewSubscription], backfill: int, tsquery: TsQueryTranslator
) -> builtins.list[Added]:
    """Every item subscribed in the open transaction, in order (storage.subscriptions._put_all).

    New subscriptions are inserted together, one statement over arrays, in a few round trips
    whatever their number; one that is already there (in the store, earlier in the batch, or
    inserted by another process meanwhile) takes the one-by-one path, which re-activates it and
    says what changed."""
    greetings: _Greetings = {}
    stored = await _stored_keys(conn, items)
    results: builtins.list[Added] = []
    fresh: builtins.list[tuple[NewSubscription, str | None]] = []
    for item in items:
        query = normalize_query(item.query)
        key = _key(item.target, item.source_id, query)
        if key in stored:
            results += await _insert_new(conn, fresh, backfill, tsquery, greetings)
            fresh = []
            results.append(await _add(conn, item, backfill, tsquery, greetings))
        else:
            stored.add(key)
            fresh.append((item, query))
    results += await _insert_new(conn, fresh, backfill, tsquery, greetings)
    return results


async def _stored_keys(conn: Connection, items: Sequence[NewSubscription]) -> set[_Key]:
    """The keys of the subscriptions already stored for the items' targets."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        wanted.setdefault(item.target.platform, set()).add(item.target.address)
    found: set[_Key] = set()
    async with conn.cursor(row_factory=tuple_row) as cur:
        for platform, addresses in wanted.items():
            await cur.execute(
                "SELECT 1 FROM subscriptions WHERE platform = %s LIMIT 1", (platform,)
            )
            if await cur.fetchone() is None:
                continue  # the platform's first subscriptions: nothing to look up
            await cur.execute(
                "SELECT platform, address, coalesce(thread, ''), coalesce(source_id, ''), "
                "coalesce(query, '') FROM subscriptions "
                "WHERE platform = %s AND address = ANY(%s)",
                (platform, sorted(addresses)),
            )
            found.update(await cur.fetchall())
    return found


async def _insert_new(
    conn: Connection,
    fresh: Sequence[tuple[NewSubscription, str | None]],
    backfill: int,
    tsquery: TsQueryTranslator,
    greetings: _Greetings,
) -> builtins.list[Added]:
    """Insert subscriptions believed new, in order, each greeted with `backfill` posts; one that
    another process inserted meanwhile is subscribed again the one-by-one way."""
    if not fresh:
        return []
    now = utc_now()
    stamp = to_db_time(now)
    columns = [list(column) for column in zip(*new_rows(fresh), strict=True)]
    # The columns go as arrays in PostgreSQL's binary format (%b): the text format escapes every
    # element in Python, which took longer than the insert. Tuples: 100k dicts cost more.
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "INSERT INTO subscriptions (platform, address, thread, target_kind, options, source_id, "
            "query, edit_policy, created_by, created_at, state) "
            "SELECT platform, address, thread, target_kind, options, source_id, query, edit_policy, "
            "created_by, %s, 'active' FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
            "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) WITH ORDINALITY "
            "AS u(platform, address, thread, target_kind, options, source_id, query, edit_policy, "
            "created_by, n) ORDER BY n "
            "ON CONFLICT (platform, address, coalesce(thread, ''), coalesce(source_id, ''), "
            "coalesce(query, '')) DO NOTHING "
            "RETURNING id, platform, address, coalesce(thread, ''), "
            "coalesce(source_id, ''), coalesce(query, '')",
            (stamp, *columns),
        )
        ids = {tuple(r[1:]): int(r[0]) for r in await cur.fetchall()}
    count = max(0, min(backfill, MAX_BACKFILL))
    added: builtins.list[Added] = []
    greeted: builtins.list[tuple[Any, ...]] = []
    for item, query in fresh:
        subscription_id = ids.get(_key(item.target, item.source_id, query))
        if subscription_id is None:  # another process subscribed it since the look-up
            added.append(await _add(conn, item, backfill, tsquery, greetings))
            continue
        if count:
            latest = await _greeting(conn, item, query, count, tsquery, greetings)
            greeted += _backfill_rows(subscription_id, latest, stamp)
        added.append(Added(item.written(subscription_id, query, now), True))
    await _insert_backfill(conn, greeted)
    return added


async def _fetch_subscription(conn: Connection, subscription_id: int) -> dict[str, Any]:
    cur = await conn.execute(
        f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = %s", (subscription_id,)
    )
    row = await cur.fetchone()
    assert row is not None, f"subscription {subscription_id} vanished inside its transaction"
    return row


async def _add(
    conn: Connection,
    item: NewSubscription,
    backfill: int,
    tsquery: TsQueryTranslator,
    greetings: _Greetings,
) -> Added:
    target = item.target
    query = normalize_query(item.query)
    same = (target.platform, target.address, target.thread, item.source_id, query)
    cur = await conn.execute(
        f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE {_SAME_SUBSCRIPTION} FOR UPDATE", same
    )
    row = await cur.fetchone()
    if row is None:
        # Checked first, so a repeat does not use up an id; ON CONFLICT for another process
        # inserting the same subscription between the check and the insert.
        cur = await conn.execute(
            "INSERT INTO subscriptions (platform, address, thread, target_kind, options, "
            "source_id, query, edit_policy, created_by, created_at, state) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'active') "
            "ON CONFLICT (platform, address, coalesce(thread, ''), coalesce(source_id, ''), "
            "coalesce(query, '')) DO NOTHING RETURNING id",
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
        )
        inserted = await cur.fetchone()
        if inserted is not None:
            subscription_id = int(inserted["id"])
            count = max(0, min(backfill, MAX_BACKFILL))
            if count:
                latest = await _greeting(conn, item, query, count, tsquery, greetings)
                await _insert_backfill(
                    conn, _backfill_rows(subscription_id, latest, to_db_time(utc_now()))
                )
            fresh = await _fetch_subscription(conn, subscription_id)
            return Added(subscription_from_row(fresh), True)
        cur = await conn.execute(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE {_SAME_SUBSCRIPTION} FOR UPDATE",
            same,
        )
        row = await cur.fetchone()
        assert row is not None, "a conflicting subscription must be there"

    await conn.execute(
        "UPDATE subscriptions SET state = 'active', reason = NULL, edit_policy = %s, "
        "target_kind = %s, options = %s WHERE id = %s",
        (item.edit_policy.value, target.kind, json.dumps(target.options), row["id"]),
    )
    fresh = await _fetch_subscription(conn, int(row["id"]))
    before, after = subscription_from_row(row), subscription_from_row(fresh)
    return Added(after, False, subscription_changes(before, after))


async def _greeting(
    conn: Connection,
    item: NewSubscription,
    query: str | None,
    count: int,
    tsquery: TsQueryTranslator,
    greetings: _Greetings,
) -> builtins.list[dict[str, Any]]:
    """The latest `count` posts matching a new subscription, newest first. The same blog and
    keywords greet every new subscription of a batch with the same posts: one look-up for all."""
    with_samples = item.target.kind == "terminal"
    key = (item.source_id, query, with_samples)
    if key not in greetings:
        compiled = compile_query(query) if query else None
        greetings[key] = await _latest_matching(
            conn, item.source_id, compiled, count, tsquery, with_samples=with_samples
        )
    return greetings[key]


async def _latest_matching(
    conn: Connection,
    source_id: str | None,
    compiled: CompiledQuery | None,
    count: int,
    tsquery: TsQueryTranslator,
    *,
    with_samples: bool,
) -> builtins.list[dict[str, Any]]:
    """The latest `count` matching posts, newest first. A bundled sample blog's invented posts
    greet only the terminal: never a real chat or webhook."""
    params: list[Any] = []
    where: list[str] = []
    if compiled is not None:
        sql, query_params = tsquery(compiled.match)
        where.append(f"p.search @@ {sql}")
        params.extend(query_params)
    if not with_samples:
        where.append(
            "p.source_id NOT IN (SELECT id FROM sources WHERE location LIKE %s ESCAPE '\\')"
        )
        params.append(SAMPLE_SCHEME + "%")
    if source_id is not None:
        where.append("p.source_id = %s")
        params.append(source_id)
    select = "SELECT p.rowid, p.version, p.published_at FROM posts p"
    if where:
        select += " WHERE " + " AND ".join(where)
    select += " ORDER BY p.published_at DESC, p.rowid DESC LIMIT %s"
    params.append(count)
    cur = await conn.execute(select, params)
    return list(await cur.fetchall())


def _backfill_rows(
    subscription_id: int, latest: builtins.list[dict[str, Any]], now: str
) -> builtins.list[tuple[Any, ...]]:
    """The greeting's deliveries for one new subscription, oldest post first."""
    return [
        (subscription_id, r["rowid"], r["version"], BACKFILL, r["published_at"], now)
        for r in reversed(latest)
    ]


async def _insert_backfill(conn: Connection, rows: builtins.list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    async with conn.cursor() as insert:
        await insert.executemany(
            "INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key, "
            "next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, 0, %s)",
            rows,
        )


async def _skip_pending(conn: Connection, subscription_ids: Sequence[int], reason: str) -> None:
    await conn.execute(
        "UPDATE deliveries SET state = %s, last_error = %s, lease_owner = NULL, "
        "lease_until = NULL WHERE state = %s AND subscription_id = ANY(%s)",
        (SKIPPED, reason[:500], PENDING, list(subscription_ids)),
    )


async def disable_target(conn: Connection, platform: str, address: str, reason: str) -> int:
    """Inside a write transaction: disable a target's subscriptions and skip their pending deliveries."""
    cur = await conn.execute(
        "UPDATE subscriptions SET state = 'disabled', reason = %s "
        "WHERE platform = %s AND address = %s AND state != 'disabled' RETURNING id",
        (reason[:500], platform, address),
    )
    ids = [int(r["id"]) for r in await cur.fetchall()]
    if not ids:
        return 0
    await _skip_pending(conn, ids, reason)
    return len(ids)


async def move_target(conn: Connection, platform: str, old_address: str, new_address: str) -> int:
    """Inside a write transaction: move subscriptions to a new address, merging with any already there."""
    cur = await conn.execute(
        "SELECT id, thread, source_id, query FROM subscriptions "
        "WHERE platform = %s AND address = %s ORDER BY id FOR UPDATE",
        (platform, old_address),
    )
    rows = list(await cur.fetchall())
    for row in rows:
        cur = await conn.execute(
            f"SELECT id FROM subscriptions WHERE {_SAME_SUBSCRIPTION}",
            (platform, new_address, row["thread"], row["source_id"], row["query"]),
        )
        twin = await cur.fetchone()
        if twin is None:
            await conn.execute(
                "UPDATE subscriptions SET address = %s WHERE id = %s", (new_address, row["id"])
            )
        else:
            await conn.execute(
                "UPDATE deliveries SET subscription_id = %s WHERE subscription_id = %s",
                (twin["id"], row["id"]),
            )
            await conn.execute("DELETE FROM subscriptions WHERE id = %s", (row["id"],))
    return len(rows)
