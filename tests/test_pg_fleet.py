"""The fleet on a real PostgreSQL server (tests/pgserver.py): the `workers` registry, the leaders'
role locks, a FleetMember's heartbeat rounds, and `livedesk workers` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot.fleet import FleetMember, new_worker_id
from bot.models import Target
from storage.pg_db import PgDatabase
from storage.pg_fleet import Fleet, Leadership, role_key
from storage.pg_outbox import PgOutbox
from tests.cli_process import ROOT, child_env, livedesk
from tests.fakes.flaky import make_post
from tests.pgserver import PostgresServer
from tests.test_pg_outbox import import_posts, subs

ROLES = ("telegram-polling", "sources")


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(postgres_url, size=4)
    try:
        yield db
    finally:
        await db.close()


async def backdate(db: PgDatabase, worker_id: str, seconds: float) -> None:
    """As if the worker had been silent for `seconds`: its heartbeat moved back."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE workers SET heartbeat_at = heartbeat_at - %s WHERE id = %s",
            (seconds, worker_id),
        )


async def lease_two_deliveries(db: PgDatabase, owner: str) -> None:
    """Two pending deliveries, claimed (leased) by `owner` through the real outbox."""
    await subs(db).add(Target(platform="fake", address="a", kind="group"), created_by="u")
    await import_posts(db, [make_post(1), make_post(2)])
    outbox = PgOutbox(db, owner=owner)
    claimed = await outbox.claim(sorted(await outbox.pending_ids()))
    assert len(claimed) == 2


# --- the registry -------------------------------------------------------------------------------


async def test_workers_join_heartbeat_and_leave(pg: PgDatabase) -> None:
    fleet = Fleet(pg)
    await fleet.join("h1:10:aaa", "h1", 10)
    await fleet.join("h2:20:bbb", "h2", 20)
    assert await fleet.heartbeat("h1:10:aaa", ["sources", "telegram-polling"])

    first, second = await fleet.workers(stale_after=30)
    assert (first.id, first.host, first.pid, first.live) == ("h1:10:aaa", "h1", 10, True)
    assert first.roles == ("sources", "telegram-polling")
    assert (second.id, second.roles, second.leases) == ("h2:20:bbb", (), 0)
    assert first.heartbeat_age < 5 and first.started_at.tzinfo is not None
    assert await fleet.live_ids(30) == ["h1:10:aaa", "h2:20:bbb"]

    await fleet.join("h1:10:aaa", "h1", 10)  # joining again keeps one row
    await fleet.leave("h1:10:aaa")
    assert [w.id for w in await fleet.workers(30)] == ["h2:20:bbb"]
    assert not await fleet.heartbeat("h1:10:aaa", [])  # gone: the member must join again


async def test_a_silent_worker_is_stale_and_the_others_stay_live(pg: PgDatabase) -> None:
    fleet = Fleet(pg)
    await fleet.join("quiet", "h", 1)
    await fleet.join("busy", "h", 2)
    await asyncio.sleep(0.6)
    await fleet.heartbeat("busy")
    states = {w.id: w.live for w in await fleet.workers(stale_after=0.4)}
    assert states == {"quiet": False, "busy": True}
    assert await fleet.live_ids(0.4) == ["busy"]
    assert await fleet.live_ids(60) == ["busy", "quiet"]


async def test_leases_are_counted_and_prune_keeps_a_dead_worker_that_still_holds_some(
    pg: PgDatabase,
) -> None:
    fleet = Fleet(pg)
    holder, idle = new_worker_id("h1", 1), new_worker_id("h2", 2)
    await fleet.join(holder, "h1", 1)
    await fleet.join(idle, "h2", 2)
    await lease_two_deliveries(pg, holder)
    assert {w.id: w.leases for w in await fleet.workers(30)} == {holder: 2, idle: 0}

    await backdate(pg, holder, 3600)
    await backdate(pg, idle, 3600)
    assert await fleet.prune(older_than=600) == 1  # the idle one; the holder's leases still run
    assert [w.id for w in await fleet.workers(30)] == [holder]

    async with pg.write() as conn:  # the leases run out
        await conn.execute("UPDATE deliveries SET lease_until = 0")
    assert (await fleet.workers(30))[0].leases == 0
    assert await fleet.prune(older_than=600) == 1
    assert await fleet.workers(30) == []


