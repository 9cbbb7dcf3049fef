"""The dispatcher: takes due deliveries from the outbox, sends them through the adapters, settles them.

How it works, and why:
- **In-memory schedule, database truth.** Pending deliveries are loaded (new ones by id every
  `poll_interval`, all of them every few seconds to catch re-driven dead letters) into one queue per target,
  ordered by (order_key = published_at, id). A target has at most one delivery in flight and never gets a
  later one while an earlier one is pending, so posts reach a chat in the order they were published.
  Nothing is marked 'sending' in the database: after a crash every unsettled delivery is simply pending.
- **Batches both ways, off the sending path.** Ready deliveries are claimed in batches (one SELECT
  re-reads them with their subscription's current target and state) up to `concurrency` ahead of the
  sends, so `concurrency` long-lived workers always find the next one waiting; outcomes are written in
  group commits (every ~50 ms or `concurrency / 2` outcomes, at once when nothing else is in flight or
  a worker waits for one).
- **Bounded duplicates.** A delivery is marked sent only after its adapter returned. At most
  `concurrency` deliveries are in flight, and a worker starts a send only while fewer than
  `2 × concurrency` are sent-or-sending but not yet committed, so a crash re-sends at most that many.
- **Rate limits before sending.** Each adapter's `capabilities.rate_limits` (overall, per target and per
  kind of target, together) are enforced by `bot.ratelimit.RateLimiter` right before the call, with no
  await in between. A 429 that happens anyway blocks that chat (or the whole platform when it says so)
  for its retry-after. The limiter may be shared (`SendBudget.limiter`) with the adapters' command
  replies: they count in the same windows and take the next free slot ahead of these pushes.
- **Failure isolation.** Timeouts, network errors, 5xx and any unexpected exception are retried with
  exponential backoff and jitter; after `max_attempts` the delivery is dead (`Outbox.dead()`,
  `Outbox.retry_dead()`). A permanent error disables the target's subscriptions with the reason. One
  target never stops the others, and the dispatcher never dies from one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import ParamSpec

from bot import rules
from bot.adapters.base import (
    Adapter,
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    TargetMoved,
    TransientError,
)
from bot.cards import card_from_post
from bot.config import DispatchSettings
from bot.metrics import Metrics
from bot.models import Card
from bot.ratelimit import Check, Permit, RateLimiter, chat_key, platform_key, target_checks
from bot.redact import clean_outcomes
from bot.rules import Outcome
from bot.share import TargetShare
from storage.codecs import PENDING, to_db_time
from storage.interface import Outbox
from storage.query import CompiledQuery, QueryError, compile_query
from storage.search import matched_terms
from storage.values import DeliveryJob, OutboxResults, PendingDelivery, PostForCard, SentRef

log = logging.getLogger(__name__)

_EXPECTED = (RateLimited, TransientError, TimeoutError, PermanentError, InvalidPayload, TargetMoved)
"""What an adapter raises on purpose; anything else is logged with its traceback."""

TargetKey = tuple[str, str, str]  # platform, address, thread ('' for none)

GROUP_COMMIT_WINDOW = 0.05  # seconds an outcome may wait for others to share its commit
FULL_RESYNC_INTERVAL = 5.0  # seconds between full reloads of the pending set
RESYNC_SHARE = 50  # ... or this many times as long as the last one took (100k pending: ~0.1 s)
LOAD_PAGE = 5000
ADD_SLICE = 500
REST_SLICE = 1000
FIRST_PAGE = 64
"""A load into an empty schedule reads this many rows first and hands them to the workers before
it reads the rest: the first messages of a big fan-out leave after one page, not after the whole
load (at 100,000 new deliveries, about 0.6 s of reading)."""
TIMER_SLACK = 0.0015
"""The event loop's timers have millisecond granularity (and fire late, never early): a wait for a
rate limit's slot sleeps to this much before it and yields for the rest."""
SHORT_WAIT = 0.05  # a rate-limit wait this short is slept by the worker that holds the delivery
CLAIM_FRACTION = 1.0  # a claim waits for room for this share of `concurrency` (or idle workers)
CLAIM_AHEAD = 4  # deliveries taken (sending or claimed) per unit of `concurrency`, at most
FLUSH_FRACTION = 0.5
STORE_RETRY = 1.0  # seconds between tries while the store does not answer
PROBE_INTERVAL = 0.02  # how often `PRAGMA data_version` is asked whether another process committed
FOREIGN_REFRESH = (
    60.0  # seconds a fleet worker trusts that a delivery's target is another's (moves)
)


_P = ParamSpec("_P")
_frozen = False


def _freeze_start_up() -> None:
    """Once per process, when the first dispatcher starts: move what start-up built (modules,
    models, settings, adapters) out of the cyclic garbage collector's sight (`gc.freeze`). A
    fan-out allocates fast (its schedule, the HTTP client's requests), and every full collection
    used to walk all of start-up's objects again: 2–3 µs of each delivery. What is frozen is
    still freed when nothing refers to it; only a reference cycle made before the freeze stays."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


FREEZE_LOAD = 50_000
"""A load of at least this many deliveries is kept out of the cyclic collector's sight, until the
schedule is empty again: at 100,000 pending, the full collections its growth set off walked the
whole schedule six or seven times per fan-out (8–9 µs of each delivery; 0.5 µs so). The schedule
holds no reference cycles and is freed as it is sent either way. The full collection that ends it
costs 30–50 ms, more than a smaller load's own collections: hence the threshold."""


def _pause_collector() -> bool:
    """No cyclic collection while a load adds its rows (each pass would walk the growing schedule
    again); False when the collector was off already (then it is left as it was)."""
    if not gc.isenabled():
        return False
    gc.disable()
    return True


