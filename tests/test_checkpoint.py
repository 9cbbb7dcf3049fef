"""No commit checkpoints SQLite's log in its own call: a thread of the store's does, when due.

SQLite checkpoints inside the commit that takes the write-ahead log past 1,000 pages: copying and
syncing 10-40 ms. The outbox's quick writer commits in the event loop's thread, so that commit
stopped every send meanwhile; an import's commit held back the dispatcher's wake. No connection
checkpoints itself; every CHECKPOINT_ROWS rows written, on the store's writer or the quick writer,
a PASSIVE checkpoint runs in a worker thread, on a connection of its own.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from storage import db as db_module
from storage import outbox as outbox_module
from storage.interface import Store
from storage.store import SqliteStore
from storage.values import OutboxResults
from tests.fakes.flaky import make_post, make_source
from tests.test_store_contract import chat, deliveries, import_posts


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY", 0.0)


@pytest.fixture
def store(sqlite_store: SqliteStore) -> Store:
    return sqlite_store


def _outbox(store: Store) -> outbox_module.Outbox:
    outbox = store.outbox
    assert isinstance(outbox, outbox_module.Outbox)
    return outbox


async def test_no_writer_checkpoints_in_its_commits(store: Store) -> None:
    """The store's writer and the quick writer (the reader commits nothing: it never would)."""
    outbox = _outbox(store)
    db = outbox.db
    assert outbox._quick_writer().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    async with db.write() as conn, conn.execute("PRAGMA wal_autocheckpoint") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == 0


async def test_a_thread_checkpoints_once_enough_rows_are_written_on_either_writer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[int, tuple[int, int, int]]] = []
    checkpoint = db_module.checkpoint

    def recorded(path: str) -> tuple[int, int, int]:
        done = checkpoint(path)
        ran.append((threading.get_ident(), done))
        return done

    monkeypatch.setattr(db_module, "checkpoint", recorded)
    monkeypatch.setattr(db_module, "CHECKPOINT_ROWS", 10**9)  # none while setting up
    await store.subscriptions.add(chat("a"), created_by="u")
    await import_posts(store, [make_post(n) for n in range(1, 7)], make_source("blog"))
    outbox = _outbox(store)
    db = outbox.db
    ids = [d.id for d in await deliveries(store)]
    assert len(ids) == 6 and ran == []

    db._unlogged = 0
    monkeypatch.setattr(db_module, "CHECKPOINT_ROWS", 3)
    await outbox.record(OutboxResults(sent=[(ids[0], "m", 1, "x")]))  # a quick commit: 2 rows
    assert db._checkpointing is None and ran == []
    await outbox.record(OutboxResults(sent=[(ids[1], "m", 1, "x")]))
    pending = db._checkpointing
    assert pending is not None
    await pending
    await asyncio.sleep(0)  # its done callback
    assert db._checkpointing is None
    assert len(ran) == 1 and ran[0][0] != threading.get_ident()
    busy, frames, copied = ran[0][1]
    assert busy == 0 and frames > 0 and copied == frames  # the whole log, the reader open

    await import_posts(store, [make_post(n) for n in range(7, 10)], make_source("blog"))
    assert db._checkpointing is not None  # the store's writer counts too
    await db._checkpointing
    assert len(ran) == 2
    assert await outbox.counts() == {"pending": 7, "sent": 2, "dead": 0, "skipped": 0}


async def test_a_checkpoint_that_fails_is_one_warning_and_the_next_one_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_ROWS", 1)
    calls: list[str] = []

    def failing(path: str) -> tuple[int, int, int]:
        calls.append(path)
        if len(calls) == 1:
            raise OSError("disk I/O error")
        return 0, 0, 0

    monkeypatch.setattr(db_module, "checkpoint", failing)
    db = _outbox(store).db
    async with db.write() as conn:
        await conn.execute("UPDATE sources SET title = title")
    assert db._checkpointing is not None
    with pytest.raises(OSError):
        await db._checkpointing
    await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if r.name == "storage.db"] == [
        f"could not checkpoint {db.path}'s log: disk I/O error"
    ]
    async with db.write() as conn:
        await conn.execute("UPDATE sources SET title = title")
    assert db._checkpointing is not None
    await db._checkpointing
    assert len(calls) == 2


async def _one_due(tmp_path: Path) -> tuple[db_module.Database, asyncio.Task[Any]]:
    """A store just opened, and the checkpoint its first write made due (CHECKPOINT_ROWS 1)."""
    db = await db_module.Database.open(tmp_path / "livedesk.db")
    async with db.write() as conn:
        await conn.execute("UPDATE sources SET title = title")
    pending = db._checkpointing
    assert pending is not None
    return db, pending


async def test_closing_waits_for_a_checkpoint_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_ROWS", 1)
    started, release = threading.Event(), threading.Event()
    checkpoint = db_module.checkpoint

    def slow(path: str) -> tuple[int, int, int]:
        started.set()
        release.wait(5)
        return checkpoint(path)

    monkeypatch.setattr(db_module, "checkpoint", slow)
    db, pending = await _one_due(tmp_path)
    await asyncio.to_thread(started.wait, 5)
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the checkpoint holds it
    release.set()
    await closing
    assert pending.done() and pending.exception() is None


def test_the_checkpoint_makes_no_database_where_there_is_none(tmp_path: Path) -> None:
    """A store closed and deleted while its checkpoint waited for a thread: no new empty file."""
    gone = tmp_path / "gone.db"
    with pytest.raises(Exception, match="unable to open"):
        db_module.checkpoint(str(gone))
    assert not gone.exists()


async def test_closing_lets_go_of_a_checkpoint_waiting_for_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_ROWS", 1)
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY", 30.0)
    calls: list[str] = []

    def recorded(path: str) -> tuple[int, int, int]:
        calls.append(path)
        return 0, 0, 0

    monkeypatch.setattr(db_module, "checkpoint", recorded)
    db, pending = await _one_due(tmp_path)
    await asyncio.wait_for(db.close(), 5)  # not 30 s
    assert pending.cancelled() and calls == []
