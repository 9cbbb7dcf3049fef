"""Pacing sends under a platform's published limits, before sending, so that 429s do not happen.

A `Rate(count, per)` means what the platforms mean by it: at most `count` messages in any window of `per`
seconds. `RateLimiter` keeps, per key (a platform overall, or one target), the times of the last `count`
sends (a sliding log), and admits a send when the oldest of them has left the window. That is exact where a
token bucket or GCRA with a burst allowance is not (a full bucket plus its refill can put 2 × count in one
window), and it catches up after a late wake-up instead of losing the time, which keeps the achieved rate
at the limit. One float is kept for one-per-window rates (the common per-chat case), so many targets cost
little, and keys idle for longer than their window are dropped from time to time.

`block(key, until)` honours a platform's retry-after for a target or for the whole platform.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence

from bot.adapters.base import Rate

Check = tuple[Hashable, Rate | None]
"""(key, rate); a None rate checks only a retry-after block on the key."""

# Admit a little after the window has passed: the platform's clock reads a moment after ours.
MARGIN = 50e-6
_PRUNE_EVERY = 4096


class RateLimiter:
    """Sliding-window limits keyed by anything hashable, with an injectable clock."""

    def __init__(self, clock: Callable[[], float] = time.time, *, margin: float = MARGIN) -> None:
        self.clock = clock
        self.margin = margin
        self._last: dict[Hashable, float] = {}  # count == 1: time of the last send
        self._logs: dict[Hashable, deque[float]] = {}  # count > 1: the last `count` send times
        self._blocked: dict[Hashable, float] = {}
        self._longest = 0.0
        self._since_prune = 0

    def delay(self, checks: Sequence[Check], now: float | None = None) -> float:
        """Seconds until one more send passes every check (0.0: now). Records nothing."""
        now = self.clock() if now is None else now
        wait = 0.0
        for key, rate in checks:
            wait = max(wait, self._delay(key, rate, now))
        return wait

    def acquire(self, checks: Sequence[Check]) -> float:
        """Record a send now if every check allows it and return 0.0; else record nothing and return
        the seconds to wait. Check and record happen without an await in between, so concurrent
        workers never overshoot."""
        now = self.clock()
        wait = self.delay(checks, now)
        if wait > 0:
            return wait
        for key, rate in checks:
            self._record(key, rate, now)
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self.prune(now)
        return 0.0

    def block(self, key: Hashable, until: float) -> None:
        """The platform asked us to wait (a 429's retry-after): nothing passes `key` before `until`."""
        self._blocked[key] = max(until, self._blocked.get(key, 0.0))

    def blocked_until(self, key: Hashable) -> float:
        return self._blocked.get(key, 0.0)

    def prune(self, now: float | None = None) -> None:
        """Forget keys whose sends have all left their window."""
        now = self.clock() if now is None else now
        horizon = now - self._longest - self.margin
        self._since_prune = 0
        self._last = {k: t for k, t in self._last.items() if t > horizon}
        self._logs = {k: log for k, log in self._logs.items() if log and log[-1] > horizon}
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}

    def __len__(self) -> int:
        return len(self._last) + len(self._logs)

    def _delay(self, key: Hashable, rate: Rate | None, now: float) -> float:
        wait = self._blocked.get(key, 0.0) - now
        if rate is None:
            pass
        elif rate.count <= 1:
            last = self._last.get(key)
            if last is not None:
                wait = max(wait, last + rate.per + self.margin - now)
        else:
            log = self._logs.get(key)
            if log is not None and len(log) >= rate.count:
                wait = max(wait, log[0] + rate.per + self.margin - now)
        return max(wait, 0.0)

    def _record(self, key: Hashable, rate: Rate | None, now: float) -> None:
        if rate is None:
            return
        if rate.per > self._longest:
            self._longest = rate.per
        if rate.count <= 1:
            self._last[key] = now
            return
        log = self._logs.get(key)
        if log is None or log.maxlen != rate.count:
            log = deque(log or (), maxlen=rate.count)
            self._logs[key] = log
        log.append(now)