def _thaw() -> None:
    """The schedule is empty after a frozen load: let the collector see everything again, collect
    the cycles made meanwhile, and freeze what is left (start-up's objects, mostly)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Signal:
    """A flag one task waits for, with a timeout: `asyncio.wait_for(event.wait(), t)` would create a
    task per wait, and the dispatcher waits thousands of times a second."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return when set (at once if it is) or after `timeout` seconds."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(slots=True)
class _Item:
    """A pending delivery in the schedule."""

    id: int
    subscription_id: int
    order_key: str
    due: float  # next_attempt_at (clock time)
    attempts: int = 0
    seen: float | None = None  # when it was created, as near as this process knows (metrics)
    claimed: bool = False  # this process took a lease on it once (PostgreSQL)

    def sort_key(self) -> tuple[str, int]:
        return (self.order_key, self.id)


class _TargetQueue:
    """One target's pending deliveries, in order, and what its sends are checked against."""

    __slots__ = ("_all_checks", "busy", "checks", "items", "key", "lane", "scheduled", "unlimited")

    def __init__(self, key: TargetKey, lane: _Lane, checks: tuple[Check, ...]) -> None:
        # Built once per target of a fan-out (100,000 of them for one post to as many chats): a
        # plain class, where a dataclass with a __post_init__ cost twice as much to build, and the
        # keys its limits are checked on are made when first needed (a webhook needs none until a
        # retry-after): 1.3 KB per pending delivery at 100,000 of them, 0.9 so.
        self.key = key
        self.lane = lane
        self.checks = checks  # the chat's limits (shared by its topics and by replies)
        self.items: list[_Item] = []
        self.busy = False
        self.scheduled: float | None = None  # the due time of its live entry in the schedule
        self._all_checks: tuple[Check, ...] | None = None
        self.unlimited = lane.overall is None and not checks  # only retry-after blocks apply

    @property
    def block(self) -> Hashable:
        """The chat's retry-after key."""
        return chat_key(self.key[0], self.key[1])

    @property
    def all_checks(self) -> tuple[Check, ...]:
        """What a send to it takes a slot of: overall, the chat's retry-after, the chat's limits."""
        checks = self._all_checks
        if checks is None:
            lane = self.lane
            checks = self._all_checks = ((lane.key, lane.overall), (self.block, None), *self.checks)
        return checks


@dataclass(slots=True)
class _Lane:
    """One platform: its adapter, its limits, and its targets by due time.

    The schedule is a sorted run plus a heap: an entry no earlier than the run's last goes on the
    run (a fan-out's entries all do: one due time, in order), any other on the heap, and the next
    due is the first of either. A heap pop compares a dozen entries scattered over memory, and at
    10,000 targets that was enough to push the HTTP client's own data out of the CPU's caches."""

    adapter: Adapter
    key: Hashable
    overall: Rate | None
    platform: str  # its name, shared by every target key of it (not one copy per row read)
    heap: list[tuple[float, int, TargetKey]] = field(default_factory=list)
    run: deque[tuple[float, int, TargetKey]] = field(default_factory=deque)
    gate_until: float = 0.0
    per_target: bool = True  # some limit applies to a single chat (of some kind)

    def __post_init__(self) -> None:
        limits = self.adapter.capabilities.rate_limits
        self.per_target = limits.per_target is not None or bool(limits.per_kind)


