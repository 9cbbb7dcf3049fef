"""The PostgreSQL schema against a real server: migrations, parity with SQLite's tables, search."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.db import Database, captions_sql
from storage.pg_schema import PG_MIGRATIONS, PostgresUnusable, apply

NEWEST = len(PG_MIGRATIONS)
Connection = psycopg.AsyncConnection[Any]

# What PostgreSQL has beyond SQLite's schema: the search vector lives in posts (SQLite keeps it in
# FTS5 tables), a blog's number is a column (SQLite's implicit rowid of sources), and the fleet's
# tables and leases exist only here.
PG_ONLY_COLUMNS = {
    "posts": {"search"},
    "sources": {"number"},
    "deliveries": {"lease_owner", "lease_until"},
}
PG_ONLY_TABLES = {"livedesk_schema", "workers"}


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[Connection]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
async def store(conn: Connection) -> Connection:
    """A migrated database with one blog to file posts under."""
    await apply(conn)
    await conn.execute(
        "INSERT INTO sources (id, title, kind, added_at) "
        "VALUES ('ukraine', 'Russia-Ukraine news', 'cnn', '2022-01-21T00:00:00Z')"
    )
    return conn


async def add_post(
    conn: Connection,
    post_id: str,
    title: str,
    body: str = "",
    *,
    byline: str | None = None,
    location: str | None = None,
    images: str = "[]",
    background: str | None = None,
    rowid: int | None = None,
) -> None:
    columns = {
        "id": post_id,
        "source_id": "ukraine",
        "published_at": "2022-01-21T12:00:00Z",
        "title": title,
        "byline": byline,
        "location": location,
        "body": body,
        "images": images,
        "background": background,
        "content_hash": post_id,
        "recorded_at": "2022-01-21T12:00:05Z",
    }
    if rowid is not None:
        columns["rowid"] = str(rowid)
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    await conn.execute(f"INSERT INTO posts ({names}) VALUES ({marks})", list(columns.values()))


async def search(conn: Connection, query: str) -> list[str]:
    cur = await conn.execute(
        "SELECT id FROM posts WHERE search @@ websearch_to_tsquery('livedesk_english', %s) "
        "ORDER BY ts_rank(search, websearch_to_tsquery('livedesk_english', %s)) DESC, id",
        (query, query),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def pg_columns(conn: Connection) -> dict[str, set[str]]:
    cur = await conn.execute(
        "SELECT table_name::text, column_name::text FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    tables: dict[str, set[str]] = {}
    for table, column in await cur.fetchall():
        tables.setdefault(table, set()).add(column)
    return tables


async def pg_indexes(conn: Connection) -> set[str]:
    cur = await conn.execute(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()"
    )
    return {str(row[0]) for row in await cur.fetchall()}


async def one_value(conn: Connection, query: str, *params: object) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


# --- migrations ---------------------------------------------------------------------------------


async def test_migrations_build_an_empty_database_and_a_second_apply_does_nothing(
    conn: Connection,
) -> None:
    told: list[tuple[str, int, int]] = []
    assert await apply(conn, lambda what, done, total: told.append((what, done, total))) == NEWEST
    assert [done for _, done, _ in told] == list(range(NEWEST + 1))
    before = await pg_columns(conn), await pg_indexes(conn)

    told.clear()
    assert await apply(conn, lambda what, done, total: told.append((what, done, total))) == NEWEST
    assert told == []
    assert (await pg_columns(conn), await pg_indexes(conn)) == before
    cur = await conn.execute("SELECT version FROM livedesk_schema")
    assert await cur.fetchall() == [(NEWEST,)]


async def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """A fleet starting at once: the advisory lock lets one migrate while the others wait."""
    connections = [
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) for _ in range(3)
    ]
    try:
        versions = await asyncio.gather(*(apply(c) for c in connections))
        assert versions == [NEWEST] * 3
        cur = await connections[0].execute("SELECT version FROM livedesk_schema")
        assert await cur.fetchall() == [(NEWEST,)]
    finally:
        for connection in connections:
            await connection.close()


async def test_every_sqlite_table_column_and_index_exists(conn: Connection, tmp_path: Path) -> None:
    """The row codecs and `livedesk migrate` rely on the same names in both stores."""
    database = await Database.open(tmp_path / "livedesk.db")
    try:
        cur = await database.reader.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
        objects = [(str(t), str(n), str(s or "")) for t, n, s in await cur.fetchall()]
        virtual = [n for t, n, s in objects if t == "table" and s.startswith("CREATE VIRTUAL")]
        tables = [
            n
            for t, n, s in objects
            if t == "table" and n not in virtual and not any(n.startswith(f"{v}_") for v in virtual)
        ]
        sqlite_columns: dict[str, set[str]] = {}
        for table in tables:
            cur = await database.reader.execute(f"SELECT name FROM pragma_table_info('{table}')")
            sqlite_columns[table] = {str(row[0]) for row in await cur.fetchall()}
        sqlite_indexes = {n for t, n, s in objects if t == "index" and s}
    finally:
        await database.close()
    assert set(sqlite_columns) >= {"posts", "deliveries", "slack_replays", "fetch_errors"}

    await apply(conn)
    columns = await pg_columns(conn)
    assert set(columns) == set(sqlite_columns) | PG_ONLY_TABLES
    for table, names in sqlite_columns.items():
        assert columns[table] == names | PG_ONLY_COLUMNS.get(table, set()), table
    assert sqlite_indexes <= await pg_indexes(conn)


async def test_a_copy_keeps_sqlite_rowids_and_new_rows_number_on(store: Connection) -> None:
    await add_post(store, "copied", "Copied from SQLite", rowid=41)
    await store.execute("SELECT setval(pg_get_serial_sequence('posts', 'rowid'), 41)")
    await add_post(store, "new", "Written here")
    cur = await store.execute("SELECT id, rowid FROM posts ORDER BY rowid")
    assert await cur.fetchall() == [("copied", 41), ("new", 42)]


async def test_blog_numbers_are_given_to_the_blogs_already_there_in_the_order_they_were_added(
    conn: Connection,
) -> None:
    """Migration 3 on a database at version 2: the numbers are SQLite's rowids of a copy (blogs
    are never removed), ties in time go by id as bytes, and new blogs number on past them."""
    await conn.execute(
        "CREATE TABLE livedesk_schema (version integer NOT NULL);"
        "INSERT INTO livedesk_schema (version) VALUES (0)"
    )
    for version, migration in enumerate(PG_MIGRATIONS[:2], start=1):
        await conn.execute(migration)
        await conn.execute("UPDATE livedesk_schema SET version = %s", (version,))
    for blog, added_at in (
        ("later", "2022-03-01T00:00:00.000000Z"),
        ("b-first", "2022-01-01T00:00:00.000000Z"),
        ("a-first", "2022-01-01T00:00:00.000000Z"),
        ("Z-first", "2022-01-01T00:00:00.000000Z"),  # 'Z' sorts before 'a' as bytes
        ("middle", "2022-02-01T00:00:00.000000Z"),
    ):
        await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES (%s, %s, 'rss', %s)",
            (blog, blog, added_at),
        )
    assert await apply(conn) == NEWEST
    cur = await conn.execute("SELECT number, id FROM sources ORDER BY number")
    assert await cur.fetchall() == [
        (1, "Z-first"),
        (2, "a-first"),
        (3, "b-first"),
        (4, "middle"),
        (5, "later"),
    ]
    new = await one_value(
        conn,
        "INSERT INTO sources (id, title, kind, added_at) "
        "VALUES ('new', 'New', 'rss', '2022-04-01T00:00:00.000000Z') RETURNING number",
    )
    assert new == 6
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute(
            "INSERT INTO sources (number, id, title, kind, added_at) "
            "VALUES (6, 'twin', 'Twin', 'rss', '2022-04-01T00:00:00.000000Z')"
        )
    with pytest.raises(psycopg.errors.NotNullViolation):
        await conn.execute("UPDATE sources SET number = NULL WHERE id = 'new'")


async def test_an_empty_database_numbers_its_first_blog_1(store: Connection) -> None:
    assert await one_value(store, "SELECT number FROM sources WHERE id = 'ukraine'") == 1


async def test_another_programs_database_is_refused_untouched(conn: Connection) -> None:
    await conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
    with pytest.raises(PostgresUnusable) as refused:
        await apply(conn)
    message = str(refused.value)
    assert "\n" not in message
    assert "is not a Livedesk database" in message
    assert "invoices" in message
    assert conn.info.dbname in message
    assert (await pg_columns(conn)).keys() == {"invoices"}


async def test_a_newer_schema_is_refused(conn: Connection) -> None:
    await apply(conn)
    await conn.execute("UPDATE livedesk_schema SET version = %s", (NEWEST + 1,))
    with pytest.raises(PostgresUnusable) as refused:
        await apply(conn)
    message = str(refused.value)
    assert "\n" not in message
    assert f"schema version {NEWEST + 1}, newer than this Livedesk ({NEWEST})" in message
    assert "upgrade Livedesk" in message
    assert await one_value(conn, "SELECT version FROM livedesk_schema") == NEWEST + 1


# --- search -------------------------------------------------------------------------------------

TYPHOON = '[{"caption": "A Eurofighter Typhoon", "credit": "Getty Images", "url": "x.jpg"}]'


@pytest.fixture
async def searchable(store: Connection) -> Connection:
    await add_post(
        store,
        "sanctions",
        "Allies widen sanctions as Kharkiv shelling goes on",
        "Ministers met at a café in Brussels on Friday.\n\nJets were scrambled over the Baltic.",
        byline="By Jane Doe",
        location="Kyiv",
        images=TYPHOON,
        background="Russia invaded Ukraine in February 2022.",
    )
    await add_post(store, "markets", "Markets close higher", "Stocks rose in London.")
    return store


async def test_captions_are_read_from_the_images_json(searchable: Connection) -> None:
    captions = await one_value(
        searchable, "SELECT livedesk_captions(images) FROM posts WHERE id = 'sanctions'"
    )
    assert captions == "A Eurofighter Typhoon (Getty Images)"


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("Kharkiv", ["sanctions"]),  # a title word
        ("shelling", ["sanctions"]),
        ("Eurofighter", ["sanctions"]),  # a caption word
        ("Getty", ["sanctions"]),  # a credit
        ("Doe", ["sanctions"]),  # the byline
        ("Kyiv", ["sanctions"]),  # the location
        ("February", ["sanctions"]),  # the background
        ("Baltic", ["sanctions"]),  # the body
        ("Kharkív", ["sanctions"]),  # an accented spelling finds the plain one
        ("cafe", ["sanctions"]),  # and the plain spelling the accented one
        ("sanction", ["sanctions"]),  # stemmed: the singular finds the plural
        ("scrambling", ["sanctions"]),
        ('"widen sanctions"', ["sanctions"]),  # a phrase
        ('"sanctions widen"', []),  # the words, but not in that order
        ("Typhoon -Eurofighter", []),
        ("markets OR Kharkiv", ["markets", "sanctions"]),
        ("Mariupol", []),
    ],
)
async def test_search_finds_every_text_a_reader_sees(
    searchable: Connection, query: str, found: list[str]
) -> None:
    assert sorted(await search(searchable, query)) == found


async def test_weights_rank_title_above_location_above_body_above_captions(
    store: Connection,
) -> None:
    await add_post(store, "in-title", "Typhoon jets scrambled", "Planes flew.")
    await add_post(store, "in-location", "Air patrols", "Planes flew.", location="Typhoon base")
    await add_post(store, "in-body", "Air patrols", "Typhoon jets scrambled.")
    await add_post(
        store,
        "in-caption",
        "Air patrols",
        "Planes flew.",
        images='[{"caption": "Typhoon jets scrambled"}]',
    )
    assert await search(store, "typhoon") == ["in-title", "in-location", "in-body", "in-caption"]
    cur = await store.execute(
        "SELECT ts_rank(search, websearch_to_tsquery('livedesk_english', 'typhoon')) "
        "FROM posts ORDER BY 1 DESC"
    )
    ranks = [float(row[0]) for row in await cur.fetchall()]
    assert ranks == sorted(set(ranks), reverse=True)  # strictly: each weight counts


@pytest.mark.parametrize(
    "images",
    [
        "not json",
        '[{"caption": "cut off',
        '{"caption": "an object, not a list"}',
        '"a string"',
        '[1, "a", null, {"caption": 5}]',
        '[{"caption": "a NUL \\u0000 PostgreSQL cannot store"}]',
    ],
)
async def test_invalid_images_json_does_not_break_the_insert(
    store: Connection, images: str
) -> None:
    """SQLite's side reads unreadable images as no captions; so does PostgreSQL's."""
    await add_post(store, "odd", "Kharkiv under fire", images=images)
    assert await search(store, "Kharkiv") == ["odd"]
    assert await one_value(store, "SELECT images FROM posts") == images  # kept as it came


@pytest.mark.parametrize(
    "images",
    [
        "[]",
        TYPHOON,
        '[{"caption": "Only a caption"}]',
        '[{"credit": "Only a credit"}]',
        '[{"caption": "  padded  ", "credit": ""}, {"caption": ""}, {"caption": "second"}]',
        '[{"caption": 5, "credit": 6}]',
        "[[1], {}]",
        "not json",
    ],
)
async def test_captions_are_the_same_text_sqlite_indexes(conn: Connection, images: str) -> None:
    await apply(conn)
    with contextlib.closing(sqlite3.connect(":memory:")) as sqlite:
        (expected,) = sqlite.execute(
            f"SELECT {captions_sql(':images')}", {"images": images}
        ).fetchone()
    assert await one_value(conn, "SELECT livedesk_captions(%s)", images) == expected
