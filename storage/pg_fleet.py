"""The fleet on PostgreSQL: who is running (the `workers` table), and who leads which role.

Every `livedesk run` on a database is a worker: it joins with a row of its own, refreshes the row's
heartbeat, and leaves at the end. Times are the server's clock (`clock_timestamp()`), never the
worker's, so workers on hosts whose clocks disagree still judge each other alike, and a heartbeat
compares with the deliveries' leases, which the server's clock sets too.

A role that one worker of a fleet must play alone (polling Telegram, fetching the sources) is led by
whoever holds its session-level advisory lock. The locks live on one connection of the leader's own,
outside the pool: when the process dies its connection ends and the server frees the locks at once,
with no timeout to wait for and no row to clean up.

Errors from the server come out as ConnectionError (one line, password masked), so the caller (the
fleet member in bot/) needs no driver to tell an outage from a bug.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from storage.models import parse_utc_text, utc_text
from storage.pg_db import CONNECT_TIMEOUT, Connection, PgDatabase

REACH_TIMEOUT = 5.0
"""Seconds a fleet call waits for a pooled connection before it calls the server unreachable."""

ROLE_KEY_SPACE = 0x4C44  # "LD": the top 16 bits of every role's lock key
"""Role locks are 64-bit keys `0x4C44_xxxxxxxxxxxx`: Livedesk's own space, apart from the run lock
(storage.pg_schema.ADVISORY_LOCK and storage.pg_posts.INGEST_LOCK, `0x4C49…`) and from whatever else shares the server."""


def role_key(role: str) -> int:
    """The advisory-lock key of a role: the same in every process and every version (blake2b, not
    Python's per-process `hash`)."""
    digest = hashlib.blake2b(f"livedesk-role:{role}".encode(), digest_size=6).digest()
    return (ROLE_KEY_SPACE << 48) | int.from_bytes(digest, "big")


def _unreachable(shown: str, error: BaseException) -> ConnectionError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return ConnectionError(f"cannot reach the PostgreSQL database {shown}: {reason}")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker as the `workers` table and the deliveries' leases show it."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: float
    """Unix time of the last heartbeat, on the server's clock."""
    heartbeat_age: float
    """Seconds since the last heartbeat, on the server's clock."""
    roles: tuple[str, ...]
    leases: int
    """Deliveries this worker holds now (lease_owner = id, lease not run out)."""
    live: bool
    """Heartbeat within `stale_after`."""


_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8 AS now"

_JOIN = """
INSERT INTO workers (id, host, pid, started_at, heartbeat_at, roles)
VALUES (%(id)s, %(host)s, %(pid)s, %(started)s, %(now)s, '{}')
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    heartbeat_at = excluded.heartbeat_at
"""

_HEARTBEAT = """
UPDATE workers SET heartbeat_at = extract(epoch FROM clock_timestamp())::float8, roles = %(roles)s
WHERE id = %(id)s
"""

_WORKERS = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at, w.roles, now.now,
       (SELECT count(*) FROM deliveries d
         WHERE d.lease_owner = w.id AND d.lease_until > now.now) AS leases
FROM workers w, now
ORDER BY w.started_at, w.id
"""

_LIVE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
SELECT w.id, w.heartbeat_at, now.now FROM now LEFT JOIN workers w
    ON w.heartbeat_at >= now.now - %(stale)s
ORDER BY w.id COLLATE "C"
"""

# A lease outlives its worker's row until it runs out (no foreign key): a row whose worker still
# holds unexpired leases stays, so `livedesk workers` can show who they belong to.
_PRUNE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
DELETE FROM workers w USING now
WHERE w.heartbeat_at < now.now - %(older)s
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                   WHERE d.lease_owner = w.id AND d.lease_until > now.now)
"""


class Fleet:
    """The `workers` table of one database: join, heartbeat, leave, list, prune."""

    def __init__(self, db: PgDatabase, *, timeout: float = REACH_TIMEOUT) -> None:
        self._db = db
        self._timeout = timeout

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit; ConnectionError when the server cannot be reached."""
        try:
            async with self._db.pool.connection(timeout=self._timeout) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise _unreachable(self._db.shown_as, error) from None

    async def join(self, worker_id: str, host: str, pid: int) -> None:
        """Add this worker (or refresh its row, if the id is back), heartbeat now."""
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(_NOW)
            row = await cur.fetchone()
            assert row is not None
            now = float(row["now"])
            started = utc_text(datetime.fromtimestamp(now, UTC))
            await conn.execute(
                _JOIN, {"id": worker_id, "host": host, "pid": pid, "started": started, "now": now}
            )

    async def heartbeat(self, worker_id: str, roles: Iterable[str] = ()) -> bool:
        """Refresh the heartbeat and the roles held; False when the row is gone (pruned while this
        worker was cut off): join again."""
        async with self._conn() as conn:
            cur = await conn.execute(_HEARTBEAT, {"id": worker_id, "roles": sorted(roles)})
            return cur.rowcount == 1

    async def leave(self, worker_id: str) -> None:
        """Remove this worker's row (its leases run out on their own)."""
        async with self._conn() as conn:
            await conn.execute("DELETE FROM workers WHERE id = %s", (worker_id,))

    async def workers(self, stale_after: float) -> list[WorkerInfo]:
        """Every worker, oldest first, `live` when its heartbeat is within `stale_after` seconds."""
        async with self._conn() as conn:
            cur = await conn.execute(_WORKERS)
            rows = await cur.fetchall()
        return [_worker(row, stale_after) for row in rows]

    async def live_ids(self, stale_after: float) -> list[str]:
        """The ids of the workers whose heartbeat is within `stale_after` seconds, sorted."""
        _, beats = await self.live(stale_after)
        return list(beats)

    async def live(self, stale_after: float) -> tuple[float, dict[str, float]]:
        """The server's clock now, and the last heartbeat of each worker whose heartbeat is within
        `stale_after` seconds of it, by id, sorted. Both come from one statement: a heartbeat
        later than the clock of an earlier call was written by a worker that, when it next read
        the live workers, saw every row committed before that call."""
        async with self._conn() as conn:
            cur = await conn.execute(_LIVE, {"stale": stale_after})
            rows = await cur.fetchall()
        now = float(rows[0]["now"])
        return now, {str(r["id"]): float(r["heartbeat_at"]) for r in rows if r["id"] is not None}

    async def prune(self, older_than: float) -> int:
        """Remove workers silent for more than `older_than` seconds, except those whose leases
        have not run out yet; how many were removed."""
        async with self._conn() as conn:
            cur = await conn.execute(_PRUNE, {"older": older_than})
            return cur.rowcount