class Dispatcher:
    """Outbox workers for every configured adapter."""

    def __init__(
        self,
        outbox: Outbox,
        adapters: Mapping[str, Adapter],
        settings: DispatchSettings,
        *,
        clock: Callable[[], float] = time.time,
        send_timeout: float = 60.0,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
        share: TargetShare | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self._backlog = True  # the first full load: what was pending before this process started
        # In a fleet (several processes on one PostgreSQL store): the targets this one sends to.
        self.share = share
        self._share_version = share.version if share is not None else 0
        self.adapters = dict(adapters)
        self.settings = settings
        self.clock = clock
        self.send_timeout = send_timeout
        self.limiter = RateLimiter(clock) if limiter is None else limiter  # (len 0 is falsy)
        self._rng = rng or random.Random()
        self._lanes = {
            name: _Lane(
                adapter=adapter,
                key=platform_key(name),
                overall=adapter.capabilities.rate_limits.overall,
                platform=name,
            )
            for name, adapter in self.adapters.items()
        }
        self._queues: dict[TargetKey, _TargetQueue] = {}
        self._known: dict[int, _Item] = {}
        self._foreign: set[int] = set()  # pending deliveries another worker of the fleet sends
        self._let_go: set[int] = set()  # claimed once, and now another worker's: leases to clear
        self._foreign_until = 0.0
        self._taken: set[int] = set()
        self._settling: set[int] = set()
        self._results = OutboxResults()
        self._result_ids: list[int] = []
        # Messages sent but not yet committed, by (subscription, post): an edit that follows at once
        # must see them, or it would send the post a second time.
        self._unrecorded: dict[tuple[int, int], SentRef] = {}
        self._unrecorded_keys: list[tuple[int, int]] = []
        # Claimed deliveries waiting for a worker, and the workers waiting for one.
        self._ready: deque[tuple[_TargetQueue, _Item, DeliveryJob]] = deque()
        self._idle_workers: deque[
            asyncio.Future[tuple[_TargetQueue, _Item, DeliveryJob] | None]
        ] = deque()
        self._sending = 0
        self._closing = False
        self._watermark = 0
        self._seq = count()
        self._wake = _Signal()
        self._flush_signal = _Signal()
        self._io_lock = asyncio.Lock()
        self._one_loop = asyncio.Lock()  # one `_main` at a time (see `_alone`)
        self._stopped = asyncio.Event()
        self._woken = False
        self._more_new = 0  # the rows of a first page (FIRST_PAGE) whose rest is read next
        self._rest: list[int] = []  # the ids a resync left for after its first page
        self._resync_needed = True
        self._frozen_load = False  # a big load is frozen out of the collector's sight (FREEZE_LOAD)
        self._stopping = False
        self._running = False
        self._flusher_stop = False
        self._flushing = 0
        self._data_version = -1
        self._store_down = False
        self._slot_waiters: list[asyncio.Future[None]] = []
        self._posts: dict[int, PostForCard] = {}
        self._queries: dict[str, CompiledQuery | None] = {}
        self._cards: dict[tuple[str, int, tuple[str, ...], bool], Card] = {}
        self._terms: dict[tuple[str, int, str], tuple[str, ...]] = {}
        self._flush_batch = max(1, int(settings.concurrency * FLUSH_FRACTION))
        self._claim_batch = max(1, int(settings.concurrency * CLAIM_FRACTION))
        self._stamp_second = -1
        self._stamp_prefix = ""
        # Sends in flight by worker task, with the loop time they time out at.
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._timed_out: set[asyncio.Task[object]] = set()
        self.sent = 0  # deliveries sent or edited since start (for benchmarks and logs)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until stop(); look at the outbox every `poll_interval` and whenever woken."""
        self._stopping = False
        self._running = True
        self._stopped.clear()
        try:
            await self._alone(until_idle=False)
        finally:
            self._running = False
            self._stopped.set()

    @property
    def running(self) -> bool:
        """Whether `run()` is delivering (until `stop()` returns)."""
        return self._running

    def wake(self) -> None:
        """An import in this process just committed: look at the outbox now."""
        self._woken = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop taking deliveries; in-flight sends finish (or stay pending); outcomes are written."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def run_until_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Deliver everything that is due now (retries scheduled for later are left); for tests and
        one-shot commands. Raises TimeoutError if that takes longer than `timeout` seconds."""
        self._resync_needed = True
        await asyncio.sleep(0)  # a run() task created just before this call starts first
        if self._running:  # then that loop delivers, and this waits for it to be idle
            async with asyncio.timeout(timeout):
                await asyncio.sleep(self.settings.poll_interval)
                while not self._idle(self.clock()):  # noqa: ASYNC110 (a state, not an event)
                    await asyncio.sleep(0.01)
            return
        self._stopping = False
        await asyncio.wait_for(self._alone(until_idle=True), timeout)

    async def _alone(self, *, until_idle: bool) -> None:
        """The loop, never two at once: two loops would share the workers' state, and the end of
        one (its drain) would stop the other's workers. A run() started while `run_until_idle()`
        delivers begins its loop once that one is over."""
        async with self._one_loop:
            await self._main(until_idle=until_idle)

    def _trouble(self, what: str, error: Exception) -> None:
        """The store failed: one warning line per outage (the details at debug level); the work
        stays pending and is tried again."""
        if not self._store_down:
            self._store_down = True
            log.warning(
                "could not %s (%s: %s); trying again until the store answers",
                what,
                type(error).__name__,
                " ".join(str(error).split())[:300],
            )
        log.debug("store failure", exc_info=error)

    def _recovered(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("the store answers again; delivering")

    def pending_count(self) -> int:
        """Deliveries waiting in the schedule (not counting those in flight)."""
        return len(self._known)

    # --- the loop ------------------------------------------------------------------------------------

    async def _main(self, *, until_idle: bool) -> None:
        self._loop = loop = asyncio.get_running_loop()
        _freeze_start_up()
        self._closing = False
        workers = [asyncio.create_task(self._worker()) for _ in range(self.settings.concurrency)]
        flusher = asyncio.create_task(self._flusher())
        watchdog = asyncio.create_task(self._watchdog())
        try:
            next_poll = next_probe = 0.0
            next_full = loop.time() + FULL_RESYNC_INTERVAL
            while not self._stopping:
                if self._more_new or self._rest:  # a first page's sends start before the rest
                    await asyncio.sleep(0)
                self._wake.clear()
                t = loop.time()
                if self.share is not None and self.share.version != self._share_version:
                    self._reshare()
                try:
                    if self._let_go:
                        await self._hand_over()
                    if self._resync_needed or t >= next_full:
                        await self._resync()
                        took = loop.time() - t
                        next_full = t + max(FULL_RESYNC_INTERVAL, RESYNC_SHARE * took)
                        next_poll = t + self.settings.poll_interval
                    elif self._rest:
                        await self._load_rest()
                    elif (
                        self._woken
                        or self._more_new
                        or t >= next_poll
                        or (t >= next_probe and await self._changed())
                    ):
                        self._woken = False
                        await self._load_new()
                        next_poll = t + self.settings.poll_interval
                except Exception as error:  # the store is unreachable (a server restart, …)
                    self._trouble("read the outbox", error)
                    self._resync_needed = True
                    await self._wake.wait(STORE_RETRY)
                    continue
                self._recovered()
                if t >= next_probe:
                    next_probe = t + min(PROBE_INTERVAL, self.settings.poll_interval)
                now = self.clock()
                batch, next_due = self._pump(now)
                if batch:
                    await self._launch(batch)
                    continue
                if self._more_new or self._rest:
                    continue  # the rest of the load, without waiting
                if self._frozen_load and not (self._known or self._taken or self._settling):
                    self._frozen_load = False
                    _thaw()
                if until_idle and self._idle(now):
                    break
                delay = min(next_poll, next_probe) - loop.time()
                due_first = next_due is not None and next_due - now <= delay
                if next_due is not None:
                    delay = min(delay, next_due - now)
                if delay > 0:
                    if not due_first:
                        await self._wake.wait(delay)
                    elif delay > TIMER_SLACK:  # a timer fires up to a millisecond late:
                        await self._wake.wait(delay - TIMER_SLACK)  # wake before the slot
                    else:  # and yield until it opens, so the achieved rate stays at the limit
                        await asyncio.sleep(0)
        finally:
            await self._drain(workers)
            watchdog.cancel()
            self._flusher_stop = True
            self._flush_signal.set()
            try:
                await flusher
            finally:
                self._flusher_stop = False
                await self._flush()
                if self._frozen_load:  # stopped with a frozen load still scheduled
                    self._frozen_load = False
                    _thaw()
                await self._hand_over(everything=True)

    async def _drain(self, workers: list[asyncio.Task[None]], grace: float = 10.0) -> None:
        """Let in-flight sends finish; after `grace` seconds cancel them (they stay pending)."""
        self._closing = True
        while self._ready:  # claimed but not started: they stay pending
            tq, item, _ = self._ready.popleft()
            self._release(tq, item, requeue=True)
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
        _, late = await asyncio.wait(workers, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _idle(self, now: float) -> bool:
        if self._taken or self._sending or len(self._results) or self._settling:
            return False
        if self._more_new or self._rest:
            return False
        if self._flushing or self._resync_needed:
            return False
        for tq in self._queues.values():
            if tq.busy or not tq.items or tq.items[0].due > now:
                continue
            if self.limiter.blocked_until(tq.lane.key) > now:
                continue
            return False  # something is due now (maybe waiting for a rate-limit slot)
        return True

    # --- loading the schedule ------------------------------------------------------------------------

    async def _load_new(self) -> None:
        """Add the deliveries written since the last look. Into an empty schedule only a first
        page (FIRST_PAGE), when more may follow: the loop hands it out, lets its sends start, and
        calls again for the rest (`_more_new`)."""
        async with self._io_lock:
            paused = False
            first = not (self._more_new or self._known or self._taken or self._ready)
            loaded, self._more_new = self._more_new, 0  # a big load counts its first page too
            try:
                while True:
                    page = min(FIRST_PAGE, LOAD_PAGE) if first else LOAD_PAGE
                    rows = await self.outbox.pending_after(self._watermark, page)
                    if rows:
                        self._watermark = max(self._watermark, max(row.id for row in rows))
                    await self._add_all(rows)
                    loaded += len(rows)
                    if len(rows) < page:
                        break
                    if first:
                        self._more_new = loaded
                        break
                    paused = paused or _pause_collector()  # a full page: maybe a big load
                    await asyncio.sleep(0)  # answers to the sends in flight are read meanwhile
            finally:
                if paused:
                    self._resume_collector(freeze=loaded >= FREEZE_LOAD)

    def _resume_collector(self, *, freeze: bool) -> None:
        """A load is in: a big one leaves the collector's sight until the schedule empties."""
        if freeze:
            gc.freeze()
            self._frozen_load = True
        gc.enable()

    async def _changed(self) -> bool:
        """Has any other connection (another process, or our own writer) committed since last asked?
        A cheap question (no table is read), so imports by other processes are seen within ~20 ms."""
        version = await self.outbox.data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    async def _resync(self) -> None:
        """Reload the whole pending set: picks up re-driven dead letters and forgets what others settled."""
        async with self._io_lock:
            self._resync_needed = False
            pending = await self.outbox.pending_ids()
            for gone in [i for i in self._known if i not in pending]:
                self._forget(gone)
            if time.monotonic() >= self._foreign_until:  # a moved target may be ours now
                self._foreign.clear()
                self._foreign_until = time.monotonic() + FOREIGN_REFRESH
            self._foreign &= pending
            missing = pending - self._known.keys() - self._taken - self._settling - self._foreign
            wanted = sorted(missing)
            if len(wanted) > FIRST_PAGE and not (self._known or self._taken or self._ready):
                # An empty schedule (a start with a backlog): the oldest page goes out first.
                wanted, self._rest = wanted[:FIRST_PAGE], wanted[FIRST_PAGE:]
            else:
                self._rest = []
            await self._add_by_ids(wanted)
            if pending:
                self._watermark = max(self._watermark, max(pending))
            if not self._rest:  # else the backlog ends with its rest (`_load_rest`)
                self._backlog = False

    async def _load_rest(self) -> None:
        """The rest of a resync's load, after its first page was handed out: REST_SLICE of it at a
        time, the loop handing out what is loaded between slices (a load of thousands took tens
        of milliseconds, while the first page's sends ended and nothing was handed out)."""
        async with self._io_lock:
            wanted, self._rest = self._rest[:REST_SLICE], self._rest[REST_SLICE:]
            await self._add_by_ids(wanted)
            if not self._rest:
                self._backlog = False

    async def _add_by_ids(self, wanted: list[int]) -> None:
        """Add these pending deliveries (by id, in order), a page's rows at a time."""
        if not wanted:
            return
        paused = len(wanted) >= FREEZE_LOAD and _pause_collector()
        try:
            for start in range(0, len(wanted), LOAD_PAGE):
                await self._add_all(
                    await self.outbox.pending_by_ids(wanted[start : start + LOAD_PAGE])
                )
        finally:
            if paused:
                self._resume_collector(freeze=True)

    async def _add_all(self, rows: list[PendingDelivery]) -> None:
        """`_add` each row, yielding to the sends in flight every ADD_SLICE rows: a page of 5,000
        took ~30 ms in one step, so long that a rate limit's slot opened unseen meanwhile."""
        for start in range(0, len(rows), ADD_SLICE):
            if start:
                await asyncio.sleep(0)
            for row in rows[start : start + ADD_SLICE]:
                self._add(row)

    def _reshare(self) -> None:
        """The fleet changed: let go of the targets another worker sends to now (what is in flight
        finishes, and what was claimed and requeued goes back with its lease), and look for those
        this one gained."""
        assert self.share is not None
        self._share_version = self.share.version
        self.limiter.share_among(len(self.share.workers))
        self._foreign.clear()
        for key in [k for k in self._queues if not self.share.owns(k)]:
            tq = self._queues[key]
            for item in tq.items:
                self._known.pop(item.id, None)
                if item.claimed:
                    self._let_go.add(item.id)
            tq.items.clear()
            self._drop_if_empty(tq)
        self._resync_needed = True

    async def _hand_over(self, *, everything: bool = False) -> None:
        """Clear the leases of deliveries this worker claimed and will not send (`_let_go`; at
        the end of run(), all it still holds), so their new owner need not wait for them to run
        out. A store that does not answer leaves them to run out."""
        ids, self._let_go = sorted(self._let_go), set()
        if everything:
            try:
                await self.outbox.let_go()
            except Exception as error:
                self._trouble("hand over the deliveries claimed and not sent", error)
            return
        await self.outbox.let_go(ids)

    def _add(self, row: PendingDelivery) -> None:
        if row.id in self._known or row.id in self._taken or row.id in self._settling:
            return
        lane = self._lanes.get(row.platform)
        if lane is None:
            return  # no adapter for it in this process
        key = (lane.platform, row.address, row.thread)
        if self.share is not None and not self.share.owns(key):
            self._foreign.add(row.id)  # another worker of the fleet sends to this target
            return
        tq = self._queues.get(key)
        if tq is None:
            checks: tuple[Check, ...] = ()
            if lane.per_target:
                limits = lane.adapter.capabilities.rate_limits
                checks = target_checks(row.platform, limits, row.address, row.target_kind)
            tq = self._queues[key] = _TargetQueue(key, lane, checks)
        item = _Item(row.id, row.subscription_id, row.order_key, row.next_attempt_at)
        if not self._backlog:  # loaded as soon as it was written (woken, notified or polled)
            item.seen = self.clock()
        self._known[row.id] = item
        items = tq.items
        if not items or (items[-1].order_key, items[-1].id) < (item.order_key, item.id):
            items.append(item)  # the usual case: a later post
        else:
            bisect.insort(items, item, key=_Item.sort_key)
        self._schedule(tq)

    def _forget(self, delivery_id: int) -> None:
        item = self._known.pop(delivery_id, None)
        if item is None:
            return
        for tq in self._queues.values():  # rare: settled elsewhere, or its subscription went away
            if item in tq.items:
                tq.items.remove(item)
                self._schedule(tq)
                self._drop_if_empty(tq)
                return

    def _forget_target(self, platform: str, address: str) -> None:
        for key in [k for k in self._queues if k[0] == platform and k[1] == address]:
            tq = self._queues[key]
            for item in tq.items:
                self._known.pop(item.id, None)
            tq.items.clear()
            self._drop_if_empty(tq)

    def _drop_if_empty(self, tq: _TargetQueue) -> None:
        if not tq.items and not tq.busy:
            self._queues.pop(tq.key, None)

    def _schedule(self, tq: _TargetQueue, due: float | None = None) -> None:
        """Put the target on its lane's schedule for its head delivery (or at `due`)."""
        if tq.busy or not tq.items:
            return
        due = tq.items[0].due if due is None else due
        if tq.scheduled == due:
            return
        tq.scheduled = due
        lane = tq.lane
        entry = (due, next(self._seq), tq.key)
        run = lane.run
        if not run or run[-1][0] <= due:
            run.append(entry)  # in order: the usual case
        else:
            heapq.heappush(lane.heap, entry)

    # --- choosing what to send ------------------------------------------------------------------------

    def _room(self) -> int:
        """How many more deliveries may be taken: `concurrency` sending and up to three times as
        many claimed ahead, so a claim reads a whole batch (a claim of a dozen rows cost its fixed
        part on every few deliveries)."""
        return min(CLAIM_AHEAD * self.settings.concurrency - len(self._taken), 512)

    def _worth_pumping(self) -> bool:
        """Room for a batch, or workers with nothing to do: claiming one delivery at a time while the
        workers are busy would put a database round trip on every delivery."""
        room = self._room()
        return room > 0 and (room >= self._claim_batch or not self._ready)

    def _pump(self, now: float) -> tuple[list[tuple[_TargetQueue, _Item]], float | None]:
        """Take ready deliveries (due, target free, within rate limits) up to the free room."""
        batch: list[tuple[_TargetQueue, _Item]] = []
        next_due: float | None = None
        if not self._worth_pumping():
            return batch, next_due  # a release wakes the loop when there is
        room = self._room()

        def later(t: float) -> None:
            nonlocal next_due
            next_due = t if next_due is None else min(next_due, t)

        for lane in self._lanes.values():
            if room <= 0:
                break
            blocked = max(self.limiter.blocked_until(lane.key), lane.gate_until)
            if blocked > now:
                later(blocked)
                continue
            heap, run = lane.heap, lane.run
            while room > 0:
                if run and (not heap or run[0] <= heap[0]):
                    due, _, key = run[0]
                    if due > now:
                        later(due)
                        break
                    run.popleft()
                elif heap:
                    due, _, key = heap[0]
                    if due > now:
                        later(due)
                        break
                    heapq.heappop(heap)
                else:
                    break
                tq = self._queues.get(key)
                if tq is None or tq.busy or not tq.items or tq.scheduled != due:
                    continue  # a stale entry
                tq.scheduled = None
                if lane.overall is not None:
                    wait = self.limiter.delay([(lane.key, lane.overall)], now)
                    if SHORT_WAIT < wait < math.inf:
                        lane.gate_until = now + wait
                        self._schedule(tq, due)
                        later(lane.gate_until)
                        break
                if tq.checks:
                    wait = self.limiter.delay(tq.checks, now)
                    if (
                        SHORT_WAIT < wait < math.inf
                    ):  # a short wait is cheaper in the worker than a round trip
                        self._schedule(tq, now + wait)
                        later(now + wait)
                        continue
                item = tq.items.pop(0)
                del self._known[item.id]
                self._taken.add(item.id)
                tq.busy = True
                batch.append((tq, item))
                room -= 1
        return batch, next_due

    async def _launch(self, batch: list[tuple[_TargetQueue, _Item]]) -> None:
        """Re-read the batch with one SELECT, then hand it to the workers."""
        try:
            jobs = {job.id: job for job in await self.outbox.claim([item.id for _, item in batch])}
            stale = {
                job.post_rowid
                for job in jobs.values()
                if job.post_rowid not in self._posts
                or self._posts[job.post_rowid].post.version != job.post_version
            }
            if stale:
                if len(self._posts) > 1000:
                    self._posts.clear()
                self._posts.update(await self.outbox.posts(stale))
        except Exception as error:
            self._trouble("read a batch of deliveries", error)
            for tq, item in batch:
                self._release(tq, item, requeue=True)
            await asyncio.sleep(min(1.0, self.settings.poll_interval))
            return
        for tq, item in batch:
            job = jobs.get(item.id)
            if job is None or job.state != PENDING:
                self._release(tq, item, requeue=False)  # settled or removed meanwhile
                continue
            if job.subscription_state != "active" or job.post_rowid not in self._posts:
                self._release(tq, item, requeue=False)
                continue
            item.attempts = max(item.attempts, job.attempts)
            item.claimed = True
            self._ready.append((tq, item, job))
        self._hand_out()

    def _release(self, tq: _TargetQueue, item: _Item, *, requeue: bool) -> None:
        self._taken.discard(item.id)
        if requeue and self.share is not None and not self.share.owns(tq.key):
            self._let_go.add(item.id)  # its target moved to another worker meanwhile
            self._foreign.add(item.id)
            self._wake.set()
        elif requeue:
            self._known[item.id] = item
            bisect.insort(tq.items, item, key=_Item.sort_key)
        tq.busy = False
        self._schedule(tq)
        self._drop_if_empty(tq)
        if self._worth_pumping():
            self._wake.set()

    # --- the workers ------------------------------------------------------------------------------------

    def _may_send(self) -> bool:
        """The duplicate bound: sends in flight plus outcomes not yet committed stay below
        2 × concurrency (a crash re-sends at most those)."""
        return self._sending + len(self._settling) < 2 * self.settings.concurrency

    def _hand_out(self) -> None:
        """Give claimed deliveries to idle workers."""
        while self._ready and self._idle_workers and not self._closing:
            if not self._may_send():
                self._flush_signal.set()  # a commit frees the room
                return
            waiter = self._idle_workers.popleft()
            if waiter.done():
                continue
            self._sending += 1
            waiter.set_result(self._ready.popleft())

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            if self._ready and self._may_send():
                entry: tuple[_TargetQueue, _Item, DeliveryJob] | None = self._ready.popleft()
                self._sending += 1
            else:
                if self._ready:
                    self._flush_signal.set()  # held back by uncommitted outcomes
                waiter: asyncio.Future[tuple[_TargetQueue, _Item, DeliveryJob] | None]
                waiter = loop.create_future()
                self._idle_workers.append(waiter)
                entry = await waiter  # counted in `_sending` by whoever handed it over
            if entry is None:
                return
            tq, item, job = entry
            try:
                until = self._held_until(tq)
                if until is not None:  # limits closed since it was claimed: back to the schedule
                    self._release(tq, item, requeue=True)
                    self._schedule(tq, until)
                    self._wake.set()
                    continue
                # The delivery itself, here rather than one coroutine deeper: every resumption of
                # a send passes through each frame of the chain.
                requeue = False
                try:
                    requeue = await self._attempt(tq, item, job)
                except asyncio.CancelledError:
                    requeue = True  # not recorded: it stays pending
                    raise
                except Exception:  # a bug of ours: never lose the delivery, nor the dispatcher
                    log.exception("delivery %d failed unexpectedly", job.id)
                    requeue = self._retry(item, job, "internal error", None)
                finally:
                    self._release(tq, item, requeue=requeue)
            finally:
                self._sending -= 1

    def _held_until(self, tq: _TargetQueue) -> float | None:
        """When a claimed delivery would wait more than SHORT_WAIT for its limits: when it may go."""
        limiter = self.limiter
        if tq.unlimited and not limiter.any_blocked():
            return None  # a webhook or the terminal, and no retry-after anywhere: nothing to wait
        lane = tq.lane
        now = self.clock()
        blocked = max(limiter.blocked_until(lane.key), limiter.blocked_until(tq.block))
        wait = max(blocked, lane.gate_until) - now
        if not tq.unlimited:
            slot = limiter.delay(tq.all_checks, now)
            if slot != math.inf:  # a slot held by a send in flight: `_acquire` waits for it
                wait = max(wait, slot)
        return now + wait if wait > SHORT_WAIT else None

    # --- one delivery ---------------------------------------------------------------------------------

    async def _attempt(self, tq: _TargetQueue, item: _Item, job: DeliveryJob) -> bool:
        """Send or edit one delivery and record its outcome; True when it stays pending."""
        lane = tq.lane
        adapter = lane.adapter
        found = self._posts[job.post_rowid]
        post = found.post
        last: SentRef | None = None
        if rules.wants_last_sent(job):
            last = self._unrecorded.get(
                (job.subscription_id, job.post_rowid)
            ) or await self.outbox.last_sent(job.subscription_id, job.post_rowid)
        step = rules.plan(job, post.version, last, adapter.capabilities)
        if isinstance(step, rules.Skip):
            self._count(job, "skipped")
            self._record_skip(job.id, step.reason)
            return False
        target = job.target
        card = self._card(found, job.query, isinstance(step, rules.Send) and step.update)
        kind = "sent"
        result: str | BaseException
        try:
            if isinstance(step, rules.Edit):
                ref = step.message_ref
                try:
                    result = await self._limited(tq, adapter.edit, target, ref, card)
                    kind = "edited"
                except Exception as exc:
                    if not rules.refused_edit(exc):
                        raise
                    # The old message is gone or cannot be edited: say it as a follow-up.
                    log.info("edit of delivery %d refused (%s); sending a follow-up", job.id, exc)
                    update = self._card(found, job.query, True)
                    result = await self._limited(tq, adapter.send, target, update)
            else:
                result = await self._limited(tq, adapter.send, target, card)
        except Exception as exc:
            result = exc
        if isinstance(result, str):  # the usual case, first
            self.sent += 1
            self._count(job, kind, item)
            key = (job.subscription_id, job.post_rowid)
            self._results.sent.append((job.id, result, post.version, self._sent_at()))
            self._unrecorded[key] = SentRef(result, post.version)
            self._unrecorded_keys.append(key)
            self._settle(job.id)
            return False
        if isinstance(result, RateLimited):
            if self.metrics is not None:
                self.metrics.throttled(target.platform)
            until = self.clock() + result.retry_after
            if result.global_:
                self.limiter.block(lane.key, until)
            self.limiter.block(tq.block, until)  # replies to the chat wait too
            log.warning(
                "%s rate limited subscription %d for %.1fs%s",
                target.platform,
                job.subscription_id,
                result.retry_after,
                " (whole platform)" if result.global_ else "",
            )
        elif not isinstance(result, _EXPECTED):
            log.error(
                "%s adapter failed on delivery %d (subscription %d)",
                target.platform,
                job.id,
                job.subscription_id,
                exc_info=result,
            )
        verdict = rules.outcome(
            result,
            item.attempts,
            max_attempts=self.settings.max_attempts,
            now=self.clock(),
            send_timeout=self.send_timeout,
        )
        return self._carry_out(tq, item, job, verdict)

    def _carry_out(self, tq: _TargetQueue, item: _Item, job: DeliveryJob, verdict: Outcome) -> bool:
        """Act on an attempt that did not send; True when the delivery stays pending."""
        target = job.target
        if isinstance(verdict, rules.Move):
            self._count(job, "moved")
            self._results.moves.append((target.platform, target.address, verdict.new_address))
            self._forget_target(target.platform, target.address)
            self._added()
            return (
                False  # the move's commit is followed by a resync that reloads it at its new home
            )
        if isinstance(verdict, rules.Disable):
            log.warning(
                "%s target of subscription %d refuses deliveries: %s; disabling it",
                target.platform,
                job.subscription_id,
                verdict.reason,
            )
            self._count(job, "disabled")
            self._results.disable.append((target.platform, target.address, verdict.reason))
            self._results.dead.append((job.id, verdict.attempts, verdict.reason))
            self._settle(job.id)
            self._forget_target(target.platform, target.address)
            return False
        if isinstance(verdict, rules.Dead) and verdict.refused:
            log.warning("delivery %d refused by %s: %s", job.id, target.platform, verdict.error)
            self._count(job, "dead")
            self._results.dead.append((job.id, verdict.attempts, verdict.error))
            self._settle(job.id)
            return False
        assert not isinstance(verdict, rules.Sent)
        return self._apply_retry(item, job, verdict)

    async def _limited(
        self, tq: _TargetQueue, call: Callable[_P, Awaitable[str]], *args: _P.args, **kw: _P.kwargs
    ) -> str:
        """Take rate-limit slots, then call the adapter at once (no await between: the platform sees
        the request in the order and at the time the slots were taken); free the slots when done."""
        limiter = self.limiter
        permit: Permit | None = None
        if tq.unlimited and (
            not limiter.any_blocked()
            or max(limiter.blocked_until(tq.lane.key), limiter.blocked_until(tq.block))
            <= self.clock()
        ):
            pass  # no slot to take (a webhook, the terminal): only a retry-after could hold it
        else:
            _, permit = limiter.acquire(tq.all_checks)
            if permit is None:
                permit = await self._acquire(tq.all_checks)
        loop = self._loop
        task = asyncio.current_task(loop)
        assert task is not None and loop is not None
        self._deadlines[task] = loop.time() + self.send_timeout
        try:
            return await call(*args, **kw)
        except asyncio.CancelledError:
            if task in self._timed_out:
                self._timed_out.discard(task)
                if task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            del self._deadlines[task]
            if permit is not None:
                limiter.release(permit)
                waiters, self._slot_waiters = self._slot_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _watchdog(self) -> None:
        """Cancel sends that outlive `send_timeout` (they become a TimeoutError in `_limited`). One
        timer for all sends: `asyncio.timeout()` per send was a tenth of the dispatcher's own cost."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.send_timeout / 4)
        while True:
            now = loop.time()
            wake = now + interval
            for task, deadline in self._deadlines.items():
                if deadline <= now:
                    if task not in self._timed_out:
                        self._timed_out.add(task)
                        task.cancel()
                else:
                    wake = min(wake, deadline)
            await asyncio.sleep(wake - now)

    async def _acquire(self, checks: Sequence[Check]) -> Permit:
        """Wait for a slot under every limit and take it."""
        while True:
            wait, permit = self.limiter.acquire(checks)
            if permit is not None:
                return permit
            if wait == math.inf:  # every slot is held by a send in flight: wait for one to end
                waiter = asyncio.get_running_loop().create_future()
                self._slot_waiters.append(waiter)
                with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel
                    async with asyncio.timeout(0.1):
                        await waiter
            else:
                # The event loop's timers have millisecond granularity: sleep to just before the
                # slot opens and yield for the rest, so the achieved rate stays at the limit.
                await asyncio.sleep(wait - TIMER_SLACK if wait > TIMER_SLACK else 0)

    def _retry(self, item: _Item, job: DeliveryJob, error: str, until: float | None) -> bool:
        verdict = rules.retry(
            item.attempts + 1, error, until, max_attempts=self.settings.max_attempts
        )
        return self._apply_retry(item, job, verdict)

    def _apply_retry(
        self, item: _Item, job: DeliveryJob, verdict: rules.Retry | rules.Dead
    ) -> bool:
        """Count the attempt; dead after the last one, else due again later. True when pending."""
        attempts = verdict.attempts
        item.attempts = attempts
        if isinstance(verdict, rules.Dead):
            self._count(job, "dead")
            log.warning(
                "delivery %d is dead after %d attempts: %s", job.id, attempts, verdict.error
            )
            self._results.dead.append((job.id, attempts, verdict.error))
            self._settle(job.id)
            return False
        until = verdict.until
        if until is None:
            s = self.settings
            delay = rules.backoff(
                attempts, s.backoff_base, s.backoff_max, self._rng.uniform(0.5, 1.0)
            )
            until = self.clock() + delay
        item.due = until
        self._count(job, "retry")
        self._results.retry.append((job.id, attempts, until, verdict.error))
        self._settle(job.id)
        return True

    def _count(self, job: DeliveryJob, outcome: str, item: _Item | None = None) -> None:
        """One attempt's outcome for the metrics; a send's latency from the delivery's creation."""
        if self.metrics is not None:
            seen = item.seen if item is not None else None
            latency = None if seen is None else self.clock() - seen
            self.metrics.delivered(job.target.platform, outcome, latency=latency)

    def _sent_at(self) -> str:
        """Now, as `to_db_time` writes it; strftime once a second (once per delivery showed up)."""
        now = time.time()
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_prefix = to_db_time(datetime.fromtimestamp(second, UTC))[:-7]
        return f"{self._stamp_prefix}{int((now - second) * 1_000_000):06d}Z"

    def _record_skip(self, delivery_id: int, reason: str) -> None:
        self._results.skipped.append((delivery_id, reason))
        self._settle(delivery_id)

    def _settle(self, delivery_id: int) -> None:
        self._settling.add(delivery_id)
        self._result_ids.append(delivery_id)
        self._added()

    def _added(self) -> None:
        if len(self._result_ids) <= 1 or self._flush_due():
            self._flush_signal.set()  # the first outcome opens the window

    def _card(self, found: PostForCard, query: str | None, is_update: bool) -> Card:
        post = found.post
        terms: tuple[str, ...] = ()
        if query:
            # A post goes to many subscriptions with the same query: match it once.
            seen = (post.id, post.version, query)
            known = self._terms.get(seen)
            if known is None:
                if query not in self._queries:
                    try:
                        self._queries[query] = compile_query(query)
                    except QueryError:
                        self._queries[query] = None
                compiled = self._queries[query]
                known = matched_terms(compiled, post) if compiled is not None else ()
                if len(self._terms) > 1000:
                    self._terms.clear()
                self._terms[seen] = known
            terms = known
        key = (post.id, post.version, terms, is_update)
        card = self._cards.get(key)
        if card is None:
            if len(self._cards) > 1000:
                self._cards.clear()
            card = card_from_post(
                post, source_title=found.source_title, matched_terms=terms, is_update=is_update
            )
            self._cards[key] = card
        return card

    # --- writing outcomes ---------------------------------------------------------------------------

    def _flush_due(self) -> bool:
        """Commit now rather than wait for the window: enough outcomes, nothing else in flight, or
        a worker held back by the duplicate bound."""
        return (
            len(self._result_ids) >= self._flush_batch
            or not self._taken
            or (bool(self._ready) and not self._may_send())
            or self._flusher_stop
        )

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._flusher_stop:
            await self._flush_signal.wait()
            self._flush_signal.clear()
            deadline = loop.time() + GROUP_COMMIT_WINDOW
            while not self._flush_due() and (left := deadline - loop.time()) > 0:
                await self._flush_signal.wait(left)
                self._flush_signal.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not len(self._results):
            return
        batch: list[tuple[OutboxResults, list[int], list[tuple[int, int]]]] = []

        def take() -> OutboxResults:
            # Called inside the transaction: what arrived while it began goes in this commit.
            batch.append((self._results, self._result_ids, self._unrecorded_keys))
            self._results, self._result_ids, self._unrecorded_keys = OutboxResults(), [], []
            return batch[0][0]

        self._flushing += 1
        try:
            async with self._io_lock:
                await self.outbox.record(lambda: clean_outcomes(take()))  # no secret stored
                results, ids, sent_keys = batch[0]
                self._settling.difference_update(ids)
                for key in sent_keys:  # in the database now
                    self._unrecorded.pop(key, None)
                if results.moves or results.disable:
                    self._resync_needed = True
        except Exception as error:
            if batch:
                results, ids, sent_keys = batch[0]
                self._trouble(f"record {len(results)} delivery outcomes", error)
                _merge(self._results, results)
                self._result_ids.extend(ids)
                self._unrecorded_keys.extend(sent_keys)
            else:
                self._trouble("record delivery outcomes", error)
            self._flush_signal.set()
            await asyncio.sleep(0.5)
        finally:
            self._flushing -= 1
        self._hand_out()
        self._wake.set()


def _merge(into: OutboxResults, other: OutboxResults) -> None:
    into.sent.extend(other.sent)
    into.retry.extend(other.retry)
    into.dead.extend(other.dead)
    into.skipped.extend(other.skipped)
    into.disable.extend(other.disable)
    into.moves.extend(other.moves)
