"""The feeds in the store on a schedule: conditional GET for URLs, mtime+size for files, backoff on failure.

The blogs to follow are rows in the store (`storage.interface.Feeds`), added, changed, paused and
removed while Livedesk runs (`livedesk sources add|pause|resume|remove`, the API, the dashboard).
`LIVEDESK_SOURCES` is synced into them when polling starts (`sync_settings`). The poller compares the
feeds' `version()` every few seconds, or at once when told (`changed()`), re-reads them when it moved,
and starts or stops one task per enabled feed, so one slow or failing blog never holds up the others.

A failure is one warning line in the log and on the feed's row (`livedesk sources` shows it); the next
try waits twice as long as the last, up to a cap, and the first success resets it. Every outcome is
kept on the row with the next attempt's time, so a restart continues the schedule and its backoff. A
blog's first poll stores its whole history but sends existing subscriptions only its newest few posts
(`new_source_backfill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from bot.config import SourceSetting
from bot.metrics import Metrics
from bot.models import EventKind, PostEvent
from bot.sources import FetchResult, SourceError, load
from bot.sources.text import is_http_url
from storage.interface import Store
from storage.values import Feed, FeedExists, FetchState, SourceConflict

log = logging.getLogger(__name__)

BACKOFF_CAP = 900.0  # seconds: a broken source is still retried every quarter of an hour
CHECK_EVERY = 3.0
"""Seconds between looks at the feeds' version: how soon a feed added by another process is polled."""
SETTINGS_ORIGIN = "settings"
"""The origin of the feeds LIVEDESK_SOURCES names: the only ones the settings sync removes."""

Loader = Callable[..., Awaitable[FetchResult | None]]


class Outcome(StrEnum):
    IMPORTED = "imported"  # read and stored (events may be empty: nothing new)
    NOT_MODIFIED = "not-modified"  # 304, or a file whose mtime and size did not change
    FAILED = "failed"


def feed_location(text: str) -> str:
    """A location as a feed keeps it: an http(s) URL as given (trimmed), a file as an absolute path
    (`file://` dropped), so the poller finds it whatever folder it runs in."""
    location = text.strip()
    if is_http_url(location) or not location:
        return location
    path = Path(location.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else Path.cwd() / path)


