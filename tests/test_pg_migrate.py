"""`livedesk migrate`: a real SQLite store, built with the real importers and dispatcher, copied into a
real PostgreSQL; every row compared, a second run changes nothing, a grown store copies what is new,
and a different store is refused without a trace."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import storage.migrate
from bot.adapters.base import InvalidPayload
from bot.models import ImportResult, SubscriptionState
from bot.sources import parse_document
from storage.db import Database, DatabaseUnusable
from storage.feeds import FeedStore
from storage.ingest import ingest
from storage.migrate import TABLES, CopyReport, MigrateError, copy_to_postgres, run_migrate
from storage.pg_db import Connection, PgDatabase
from storage.pg_posts import PgPostStore, upsert_document
from storage.posts import PostStore
from storage.replays import ReplayStore
from storage.subscriptions import SubscriptionStore
from tests.conftest import FIXTURES
from tests.fakes.flaky import FlakyAdapter
from tests.test_dispatcher import chat, dispatcher

BLOG = FIXTURES / "cli_blog.txt"
FEED = FIXTURES / "rss2.xml"
EDIT = ("nine votes to four", "nine votes to five")


def document(path: Path, text: str | None = None) -> ImportResult:
    data = path.read_bytes() if text is None else text.encode()
    return parse_document(data, location=path.name)


async def import_file(db: Database, path: Path, text: str | None = None) -> None:
    await ingest(db, document(path, text), location=str(path))


async def build_store(path: Path) -> None:
    """A store as an operator's looks: a blog with an edited post, subscriptions (one keyword, one
    paused), deliveries sent (with their message references), dead and pending, a fetch error and
    a Slack replay signature, a followed blog."""
    async with await Database.open(path) as db:
        subs = SubscriptionStore(db)
        await subs.add(chat("everything"), created_by="u")
        await subs.add(chat("trams"), created_by="u", query="tram OR council")
        await subs.add(chat("broken"), created_by="u")
        paused, _ = await subs.add(chat("paused"), created_by="u")
        await import_file(db, BLOG)
        adapter = FlakyAdapter()
        adapter.fail("broken", *[InvalidPayload("invalid_blocks") for _ in range(10)])
        await dispatcher(db, adapter).run_until_idle()
        # An edit after the sends: a second version, and deliveries of it left pending (skipped
        # for the subscription paused since).
        await import_file(db, BLOG, BLOG.read_text().replace(*EDIT))
        await subs.set_state(paused.id, SubscriptionState.PAUSED)
        await PostStore(db).record_fetch_error("https://feeds.example.org/gone.xml", "HTTP 404")
        assert await ReplayStore(db).first_seen("v0=abc123", time.time())
        await FeedStore(db).add(str(BLOG), 60, origin="cli", title="Council")


async def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    async with await Database.open(path) as db:
        found: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            async with db.reader.execute(
                f"SELECT {table.sqlite_columns} FROM {table.name} ORDER BY {', '.join(table.key)}"
            ) as cur:
                found[table.name] = [tuple(r) for r in await cur.fetchall()]
        return found


async def pg_rows(pg: PgDatabase, *, everything: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's copied columns (`everything`: every column, PostgreSQL's own too)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with pg.read() as conn:
        for table in TABLES:
            columns = "*" if everything else ", ".join(table.columns)
            cur = await conn.execute(
                f"SELECT {columns} FROM {table.name} ORDER BY {', '.join(table.key)}"
            )
            found[table.name] = [tuple(r.values()) for r in await cur.fetchall()]
    return found


TABLES_BY_NAME = {table.name: table for table in TABLES}


def counts(report: CopyReport) -> dict[str, tuple[int, int, int]]:
    return {n: (t.copied, t.already_there, t.updated) for n, t in report.tables.items()}


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase.open(postgres_url)
    try:
        yield database
    finally:
        await database.close()


async def test_every_row_is_copied_with_its_ids(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "livedesk.db"
    await build_store(path)
    before = await sqlite_rows(path)
    # The store holds what an operator would miss if it were lost.
    states = {row[6] for row in before["deliveries"]}
    assert {"sent", "dead", "pending", "skipped"} <= states
    assert any(row[10] for row in before["deliveries"])  # message references
    assert [row[1] for row in before["post_versions"]] == [1]  # the text the edit replaced
    assert all(before[t.name] for t in TABLES)

    seen: list[tuple[str, int, int]] = []
    report = await run_migrate(
        path, postgres_url, progress=lambda what, done, total: seen.append((what, done, total))
    )

    assert counts(report) == {name: (len(rows), 0, 0) for name, rows in before.items()}
    assert report.copied == sum(len(rows) for rows in before.values())
    assert "***" not in report.target and report.target.startswith("postgresql://")
    assert ("copying posts", len(before["posts"]), len(before["posts"])) in seen
    assert ("copying deliveries", 0, len(before["deliveries"])) in seen
    pg = await PgDatabase.open(postgres_url)
    try:
        assert await pg_rows(pg) == before
        async with pg.read() as conn:
            # The generated search column indexed the copied posts, the edit included.
            cur = await conn.execute(
                "SELECT count(*) AS n FROM posts "
                "WHERE search @@ phraseto_tsquery('livedesk_english', 'nine votes to five')"
            )
            assert (await cur.fetchone()) == {"n": 1}
            # New rows get ids past the copied ones.
            for table, column in (
                ("sources", "number"),
                ("subscriptions", "id"),
                ("deliveries", "id"),
                ("posts", "rowid"),
            ):
                at = TABLES_BY_NAME[table].columns.index(column)
                top = max(row[at] for row in before[table])
                cur = await conn.execute(
                    f"SELECT nextval(pg_get_serial_sequence('{table}', '{column}')) AS n"
                )
                assert (await cur.fetchone()) == {"n": top + 1}
    finally:
        await pg.close()


async def test_a_second_run_copies_nothing_and_changes_nothing(
    tmp_path: Path, pg: PgDatabase
) -> None:
    path = tmp_path / "livedesk.db"
    await build_store(path)
    await copy_to_postgres(path, pg)
    first = await pg_rows(pg, everything=True)
    again = await copy_to_postgres(path, pg)
    assert again.copied == 0 and again.updated == 0
    assert counts(again) == {name: (0, len(rows), 0) for name, rows in first.items()}
    assert await pg_rows(pg, everything=True) == first


async def test_a_grown_store_copies_what_is_new_and_what_sqlite_finished(
    tmp_path: Path, pg: PgDatabase
) -> None:
    path = tmp_path / "livedesk.db"
    await build_store(path)
    await copy_to_postgres(path, pg)
    async with await Database.open(path) as db:
        await import_file(db, FEED)  # a second blog
        await SubscriptionStore(db).add(chat("late"), created_by="u", backfill=3)
        edited = BLOG.read_text().replace(*EDIT).replace("next spring", "next summer")
        await import_file(db, BLOG, edited)  # a third version
        await dispatcher(db, FlakyAdapter()).run_until_idle()  # the pending ones are sent
    grown = await sqlite_rows(path)

    report = await copy_to_postgres(path, pg)

    assert await pg_rows(pg) == grown
    tables = report.tables
    assert tables["sources"].copied == 1 and tables["subscriptions"].copied == 1
    assert tables["posts"].copied > 0 and tables["posts"].updated == 1  # the edited post
    assert tables["post_versions"].copied == 1  # the second version, replaced by the third
    assert tables["deliveries"].updated > 0  # pending when first copied, sent since
    assert tables["slack_replays"] == type(tables["slack_replays"])(0, 1, 0)
    assert (await copy_to_postgres(path, pg)).copied == 0


async def test_what_postgres_did_since_is_not_undone(tmp_path: Path, pg: PgDatabase) -> None:
    """Once Livedesk runs on PostgreSQL it is the live store: a later copy of the older SQLite file
    neither resends what PostgreSQL sent nor removes what it added."""
    path = tmp_path / "livedesk.db"
    await build_store(path)
    await copy_to_postgres(path, pg)
    async with pg.write() as conn:
        await conn.execute(
            "UPDATE deliveries SET state = 'sent', message_ref = 'pg-1' WHERE state = 'pending'"
        )
        await conn.execute(
            "INSERT INTO subscriptions (platform, address, target_kind, created_by, created_at) "
            "VALUES ('fake', 'new-on-pg', 'group', 'u', '2026-12-01T00:00:00.000000Z')"
        )
        await conn.execute("UPDATE subscriptions SET state = 'active' WHERE state = 'paused'")
    after = await pg_rows(pg, everything=True)

    report = await copy_to_postgres(path, pg)

    assert report.copied == 0 and report.updated == 0
    assert await pg_rows(pg, everything=True) == after


async def test_a_different_store_is_refused_and_nothing_is_copied(
    tmp_path: Path, pg: PgDatabase
) -> None:
    first, other = tmp_path / "first.db", tmp_path / "other.db"
    await build_store(first)
    await copy_to_postgres(first, pg)
    before = await pg_rows(pg, everything=True)
    async with await Database.open(other) as db:  # another blog under the same post numbers
        await import_file(db, FEED)

    with pytest.raises(MigrateError) as refused:
        await copy_to_postgres(other, pg)

    message = str(refused.value)
    assert "\n" not in message
    # Its blog is refused first: it has the number of the blog already there.
    assert message.startswith(
        f"{pg.shown_as} already holds a different Livedesk store than {other}: sources id 'harbour"
    )
    assert message.endswith(
        "of the file has the same blog number as another row there; copy into an empty database"
    )
    assert await pg_rows(pg, everything=True) == before  # not even the other blog's source row


async def test_posts_under_the_same_numbers_in_another_store_are_refused(
    tmp_path: Path, pg: PgDatabase
) -> None:
    first, other = tmp_path / "first.db", tmp_path / "other.db"
    await build_store(first)
    await copy_to_postgres(first, pg)
    before = await pg_rows(pg, everything=True)
    async with await Database.open(other) as db:  # another blog, numbered past the first one
        await import_file(db, FEED)
    with sqlite3.connect(other) as raw:
        raw.execute("UPDATE sources SET rowid = 2")

    with pytest.raises(MigrateError) as refused:
        await copy_to_postgres(other, pg)

    message = str(refused.value)
    assert message.startswith(
        f"{pg.shown_as} already holds a different Livedesk store than {other}: posts rowid 1 is "
        "not the same row (id: 'live-city-council"
    )
    assert message.endswith("in the file); copy into an empty database")
    assert await pg_rows(pg, everything=True) == before  # not even the other blog's source row


async def test_blog_numbers_survive_the_copy_and_new_blogs_number_on(
    tmp_path: Path, pg: PgDatabase
) -> None:
    """The numbers an operator types (`--source 7`) are SQLite's, whatever order the blogs were
    added in; a blog added on PostgreSQL afterwards takes the next one, as SQLite would."""
    path = tmp_path / "livedesk.db"
    async with await Database.open(path) as db:
        await import_file(db, FEED)
        await import_file(db, BLOG)
    with sqlite3.connect(path) as raw:  # numbers with a gap, against the order of added_at
        raw.execute("UPDATE sources SET rowid = 11 WHERE rowid = 1")  # the feed, added first
        raw.execute("UPDATE sources SET rowid = 7 WHERE rowid = 2")
        numbers = dict(raw.execute("SELECT id, rowid FROM sources").fetchall())
    assert sorted(numbers.values()) == [7, 11]

    await copy_to_postgres(path, pg)

    store = PgPostStore(pg)
    assert {info.source.id: info.number for info in await store.sources()} == numbers
    blog = next(i for i, n in numbers.items() if n == 7)
    assert [s.source.id for s in await store.find_sources("#7")] == [blog]
    async with pg.write() as conn:
        upserted = await upsert_document(conn, _other_blog())
    assert upserted.new_source
    infos = {info.source.id: info.number for info in await store.sources()}
    assert infos == {**numbers, "elsewhere": 12}
    async with pg.write() as conn:  # a writer taking the default gets the next number too
        cur = await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) "
            "VALUES ('by-default', 'D', 'rss', '2026-12-01T00:00:00.000000Z') RETURNING number"
        )
        assert await cur.fetchone() == {"number": 13}


def _other_blog() -> ImportResult:
    """A blog of its own, with one post, that no store built here holds."""
    result = document(FEED)
    source = result.source.model_copy(
        update={"id": "elsewhere", "title": "Elsewhere", "url": "https://elsewhere.example/"}
    )
    post = result.posts[0].model_copy(update={"id": "elsewhere:1", "source_id": "elsewhere"})
    return ImportResult(source=source, posts=(post,))


async def test_an_ingest_at_the_same_time_waits_for_the_copy(
    tmp_path: Path, pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Livedesk ingesting into the database while the copy runs would otherwise number its new
    post (and blog) from what it sees, without the copy's uncommitted rows: the same numbers."""
    path = tmp_path / "livedesk.db"
    await build_store(path)
    copied = await sqlite_rows(path)
    ingesting: list[asyncio.Task[Any]] = []

    async def ingest_on_pg() -> Any:
        async with pg.write() as conn:
            return await upsert_document(conn, _other_blog())

    async def waiting_for_the_lock() -> int:
        async with pg.read() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cur.fetchone()
            return int(row["n"]) if row else 0

    move_sequence = storage.migrate._move_sequence

    async def slow_move_sequence(conn: Connection, table: str, column: str) -> None:
        if not ingesting:  # every row is in, uncommitted: an ingest starts now
            ingesting.append(asyncio.create_task(ingest_on_pg()))
            for _ in range(200):
                if await waiting_for_the_lock():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the ingest did not wait for the copy")
            assert not ingesting[0].done()
        await move_sequence(conn, table, column)

    monkeypatch.setattr(storage.migrate, "_move_sequence", slow_move_sequence)
    report = await copy_to_postgres(path, pg)
    upserted = await ingesting[0]

    assert report.copied == sum(len(rows) for rows in copied.values())
    top = max(row[0] for row in copied["posts"])
    assert [change.rowid for change in upserted.changes] == [top + 1]
    numbers = {i.source.id: i.number for i in await PgPostStore(pg).sources()}
    assert numbers["elsewhere"] == max(row[1] for row in copied["sources"]) + 1
    rows = await pg_rows(pg)
    assert {name: rows[name] for name in ("subscriptions", "deliveries")} == {
        name: copied[name] for name in ("subscriptions", "deliveries")
    }


