"""Subscriptions and the transactional outbox.

A subscription says: send the posts of one blog (or of every blog), optionally only those matching a keyword
query in the /search language, to one target. When the post store records an event, the delivery rows for
every matching subscription are written in the same transaction (`enqueue_for_changes`), so a crash can
neither lose nor invent a notification. The dispatcher (`bot/dispatcher.py`) reads and settles those rows
through `Outbox`.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiosqlite

from storage.db import Database
from storage.models import (
    EditPolicy,
    EventKind,
    Post,
    Subscription,
    SubscriptionState,
    Target,
)
from storage.posts import POST_COLUMNS, PostChange, from_db_time, post_from_row, to_db_time, utc_now

if TYPE_CHECKING:
    from storage.search import CompiledQuery

log = logging.getLogger(__name__)

# Delivery states.
PENDING = "pending"
SENT = "sent"
DEAD = "dead"
SKIPPED = "skipped"

# Delivery events: the post store's two, and the greeting of a new subscription.
CREATED = "created"
UPDATED = "updated"
BACKFILL = "backfill"
# Locations of blogs that ship with Livedesk (the demo's invented sample): never sent to a real chat.
SAMPLE_SCHEME = "bundled:"

MAX_BACKFILL = 50
_CHUNK = 500  # ids per `IN (...)` list
_LOAD_CHUNK = 2000  # ids per JSON list when the dispatcher reloads its schedule


class SubscriptionError(ValueError):
    """A subscription request that cannot be carried out; the message is one readable line."""


@dataclass(frozen=True, slots=True)
class NewSubscription:
    target: Target
    created_by: str
    source_id: str | None = None
    query: str | None = None
    edit_policy: EditPolicy = EditPolicy.EDIT


@dataclass(frozen=True, slots=True)
class Added:
    """What subscribing did: a new subscription, or an existing one and what this changed in it."""

    subscription: Subscription
    created: bool
    changed: tuple[str, ...] = ()
    """For an existing subscription, e.g. ("edits follow-up (was edit)", "resumed (was paused)")."""


_SUB_COLUMNS = (
    "id, platform, address, thread, target_kind, options, source_id, query, edit_policy, "
    "created_by, created_at, state, reason"
)


def _subscription_from_row(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        target=Target(
            platform=row["platform"],
            address=row["address"],
            thread=row["thread"],
            kind=row["target_kind"],
            options=json.loads(row["options"]),
        ),
        source_id=row["source_id"],
        query=row["query"],
        edit_policy=EditPolicy(row["edit_policy"]),
        created_by=row["created_by"],
        created_at=from_db_time(row["created_at"]),
        state=SubscriptionState(row["state"]),
        reason=row["reason"],
    )


def normalize_query(query: str | None) -> str | None:
    """The stored form of a keyword filter: whitespace collapsed; empty means no filter."""
    if query is None:
        return None
    text = " ".join(query.split())
    return text or None


def _compile(query: str) -> CompiledQuery:
    from storage.search import compile_query

    return compile_query(query)


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
        async with self.db.write() as conn:
            added = await _add(conn, item, backfill)
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
        for item in items:  # validate every query before writing anything
            if normalize_query(item.query):
                _compile(normalize_query(item.query) or "")
        async with self.db.write() as conn:
            return [await _add(conn, item, backfill) for item in items]

    async def get(self, subscription_id: int) -> Subscription | None:
        async with self.db.reader.execute(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
        ) as cur:
            row = await cur.fetchone()
        return _subscription_from_row(row) if row else None

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
            f"SELECT {_SUB_COLUMNS} FROM subscriptions {where} ORDER BY id", params
        ) as cur:
            return [_subscription_from_row(r) for r in await cur.fetchall()]

    async def count_by_platform(self, *, active_only: bool = False) -> dict[str, int]:
        """How many subscriptions each platform has (only active ones, with `active_only`)."""
        where = "WHERE state = 'active'" if active_only else ""
        async with self.db.reader.execute(
            f"SELECT platform, count(*) AS n FROM subscriptions {where} GROUP BY platform"
        ) as cur:
            return {r["platform"]: r["n"] for r in await cur.fetchall()}

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

    async def disable_target(self, platform: str, address: str, reason: str) -> int:
        """Disable every subscription of one chat/channel/webhook (e.g. the bot was blocked)."""
        async with self.db.write() as conn:
            return await disable_target(conn, platform, address, reason)

    async def move_target(self, platform: str, old_address: str, new_address: str) -> int:
        """A chat changed address (Telegram group → supergroup): move its subscriptions along."""
        async with self.db.write() as conn:
            return await move_target(conn, platform, old_address, new_address)


async def _add(conn: aiosqlite.Connection, item: NewSubscription, backfill: int) -> Added:
    target = item.target
    query = normalize_query(item.query)
    compiled = _compile(query) if query else None
    async with conn.execute(
        f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE platform = ? AND address = ? "
        "AND coalesce(thread, '') = coalesce(?, '') AND coalesce(source_id, '') = coalesce(?, '') "
        "AND coalesce(query, '') = coalesce(?, '')",
        (target.platform, target.address, target.thread, item.source_id, query),
    ) as cur:
        row = await cur.fetchone()
    if row is not None:
        await conn.execute(
            "UPDATE subscriptions SET state = 'active', reason = NULL, edit_policy = ?, "
            "target_kind = ?, options = ? WHERE id = ?",
            (item.edit_policy.value, target.kind, json.dumps(target.options), row["id"]),
        )
        async with conn.execute(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = ?", (row["id"],)
        ) as cur:
            fresh = await cur.fetchone()
        before, after = _subscription_from_row(row), _subscription_from_row(fresh)
        return Added(after, False, _changes(before, after))

    cur = await conn.execute(
        "INSERT INTO subscriptions (platform, address, thread, target_kind, options, source_id, "
        "query, edit_policy, created_by, created_at, state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active')",
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
    subscription_id = cur.lastrowid
    assert subscription_id is not None
    count = max(0, min(backfill, MAX_BACKFILL))
    if count:
        await _enqueue_backfill(
            conn,
            subscription_id,
            item.source_id,
            compiled,
            count,
            with_samples=target.kind == "terminal",
        )
    async with conn.execute(
        f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
    ) as cur2:
        fresh = await cur2.fetchone()
    return Added(_subscription_from_row(fresh), True)


def _changes(before: Subscription, after: Subscription) -> tuple[str, ...]:
    """What subscribing again changed in an existing subscription, in words."""
    changed: list[str] = []
    if before.edit_policy != after.edit_policy:
        changed.append(f"edits {after.edit_policy.value} (was {before.edit_policy.value})")
    old_flavor, new_flavor = before.target.options.get("flavor"), after.target.options.get("flavor")
    if old_flavor != new_flavor:
        changed.append(f"flavor {new_flavor or 'none'} (was {old_flavor or 'none'})")
    old_hook = before.target.options.get("webhook_id"), before.target.options.get("webhook_token")
    new_hook = after.target.options.get("webhook_id"), after.target.options.get("webhook_token")
    if old_hook != new_hook:
        if new_hook[0] is None:
            changed.append("webhook removed: posts go through the bot")
        else:
            changed.append("webhook added" if old_hook[0] is None else "webhook replaced")
    elif before.target.options != after.target.options:
        changed.append("target options updated")
    if before.target.kind != after.target.kind:
        changed.append(f"kind {after.target.kind} (was {before.target.kind})")
    if before.state != after.state:
        reason = f": {before.reason}" if before.reason else ""
        changed.append(f"resumed (was {before.state.value}{reason})")
    return tuple(changed)


async def _enqueue_backfill(
    conn: aiosqlite.Connection,
    subscription_id: int,
    source_id: str | None,
    compiled: CompiledQuery | None,
    count: int,
    *,
    with_samples: bool,
) -> None:
    """Queue the latest `count` matching posts to a new subscription. A bundled sample blog's
    invented posts greet only the terminal: never a real chat or webhook."""
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
    async with conn.execute(sql, params) as cur:
        rows = list(await cur.fetchall())
    now = to_db_time(utc_now())
    await conn.executemany(
        "INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key, "
        "next_attempt_at, created_at) VALUES (?, ?, ?, 'backfill', ?, 0, ?)",
        [(subscription_id, r[0], r[1], r[2], now) for r in reversed(rows)],
    )


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


# --- the outbox: written with the post events -------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    id: int
    target: tuple[str, str, str]
    source_id: str | None
    query: str | None
    edit_policy: str


async def enqueue_for_changes(
    conn: aiosqlite.Connection,
    changes: Sequence[PostChange],
    *,
    newest_per_subscription: int | None = None,
) -> int:
    """Write the delivery rows for every active subscription matching these post events.

    Called by `PostStore.import_result` inside its write transaction. Active subscriptions are fetched once
    (only those for the changed blogs or for every blog), each distinct query is compiled once, and each
    changed post is tested once per distinct query. `newest_per_subscription` caps the new posts each
    subscription gets to its newest that many (a blog's first import). Returns how many were queued.
    """
    if not changes:
        return 0
    sources = sorted({c.post.source_id for c in changes})
    marks = ",".join("?" * len(sources))
    async with conn.execute(
        "SELECT id, platform, address, thread, source_id, query, edit_policy FROM subscriptions "
        f"WHERE state = 'active' AND (source_id IS NULL OR source_id IN ({marks})) ORDER BY id",
        sources,
    ) as cur:
        candidates = [
            _Candidate(r[0], (r[1], r[2], r[3] or ""), r[4], r[5], r[6])
            for r in await cur.fetchall()
        ]
    if not candidates:
        return 0

    compiled: dict[str, CompiledQuery | None] = {}
    texts = {c.query for c in candidates if c.query}
    if texts:
        from storage.search import QueryError, post_matches
    for text in texts:
        try:
            compiled[text] = _compile(text)
        except QueryError:
            log.warning("subscription query %r cannot be read any more; it matches nothing", text)
            compiled[text] = None

    now = to_db_time(utc_now())
    rows: list[tuple[Any, ...]] = []
    for change in changes:
        post = change.post
        verdicts: dict[str, bool] = {}
        for text, query in compiled.items():
            verdicts[text] = query is not None and await post_matches(conn, query, change.rowid)
        updated = change.event.kind == EventKind.UPDATED
        had_post: set[int] = set()
        if updated:
            async with conn.execute(
                "SELECT DISTINCT subscription_id FROM deliveries WHERE post_rowid = ?",
                (change.rowid,),
            ) as cur:
                had_post = {r[0] for r in await cur.fetchall()}
        order_key = to_db_time(post.published_at)
        seen_targets: set[tuple[str, str, str]] = set()
        for cand in candidates:
            if cand.source_id is not None and cand.source_id != post.source_id:
                continue
            if cand.query and not verdicts.get(cand.query, False):
                continue
            if cand.target in seen_targets:
                continue  # this chat already gets the post through an older subscription
            event = CREATED
            if updated and cand.id in had_post:
                if cand.edit_policy == EditPolicy.IGNORE.value:
                    seen_targets.add(cand.target)
                    continue
                event = UPDATED
            seen_targets.add(cand.target)
            rows.append((cand.id, change.rowid, post.version, event, order_key, now))
    if newest_per_subscription is not None:
        rows = _newest_created(rows, newest_per_subscription)
    if rows:
        await conn.executemany(
            "INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            rows,
        )
    return len(rows)


def _newest_created(rows: list[tuple[Any, ...]], count: int) -> list[tuple[Any, ...]]:
    """Rows (in publication order) keeping only each subscription's newest `count` new posts."""
    kept: list[tuple[Any, ...]] = []
    per_subscription: dict[int, int] = {}
    for row in reversed(rows):
        if row[3] == CREATED:
            seen = per_subscription.get(row[0], 0)
            per_subscription[row[0]] = seen + 1
            if seen >= count:
                continue
        kept.append(row)
    kept.reverse()
    return kept


# --- the outbox: read and settled by the dispatcher ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """What the dispatcher keeps in memory per pending delivery (light: 100k of them fit easily)."""

    id: int
    subscription_id: int
    platform: str
    address: str
    thread: str
    target_kind: str
    order_key: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One delivery claimed for sending, with its subscription's current target and policy."""

    id: int
    subscription_id: int
    post_rowid: int
    version: int
    post_version: int  # the post's current version: what a card made now shows
    event: str
    attempts: int
    state: str
    subscription_state: str
    target: Target
    source_id: str | None
    query: str | None
    edit_policy: EditPolicy


@dataclass(frozen=True, slots=True)
class PostForCard:
    post: Post
    source_title: str


@dataclass(frozen=True, slots=True)
class SentRef:
    message_ref: str
    version: int


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    id: int
    subscription_id: int
    target: Target
    post_id: str
    post_title: str
    event: str
    attempts: int
    last_error: str | None
    created_at: str


@dataclass(slots=True)
class OutboxResults:
    """Outcomes gathered by the dispatcher and written in one transaction (a group commit)."""

    sent: list[tuple[int, str | None, int, str]] = field(default_factory=list)
    """(delivery id, message reference, version sent, sent_at)"""
    retry: list[tuple[int, int, float, str]] = field(default_factory=list)
    """(delivery id, attempts, next_attempt_at, last error)"""
    dead: list[tuple[int, int, str]] = field(default_factory=list)
    """(delivery id, attempts, last error)"""
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(delivery id, reason)"""
    disable: list[tuple[str, str, str]] = field(default_factory=list)
    """(platform, address, reason): every subscription of that target is disabled"""
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    """(platform, old address, new address)"""

    def __len__(self) -> int:
        return (
            len(self.sent)
            + len(self.retry)
            + len(self.dead)
            + len(self.skipped)
            + len(self.disable)
            + len(self.moves)
        )


_PENDING_COLUMNS = (
    "d.id, d.subscription_id, s.platform, s.address, coalesce(s.thread, ''), s.target_kind, "
    "d.order_key, d.next_attempt_at"
)


class Outbox:
    """The deliveries table: pending work for the dispatcher, dead letters for the operator."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def pending_after(self, after_id: int, limit: int = 5000) -> list[PendingDelivery]:
        """Pending deliveries of active subscriptions with id > after_id, by id."""
        rows = await self.db.reader.execute_fetchall(
            f"SELECT {_PENDING_COLUMNS} FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id "
            "WHERE d.id > ? AND d.state = 'pending' AND s.state = 'active' ORDER BY d.id LIMIT ?",
            (after_id, limit),
        )
        return [PendingDelivery(*r) for r in rows]

    async def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's `PRAGMA data_version`)."""
        rows = list(await self.db.reader.execute_fetchall("PRAGMA data_version"))
        return int(rows[0][0]) if rows else 0

    async def pending_ids(self) -> set[int]:
        rows = await self.db.reader.execute_fetchall(
            "SELECT id FROM deliveries WHERE state = 'pending'"
        )
        return {r[0] for r in rows}

    async def pending_by_ids(self, ids: Iterable[int]) -> list[PendingDelivery]:
        out: list[PendingDelivery] = []
        wanted = list(ids)
        for start in range(0, len(wanted), _LOAD_CHUNK):  # bounded: the raw rows weigh more
            rows = await self.db.reader.execute_fetchall(
                f"SELECT {_PENDING_COLUMNS} FROM deliveries d "
                "JOIN subscriptions s ON s.id = d.subscription_id "
                "WHERE d.id IN (SELECT value FROM json_each(?)) "
                "AND d.state = 'pending' AND s.state = 'active'",
                (_id_list(wanted[start : start + _LOAD_CHUNK]),),
            )
            out.extend(PendingDelivery(*r) for r in rows)
        return out

    async def claim(self, ids: Sequence[int]) -> list[DeliveryJob]:
        """The current rows of these deliveries with their subscriptions (one SELECT per batch)."""
        rows = await self.db.reader.execute_fetchall(
            "SELECT d.id, d.subscription_id, d.post_rowid, d.version, d.event, d.attempts, "
            "d.state, s.state, s.platform, s.address, s.thread, s.target_kind, s.options, "
            "s.source_id, s.query, s.edit_policy, p.version FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id "
            "JOIN posts p ON p.rowid = d.post_rowid "
            "WHERE d.id IN (SELECT value FROM json_each(?))",
            (_id_list(ids),),
        )
        return [
            DeliveryJob(
                id=r[0],
                subscription_id=r[1],
                post_rowid=r[2],
                version=r[3],
                post_version=r[16],
                event=r[4],
                attempts=r[5],
                state=r[6],
                subscription_state=r[7],
                target=_target(r[8], r[9], r[10], r[11], r[12]),
                source_id=r[13],
                query=r[14],
                edit_policy=_EDIT_POLICIES[r[15]],
            )
            for r in rows
        ]

    async def posts(self, rowids: Iterable[int]) -> dict[int, PostForCard]:
        """Posts (current text) with their blog's title, by rowid."""
        wanted = sorted(set(rowids))
        out: dict[int, PostForCard] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            async with self.db.reader.execute(
                f"SELECT {POST_COLUMNS}, s.title AS source_title FROM posts p "
                f"JOIN sources s ON s.id = p.source_id WHERE p.rowid IN ({marks})",
                chunk,
            ) as cur:
                for r in await cur.fetchall():
                    out[r["rowid"]] = PostForCard(post_from_row(r), r["source_title"])
        return out

    async def last_sent(self, subscription_id: int, post_rowid: int) -> SentRef | None:
        """The newest message this subscription got for this post (for edits)."""
        async with self.db.reader.execute(
            "SELECT message_ref, version FROM deliveries WHERE subscription_id = ? "
            "AND post_rowid = ? AND state = 'sent' AND message_ref IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (subscription_id, post_rowid),
        ) as cur:
            row = await cur.fetchone()
        return SentRef(row[0], row[1]) if row else None

    async def record(self, results: OutboxResults | Callable[[], OutboxResults]) -> None:
        """Write a batch of outcomes in one transaction. Given a function, it is called once the
        transaction has begun, so outcomes that arrive while it begins are written too."""
        if isinstance(results, OutboxResults) and not len(results):
            return
        async with self.db.write() as conn:
            if not isinstance(results, OutboxResults):
                results = results()
            if results.sent:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'sent', message_ref = ?, version = ?, "
                    "sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                    [(ref, version, at, i) for i, ref, version, at in results.sent],
                )
            if results.retry:
                await conn.executemany(
                    "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE id = ? AND state = 'pending'",
                    [(n, at, err[:500], i) for i, n, at, err in results.retry],
                )
            if results.dead:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ? WHERE id = ?",
                    [(n, err[:500], i) for i, n, err in results.dead],
                )
            if results.skipped:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'skipped', last_error = ? WHERE id = ?",
                    [(why[:500], i) for i, why in results.skipped],
                )
            for platform, address, reason in results.disable:
                await disable_target(conn, platform, address, reason)
            for platform, old, new in results.moves:
                await move_target(conn, platform, old, new)

    async def dead(self, limit: int = 100) -> list[DeadDelivery]:
        """Deliveries that gave up, newest first."""
        async with self.db.reader.execute(
            "SELECT d.id, d.subscription_id, d.event, d.attempts, d.last_error, d.created_at, "
            "s.platform, s.address, s.thread, s.target_kind, s.options, p.id, p.title "
            "FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
            "JOIN posts p ON p.rowid = d.post_rowid WHERE d.state = 'dead' "
            "ORDER BY d.id DESC LIMIT ?",
            (limit,),
        ) as cur:
            rows = await cur.fetchall()
        return [
            DeadDelivery(
                id=r[0],
                subscription_id=r[1],
                target=_target(r[6], r[7], r[8], r[9], r[10]),
                post_id=r[11],
                post_title=r[12],
                event=r[2],
                attempts=r[3],
                last_error=r[4],
                created_at=r[5],
            )
            for r in rows
        ]

    async def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Make dead deliveries pending again (all, or these ids), for active subscriptions only."""
        sql = (
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, "
            "last_error = NULL WHERE state = 'dead' AND subscription_id IN "
            "(SELECT id FROM subscriptions WHERE state = 'active')"
        )
        async with self.db.write() as conn:
            if ids is None:
                cur = await conn.execute(sql)
                return cur.rowcount
            total = 0
            wanted = list(ids)
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = await conn.execute(f"{sql} AND id IN ({marks})", chunk)
                total += cur.rowcount
            return total

    async def counts(self) -> dict[str, int]:
        """How many deliveries are in each state (pending, sent, dead, skipped)."""
        out = {PENDING: 0, SENT: 0, DEAD: 0, SKIPPED: 0}
        async with self.db.reader.execute(
            "SELECT state, count(*) FROM deliveries GROUP BY state"
        ) as cur:
            for state, n in await cur.fetchall():
                out[state] = n
        return out


_EDIT_POLICIES = {policy.value: policy for policy in EditPolicy}


def _id_list(ids: Iterable[int]) -> str:
    """Ids as one JSON parameter (`IN (SELECT value FROM json_each(?))`): any number in one query."""
    return "[" + ",".join(map(str, ids)) + "]"


_target_cache: dict[tuple[str, str, str | None, str, str], Target] = {}


def _target(platform: str, address: str, thread: str | None, kind: Any, options: str) -> Target:
    key = (platform, address, thread, kind, options)
    found = _target_cache.get(key)
    if found is None:
        if len(_target_cache) > 20_000:
            _target_cache.clear()
        found = Target(
            platform=platform,
            address=address,
            thread=thread,
            kind=kind,
            options=json.loads(options),
        )
        _target_cache[key] = found
    return found
