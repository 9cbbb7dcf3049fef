"""Configured sources on a schedule: conditional GET for URLs, mtime+size for files, backoff on failure.

Each source runs in its own task, so one slow or failing blog never holds up the others. A failure is
one warning line in the log and on the source's row (`livedesk sources` shows it); the next try waits
twice as long as the last, up to a cap, and the first success resets it. A blog's first poll stores
its whole history but sends existing subscriptions only its newest few posts (`new_source_backfill`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bot.config import SourceSetting
from bot.models import EventKind, PostEvent
from bot.sources import FetchResult, SourceError, load
from bot.sources.text import is_http_url
from storage.interface import Store
from storage.values import FetchState, SourceConflict

log = logging.getLogger(__name__)

BACKOFF_CAP = 900.0  # seconds: a broken source is still retried every quarter of an hour

Loader = Callable[..., Awaitable[FetchResult | None]]


class Outcome(StrEnum):
    IMPORTED = "imported"  # read and stored (events may be empty: nothing new)
    NOT_MODIFIED = "not-modified"  # 304, or a file whose mtime and size did not change
    FAILED = "failed"


@dataclass
class SourceStatus:
    """What the poller knows about one configured source."""

    location: str
    interval: float
    polls: int = 0
    failures: int = 0  # consecutive
    delay: float = 0.0  # until the next poll
    last_outcome: Outcome | None = None
    last_error: str | None = None
    created: int = 0  # totals since start
    updated: int = 0
    file_signature: tuple[int, int] | None = field(default=None, repr=False)


class Poller:
    """Polls every configured source on its own interval until `stop()`."""

    def __init__(
        self,
        store: Store,
        sources: Sequence[SourceSetting],
        *,
        on_import: Callable[[list[PostEvent]], None] | None = None,
        backoff_cap: float = BACKOFF_CAP,
        timeout: float = 30.0,
        loader: Loader = load,
        new_source_backfill: int | None = None,
    ) -> None:
        self.store = store
        self.posts = store.posts
        # A blog new to the store sends only its newest posts to the subscriptions there.
        self.new_source_backfill = new_source_backfill
        self.on_import = on_import
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self._load = loader
        self.status: dict[str, SourceStatus] = {
            s.location: SourceStatus(location=s.location, interval=s.interval) for s in sources
        }
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        """One task per source; the first poll happens at once."""
        if self._tasks:
            return
        for status in self.status.values():
            self._tasks.append(
                asyncio.create_task(self._loop(status), name=f"poll {status.location}")
            )

    async def stop(self) -> None:
        """Cancel the polling tasks; an import already writing finishes or rolls back whole."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def poll_all(self) -> list[Outcome]:
        """Poll every source once, now (`livedesk run --once`)."""
        return list(await asyncio.gather(*(self.poll(s) for s in self.status.values())))

    async def _loop(self, status: SourceStatus) -> None:
        while True:
            await self.poll(status)
            await asyncio.sleep(status.delay)

    async def poll(self, status: SourceStatus) -> Outcome:
        """One poll of one source; never raises (except cancellation)."""
        status.polls += 1
        try:
            outcome = await self._poll(status)
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
            return Outcome.FAILED
        if status.failures:
            log.info("source %s recovered after %d failures", status.location, status.failures)
        status.failures = 0
        status.delay = status.interval
        status.last_error = None
        status.last_outcome = outcome
        return outcome

    async def _poll(self, status: SourceStatus) -> Outcome:
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
                return Outcome.NOT_MODIFIED
            signature = None
        else:
            signature = await asyncio.to_thread(_file_signature, location)
            if signature is not None and signature == status.file_signature:
                return Outcome.NOT_MODIFIED
            fetched = await self._load(location, timeout=self.timeout)
            if fetched is None:
                return Outcome.NOT_MODIFIED
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
        return Outcome.IMPORTED


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