async def test_the_same_blog_imported_into_another_store_is_refused(
    tmp_path: Path, pg: PgDatabase
) -> None:
    first, other = tmp_path / "first.db", tmp_path / "other.db"
    for path in (first, other):
        async with await Database.open(path) as db:
            await import_file(db, FEED)  # the same blog, imported on its own into each store
    await copy_to_postgres(first, pg)
    with pytest.raises(
        MigrateError, match=r": sources id 'harbour.*' is not the same row \(added_at: "
    ):
        await copy_to_postgres(other, pg)


async def test_a_missing_or_foreign_file_is_one_line(tmp_path: Path, pg: PgDatabase) -> None:
    with pytest.raises(DatabaseUnusable, match="no such Livedesk database file"):
        await copy_to_postgres(tmp_path / "missing.db", pg)
    assert not (tmp_path / "missing.db").exists()
    foreign = tmp_path / "other.db"
    foreign.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseUnusable, match="not a Livedesk database"):
        await copy_to_postgres(foreign, pg)


async def test_small_batches_copy_the_same_rows(
    tmp_path: Path, pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging through SQLite by key (a composite one for post_versions) loses and repeats nothing."""
    monkeypatch.setattr(storage.migrate, "BATCH", 2)
    path = tmp_path / "livedesk.db"
    await build_store(path)
    async with await Database.open(path) as db:  # replaced versions of two posts: several pages
        edited = BLOG.read_text().replace(*EDIT)
        for edit in (("next spring", "next summer"), ("two years", "three years")):
            edited = edited.replace(*edit)
            await import_file(db, BLOG, edited)
    seen: list[tuple[str, int, int]] = []
    await copy_to_postgres(path, pg, progress=lambda *told: seen.append(told))
    rows = await sqlite_rows(path)
    assert await pg_rows(pg) == rows
    versions = len(rows["post_versions"])
    assert versions == 3 and len({row[0] for row in rows["post_versions"]}) == 2
    assert [d for w, d, _ in seen if w == "copying post_versions"] == [
        *range(0, versions, 2),
        versions,
    ]


async def test_a_row_postgres_cannot_hold_is_one_line_and_copies_nothing(
    tmp_path: Path, pg: PgDatabase
) -> None:
    """SQLite text may hold a NUL character, PostgreSQL text may not: the copy stops, naming the
    table, and leaves the database as it was (here: empty)."""
    path = tmp_path / "livedesk.db"
    await build_store(path)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE post_versions SET body = 'a' || char(0) || 'b' WHERE version = 1")
    with pytest.raises(MigrateError) as refused:
        await copy_to_postgres(path, pg)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot copy {path} into {pg.shown_as} (copying post_versions; nothing was copied): "
    )
    assert "NUL" in message
    assert all(rows == [] for rows in (await pg_rows(pg)).values())
