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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from bot.adapters.base import Rate

Check = tuple[Hashable, Rate | None]
"""(key, rate); a None rate checks only a retry-after block on the key."""

IN_FLIGHT = math.inf
_PRUNE_EVERY = 4096


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
        self._longest = 0.0
        self._since_prune = 0

    def delay(self, checks: Sequence[Check], now: float | None = None) -> float:
        """Seconds until one more send passes every check: 0.0 now, `math.inf` when it waits for a
        send in flight to complete. Takes nothing."""
        now = self.clock() if now is None else now
        wait = 0.0
        for key, rate in checks:
            wait = max(wait, self._delay(key, rate, now))
        return wait

    def acquire(self, checks: Sequence[Check]) -> tuple[float, Permit | None]:
        """Take a slot under every check now, or nothing: (0.0, permit) or (seconds to wait, None).
        Check and take happen with no await between, so concurrent workers never overshoot."""
        now = self.clock()
        wait = self.delay(checks, now)
        if wait > 0:
            return wait, None
        taken: list[tuple[list[float], int]] = []
        for key, rate in checks:
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

    def block(self, key: Hashable, until: float) -> None:
        """The platform asked us to wait (a 429's retry-after): nothing passes `key` before `until`."""
        self._blocked[key] = max(until, self._blocked.get(key, 0.0))

    def blocked_until(self, key: Hashable) -> float:
        return self._blocked.get(key, 0.0)

    def prune(self, now: float | None = None) -> None:
        """Forget keys whose sends have all completed and left their window."""
        now = self.clock() if now is None else now
        horizon = now - self._longest - self.margin
        self._since_prune = 0
        self._slots = {k: s for k, s in self._slots.items() if max(s, default=0.0) > horizon}
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}

    def __len__(self) -> int:
        return len(self._slots)

    def _delay(self, key: Hashable, rate: Rate | None, now: float) -> float:
        wait = self._blocked.get(key, 0.0) - now
        if rate is not None:
            slots = self._slots.get(key)
            if slots is not None and len(slots) >= rate.count:
                wait = max(wait, min(slots) + rate.per + self.margin - now)
        return max(wait, 0.0)
