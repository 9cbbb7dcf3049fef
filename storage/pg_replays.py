"""Signed requests seen within their validity window, on PostgreSQL (storage.replays' rules).

`first_seen(signature, now)` is True exactly once per signature within the window, across every
process sharing the database. SQLite gets that from its one writer (prune, then insert, in one
transaction). Here many processes write at once, so the answer is one statement: an insert that, on
a signature already kept, only takes the row over when its time is out of the window (`ON CONFLICT
… DO UPDATE … WHERE`). Two processes offering the same signature at once are ordered by the row
lock: one inserts, the other waits for it and then sees the row. Pruning the expired rows is a
separate statement that skips rows another process is deleting (`SKIP LOCKED`), so concurrent
pruners never wait on each other nor deadlock; what it leaves for now the next call removes.
"""

from __future__ import annotations

from storage.pg_db import PgDatabase

WINDOW = 600.0  # seconds a signature is kept: Slack's five minutes, either side of its timestamp


class PgReplayStore:
    """`first_seen(signature, now)`: True exactly once per signature within `window` seconds."""

    def __init__(self, db: PgDatabase, *, window: float = WINDOW) -> None:
        self.db = db
        self.window = window

    async def first_seen(self, signature: str, now: float) -> bool:
        """Remember `signature` as seen at `now`; False when it was seen within the window already."""
        cutoff = now - self.window
        signature = signature.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
        async with self.db.read() as conn:  # autocommit: each statement is its own transaction
            await conn.execute(
                "DELETE FROM slack_replays WHERE signature IN ("
                "SELECT signature FROM slack_replays WHERE seen_at < %s FOR UPDATE SKIP LOCKED)",
                (cutoff,),
            )
            cursor = await conn.execute(
                "INSERT INTO slack_replays (signature, seen_at) VALUES (%s, %s) "
                "ON CONFLICT (signature) DO UPDATE SET seen_at = excluded.seen_at "
                "WHERE slack_replays.seen_at < %s",
                (signature, now, cutoff),
            )
            return cursor.rowcount == 1

    async def count(self) -> int:
        """How many signatures are kept (for tests and the operator's curiosity)."""
        async with self.db.read() as conn:
            cursor = await conn.execute("SELECT count(*) AS n FROM slack_replays")
            row = await cursor.fetchone()
        return int(row["n"]) if row else 0