async def test_prune_never_removes_a_live_worker(pg: PgDatabase) -> None:
    fleet = Fleet(pg)
    await fleet.join("live", "h", 1)
    assert await fleet.prune(older_than=60) == 0
    assert await fleet.live_ids(60) == ["live"]


# --- leaders ---------------------------------------------------------------------------------------


def test_role_keys_are_stable_and_livedesk_s_own() -> None:
    assert role_key("sources") == role_key("sources") != role_key("telegram-polling")
    assert role_key("sources") >> 48 == 0x4C44 and role_key("sources") < 2**63


async def test_only_one_leadership_holds_a_role(pg: PgDatabase) -> None:
    a, b = Leadership(pg), Leadership(pg)
    try:
        assert await a.try_take("sources")
        assert await a.try_take("sources")  # again: still its own
        assert not await b.try_take("sources")
        assert await b.try_take("telegram-polling")
        assert a.holds("sources") and not a.holds("telegram-polling")
        assert b.held == {"telegram-polling"}

        await a.release("sources")
        assert not a.holds("sources")
        assert await b.try_take("sources")
        assert not await a.try_take("sources")
    finally:
        await a.close()
        await b.close()


async def test_a_closed_holder_frees_its_roles_at_once(pg: PgDatabase) -> None:
    a, b = Leadership(pg), Leadership(pg)
    try:
        assert await a.try_take("sources")
        assert not await b.try_take("sources")
        await a.close()
        assert a.held == frozenset()
        assert await b.try_take("sources")
    finally:
        await b.close()


async def _terminate_lock_sessions(db: PgDatabase) -> None:
    """Cut every connection that holds an advisory lock in this database (as a network cut or a
    server-side kill would), and wait until their sessions have ended."""
    async with db.read() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )


async def test_a_broken_lock_connection_loses_every_role_and_the_next_try_reconnects(
    pg: PgDatabase,
) -> None:
    a, b = Leadership(pg), Leadership(pg)
    try:
        assert await a.try_take("sources") and await a.try_take("telegram-polling")
        await _terminate_lock_sessions(pg)
        assert await b.try_take("sources")  # free at once: the server ended a's session

        with pytest.raises(ConnectionError, match="cannot reach the PostgreSQL database"):
            await a.check()
        assert not a.holds("sources") and not a.holds("telegram-polling")
        assert a.held == frozenset()

        assert not await a.try_take("sources")  # reconnected; b leads it now
        assert await a.try_take("telegram-polling")
    finally:
        await a.close()
        await b.close()


