"""The fan-out path on a real PostgreSQL: what a claim and a batch of outcomes cost on the wire,
and what a fleet worker reads of the targets another worker sends to.

The rules themselves (every delivery once, leases, the order per target) are asserted in
tests/test_pg_outbox.py and tests/test_store_contract.py; here, that they hold while a claim is one
statement and a batch of outcomes another, and that one worker of two reloads only its own share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from bot.config import DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import Target
from bot.share import TargetShare
from storage.pg_db import PgDatabase
from storage.pg_outbox import PgOutbox
from storage.values import NewSubscription, OutboxResults, PendingDelivery
from tests.fakes.flaky import FlakyAdapter, make_post, note_reads, note_sends
from tests.test_pg_outbox import deliveries, import_posts, subs


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(postgres_url, size=4)
    try:
        yield db
    finally:
        await db.close()


class _Cursor:
    def __init__(self, cursor: Any, log: list[str]) -> None:
        self._cursor = cursor
        self._log = log

    async def __aenter__(self) -> _Cursor:
        await self._cursor.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.__aexit__(*exc)

    async def execute(self, query: Any, params: Any = None) -> Any:
        self._log.append(_verb(query))
        return await self._cursor.execute(query, params)

    async def executemany(self, query: Any, rows: Iterable[Any]) -> None:
        rows = list(rows)
        self._log.extend(_verb(query) for _ in rows)  # one statement per row on the server
        await self._cursor.executemany(query, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _Connection:
    """A pooled connection that notes every statement it sends (BEGIN and COMMIT included)."""

    def __init__(self, conn: Any, log: list[str]) -> None:
        self._conn = conn
        self._log = log

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self._log.append(_verb(query))
        return await self._conn.execute(query, params, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> _Cursor:
        return _Cursor(self._conn.cursor(*args, **kwargs), self._log)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._log.append("BEGIN")
        async with self._conn.transaction():
            yield
        self._log.append("COMMIT")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _CountingPool:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.statements: list[str] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        async with self._pool.connection() as conn:
            yield _Connection(conn, self.statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _verb(query: Any) -> str:
    words = str(query).split()
    return words[0].upper() if words else ""


@contextmanager
def counting(db: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements the store sends through `db` inside the block."""
    pool = _CountingPool(db.pool)
    with monkeypatch.context() as patch:
        patch.setattr(db, "pool", pool)
        yield pool.statements


def hook(n: int) -> Target:
    return Target(platform="fake", address=f"hook{n:03d}", kind="webhook")


async def fan_out(db: PgDatabase, targets: int) -> list[int]:
    """One post to `targets` subscriptions; their delivery ids."""
    await subs(db).add_many([NewSubscription(hook(n), created_by="u") for n in range(targets)])
    await import_posts(db, [make_post(1)])
    return sorted(await PgOutbox(db).pending_ids())


# --- what a claim and a record cost ---------------------------------------------------------------


