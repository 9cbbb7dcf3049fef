"""The outbox's quick writer leaves checkpoints of SQLite's log to a thread of its own.

SQLite checkpoints inside the commit that takes the write-ahead log past 1,000 pages: copying and
syncing 10-40 ms. The quick writer commits in the event loop's thread, so that commit would stop
every send meanwhile. It never checkpoints; every CHECKPOINT_EVERY quick commits, a PASSIVE
checkpoint runs in a worker thread, on a connection of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import outbox as outbox_module
from storage.interface import Store
from storage.store import open_sqlite
from storage.values import OutboxResults
from tests.fakes.flaky import make_post, make_source
from tests.test_store_contract import chat, deliveries, import_posts


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_sqlite(tmp_path / "livedesk.db")
    try:
        yield opened
    finally:
        await opened.close()


async def test_quick_commits_never_checkpoint_in_the_loop_and_a_thread_does(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "CHECKPOINT_EVERY", 3)
    ran: list[tuple[int, tuple[int, int, int]]] = []
    checkpoint = outbox_module._checkpoint

    def recorded(path: str) -> tuple[int, int, int]:
        done = checkpoint(path)
        ran.append((threading.get_ident(), done))
        return done

    monkeypatch.setattr(outbox_module, "_checkpoint", recorded)
    await store.subscriptions.add(chat("a"), created_by="u")
    await import_posts(store, [make_post(n) for n in range(1, 7)], make_source("blog"))
    outbox = store.outbox
    assert isinstance(outbox, outbox_module.Outbox)
    ids = [d.id for d in await deliveries(store)]
    assert len(ids) == 6
    writer = outbox._quick_writer()
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0

    for delivery_id in ids[:2]:
        await outbox.record(OutboxResults(sent=[(delivery_id, "m", 1, "x")]))
    assert ran == []  # fewer quick commits than CHECKPOINT_EVERY
    await outbox.record(OutboxResults(sent=[(ids[2], "m", 1, "x")]))
    pending = outbox._checkpointing
    assert pending is not None
    await pending
    await asyncio.sleep(0)  # its done callback
    assert len(ran) == 1 and ran[0][0] != threading.get_ident()
    busy, frames, copied = ran[0][1]
    assert busy == 0 and frames > 0 and copied == frames  # the whole log, with a reader open
    assert outbox._checkpointing is None
    for delivery_id in ids[3:]:
        await outbox.record(OutboxResults(sent=[(delivery_id, "m", 1, "x")]))
    assert outbox._checkpointing is not None
    await outbox._checkpointing
    assert len(ran) == 2
    assert await outbox.counts() == {"pending": 0, "sent": 6, "dead": 0, "skipped": 0}


async def test_a_checkpoint_that_fails_is_one_warning_and_the_next_one_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outbox_module, "CHECKPOINT_EVERY", 1)
    calls: list[str] = []

    def failing(path: str) -> tuple[int, int, int]:
        calls.append(path)
        if len(calls) == 1:
            raise OSError("disk I/O error")
        return 0, 0, 0

    monkeypatch.setattr(outbox_module, "_checkpoint", failing)
    await store.subscriptions.add(chat("a"), created_by="u")
    await import_posts(store, [make_post(1), make_post(2)], make_source("blog"))
    outbox = store.outbox
    assert isinstance(outbox, outbox_module.Outbox)
    first, second = [d.id for d in await deliveries(store)]
    await outbox.record(OutboxResults(sent=[(first, "m", 1, "x")]))
    assert outbox._checkpointing is not None
    with pytest.raises(OSError):
        await outbox._checkpointing
    await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if r.name == "storage.outbox"] == [
        "could not checkpoint the outbox's log: disk I/O error"
    ]
    await outbox.record(OutboxResults(sent=[(second, "m", 1, "x")]))
    assert outbox._checkpointing is not None
    await outbox._checkpointing
    assert len(calls) == 2
    assert await outbox.counts() == {"pending": 0, "sent": 2, "dead": 0, "skipped": 0}


def test_the_checkpoint_makes_no_database_where_there_is_none(tmp_path: Path) -> None:
    """A store closed and deleted while its checkpoint waited for a thread: no new empty file."""
    gone = tmp_path / "gone.db"
    with pytest.raises(Exception, match="unable to open"):
        outbox_module._checkpoint(str(gone))
    assert not gone.exists()