CHILD = """
import asyncio, sys
from storage.pg_db import PgDatabase
from storage.pg_fleet import Leadership

async def main() -> None:
    db = await PgDatabase.open(sys.argv[1], size=1)
    lead = Leadership(db)
    assert await lead.try_take("sources")
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_when_the_holding_process_dies_a_member_takes_the_role_within_two_heartbeats(
    pg: PgDatabase, postgres_url: str
) -> None:
    heartbeat = 1.0
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        postgres_url,
        cwd=ROOT,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    seen: list[tuple[float, frozenset[str]]] = []
    taken = asyncio.Event()

    def on_change(held: frozenset[str]) -> None:
        seen.append((time.monotonic(), held))
        taken.set()

    member = FleetMember(Fleet(pg), Leadership(pg), ["sources"], on_change, heartbeat=heartbeat)
    try:
        assert child.stdout is not None and child.stderr is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
        assert line.strip() == b"held", await child.stderr.read()
        await member.start()
        assert member.held == frozenset()  # the child leads
        child.kill()
        killed = time.monotonic()
        await asyncio.wait_for(child.wait(), timeout=10)
        await asyncio.wait_for(taken.wait(), timeout=2 * heartbeat + 0.5)
        assert member.held == {"sources"}
        [(taken_at, held)] = seen
        assert held == {"sources"} and taken_at - killed <= 2 * heartbeat
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await member.stop()


# --- a fleet member -----------------------------------------------------------------------------------


async def test_members_share_the_roles_and_report_each_change_in_order(pg: PgDatabase) -> None:
    heartbeat = 0.3
    changes: dict[str, list[frozenset[str]]] = {"a": [], "b": []}
    b_leads = asyncio.Event()

    def b_changed(held: frozenset[str]) -> None:
        changes["b"].append(held)
        if held:
            b_leads.set()

    a = FleetMember(
        Fleet(pg), Leadership(pg), ROLES, changes["a"].append, heartbeat=heartbeat, host="ha"
    )
    b = FleetMember(Fleet(pg), Leadership(pg), ROLES, b_changed, heartbeat=heartbeat, host="hb")
    await a.start()
    await b.start()
    try:
        assert a.held == set(ROLES) and b.held == frozenset()
        await a.beat()
        await b.beat()
        assert a.live_count == 2 == b.live_count
        assert a.id.startswith(f"ha:{a.pid}:") and a.id != b.id
        workers = {w.id: w for w in await Fleet(pg).workers(stale_after=5)}
        assert workers[a.id].roles == tuple(sorted(ROLES)) and workers[b.id].roles == ()

        await a.stop()
        assert [w.id for w in await Fleet(pg).workers(stale_after=5)] == [b.id]  # a left
        await asyncio.wait_for(b_leads.wait(), timeout=2 * heartbeat + 1.0)
        assert changes["a"] == [frozenset(ROLES), frozenset()]
        assert changes["b"] == [frozenset(ROLES)]
        await b.beat()
        assert b.live_count == 1
    finally:
        await a.stop()
        await b.stop()
    assert changes["b"] == [frozenset(ROLES), frozenset()]


async def test_an_async_on_change_is_awaited_and_a_failing_one_is_logged(
    pg: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[frozenset[str]] = []

    async def record(held: frozenset[str]) -> None:
        got.append(held)
        raise RuntimeError("the owner broke")

    member = FleetMember(Fleet(pg), Leadership(pg), ["sources"], record, heartbeat=60)
    with caplog.at_level(logging.ERROR, logger="bot.fleet"):
        await member.start()
        await member.beat()  # no change: no call
        await member.stop()
    assert got == [frozenset({"sources"}), frozenset()]
    assert member.held == frozenset()
    assert sum("on_change" in r.getMessage() for r in caplog.records) == 2


async def test_a_worker_that_joins_sends_only_once_the_others_have_counted_it(
    pg: PgDatabase,
) -> None:
    """The others divide the bot-wide limits by the live workers they saw at their last beat: a
    newcomer waits until each has beaten since it joined, then the longest window more."""
    seen_by_a: list[tuple[str, ...]] = []
    a = FleetMember(Fleet(pg), Leadership(pg), [], lambda held: None, heartbeat=60, host="ha")
    a.on_live = seen_by_a.append
    b = FleetMember(
        Fleet(pg), Leadership(pg), [], lambda held: None, heartbeat=60, host="hb", settle=0.5
    )
    try:
        await a.start()
        assert a.counted  # alone: nobody to wait for
        await asyncio.wait_for(a.ready(), timeout=1)
        await b.start()
        ready = asyncio.create_task(b.ready())
        await b.beat()
        assert not b.counted and seen_by_a == [(a.id,)]  # a has not beaten since b joined
        await a.beat()
        a_counted_b = time.monotonic()
        assert seen_by_a[-1] == tuple(sorted((a.id, b.id)))
        assert not ready.done()
        await b.beat()
        assert b.counted
        await asyncio.wait_for(ready, timeout=5)
        assert time.monotonic() - a_counted_b >= 0.45  # a's sends at half the bot left the window
    finally:
        await b.stop()
        await a.stop()


async def _allow_connections(server: PostgresServer, dbname: str, allowed: bool) -> None:
    async with await psycopg.AsyncConnection.connect(server.dsn(), autocommit=True) as admin:
        await admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.Literal(allowed)
            )
        )
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )


async def test_an_outage_is_logged_once_and_the_member_keeps_trying(
    postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    db = await PgDatabase.open(postgres_url, size=2)
    changes: list[frozenset[str]] = []
    member = FleetMember(
        Fleet(db, timeout=0.5), Leadership(db), ["sources"], changes.append, heartbeat=60
    )
    try:
        with caplog.at_level(logging.WARNING, logger="bot.fleet"):
            await member.start()
            assert member.held == {"sources"}
            await _allow_connections(postgres_server, dbname, False)
            try:
                for _ in range(4):
                    await member.beat()
                assert member.held == frozenset()  # the lock went with its connection
                assert not member.reachable
            finally:
                await _allow_connections(postgres_server, dbname, True)
            deadline = time.monotonic() + 30
            while not member.reachable and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                await member.beat()
        lines = [r.getMessage() for r in caplog.records if r.name == "bot.fleet"]
        assert sum("cannot reach the PostgreSQL database" in line for line in lines) == 1, lines
        assert sum("answers again" in line for line in lines) == 1, lines
        assert member.held == {"sources"}
        assert changes == [frozenset({"sources"}), frozenset(), frozenset({"sources"})]
        assert [w.id for w in await Fleet(db).workers(30)] == [member.id]
    finally:
        await member.stop()
        await db.close()


# --- livedesk workers ------------------------------------------------------------------------------


def test_livedesk_workers_lists_the_fleet(tmp_path: Path, postgres_url: str) -> None:
    done = livedesk("--db", postgres_url, "workers", cwd=tmp_path, timeout=120)
    assert (done.code, done.err) == (0, "")
    assert "No worker runs on" in done.out

    async def a_fleet() -> None:
        db = await PgDatabase.open(postgres_url, size=2)
        try:
            fleet = Fleet(db)
            await fleet.join("ha:11:aaaaaa", "ha", 11)
            await fleet.heartbeat("ha:11:aaaaaa", ["sources", "telegram-polling"])
            await lease_two_deliveries(db, "ha:11:aaaaaa")
            await fleet.join("hb:22:bbbbbb", "hb", 22)
            await backdate(db, "hb:22:bbbbbb", 600)
        finally:
            await db.close()

    async def beat() -> None:
        """The live worker's heartbeat, again: a listing on a loaded machine takes seconds."""
        db = await PgDatabase.open(postgres_url, size=1)
        try:
            await Fleet(db).heartbeat("ha:11:aaaaaa", ["sources", "telegram-polling"])
        finally:
            await db.close()

    asyncio.run(a_fleet())

    done = livedesk("--db", postgres_url, "workers", cwd=tmp_path, timeout=120)
    assert (done.code, done.err) == (0, "")
    rows = {line.split()[1]: line for line in done.out.splitlines() if ":" in line and "│" in line}
    assert set(rows) == {"ha:11:aaaaaa", "hb:22:bbbbbb"}
    live, stale = rows["ha:11:aaaaaa"], rows["hb:22:bbbbbb"]
    assert " live " in live and "s ago" in live and "sources, telegram-polling" in live
    assert " 2 " in live  # leases held
    assert " stale " in stale and "10 min ago" in stale
    assert "1 live, 1 stale" in done.out

    asyncio.run(beat())
    done = livedesk("--db", postgres_url, "--json", "workers", cwd=tmp_path, timeout=120)
    assert (done.code, done.err) == (0, "")
    listed = json.loads(done.out)
    assert [(w["id"], w["host"], w["pid"], w["live"], w["leases"], w["roles"]) for w in listed] == [
        ("ha:11:aaaaaa", "ha", 11, True, 2, ["sources", "telegram-polling"]),
        ("hb:22:bbbbbb", "hb", 22, False, 0, []),
    ]
    assert listed[1]["heartbeat_age"] >= 600
    assert listed[0]["started_at"].endswith("+00:00")


def test_livedesk_workers_on_sqlite_says_one_process_serves_it(tmp_path: Path) -> None:
    db = str(tmp_path / "livedesk.db")
    done = livedesk("--db", db, "workers", cwd=tmp_path)
    assert (done.code, done.err) == (0, "")
    assert (
        done.out.count("\n") == 1
        and "SQLite store" in done.out
        and "one `livedesk run`" in done.out
    )
    done = livedesk("--db", db, "workers", "--json", cwd=tmp_path)
    assert (done.code, done.err, json.loads(done.out)) == (0, "", [])
    assert not (tmp_path / "livedesk.db").exists()  # nothing was opened, nothing created
