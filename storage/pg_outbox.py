"""The transactional outbox on PostgreSQL: storage.outbox's rules, and leases for several processes.

`enqueue_for_changes` writes, inside the ingest transaction, one delivery per target and post event
for every active subscription that matches (storage.outbox is the specification: the oldest
subscription of a target carries the post, an edit reaches those that had the post unless they
ignore edits, one that matches only since the edit gets it as new, a blog's first import is capped
per subscription). Keywords are matched by `storage.pg_search.posts_matching`.

`PgOutbox` is what a dispatcher claims, loads and settles deliveries through. Where SQLite has one
process, PostgreSQL may have several, so:
- `claim()` *leases* deliveries (`SELECT … FOR UPDATE SKIP LOCKED`, then `lease_owner`,
  `lease_until`): a claimed delivery is this process's (`owner`) for `lease_seconds`, and no other
  PgOutbox gets it until `record()` settles it (which clears the lease) or the lease runs out (a
  dead worker's claims pass to the others). Lease times are the server's clock, so machines whose
  clocks differ agree on them.
- Order per target across processes: a delivery is not leased while an earlier pending delivery
  (by order_key, then id) of the same target (platform, address, thread) of an active subscription
  is not leased to this same process, so no worker sends a target's later post while another may
  still be sending (or retrying) an earlier one. One process claiming the head of each target's
  queue, as the dispatcher does, is never refused by this.
- `claim()` returns a pending delivery only when this process now holds it; a delivery leased to
  another process (or held back by the order rule) is left out, which the dispatcher reads as
  "settled meanwhile". Deliveries no longer pending are returned as SQLite returns them.
- Round trips: a claim (lock, lease, order check and the rows with their subscriptions) is one
  statement, and so is a batch of outcomes (`record()`, from arrays: one row per delivery); each
  is its own transaction. Only a batch that disables or moves a target opens a transaction block.
- `data_version()` is a hash of the server's current snapshot (`pg_current_snapshot()`: the
  oldest running transaction, the next transaction id, the ones in progress). It changes exactly
  when a writing transaction of any process starts or ends and at the moment its commit becomes
  visible (not before, as the WAL position would), and costs no table read. It also changes for
  writes that are not deliveries (posts, other databases on the server): one needless reload at
  worst, never a missed one. SQLite's `PRAGMA data_version` likewise changes with every commit.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
from storage.models import EditPolicy, EventKind
from storage.pg_db import Connection, PgDatabase
from storage.pg_search import posts_matching
from storage.pg_subscriptions import disable_target, move_target
from storage.query import CompiledQuery, QueryError, compile_query
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

LEASE_SECONDS = 60.0
"""How long a claimed delivery stays this process's without being settled."""

_COPY_DELIVERIES = (
    "COPY deliveries (subscription_id, post_rowid, version, event, order_key, created_at) "
    "FROM STDIN"
)
"""New deliveries go in with COPY: one post to 30,000 subscriptions is one stream, not 30,000
statements (next_attempt_at, state and attempts take their defaults: due now, pending, 0)."""


