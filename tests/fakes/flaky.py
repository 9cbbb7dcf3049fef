"""A fault-injecting fake adapter, and helpers to put posts in a real store without the importers.

`FlakyAdapter` records every send and edit, answers at once (or after `delay`), raises the errors scripted
for a target one call at a time, and, given `enforce`, checks its own copy of the platform's rate limits
with an independent clock: past them it raises `RateLimited` and counts it, like a real platform.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bot.adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    RateLimited,
    RateLimits,
)
from bot.models import Card, ImportResult, Post, Source, SourceKind, Target
from storage.db import Database
from storage.ingest import ingest
from storage.interface import Outbox
from storage.values import PendingDelivery

BASE_TIME = datetime(2022, 1, 21, 9, 0, tzinfo=UTC)
OutboxT = TypeVar("OutboxT", bound=Outbox)


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # "send" | "edit"
    target: Target
    card: Card
    reference: str | None
    at: float


class FlakyAdapter(Adapter):
    def __init__(
        self,
        platform: str = "fake",
        *,
        can_edit: bool = True,
        limits: RateLimits | None = None,
        enforce: RateLimits | None = None,
        delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = platform
        self.capabilities = Capabilities(
            max_text=4096, markup="plain", can_edit=can_edit, rate_limits=limits or RateLimits()
        )
        self.enforce = enforce
        self.delay = delay
        self.clock = clock
        self.calls: list[Call] = []
        self.faults: dict[str, deque[BaseException]] = defaultdict(deque)
        self.attempts: dict[str, int] = defaultdict(int)
        self.attempt_times: dict[str, list[float]] = defaultdict(list)
        self.rate_limited = 0
        self._windows: dict[object, deque[float]] = {}
        self._next_ref = 0

    # --- scripting ---------------------------------------------------------------------------------

    def fail(self, address: str, *errors: BaseException) -> None:
        """The next calls for `address` raise these errors, in order; later calls succeed."""
        self.faults[address].extend(errors)

    def sent_to(self, address: str) -> list[Card]:
        return [c.card for c in self.calls if c.kind == "send" and c.target.address == address]

    def post_ids_to(self, address: str) -> list[str]:
        return [card.post_id for card in self.sent_to(address)]

    # --- the adapter contract ----------------------------------------------------------------------

    async def start(self, context: AdapterContext) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, target: Target, card: Card) -> str:
        self._arrive(target)
        if self.delay:
            await asyncio.sleep(self.delay)
        self._next_ref += 1
        reference = f"{target.address}:{self._next_ref}"
        self.calls.append(Call("send", target, card, reference, self.clock()))
        return reference

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        self._arrive(target)
        self.calls.append(Call("edit", target, card, reference, self.clock()))
        return reference

    def _arrive(self, target: Target) -> None:
        now = self.clock()
        self.attempts[target.address] += 1
        self.attempt_times[target.address].append(now)
        if self.enforce is not None:
            self._check_limits(target, now)
        pending = self.faults.get(target.address)
        if pending:
            raise pending.popleft()

    def _check_limits(self, target: Target, now: float) -> None:
        assert self.enforce is not None
        checks: list[tuple[object, int, float]] = []
        if self.enforce.overall is not None:
            checks.append(("*", self.enforce.overall.count, self.enforce.overall.per))
        rate = self.enforce.for_target(target)
        if rate is not None:
            checks.append(((target.address, target.thread), rate.count, rate.per))
        for key, count, per in checks:
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - per:
                window.popleft()
            if len(window) >= count:
                self.rate_limited += 1
                raise RateLimited(window[0] + per - now, global_=key == "*")
        for key, _, _ in checks:
            self._windows[key].append(now)


# --- posts in a real store ---------------------------------------------------------------------------


def make_source(source_id: str = "blog", title: str = "Ukraine live") -> Source:
    return Source(id=source_id, title=title, kind=SourceKind.PAGE_TEXT)


def make_post(
    n: int,
    *,
    source_id: str = "blog",
    title: str | None = None,
    body: Iterable[str] = (),
    minutes: int | None = None,
) -> Post:
    """Post number `n`, published `minutes` (default n) minutes after BASE_TIME."""
    return Post(
        id=f"{source_id}-{n}",
        source_id=source_id,
        published_at=BASE_TIME + timedelta(minutes=n if minutes is None else minutes),
        title=title or f"Post number {n}",
        body=tuple(body) or (f"Body of post {n}.",),
        permalink=f"https://example.org/{source_id}/{n}",
    )


async def import_posts(db: Database, posts: Iterable[Post], source: Source | None = None) -> None:
    """Store posts as one imported document (the outbox is written in the same transaction)."""
    posts = tuple(posts)
    source = source or make_source(posts[0].source_id if posts else "blog")
    await ingest(db, ImportResult(source=source, posts=posts))


def note_sends(adapter: FlakyAdapter, events: list[str]) -> FlakyAdapter:
    """`adapter`, noting "send" in `events` when a run of sends begins (after any other event)."""
    send = adapter.send

    async def sending(target: Target, card: Card) -> str:
        if not events or events[-1] != "send":
            events.append("send")
        return await send(target, card)

    adapter.send = sending  # type: ignore[method-assign]
    return adapter


def note_reads(outbox: OutboxT, events: list[str]) -> OutboxT:
    """`outbox`, noting each read of pending deliveries in `events` ("read N": N rows; a look that
    found nothing new is not noted)."""
    by_ids, after = outbox.pending_by_ids, outbox.pending_after

    async def pending_by_ids(ids: Iterable[int]) -> list[PendingDelivery]:
        rows = await by_ids(ids)
        events.append(f"read {len(rows)}")
        return rows

    async def pending_after(after_id: int, limit: int = 5000) -> list[PendingDelivery]:
        rows = await after(after_id, limit)
        if rows:
            events.append(f"read {len(rows)}")
        return rows

    outbox.pending_by_ids = pending_by_ids  # type: ignore[method-assign]
    outbox.pending_after = pending_after  # type: ignore[method-assign]
    return outbox