async def test_a_claim_is_one_statement_whatever_the_batch(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await fan_out(pg, 24)
    mine, theirs = PgOutbox(pg, owner="mine"), PgOutbox(pg, owner="theirs")
    with counting(pg, monkeypatch) as statements:
        jobs = await mine.claim(ids[:16])
    assert statements == ["WITH"]  # lease, order check and rows, in one round trip
    assert [job.id for job in jobs] == ids[:16]
    assert {job.target.address for job in jobs} == {f"hook{n:03d}" for n in range(16)}
    with counting(pg, monkeypatch) as statements:
        # What another holds is left out; the rest is theirs now.
        assert [job.id for job in await theirs.claim(ids)] == ids[16:]
    assert statements == ["WITH"]
    owners = {r["id"]: r["lease_owner"] for r in await deliveries(pg)}
    assert [owners[i] for i in ids] == ["mine"] * 16 + ["theirs"] * 8


async def test_a_batch_of_outcomes_is_one_statement(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await fan_out(pg, 20)
    outbox = PgOutbox(pg, owner="mine")
    await outbox.claim(ids)
    sent, retried, dead, skipped = ids[:14], ids[14:16], ids[16:18], ids[18:]
    results = OutboxResults(
        sent=[(i, f"m{i}", 1, "2026-12-02T00:00:00.000000Z") for i in sent],
        retry=[(i, 1, 2_000_000.0, "HTTP 502" * 100) for i in retried],
        dead=[(i, 5, "gone") for i in dead],
        skipped=[(i, "edit policy: ignore") for i in skipped],
    )
    with counting(pg, monkeypatch) as statements:
        await outbox.record(lambda: results)
    assert statements == ["WITH"]
    rows = {r["id"]: r for r in await deliveries(pg)}
    assert all(r["lease_owner"] is None for r in rows.values())
    assert [rows[i]["state"] for i in ids] == (
        ["sent"] * 14 + ["pending"] * 2 + ["dead"] * 2 + ["skipped"] * 2
    )
    assert {len(rows[i]["last_error"]) for i in retried} == {500}
    assert [rows[i]["last_error"] for i in dead + skipped] == ["gone"] * 2 + [
        "edit policy: ignore"
    ] * 2
    assert all(rows[i]["last_error"] is None for i in sent)
    async with pg.read() as conn:
        cur = await conn.execute(
            "SELECT id, attempts, message_ref, sent_at, next_attempt_at FROM deliveries ORDER BY id"
        )
        detail = {r["id"]: r for r in await cur.fetchall()}
    assert [(detail[i]["attempts"], detail[i]["message_ref"]) for i in sent[:2]] == [
        (1, f"m{sent[0]}"),
        (1, f"m{sent[1]}"),
    ]
    assert detail[sent[0]]["sent_at"] == "2026-12-02T00:00:00.000000Z"
    assert [(detail[i]["attempts"], detail[i]["next_attempt_at"]) for i in retried] == [
        (1, 2_000_000.0)
    ] * 2
    assert [detail[i]["attempts"] for i in dead + skipped] == [5, 5, 0, 0]


async def test_a_quick_retry_and_its_send_in_one_batch_leave_it_sent(pg: PgDatabase) -> None:
    """A delivery retried at once (a short 429) may be sent again before the outcomes are written:
    the batch then holds both, and the send is what stays."""
    [delivery] = await fan_out(pg, 1)
    outbox = PgOutbox(pg, owner="mine")
    await outbox.claim([delivery])
    await outbox.record(
        OutboxResults(
            retry=[(delivery, 1, 0.0, "HTTP 429")],
            sent=[(delivery, "m1", 1, "2026-12-02T00:00:00.000000Z")],
        )
    )
    [row] = await deliveries(pg)
    assert (row["state"], row["lease_owner"], row["last_error"]) == ("sent", None, None)


async def test_outcomes_with_a_disabled_target_are_one_transaction(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await fan_out(pg, 2)
    outbox = PgOutbox(pg, owner="mine")
    await outbox.claim(ids)
    with counting(pg, monkeypatch) as statements:
        await outbox.record(
            OutboxResults(
                sent=[(ids[0], "m", 1, "2026-12-02T00:00:00.000000Z")],
                dead=[(ids[1], 1, "webhook removed")],
                disable=[("fake", "hook001", "webhook removed")],
            )
        )
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert [r["state"] for r in await deliveries(pg)] == ["sent", "dead"]
    [disabled] = [s for s in await subs(pg).list() if s.target.address == "hook001"]
    assert disabled.state.value == "disabled"


# --- a fleet worker's share -------------------------------------------------------------------------


class _WatchedOutbox(PgOutbox):
    """The real outbox, noting which deliveries the dispatcher reloads one by one."""

    reloaded: list[int]

    async def pending_by_ids(self, ids: Iterable[int]) -> list[PendingDelivery]:
        wanted = list(ids)
        self.reloaded.extend(wanted)
        return await super().pending_by_ids(wanted)


async def test_a_fleet_worker_does_not_reload_what_another_sends(pg: PgDatabase) -> None:
    ids = await fan_out(pg, 40)
    share = TargetShare("one", ["one", "two"])
    outbox = _WatchedOutbox(pg, owner="one")
    outbox.reloaded = []
    adapter = FlakyAdapter()
    settings = DispatchSettings(concurrency=8, max_attempts=4)
    dispatcher = Dispatcher(outbox, {"fake": adapter}, settings, share=share)
    await dispatcher.run_until_idle()
    mine = {f"hook{n:03d}" for n in range(40) if share.owns(("fake", f"hook{n:03d}", ""))}
    assert 0 < len(mine) < 40
    assert {call.target.address for call in adapter.calls} == mine  # its own share, once each
    assert len(adapter.calls) == len(mine)
    assert sorted(outbox.reloaded) == ids  # the first look reads them all
    outbox.reloaded.clear()
    await dispatcher.run_until_idle()  # a full reload of the pending set: only the others' are
    await dispatcher.run_until_idle()  # pending, and they are known to be the other worker's
    assert outbox.reloaded == []
    assert len(adapter.calls) == len(mine)
    # When the other worker leaves, its targets are this one's: they are read and sent.
    theirs = sorted(set(ids) - set(await _settled(pg)))
    assert len(theirs) == 40 - len(mine)
    share.update(["one"])
    await dispatcher.run_until_idle()
    assert sorted(outbox.reloaded) == theirs
    assert {call.target.address for call in adapter.calls} == {f"hook{n:03d}" for n in range(40)}
    assert len(adapter.calls) == 40


async def test_a_target_another_worker_moved_to_this_ones_share_is_sent(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group that became a supergroup (a move recorded by the worker that sent to it) may now
    be this worker's: what it took for another's is read again, within FOREIGN_REFRESH."""
    share = TargetShare("one", ["one", "two"])
    theirs = next(n for n in range(100) if not share.owns(("fake", f"hook{n:03d}", "")))
    new_home = next(n for n in range(100, 200) if share.owns(("fake", f"hook{n:03d}", "")))
    await subs(pg).add(hook(theirs), created_by="u")
    await import_posts(pg, [make_post(1)])
    monkeypatch.setattr("bot.dispatcher.FOREIGN_REFRESH", 0.0)  # every full reload refreshes
    outbox = _WatchedOutbox(pg, owner="one")
    outbox.reloaded = []
    adapter = FlakyAdapter()
    dispatcher = Dispatcher(
        outbox, {"fake": adapter}, DispatchSettings(concurrency=8, max_attempts=4), share=share
    )
    await dispatcher.run_until_idle()
    assert adapter.calls == [] and len(outbox.reloaded) == 1  # the other worker's
    await subs(pg).move_target("fake", f"hook{theirs:03d}", f"hook{new_home:03d}")
    await dispatcher.run_until_idle()  # the refresh is due: the deliveries are read again
    await dispatcher.run_until_idle()
    assert [call.target.address for call in adapter.calls] == [f"hook{new_home:03d}"]


async def test_a_worker_that_stops_hands_over_what_it_claimed_and_did_not_send(
    pg: PgDatabase,
) -> None:
    """A worker claims ahead of its sends; stopped, it clears those leases, so another worker
    claims them at once rather than when they run out (a minute)."""
    await fan_out(pg, 20)
    adapter = FlakyAdapter(delay=0.3)
    one = Dispatcher(PgOutbox(pg, owner="one"), {"fake": adapter}, DispatchSettings(concurrency=1))
    running = asyncio.create_task(one.run())
    async with asyncio.timeout(30):
        while not adapter.calls:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await one.stop()
    await running
    left = [r for r in await deliveries(pg) if r["state"] == "pending"]
    assert left and len(left) < 20  # it had sent some, and claimed more than it sent
    assert [r["lease_owner"] for r in left] == [None] * len(left)
    two = PgOutbox(pg, owner="two")
    assert sorted(job.id for job in await two.claim([r["id"] for r in left])) == sorted(
        r["id"] for r in left
    )


async def _settled(pg: PgDatabase) -> list[int]:
    return [r["id"] for r in await deliveries(pg) if r["state"] != "pending"]


# --- a big load: its first page is sent before the rest is read -----------------------------------


async def test_a_backlog_at_start_and_a_woken_fan_out_send_their_first_page_first(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 deliveries pending when the dispatcher starts, then 300 more while it runs (an import
    in its process, woken): each time the first 64 go out before the rest is read, and every
    delivery is sent once."""
    monkeypatch.setattr("bot.dispatcher.FIRST_PAGE", 64)
    await fan_out(pg, 300)
    events: list[str] = []
    outbox = note_reads(PgOutbox(pg), events)
    adapter = note_sends(FlakyAdapter(), events)
    dispatcher = Dispatcher(outbox, {"fake": adapter}, DispatchSettings(concurrency=8))
    running = asyncio.create_task(dispatcher.run())
    async with asyncio.timeout(30):
        while len(adapter.calls) < 300 or not dispatcher._idle(dispatcher.clock()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert events[:3] == ["read 64", "send", "read 236"]
        events.clear()
        await import_posts(pg, [make_post(2)])
        dispatcher.wake()
        while len(adapter.calls) < 600 or not dispatcher._idle(dispatcher.clock()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await dispatcher.stop()
    await running
    assert events[:3] == ["read 64", "send", "read 236"]
    sent = sorted((call.target.address, call.card.post_id) for call in adapter.calls)
    assert sent == sorted(
        (f"hook{n:03d}", post) for n in range(300) for post in ("blog-1", "blog-2")
    )
    assert {r["state"] for r in await deliveries(pg)} == {"sent"}
