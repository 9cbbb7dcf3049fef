"""The transactional outbox: delivery rows written with the post events, read and settled by the
dispatcher.

`enqueue_for_changes` writes, inside the ingest transaction (storage.ingest), one delivery per target
and post event for every active subscription that matches; `Outbox` is what the dispatcher
(`bot/dispatcher.py`) claims, loads and records results through.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiosqlite

from storage.codecs import (
    CREATED,
    DEAD,
    EDIT_POLICIES,
    PENDING,
    POST_COLUMNS,
    SENT,
    SKIPPED,
    UPDATED,
    newest_created,
    post_from_row,
    target_from_row,
    to_db_time,
    utc_now,
)
from storage.db import Database
from storage.models import EditPolicy, EventKind
from storage.query import CompiledQuery, QueryError, compile_query
from storage.search import posts_matching
from storage.subscriptions import disable_target, move_target
from storage.values import (
    DeadDelivery,
    DeliveryJob,
    OutboxResults,
    PendingDelivery,
    PostChange,
    PostForCard,
    SentRef,
)

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per `IN (...)` list
_LOAD_CHUNK = 2000  # ids per JSON list when the dispatcher reloads its schedule


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

    Called by `storage.ingest.ingest` inside its write transaction. Active subscriptions are fetched once
    (only those for the changed blogs or for every blog), each distinct query is compiled once, and each
    changed post is tested once per distinct query. `newest_per_subscription` caps the new posts each
    subscription gets to its newest that many (a blog's first import). Returns how many were queued.
    """
    if not changes:
        return 0
    if newest_per_subscription is None and all(c.event.kind == EventKind.CREATED for c in changes):
        return await _enqueue_created(conn, changes)
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
    for text in texts:
        try:
            compiled[text] = compile_query(text)
        except QueryError:
            log.warning("subscription query %r cannot be read any more; it matches nothing", text)
            compiled[text] = None

    now = to_db_time(utc_now())
    matches = await _matches(conn, compiled, changes)
    rows: list[tuple[Any, ...]] = []
    for change in changes:
        post = change.post
        verdicts = {text: change.rowid in matches[text] for text in compiled}
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
        rows = newest_created(rows, newest_per_subscription)
    if rows:
        await conn.executemany(
            "INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            rows,
        )
    return len(rows)


_ENQUEUE_CREATED = """
    INSERT INTO deliveries (subscription_id, post_rowid, version, event, order_key,
                            next_attempt_at, created_at)
    SELECT min(id), ?, ?, 'created', ?, 0, ? FROM subscriptions
    WHERE state = 'active' AND (source_id IS NULL OR source_id = ?)
      AND (coalesce(query, '') = '' OR query IN (SELECT value FROM json_each(?)))
    GROUP BY platform, address, coalesce(thread, '')
    ORDER BY min(id)
"""
"""One new post's deliveries: one per target, from its oldest matching subscription (the rule of
`enqueue_for_changes`), in subscription order."""


async def _enqueue_created(conn: aiosqlite.Connection, changes: Sequence[PostChange]) -> int:
    """`enqueue_for_changes` for new posts, in SQL: one INSERT … SELECT per post, all in one
    executemany (one round trip to SQLite's thread, not one a post), and none when no active
    subscription could want them. Reading every subscription into Python and writing the rows back
    took ~0.9 s for 100k subscriptions."""
    sources = sorted({c.post.source_id for c in changes})
    marks = ",".join("?" * len(sources))
    async with conn.execute(
        "SELECT DISTINCT coalesce(query, '') FROM subscriptions WHERE state = 'active' "
        f"AND (source_id IS NULL OR source_id IN ({marks}))",
        sources,
    ) as cur:
        texts = [str(r[0]) for r in await cur.fetchall()]
    if not texts:
        return 0
    compiled: dict[str, CompiledQuery | None] = {}
    for text in filter(None, texts):
        try:
            compiled[text] = compile_query(text)
        except QueryError:
            log.warning("subscription query %r cannot be read any more; it matches nothing", text)
            compiled[text] = None
    matches = await _matches(conn, compiled, changes)
    now = to_db_time(utc_now())
    cur = await conn.executemany(
        _ENQUEUE_CREATED,
        [
            (
                change.rowid,
                change.post.version,
                to_db_time(change.post.published_at),
                now,
                change.post.source_id,
                json.dumps([text for text in compiled if change.rowid in matches[text]])
                if compiled
                else "[]",
            )
            for change in changes
        ],
    )
    return max(cur.rowcount, 0)


