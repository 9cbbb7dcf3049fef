"""Which worker of a fleet sends to which target: rendezvous hashing over the live workers.

On PostgreSQL several `livedesk run` processes share one outbox. Each target (a chat, a channel, a
webhook) is sent to by one worker at a time, so a chat's 1/s and a group's 20/min hold for the whole
fleet and its posts go out in order; the bot-wide limits are divided among the live workers
(`RateLimiter.share_among`). Every worker computes the same owner from the same list of live
workers (the fleet's heartbeats), and when a worker joins or dies only the targets it gains or held
move. While two workers briefly disagree (one saw a heartbeat the other did not yet), the outbox's
leases and its per-target order check (storage.pg_outbox) still let only one send a target's next
post: disagreement costs a short delay, never a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence


def _score(worker: str, target: Hashable) -> int:
    digest = hashlib.blake2b(f"{worker}\0{target!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class TargetShare:
    """This worker's share of the targets; `version` changes whenever the live workers do."""

    def __init__(self, me: str, workers: Sequence[str] = ()) -> None:
        self.me = me
        self.version = 0
        self._workers: tuple[str, ...] = ()
        self.update(workers or (me,))

    @property
    def workers(self) -> tuple[str, ...]:
        return self._workers

    def update(self, workers: Sequence[str]) -> bool:
        """The live workers now (this one is always among them); True when that changed."""
        live = tuple(sorted({*workers, self.me}))
        if live == self._workers:
            return False
        self._workers = live
        self.version += 1
        return True

    def owner(self, target: Hashable) -> str:
        return max(self._workers, key=lambda worker: _score(worker, target))

    def owns(self, target: Hashable) -> bool:
        return len(self._workers) == 1 or self.owner(target) == self.me
