"""Pacing sends under a platform's published limits, before sending, so that 429s do not happen.

A `Rate(count, per)` means what the platforms mean by it: at most `count` messages in any window of `per`
seconds. `RateLimiter` keeps, per key (a platform overall, or one target), `count` slots (a sliding log):
a send takes a slot when its window has passed and holds it until the send completes; the slot then
counts from the completion time. The platform sees the request somewhere between our taking the slot and
the answer, so counting from the answer can never put more than `count` requests in one of the
platform's windows, whatever the scheduling, GC or thread delays on our side. (A token bucket or GCRA with
a burst allowance can: a full bucket plus its refill puts up to 2 × count in one window.) The price is the
send's own duration per window: negligible at real limits (≥ 1 s windows).

`block(key, until)` honours a platform's retry-after for a target or for the whole platform.

Priority: a send that must not wait behind a queue (a command reply) `reserve`s its keys while it waits
and takes its slots with `priority=True`. Every other send then sees each reserved key with one slot
fewer per reservation, so the next slot to open goes to the reply — inside the same limits, never past
them.

`SendBudget` is that one budget per bot (overall) and per chat (every limit of its kind at once), shared
by the dispatcher's pushes and the adapters' replies; `platform_key` and `target_checks` name its keys.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.adapters.base import Adapter, Rate, RateLimited, RateLimits
from bot.models import Target

log = logging.getLogger(__name__)

Check = tuple[Hashable, Rate | None]
"""(key, rate); a None rate checks only a retry-after block on the key."""

IN_FLIGHT = math.inf
_PRUNE_EVERY = 4096
REPLY_TRIES = 5  # a reply met by 429 after 429 is given up (with one log line) after this many
HELD_POLL = 0.02  # how often a reply whose slot is held by a send in flight looks again
Sent = TypeVar("Sent")


def platform_key(platform: str) -> Hashable:
    """The key of a platform's overall limit (and of its whole-platform retry-after)."""
    return ("platform", platform)


def _is_platform_key(key: Hashable) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == "platform"


def chat_key(platform: str, address: str) -> Hashable:
    """The key of one chat's retry-after; its limits hang below it. Per chat, not per forum topic:
    Telegram counts a chat's messages whatever topic they go to."""
    return ("chat", platform, address)


def target_checks(platform: str, limits: RateLimits, address: str, kind: str) -> tuple[Check, ...]:
    """The limits of one chat, every limit of its kind at once (its retry-after block is checked
    on `chat_key`). Empty, and shared, when the platform has none."""
    rates = limits.rates_for(kind)
    if not rates:
        return ()
    key = chat_key(platform, address)
    return tuple(((key, rate.count, rate.per), rate) for rate in rates)


@dataclass(frozen=True, slots=True)
class Permit:
    """Slots taken for one send; give it back with `RateLimiter.release` when the send is over."""

    slots: tuple[tuple[list[float], int], ...]