async def _matches(
    conn: aiosqlite.Connection,
    compiled: dict[str, CompiledQuery | None],
    changes: Sequence[PostChange],
) -> dict[str, set[int]]:
    """The rowids of the changed posts each subscription query matches (none for a query that
    cannot be read): a few statements a query, whatever the number of posts."""
    rowids = [change.rowid for change in changes]
    return {
        text: set() if query is None else await posts_matching(conn, query, rowids)
        for text, query in compiled.items()
    }


# --- the outbox: read and settled by the dispatcher ------------------------------------------------------


_PENDING_COLUMNS = (
    "d.id, d.subscription_id, s.platform, s.address, coalesce(s.thread, ''), s.target_kind, "
    "d.order_key, d.next_attempt_at"
)


_CLAIM = (
    "SELECT d.id, d.subscription_id, d.post_rowid, d.version, p.version, d.event, d.attempts, "
    "d.state, s.state, s.platform, s.address, s.thread, s.target_kind, s.options, s.source_id, "
    "s.query, s.edit_policy FROM deliveries d "
    "JOIN subscriptions s ON s.id = d.subscription_id "
    "JOIN posts p ON p.rowid = d.post_rowid "
    "WHERE d.id IN (SELECT value FROM json_each(?))"
)

QUICK_BUSY_MS = 200
"""How long a quick read waits for a lock (WAL readers hardly ever wait: only while SQLite recovers
or resets the log)."""


