"""Signed requests seen within their validity window, so that a replay is refused after a restart too.

Slack signs each slash command with its timestamp, and a signature stays valid for five minutes: within
that window an attacker who saw one request could send it again. Keeping the signatures seen in the
store (not in memory) refuses such a replay across restarts and across processes sharing the database.
A timestamp may be up to five minutes off either way, so a signature stays valid for up to ten minutes
after it arrived: rows are kept that long, and pruned on every check.
"""

from __future__ import annotations

from storage.db import Database

WINDOW = 600.0  # seconds a signature is kept: Slack's five minutes, either side of its timestamp


class ReplayStore:
    """`first_seen(signature, now)`: True exactly once per signature within `window` seconds."""

    def __init__(self, db: Database, *, window: float = WINDOW) -> None:
        self.db = db
        self.window = window

    async def first_seen(self, signature: str, now: float) -> bool:
        """Remember `signature` as seen at `now`; False when it was seen within the window already."""
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM slack_replays WHERE seen_at < ?", (now - self.window,))
            cursor = await conn.execute(
                "INSERT INTO slack_replays (signature, seen_at) VALUES (?, ?) "
                "ON CONFLICT (signature) DO NOTHING",
                (signature, now),
            )
            return cursor.rowcount == 1

    async def count(self) -> int:
        """How many signatures are kept (for tests and the operator's curiosity)."""
        async with self.db.reader.execute("SELECT count(*) FROM slack_replays") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