def default_owner() -> str:
    """This process, as a lease names it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- the outbox: written with the post events -------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    id: int
    target: tuple[str, str, str]
    source_id: str | None
    query: str | None
    edit_policy: str


async def enqueue_for_changes(
    conn: Connection,
    changes: Sequence[PostChange],
    *,
    newest_per_subscription: int | None = None,
) -> int:
    """Write the delivery rows for every active subscription matching these post events.

    Called inside the ingest transaction, as storage.outbox.enqueue_for_changes: active
    subscriptions are fetched once, each distinct query compiled once, each changed post tested once
    per distinct query; `newest_per_subscription` caps the new posts each subscription gets to its
    newest that many. Returns how many were queued.
    """
    if not changes:
        return 0
    sources = sorted({c.post.source_id for c in changes})
    cur = await conn.execute(
        "SELECT id, platform, address, thread, source_id, query, edit_policy FROM subscriptions "
        "WHERE state = 'active' AND (source_id IS NULL OR source_id = ANY(%s)) ORDER BY id",
        (sources,),
    )
    candidates = [
        _Candidate(
            int(r["id"]),
            (r["platform"], r["address"], r["thread"] or ""),
            r["source_id"],
            r["query"],
            r["edit_policy"],
        )
        for r in await cur.fetchall()
    ]
    if not candidates:
        return 0

    compiled: dict[str, CompiledQuery | None] = {}
    for text in {c.query for c in candidates if c.query}:
        try:
            compiled[text] = compile_query(text)
        except QueryError:
            log.warning("subscription query %r cannot be read any more; it matches nothing", text)
            compiled[text] = None

    now = to_db_time(utc_now())
    rowids = [change.rowid for change in changes]
    matches = {  # one statement a query, whatever the number of posts
        text: set() if query is None else await posts_matching(conn, query, rowids)
        for text, query in compiled.items()
    }
    rows: list[tuple[Any, ...]] = []
    for change in changes:
        post = change.post
        verdicts = {text: change.rowid in matches[text] for text in compiled}
        updated = change.event.kind == EventKind.UPDATED
        had_post: set[int] = set()
        if updated:
            cur = await conn.execute(
                "SELECT DISTINCT subscription_id FROM deliveries WHERE post_rowid = %s",
                (change.rowid,),
            )
            had_post = {int(r["subscription_id"]) for r in await cur.fetchall()}
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
        async with conn.cursor() as cur, cur.copy(_COPY_DELIVERIES) as copy:
            for row in rows:
                await copy.write_row(row)
    return len(rows)


# --- the outbox: claimed, read and settled by the dispatchers --------------------------------------------


_PENDING_COLUMNS = (
    "d.id, d.subscription_id, s.platform, s.address, coalesce(s.thread, '') AS thread, "
    "s.target_kind, d.order_key, d.next_attempt_at"
)

# The deliveries after an id, each with its subscription read by key: `OFFSET 0` keeps the
# subquery a lookup per delivery. Joined plainly, the prepared statement's generic plan (chosen
# after five runs, from statistics of a table that has not been analyzed since it filled up)
# walked every active subscription for the few new deliveries: 13 ms at 10,000 subscriptions,
# at every poll.
_PENDING_AFTER = f"""
SELECT {_PENDING_COLUMNS} FROM deliveries d
CROSS JOIN LATERAL (
    SELECT platform, address, thread, target_kind FROM subscriptions
    WHERE id = d.subscription_id AND state = 'active' OFFSET 0
) s
WHERE d.id > %s AND d.state = 'pending'
ORDER BY d.id LIMIT %s
"""

# One statement per claim: lock and lease the requested deliveries that are pending and free
# (never leased, lease run out, or already this process's; rows another claim is locking right
# now are skipped, not waited for), except those that an earlier pending delivery (order_key,
# then id) of the same target keeps back because it is not this process's (held by it, or locked
# by this very claim); and return the rows with their subscriptions and post versions: the
# leased ones as the lease wrote them, and those no longer pending as they are.
#
# Each step reads by key, whatever the statistics say: right after a fan-out, before autovacuum
# has analyzed the table, the planner takes the pending deliveries for few. `coalesce(c.state,
# '')` keeps the requested rows on the primary key (not a scan of every pending delivery for
# the handful asked for). The order check looks, per subscription of the target, for one pending
# delivery before the claimed one in deliveries_pending_by_target (subscription, then order_key
# and id): the subquery with LIMIT 1 keeps `(order_key, id) < …` in the index scan, so the head
# of a queue costs one probe, not a walk through the target's backlog (20 heads of 3,000-deep
# queues: 30 ms -> 1.3 ms) or its history.
_CLAIM = """
WITH clock AS MATERIALIZED (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
),
locked AS MATERIALIZED (
    SELECT c.id, c.subscription_id, c.order_key FROM deliveries c, clock
    WHERE c.id = ANY(%(ids)s::bigint[]) AND coalesce(c.state, '') = 'pending'
      AND (c.lease_until IS NULL OR c.lease_until <= clock.now OR c.lease_owner = %(owner)s)
    ORDER BY c.id
    FOR UPDATE OF c SKIP LOCKED
),
free AS MATERIALIZED (
    SELECT l.id FROM locked l
    JOIN subscriptions s ON s.id = l.subscription_id
    CROSS JOIN clock
    WHERE NOT EXISTS (
        SELECT 1 FROM subscriptions es
        CROSS JOIN LATERAL (
            SELECT 1 FROM deliveries e
            WHERE e.subscription_id = es.id AND e.state = 'pending'
              AND (e.order_key, e.id) < (l.order_key, l.id)
              AND NOT (e.lease_owner IS NOT DISTINCT FROM %(owner)s AND e.lease_until > clock.now)
              AND NOT e.id = ANY(ARRAY(SELECT id FROM locked))
            LIMIT 1
        ) earlier
        WHERE es.platform = s.platform AND es.address = s.address
          AND coalesce(es.thread, '') = coalesce(s.thread, '') AND es.state = 'active'
    )
),
leased AS MATERIALIZED (
    UPDATE deliveries d SET lease_owner = %(owner)s, lease_until = clock.now + %(lease)s
    FROM free, clock
    WHERE d.id = free.id
    RETURNING d.id, d.subscription_id, d.post_rowid, d.version, d.event, d.attempts, d.state
),
settled AS MATERIALIZED (
    SELECT c.id, c.subscription_id, c.post_rowid, c.version, c.event, c.attempts, c.state
    FROM deliveries c
    WHERE c.id = ANY(%(ids)s::bigint[]) AND coalesce(c.state, '') <> 'pending'
)
SELECT d.id, d.subscription_id, d.post_rowid, d.version, d.event, d.attempts, d.state,
       s.state AS subscription_state, s.platform, s.address, s.thread, s.target_kind, s.options,
       s.source_id, s.query, s.edit_policy, p.version AS post_version