@dataclass
class SourceStatus:
    """What the poller knows about one feed."""

    location: str
    interval: float
    feed_id: int = 0
    enabled: bool = True
    polls: int = 0
    failures: int = 0  # consecutive
    delay: float = 0.0  # until the next poll
    next_at: datetime | None = None  # when the next poll is due; None: now
    last_outcome: Outcome | None = None
    last_error: str | None = None
    created: int = 0  # totals since start
    updated: int = 0
    removed: bool = False
    file_signature: tuple[int, int] | None = field(default=None, repr=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @classmethod
    def of(cls, feed: Feed) -> SourceStatus:
        status = cls(location=feed.location, interval=feed.interval, feed_id=feed.id)
        status.follow(feed)
        return status

    def follow(self, feed: Feed) -> None:
        """Take the feed's settings and schedule as the store has them now."""
        self.interval = feed.interval
        self.enabled = feed.enabled
        self.failures = feed.failures
        self.next_at = feed.next_attempt_at
        if feed.last_error is not None:
            self.last_error = feed.last_error

    def seconds_until_due(self) -> float:
        if self.next_at is None:
            return 0.0
        return max(0.0, (self.next_at - datetime.now(UTC)).total_seconds())


class Poller:
    """Polls every enabled feed of the store on its own interval until `stop()`."""

    def __init__(
        self,
        store: Store,
        sources: Sequence[SourceSetting] = (),
        *,
        on_import: Callable[[list[PostEvent]], None] | None = None,
        backoff_cap: float = BACKOFF_CAP,
        timeout: float = 30.0,
        loader: Loader = load,
        new_source_backfill: int | None = None,
        metrics: Metrics | None = None,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.store = store
        self.posts = store.posts
        self.feeds = store.feeds
        self.settings = list(sources)
        # A blog new to the store sends only its newest posts to the subscriptions there.
        self.new_source_backfill = new_source_backfill
        self.on_import = on_import
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.metrics = metrics
        self.check_every = check_every
        self._load = loader
        self.status: dict[str, SourceStatus] = {}
        """Every feed the poller knows, by location (paused ones too)."""
        self._tasks: dict[int, asyncio.Task[None]] = {}  # by feed id
        self._watcher: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._version: int | None = None
        self._synced = False
        self._store_down = False

    @property
    def running(self) -> bool:
        watching = self._watcher is not None and not self._watcher.done()
        return watching or any(not t.done() for t in self._tasks.values())

    def start(self) -> None:
        """Sync the settings, read the feeds and poll each one on its own; the first poll at once."""
        if self._watcher is not None:
            return
        self._watcher = asyncio.create_task(self._watch(), name="feeds")

    def changed(self) -> None:
        """The feeds were changed in this process (the API, the dashboard): re-read them now."""
        self._changed.set()

    async def stop(self) -> None:
        """Cancel the polling tasks; an import already writing finishes or rolls back whole."""
        watcher, self._watcher = self._watcher, None
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if watcher is not None:
            tasks.append(watcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._version = None  # a restart (the fleet's role back) reads the feeds afresh

    async def poll_all(self) -> list[Outcome]:
        """Poll every enabled feed once, now (`livedesk run --once`)."""
        await self.prepare()
        due = [s for s in self.status.values() if s.enabled]
        return list(await asyncio.gather(*(self.poll(s) for s in due)))

    async def prepare(self) -> None:
        """The settings synced into the store (once), and the feeds read."""
        if not self._synced:
            await self.sync_settings()
            self._synced = True
        await self.refresh(force=True)

    async def sync_settings(self) -> None:
        """LIVEDESK_SOURCES into the feeds: each setting is added (origin "settings") or its interval
        updated; a settings feed no longer listed is removed. Feeds added from the CLI, the API or
        the dashboard are left as they are, and so is a setting's feed the operator paused."""
        wanted: dict[str, float] = {}
        for setting in self.settings:
            wanted.setdefault(feed_location(setting.location), setting.interval)
        feeds = {feed.location: feed for feed in await self.feeds.list()}
        for location, interval in wanted.items():
            feed = feeds.get(location)
            if feed is None:
                with contextlib.suppress(FeedExists):  # another process added it meanwhile
                    await self.feeds.add(location, interval, origin=SETTINGS_ORIGIN)
                    log.info("following %s every %gs (LIVEDESK_SOURCES)", location, interval)
            elif feed.origin == SETTINGS_ORIGIN and feed.interval != interval:
                await self.feeds.update(feed.id, interval=interval)
                log.info("source %s: every %gs now (LIVEDESK_SOURCES)", location, interval)
        for feed in feeds.values():
            if feed.origin == SETTINGS_ORIGIN and feed.location not in wanted:
                await self.feeds.remove(feed.id)
                log.info("no longer following %s: not in LIVEDESK_SOURCES any more", feed.location)

    async def refresh(self, *, force: bool = False) -> bool:
        """Re-read the feeds when their version moved (or `force`); whether anything was read.
        A running poller then starts a task for each new or resumed feed; a paused or removed
        feed's task ends after the poll it may be in."""
        version = await self.feeds.version()
        if not force and version == self._version:
            return False
        feeds = await self.feeds.list()
        self._version = version
        current = {feed.location: feed for feed in feeds}
        for location, status in list(self.status.items()):
            feed = current.get(location)
            if feed is None or feed.id != status.feed_id:
                status.removed = True
                status.wake.set()
                del self.status[location]
                if feed is None:
                    log.info("no longer following %s", location)
        for feed in feeds:
            known = self.status.get(feed.location)
            if known is None:
                self.status[feed.location] = SourceStatus.of(feed)
                if self._watcher is not None:
                    log.info(
                        "following %s every %gs%s",
                        feed.location,
                        feed.interval,
                        "" if feed.enabled else " (paused)",
                    )
            else:
                was_enabled = known.enabled
                known.follow(feed)
                if was_enabled != feed.enabled and self._watcher is not None:
                    log.info("source %s %s", feed.location, "resumed" if feed.enabled else "paused")
                known.wake.set()  # a sleeping task looks at its new schedule
        if self._watcher is not None:
            self._spawn()
        return True

    def _spawn(self) -> None:
        for feed_id, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[feed_id]
        for status in self.status.values():
            if status.enabled and status.feed_id not in self._tasks:
                self._tasks[status.feed_id] = asyncio.create_task(
                    self._loop(status), name=f"poll {status.location}"
                )

    async def _watch(self) -> None:
        """Read the feeds, then look at their version every `check_every` seconds (or when told)."""
        ready = False
        while True:
            try:
                if ready:
                    await self.refresh()
                else:
                    await self.prepare()
                    ready = True
                    paused = sum(not s.enabled for s in self.status.values())
                    log.info(
                        "following %d blog%s%s",
                        len(self.status),
                        "" if len(self.status) == 1 else "s",
                        f" ({paused} paused)" if paused else "",
                    )
                if self._store_down:
                    log.info("the feeds can be read again")
                    self._store_down = False
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store is away: say so once, keep polling what is known
                if not self._store_down:
                    log.warning("could not read the feeds: %s", _describe(error))
                    self._store_down = True
            await _woken_or_after(self._changed, self.check_every)
            self._changed.clear()

    async def _loop(self, status: SourceStatus) -> None:
        while status.enabled and not status.removed:
            wait = status.seconds_until_due()
            if wait > 0:
                status.wake.clear()
                await _woken_or_after(status.wake, wait)
                continue  # woken by a change, or due: look again
            await self.poll(status)

    async def poll(self, status: SourceStatus) -> Outcome:
        """One poll of one feed, its outcome kept on the feed's row; never raises (except
        cancellation)."""
        status.polls += 1
        source_id: str | None = None
        try:
            outcome, source_id = await self._poll(status)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # isolate failures: log one line and back off
            expected = isinstance(error, SourceError | SourceConflict)
            message = str(error) if expected else _describe(error)
            if not expected:
                log.debug("poll of %s failed", status.location, exc_info=True)
            status.failures += 1
            status.delay = min(
                status.interval * 2**status.failures, max(self.backoff_cap, status.interval)
            )
            status.last_error = message
            status.last_outcome = Outcome.FAILED
            log.warning(
                "source %s failed (%d in a row), next try in %.0fs: %s",
                status.location,
                status.failures,
                status.delay,
                message,
            )
            try:
                await self.posts.record_fetch_error(status.location, message)
            except Exception:
                log.exception("could not record the failure of %s", status.location)
            await self._record(status, Outcome.FAILED, error=message)
            return Outcome.FAILED
        if status.failures:
            log.info("source %s recovered after %d failures", status.location, status.failures)
        status.failures = 0
        status.delay = status.interval
        status.last_error = None
        status.last_outcome = outcome
        await self._record(status, outcome, source_id=source_id)
        return outcome

    async def _record(
        self,
        status: SourceStatus,
        outcome: Outcome,
        *,
        error: str | None = None,
        source_id: str | None = None,
    ) -> None:
        """The outcome on the feed's row and in the metrics; the next poll's time in memory."""
        now = datetime.now(UTC)
        status.next_at = now + timedelta(seconds=status.delay)
        if self.metrics is not None:
            self.metrics.fetched(status.feed_id, outcome.value)
        if not status.feed_id:
            return
        try:
            await self.feeds.record_fetch(
                status.feed_id,
                at=now,
                error=error,
                next_attempt_at=status.next_at,
                source_id=source_id,
            )
        except Exception as failure:
            log.warning("could not keep the outcome of %s: %s", status.location, _describe(failure))

    async def _poll(self, status: SourceStatus) -> tuple[Outcome, str | None]:
        location = status.location
        if is_http_url(location):
            state = await self.posts.fetch_state(location)
            fetched = await self._load(
                location,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
                timeout=self.timeout,
            )
            if fetched is None:
                return Outcome.NOT_MODIFIED, None
            signature = None
        else:
            signature = await asyncio.to_thread(_file_signature, location)
            if signature is not None and signature == status.file_signature:
                return Outcome.NOT_MODIFIED, None
            fetched = await self._load(location, timeout=self.timeout)
            if fetched is None:
                return Outcome.NOT_MODIFIED, None
        events = await self.store.ingest(
            fetched.result,
            location=location,
            fetch_state=FetchState(fetched.etag, fetched.last_modified),
            new_source_deliveries=self.new_source_backfill,
        )
        status.file_signature = signature
        created = sum(e.kind is EventKind.CREATED for e in events)
        status.created += created
        status.updated += len(events) - created
        if events:
            log.info("source %s: %d new, %d updated", location, created, len(events) - created)
            if self.on_import is not None:
                self.on_import(events)
        return Outcome.IMPORTED, fetched.result.source.id


def _file_signature(location: str) -> tuple[int, int] | None:
    """(mtime_ns, size), or None when the file cannot be stat'ed (load() then says why)."""
    path = Path(location.removeprefix("file://"))
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _woken_or_after(event: asyncio.Event, seconds: float) -> None:
    """Return when `event` is set, or after `seconds`. Not `asyncio.wait_for`: on Python 3.11 a
    cancellation that meets the event being set is lost there (the wait returns as if woken, the
    loop goes round again), and the stop waiting for this task never ends."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