def _worker(row: dict[str, Any], stale_after: float) -> WorkerInfo:
    age = max(0.0, float(row["now"]) - float(row["heartbeat_at"]))
    return WorkerInfo(
        id=str(row["id"]),
        host=str(row["host"]),
        pid=int(row["pid"]),
        started_at=parse_utc_text(str(row["started_at"])),
        heartbeat_at=float(row["heartbeat_at"]),
        heartbeat_age=age,
        roles=tuple(row["roles"] or ()),
        leases=int(row["leases"]),
        live=age <= stale_after,
    )


class Leadership:
    """Roles led by this process: session-level advisory locks on one connection of its own.

    The connection is opened at the first `try_take`. If it breaks, every role is lost at once
    (`holds` is False for all: another process may take them now) and the next `try_take`
    reconnects. A dead process's connection ends with it, and with it its locks."""

    def __init__(self, db: PgDatabase) -> None:
        self._url = db.url
        self._shown = db.shown_as
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held: set[str] = set()
        self._lock = asyncio.Lock()

    def holds(self, role: str) -> bool:
        """Whether this process leads `role`, as far as the connection last answered."""
        return role in self._held and self._conn is not None and not self._conn.broken

    @property
    def held(self) -> frozenset[str]:
        return frozenset(role for role in self._held if self.holds(role))

    async def try_take(self, role: str) -> bool:
        """Lead `role` if no other process does; True when this process leads it now."""
        async with self._lock:
            if self.holds(role):
                return True
            conn = await self._connection()
            row = await self._ask(conn, "SELECT pg_try_advisory_lock(%s)", role_key(role))
            if row:
                self._held.add(role)
            return bool(row)

    async def check(self) -> frozenset[str]:
        """Ask the server whether the connection (and so every lock on it) is still there; the
        roles held after the answer. A broken connection loses them all (ConnectionError)."""
        async with self._lock:
            if self._conn is None:
                return frozenset()
            await self._ask(self._conn, "SELECT true", None)
            return self.held

    async def release(self, role: str) -> None:
        """Stop leading `role` (nothing when this process does not lead it)."""
        async with self._lock:
            if not self.holds(role) or self._conn is None:
                self._held.discard(role)
                return
            self._held.discard(role)
            await self._ask(self._conn, "SELECT pg_advisory_unlock(%s)", role_key(role))

    async def close(self) -> None:
        """Give up every role, then end the connection. The locks are unlocked first: a closed
        socket frees them too, but only once the server's session has ended, a moment later."""
        async with self._lock:
            self._held.clear()
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if not conn.broken and not conn.closed:
                    await conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.OperationalError:
                pass  # the connection is gone, and its locks with it
            finally:
                await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return self._conn
        await self._drop()
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.OperationalError as error:
            raise _unreachable(self._shown, error) from None
        return self._conn

    async def _ask(self, conn: psycopg.AsyncConnection[Any], query: str, key: int | None) -> bool:
        """One yes/no statement on the locks' connection; a failure drops it, and every role."""
        try:
            cur = await conn.execute(query, None if key is None else (key,))
            row = await cur.fetchone()
        except psycopg.OperationalError as error:
            await self._drop()
            raise _unreachable(self._shown, error) from None
        return bool(row and row[0])

    async def _drop(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