FROM (SELECT * FROM leased UNION ALL SELECT * FROM settled) d
JOIN subscriptions s ON s.id = d.subscription_id
JOIN posts p ON p.rowid = d.post_rowid
ORDER BY d.id
"""

# Every outcome of a batch in one statement, from arrays (one row per delivery): the rows are
# locked in id order first, so two processes settling the same deliveries (a lease that ran
# out) wait for each other instead of deadlocking. A retry is not written over another
# process's lease, nor over a delivery no longer pending; sent, dead and skipped are written
# whoever holds it.
_RECORD = """
WITH outcome AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(kinds)s::text[], %(refs)s::text[], %(versions)s::integer[],
        %(sent_at)s::text[], %(attempts)s::integer[], %(next_at)s::float8[], %(errors)s::text[]
    ) AS o(id, kind, ref, version, sent_at, attempts, next_at, error)
),
locked AS MATERIALIZED (
    SELECT d.id FROM deliveries d WHERE d.id IN (SELECT id FROM outcome)
    ORDER BY d.id
    FOR UPDATE OF d
)
UPDATE deliveries d SET
    state = CASE WHEN o.kind = 'retry' THEN d.state ELSE o.kind END,
    attempts = CASE WHEN o.kind = 'sent' THEN d.attempts + 1
                    WHEN o.kind = 'skipped' THEN d.attempts ELSE o.attempts END,
    message_ref = CASE WHEN o.kind = 'sent' THEN o.ref ELSE d.message_ref END,
    version = CASE WHEN o.kind = 'sent' THEN o.version ELSE d.version END,
    sent_at = CASE WHEN o.kind = 'sent' THEN o.sent_at ELSE d.sent_at END,
    next_attempt_at = CASE WHEN o.kind = 'retry' THEN o.next_at ELSE d.next_attempt_at END,
    last_error = o.error,
    lease_owner = NULL, lease_until = NULL
FROM outcome o
WHERE d.id = o.id AND d.id IN (SELECT id FROM locked)
  AND (o.kind <> 'retry'
       OR (d.state = 'pending' AND (d.lease_owner IS NULL OR d.lease_owner = %(owner)s)))