class RateLimiter:
    """Sliding-window limits keyed by anything hashable, with an injectable clock."""

    def __init__(self, clock: Callable[[], float] = time.time, *, margin: float = 0.0) -> None:
        self.clock = clock
        self.margin = margin
        self._slots: dict[Hashable, list[float]] = {}
        self._blocked: dict[Hashable, float] = {}
        self._reserved: dict[Hashable, int] = {}  # key → priority sends waiting for it
        self._longest = 0.0
        self._since_prune = 0
        self._share = 1

    def share_among(self, workers: int) -> None:
        """Several processes send for one bot (a fleet on PostgreSQL): each keeps its part of every
        platform-wide limit (Telegram's 30/s among 3 is 10/s each), so the fleet together stays
        within it. Per-chat limits are not divided: one process sends to a chat at a time."""
        self._share = max(1, workers)

    def _scaled(self, key: Hashable, rate: Rate | None) -> Rate | None:
        if rate is None or self._share == 1 or not _is_platform_key(key):
            return rate
        return Rate(max(1, rate.count // self._share), rate.per)

    def delay(
        self, checks: Sequence[Check], now: float | None = None, *, priority: bool = False
    ) -> float:
        """Seconds until one more send passes every check: 0.0 now, `math.inf` when it waits for a
        send in flight to complete. Without `priority`, reserved slots are not free. Takes nothing."""
        now = self.clock() if now is None else now
        wait = 0.0
        reserved = None if priority or not self._reserved else self._reserved
        for key, rate in checks:
            skip = reserved.get(key, 0) if reserved is not None else 0
            wait = max(wait, self._delay(key, self._scaled(key, rate), now, skip))
        return wait

    def acquire(
        self, checks: Sequence[Check], *, priority: bool = False
    ) -> tuple[float, Permit | None]:
        """Take a slot under every check now, or nothing: (0.0, permit) or (seconds to wait, None).
        Check and take happen with no await between, so concurrent workers never overshoot."""
        now = self.clock()
        wait = self.delay(checks, now, priority=priority)
        if wait > 0:
            return wait, None
        taken: list[tuple[list[float], int]] = []
        for key, given in checks:
            rate = self._scaled(key, given)
            if rate is None:
                continue
            slots = self._slots.get(key)
            if slots is None:
                slots = self._slots[key] = []
            if len(slots) < rate.count:
                slots.append(IN_FLIGHT)
                taken.append((slots, len(slots) - 1))
            else:
                index = slots.index(min(slots))
                slots[index] = IN_FLIGHT
                taken.append((slots, index))
            if rate.per > self._longest:
                self._longest = rate.per
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self.prune(now)
        return 0.0, Permit(tuple(taken))

    def release(self, permit: Permit) -> None:
        """The send is over: its slots count from now."""
        now = self.clock()
        for slots, index in permit.slots:
            slots[index] = now

    def reserve(self, checks: Sequence[Check]) -> None:
        """A priority send waits for these slots: other sends leave the next one to open to it."""
        for key, rate in checks:
            if rate is not None:
                self._reserved[key] = self._reserved.get(key, 0) + 1

    def unreserve(self, checks: Sequence[Check]) -> None:
        for key, rate in checks:
            if rate is not None:
                left = self._reserved.get(key, 0) - 1
                if left > 0:
                    self._reserved[key] = left
                else:
                    self._reserved.pop(key, None)

    def block(self, key: Hashable, until: float) -> None:
        """The platform asked us to wait (a 429's retry-after): nothing passes `key` before `until`."""
        self._blocked[key] = max(until, self._blocked.get(key, 0.0))

    def blocked_until(self, key: Hashable) -> float:
        return self._blocked.get(key, 0.0)

    def any_blocked(self) -> bool:
        """Is any key blocked (or was, and not pruned yet)? When not, a send that takes no slot
        need not look its keys up."""
        return bool(self._blocked)

    def prune(self, now: float | None = None) -> None:
        """Forget keys whose sends have all completed and left their window."""
        now = self.clock() if now is None else now
        horizon = now - self._longest - self.margin
        self._since_prune = 0
        self._slots = {k: s for k, s in self._slots.items() if max(s, default=0.0) > horizon}
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}

    def __len__(self) -> int:
        return len(self._slots)

    def use(self, platform: str, limits: RateLimits, now: float | None = None) -> float:
        """How much of a platform's budget is taken (0 to 1): slots in flight or used within their
        window, of its bot-wide limit; without one, of its busiest chat's limit."""
        now = self.clock() if now is None else now
        overall = self._scaled(platform_key(platform), limits.overall)
        if overall is not None:
            return self._used(self._slots.get(platform_key(platform)), overall, now)
        busiest = 0.0
        for key, slots in self._slots.items():
            if isinstance(key, tuple) and len(key) == 3 and isinstance(key[0], tuple):
                chat, count, per = key
                if chat[:2] == ("chat", platform):
                    busiest = max(busiest, self._used(slots, Rate(count, per), now))
        return busiest

    @staticmethod
    def _used(slots: list[float] | None, rate: Rate, now: float) -> float:
        if not slots:
            return 0.0
        taken = sum(1 for stamp in slots if stamp > now - rate.per)  # in flight: inf
        return min(1.0, taken / rate.count)

    def _delay(self, key: Hashable, rate: Rate | None, now: float, skip: int = 0) -> float:
        """The wait for `key`, leaving the first `skip` slots to open to reserved sends."""
        wait = self._blocked.get(key, 0.0) - now
        if rate is not None:
            slots = self._slots.get(key)
            if skip:
                used = slots or []
                unused = rate.count - len(used)  # never taken: open now
                if skip >= unused:
                    opens = sorted(used)
                    index = skip - unused
                    if index >= len(opens):
                        return math.inf
                    wait = max(wait, opens[index] + rate.per + self.margin - now)
            elif slots is not None and len(slots) >= rate.count:
                # More slots than the rate allows when the share just shrank (a worker joined
                # the fleet): wait until all but count - 1 of them have opened, not only the
                # oldest, or the worker would go on at its old rate, reusing each slot in turn.
                if len(slots) == rate.count:
                    oldest = min(slots)
                else:
                    oldest = sorted(slots)[len(slots) - rate.count]
                wait = max(wait, oldest + rate.per + self.margin - now)
        return max(wait, 0.0)


class SendBudget:
    """One sending budget per bot and per chat, shared by the dispatcher's pushes (which take from
    `limiter` directly) and the adapters' command replies (`reply`, the `Pacer` of
    `bot.adapters.base`). The dispatcher is given this budget's limiter; everything keys by
    `platform_key` and `target_checks`, so a reply and a push to the same chat count in one window."""

    def __init__(self, limiter: RateLimiter | None = None, *, tries: int = REPLY_TRIES) -> None:
        self.limiter = RateLimiter() if limiter is None else limiter
        self.tries = tries

    def checks(self, adapter: Adapter, target: Target) -> list[Check]:
        limits = adapter.capabilities.rate_limits
        return [
            (platform_key(adapter.platform), limits.overall),
            (chat_key(adapter.platform, target.address), None),
            *target_checks(adapter.platform, limits, target.address, target.kind),
        ]

    async def reply(
        self, adapter: Adapter, target: Target, send: Callable[[], Awaitable[Sent]]
    ) -> Sent:
        """Send one reply message within the limits, ahead of queued pushes. A 429 (`send` raises
        RateLimited) holds the chat (or the platform) for its retry-after, then the reply goes again;
        after `tries` 429s the last one is raised."""
        checks = self.checks(adapter, target)
        limiter = self.limiter
        for attempt in range(1, self.tries + 1):
            permit = await self._take(checks)
            try:
                return await send()
            except RateLimited as exc:
                until = limiter.clock() + exc.retry_after
                if exc.global_:
                    limiter.block(platform_key(adapter.platform), until)
                limiter.block(chat_key(adapter.platform, target.address), until)
                if attempt >= self.tries:
                    raise
                log.info(
                    "%s: a reply was rate limited; sending it again in %.1fs",
                    adapter.platform,
                    exc.retry_after,
                )
            finally:
                limiter.release(permit)
        raise AssertionError("unreachable: the last try returns or raises")

    async def _take(self, checks: list[Check]) -> Permit:
        """Wait for a slot under every check, first in line, and take it."""
        limiter = self.limiter
        wait, permit = limiter.acquire(checks, priority=True)
        if permit is not None:
            return permit
        limiter.reserve(checks)
        try:
            while True:
                await asyncio.sleep(HELD_POLL if wait == math.inf else wait)
                wait, permit = limiter.acquire(checks, priority=True)
                if permit is not None:
                    return permit
        finally:
            limiter.unreserve(checks)