class Outbox:
    """The deliveries table: pending work for the dispatcher, dead letters for the operator.

    The dispatcher's small, frequent reads (a claim of a few dozen rows by id, the new ids since the
    last look, `PRAGMA data_version`) run on a connection of their own, in the caller's thread:
    each takes 10–100 µs, while a trip to aiosqlite's thread and back costs more than that in
    thread switches alone (it was most of the dispatcher's own cost per delivery). Reads of the
    whole pending set, and every write, stay on the store's connections.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._quick_conn: sqlite3.Connection | None = None
        self._quick_write_conn: sqlite3.Connection | None = None

    def _quick(self) -> sqlite3.Connection:
        """The connection for quick reads (opened on first use; read-only; WAL, like the others)."""
        if self._quick_conn is None:
            conn = sqlite3.connect(self.db.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={QUICK_BUSY_MS}")
            conn.execute("PRAGMA query_only=ON")
            self._quick_conn = conn
        return self._quick_conn

    def close(self) -> None:
        """Close the quick connections (the store's own are closed with the store)."""
        for conn in (self._quick_conn, self._quick_write_conn):
            if conn is not None:
                conn.close()
        self._quick_conn = self._quick_write_conn = None

    async def pending_after(self, after_id: int, limit: int = 5000) -> list[PendingDelivery]:
        """Pending deliveries of active subscriptions with id > after_id, by id."""
        rows = self._quick().execute(
            # By id from the watermark (CROSS JOIN keeps that order, `+` keeps the planner off
            # the pending index): the pending index would read every pending row, at every look.
            f"SELECT {_PENDING_COLUMNS} FROM deliveries d "
            "CROSS JOIN subscriptions s ON s.id = d.subscription_id "
            "WHERE d.id > ? AND +d.state = 'pending' AND s.state = 'active' ORDER BY d.id LIMIT ?",
            (after_id, limit),
        )
        return [PendingDelivery(*r) for r in rows]

    async def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's `PRAGMA data_version`)."""
        rows = self._quick().execute("PRAGMA data_version").fetchall()  # all: no open statement
        return int(rows[0][0]) if rows else 0

    async def pending_ids(self) -> set[int]:
        async with self.db.reader.execute(
            "SELECT id FROM deliveries WHERE state = 'pending'"
        ) as cur:
            cur.row_factory = None  # plain tuples: 100k Row objects took a third of a second
            rows = await cur.fetchall()
        return {r[0] for r in rows}

    async def pending_by_ids(self, ids: Iterable[int]) -> list[PendingDelivery]:
        out: list[PendingDelivery] = []
        wanted = list(ids)
        for start in range(0, len(wanted), _LOAD_CHUNK):  # bounded: the raw rows weigh more
            async with self.db.reader.execute(
                f"SELECT {_PENDING_COLUMNS} FROM deliveries d "
                "JOIN subscriptions s ON s.id = d.subscription_id "
                "WHERE d.id IN (SELECT value FROM json_each(?)) "
                "AND d.state = 'pending' AND s.state = 'active'",
                (_id_list(wanted[start : start + _LOAD_CHUNK]),),
            ) as cur:
                cur.row_factory = None
                rows = await cur.fetchall()
            out.extend(PendingDelivery(*r) for r in rows)
        return out

    async def claim(self, ids: Sequence[int]) -> list[DeliveryJob]:
        """The current rows of these deliveries with their subscriptions (one SELECT per batch)."""
        # On the connection that records the outcomes: SQLite empties a connection's page cache
        # whenever another one has committed, so a claim on the quick reader read its pages anew
        # after every group commit (2-3x the cost of the claim itself). That connection never
        # waits for a lock; in the rare moment a WAL read would, the reader takes the claim.
        try:
            rows = self._quick_writer().execute(_CLAIM, (_id_list(ids),)).fetchall()
        except sqlite3.OperationalError as error:
            if not _locked(error):
                raise
            rows = self._quick().execute(_CLAIM, (_id_list(ids),)).fetchall()
        # Positional, in DeliveryJob's field order: keywords cost a third of the build here.
        return [
            DeliveryJob._make(
                (*r[:9], target_from_row(*r[9:14]), r[14], r[15], EDIT_POLICIES[r[16]])
            )
            for r in rows
        ]

    async def let_go(self, ids: Sequence[int] | None = None) -> None:
        """Nothing to give back: one process sends from a SQLite store, and a claim is not kept."""

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
        transaction has begun, so outcomes that arrive while it begins are written too.

        Settled deliveries (sent, retried, dead, skipped) are written on a connection of this
        outbox's own, in the caller's thread, when the write lock is free at once: ~0.4 ms for a
        batch, where the store's writer thread took 5–25 ms under load, most of it waiting for the
        interpreter lock, while the dispatcher's duplicate bound held its workers back. Otherwise
        (the store is writing, or a target is disabled or moved) the store's writer takes it.
        """
        if isinstance(results, OutboxResults) and not len(results):
            return
        taken = self._record_quick(results)
        if taken is True:
            return
        if taken is not None:
            results = taken  # begun here, then handed over: a target to disable or move
        async with self.db.write() as conn:
            if not isinstance(results, OutboxResults):
                results = results()
            for sql, rows in _settled_rows(results):
                await conn.executemany(sql, rows)
            for platform, address, reason in results.disable:
                await disable_target(conn, platform, address, reason)
            for platform, old, new in results.moves:
                await move_target(conn, platform, old, new)

    def _record_quick(
        self, results: OutboxResults | Callable[[], OutboxResults]
    ) -> OutboxResults | Literal[True] | None:
        """Write settled outcomes now, without waiting: True when written; None when the write
        lock is taken (nothing was asked for); the outcomes themselves when they need the store's
        writer (disabled or moved targets), rolled back here."""
        conn = self._quick_writer()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if _locked(error):
                return None
            raise
        try:
            if not isinstance(results, OutboxResults):
                results = results()
            if results.disable or results.moves:
                conn.execute("ROLLBACK")
                return results
            before = conn.total_changes
            for sql, rows in _settled_rows(results):
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
            self.db.wrote(conn.total_changes - before + 1)  # a checkpoint, when due
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    def _quick_writer(self) -> sqlite3.Connection:
        """The connection for quick writes: never waits for a lock (busy_timeout 0)."""
        if self._quick_write_conn is None:
            conn = sqlite3.connect(self.db.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # storage.db.CHECKPOINT_ROWS
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._quick_write_conn = conn
        return self._quick_write_conn

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
                target=target_from_row(r[6], r[7], r[8], r[9], r[10]),
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


def _settled_rows(results: OutboxResults) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The UPDATEs that settle deliveries, with their rows (the same on either connection)."""
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    if results.sent:
        out.append(
            (
                "UPDATE deliveries SET state = 'sent', message_ref = ?, version = ?, "
                "sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                [(ref, version, at, i) for i, ref, version, at in results.sent],
            )
        )
    if results.retry:
        out.append(
            (
                "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? "
                "WHERE id = ? AND state = 'pending'",
                [(n, at, err[:500], i) for i, n, at, err in results.retry],
            )
        )
    if results.dead:
        out.append(
            (
                "UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ? WHERE id = ?",
                [(n, err[:500], i) for i, n, err in results.dead],
            )
        )
    if results.skipped:
        out.append(
            (
                "UPDATE deliveries SET state = 'skipped', last_error = ? WHERE id = ?",
                [(why[:500], i) for i, why in results.skipped],
            )
        )
    return out


def _locked(error: sqlite3.OperationalError) -> bool:
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _id_list(ids: Iterable[int]) -> str:
    """Ids as one JSON parameter (`IN (SELECT value FROM json_each(?))`): any number in one query."""
    return "[" + ",".join(map(str, ids)) + "]"