"""


class PgOutbox:
    """The deliveries table: pending work for the dispatchers, dead letters for the operator."""

    def __init__(
        self,
        db: PgDatabase,
        *,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.db = db
        self.owner = owner or default_owner()
        self.lease_seconds = lease_seconds

    async def _rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def pending_after(self, after_id: int, limit: int = 5000) -> list[PendingDelivery]:
        """Pending deliveries of active subscriptions with id > after_id, by id (leased or not:
        `claim()` decides who sends)."""
        rows = await self._rows(_PENDING_AFTER, (after_id, limit))
        return [_pending(r) for r in rows]

    async def data_version(self) -> int:
        """Changes whenever any process commits a change (see the module doc)."""
        rows = await self._rows(
            "SELECT hashtextextended(pg_current_snapshot()::text, 0) AS version"
        )
        return int(rows[0]["version"]) if rows else 0

    async def pending_ids(self) -> set[int]:
        # One array, not a row per delivery: a fan-out's 30,000 rows as dicts cost the worker
        # a tenth of a second at every full reload.
        rows = await self._rows(
            "SELECT coalesce(array_agg(id), '{}') AS ids FROM deliveries WHERE state = 'pending'"
        )
        return set(rows[0]["ids"]) if rows else set()

    async def pending_by_ids(self, ids: Iterable[int]) -> list[PendingDelivery]:
        # Joined with the ids as rows (each once): `d.id = ANY(…)` as a filter tests each row
        # against the whole array (a full reload of 10,000 ids took 0.16 s, now 0.02 s).
        rows = await self._rows(
            f"SELECT {_PENDING_COLUMNS} FROM (SELECT DISTINCT unnest(%s::bigint[]) AS id) w "
            "JOIN deliveries d ON d.id = w.id JOIN subscriptions s ON s.id = d.subscription_id "
            "WHERE d.state = 'pending' AND s.state = 'active' ORDER BY d.id",
            (list(ids),),
        )
        return [_pending(r) for r in rows]

    async def claim(self, ids: Sequence[int]) -> list[DeliveryJob]:
        """Lease these deliveries to this process and return their current rows with their
        subscriptions: pending ones only when this process now holds them (see the module doc)."""
        wanted = list(ids)
        if not wanted:
            return []
        args = {"ids": wanted, "owner": self.owner, "lease": self.lease_seconds}
        async with self.db.pool.connection() as conn:  # one statement: its own transaction
            cur = await conn.execute(_CLAIM, args)
            rows = await cur.fetchall()
        return [
            DeliveryJob(
                id=int(r["id"]),
                subscription_id=int(r["subscription_id"]),
                post_rowid=int(r["post_rowid"]),
                version=r["version"],
                post_version=r["post_version"],
                event=r["event"],
                attempts=r["attempts"],
                state=r["state"],
                subscription_state=r["subscription_state"],
                target=target_from_row(
                    r["platform"], r["address"], r["thread"], r["target_kind"], r["options"]
                ),
                source_id=r["source_id"],
                query=r["query"],
                edit_policy=EDIT_POLICIES[r["edit_policy"]],
            )
            for r in rows
        ]

    async def let_go(self, ids: Sequence[int] | None = None) -> None:
        """Clear this process's leases of these pending deliveries (or of all it holds): a worker
        whose targets moved to another, or that stops, hands them over now, not when the leases
        run out (`lease_seconds`)."""
        sql = (
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner = %s AND state = 'pending'"
        )
        async with self.db.pool.connection() as conn:  # one statement: its own transaction
            if ids is None:
                await conn.execute(sql, (self.owner,))
            elif ids:
                await conn.execute(f"{sql} AND id = ANY(%s)", (self.owner, list(ids)))

    async def posts(self, rowids: Iterable[int]) -> dict[int, PostForCard]:
        """Posts (current text) with their blog's title, by rowid."""
        rows = await self._rows(
            f"SELECT {POST_COLUMNS}, s.title AS source_title FROM posts p "
            "JOIN sources s ON s.id = p.source_id WHERE p.rowid = ANY(%s) ORDER BY p.rowid",
            (sorted(set(rowids)),),
        )
        return {int(r["rowid"]): PostForCard(post_from_row(r), r["source_title"]) for r in rows}

    async def last_sent(self, subscription_id: int, post_rowid: int) -> SentRef | None:
        """The newest message this subscription got for this post (for edits)."""
        rows = await self._rows(
            "SELECT message_ref, version FROM deliveries WHERE subscription_id = %s "
            "AND post_rowid = %s AND state = 'sent' AND message_ref IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (subscription_id, post_rowid),
        )
        return SentRef(rows[0]["message_ref"], rows[0]["version"]) if rows else None

    async def record(self, results: OutboxResults | Callable[[], OutboxResults]) -> None:
        """Write a batch of outcomes in one transaction, clearing their leases. Given a function,
        it is called once the transaction has begun. A retry is not written over another
        process's lease: when this process's lease ran out and another took the delivery over,
        the other's outcome counts; sent, dead and skipped are written whoever holds it."""
        if isinstance(results, OutboxResults) and not len(results):
            return
        async with self.db.pool.connection() as conn:
            if not isinstance(results, OutboxResults):
                results = results()  # the connection is ours: what came meanwhile goes in
            outcomes = _outcome_arrays(results)
            if not results.disable and not results.moves:
                if outcomes["ids"]:  # the usual batch: one statement, its own transaction
                    await conn.execute(_RECORD, {**outcomes, "owner": self.owner})
                return
            async with conn.transaction():
                if outcomes["ids"]:
                    await conn.execute(_RECORD, {**outcomes, "owner": self.owner})
                for platform, address, reason in results.disable:
                    await disable_target(conn, platform, address, reason)
                for platform, old, new in results.moves:
                    await move_target(conn, platform, old, new)

    async def dead(self, limit: int = 100) -> list[DeadDelivery]:
        """Deliveries that gave up, newest first."""
        rows = await self._rows(
            "SELECT d.id, d.subscription_id, d.event, d.attempts, d.last_error, d.created_at, "
            "s.platform, s.address, s.thread, s.target_kind, s.options, p.id AS post_id, "
            "p.title AS post_title FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id "
            "JOIN posts p ON p.rowid = d.post_rowid WHERE d.state = 'dead' "
            "ORDER BY d.id DESC LIMIT %s",
            (limit,),
        )
        return [
            DeadDelivery(
                id=int(r["id"]),
                subscription_id=int(r["subscription_id"]),
                target=target_from_row(
                    r["platform"], r["address"], r["thread"], r["target_kind"], r["options"]
                ),
                post_id=r["post_id"],
                post_title=r["post_title"],
                event=r["event"],
                attempts=r["attempts"],
                last_error=r["last_error"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Make dead deliveries pending again (all, or these ids), for active subscriptions only."""
        sql = (
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, "
            "last_error = NULL, lease_owner = NULL, lease_until = NULL "
            "WHERE state = 'dead' AND subscription_id IN "
            "(SELECT id FROM subscriptions WHERE state = 'active')"
        )
        async with self.db.write() as conn:
            if ids is None:
                cur = await conn.execute(sql)
            else:
                cur = await conn.execute(f"{sql} AND id = ANY(%s)", (list(ids),))
            return cur.rowcount

    async def counts(self) -> dict[str, int]:
        """How many deliveries are in each state (pending, sent, dead, skipped)."""
        out = {PENDING: 0, SENT: 0, DEAD: 0, SKIPPED: 0}
        for r in await self._rows("SELECT state, count(*) AS n FROM deliveries GROUP BY state"):
            out[r["state"]] = int(r["n"])
        return out


_Outcome = tuple[str, str | None, int | None, str | None, int | None, float | None, str | None]
"""(kind, message reference, version, sent_at, attempts, next_attempt_at, error): a `_RECORD` row."""

_PRECEDENCE = {"retry": 0, "sent": 1, "dead": 2, "skipped": 3}
"""When one delivery has two outcomes in a batch (a quick retry, then its send), the one written:
settled beats a retry (which is never written over a delivery no longer pending), and among the
settled the order the statements used to run in (sent, dead, skipped) decides."""


def _outcome_arrays(results: OutboxResults) -> dict[str, list[Any]]:
    """A batch's outcomes as the columns `_RECORD` unnests: one row per delivery, by id."""
    rows: dict[int, _Outcome] = {}

    def put(i: int, row: _Outcome) -> None:
        old = rows.get(i)
        if old is None or _PRECEDENCE[row[0]] >= _PRECEDENCE[old[0]]:
            rows[i] = row

    for i, ref, version, at in results.sent:
        put(i, ("sent", ref, version, at, None, None, None))
    for i, n, next_at, err in results.retry:
        put(i, ("retry", None, None, None, n, next_at, err[:500]))
    for i, n, err in results.dead:
        put(i, ("dead", None, None, None, n, None, err[:500]))
    for i, why in results.skipped:
        put(i, ("skipped", None, None, None, None, None, why[:500]))
    ids = sorted(rows)
    columns = list(zip(*(rows[i] for i in ids), strict=True)) if ids else [()] * 7
    names = ("kinds", "refs", "versions", "sent_at", "attempts", "next_at", "errors")
    return {"ids": ids, **{name: list(column) for name, column in zip(names, columns, strict=True)}}


def _pending(r: dict[str, Any]) -> PendingDelivery:
    return PendingDelivery(
        id=int(r["id"]),
        subscription_id=int(r["subscription_id"]),
        platform=r["platform"],
        address=r["address"],
        thread=r["thread"],
        target_kind=r["target_kind"],
        order_key=r["order_key"],
        next_attempt_at=float(r["next_attempt_at"]),
    )
