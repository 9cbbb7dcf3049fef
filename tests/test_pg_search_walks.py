"""How PostgreSQL search finds its posts (storage.pg_search): a rare query is read whole through its
GIN index, a common one walked newest first, tier by tier, until the page is full. Whatever the
way, the page, the ranks, the count and `has_more` are those of ranking every match at once (the
order the search had before: tier, then published_at, then rowid, newest first).

The ways are forced by shrinking the thresholds (the probe, the walk's limit, the cap of a GIN read)
on one corpus whose publication order is not its import order; and the work a common word costs
is counted in posts examined (EXPLAIN ANALYZE of each statement the search ran), not in time.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from storage import pg_search
from storage.models import Image, Post
from storage.pg_db import PgDatabase
from storage.pg_schema import PG_MIGRATIONS
from storage.pg_search import TIER_WEIGHTS, search, tsquery
from storage.query import compile_query
from storage.values import SearchPage
from tests.test_pg_search import CTYPE, START, _recreated, insert_posts

WORDS = [f"w{n:02d}" for n in range(40)]
"""w00 is in most posts, w39 in a handful (a Zipf-like spread)."""
WAYS: dict[str, dict[str, int]] = {
    "read whole": {"RANK_ALL_UNDER": 1_000_000},
    "walked": {"RANK_ALL_UNDER": 0, "PROBE_POSTS": 8},
    "short walks, then the index": {"RANK_ALL_UNDER": 40, "PROBE_POSTS": 8, "WALK_MAX": 48},
    "short walks, then to the end": {"RANK_ALL_UNDER": 2, "PROBE_POSTS": 8, "WALK_MAX": 48},
}
QUERIES = [
    "w00",
    "w03",
    "w25",
    "w39",
    "w01 w02",
    '"w00 w01"',
    '"w05 w06"',
    "w1*",
    "w3*",
    "w00 OR w30",
    "w00 -w20",
    "w04 -w30",
    "(w07 OR w08) -w02",
    "Ridge",
    "Keller",
    "Reuters",
    "nothingmatches",
]


def _words(rng: random.Random, count: int) -> str:
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    return " ".join(rng.choices(WORDS, weights=weights, k=count))


def corpus(size: int = 320) -> list[Post]:
    """Posts whose publication order is shuffled against their import order, some at the same
    minute, over two blogs, with bylines, locations, captions and background now and then."""
    rng = random.Random(11)
    minutes = [rng.randrange(size // 2) for _ in range(size)]
    posts: list[Post] = []
    for n in range(size):
        caption = _words(rng, 5) if n % 4 == 0 else None
        posts.append(
            Post(
                id=f"post-{n}",
                source_id="front" if n % 3 else "wire",
                published_at=START + timedelta(minutes=minutes[n]),
                title=_words(rng, 4).capitalize(),
                byline="By Ada Keller" if n % 5 == 0 else None,
                location="Ridge" if n % 7 == 0 else None,
                body=(_words(rng, 30) + ".", _words(rng, 20) + "."),
                images=(Image(caption=caption, credit="Reuters"),) if caption else (),
                background=_words(rng, 12) if n % 6 == 0 else None,
            )
        )
    return posts


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(_recreated(postgres_url, CTYPE), size=2)
    try:
        await insert_posts(db, corpus())
        yield db
    finally:
        await db.close()


async def ranked_at_once(db: PgDatabase, text: str, source_id: str | None) -> list[tuple[str, int]]:
    """(id, tier) of every match in rank order, by one statement that tiers them all."""
    query = compile_query(text)
    match, marks = tsquery(query.match), tsquery(query.marks)
    cases: list[str] = []
    params: list[object] = []
    for tier, weights in enumerate(TIER_WEIGHTS[:-1]):
        expression = marks if tier < 2 else match
        cases.append(f"WHEN ts_filter(p.search, '{weights}') @@ {expression.sql} THEN {tier}")
        params.extend(expression.params)
    sql = (
        f"SELECT p.id, CASE {' '.join(cases)} ELSE {len(TIER_WEIGHTS) - 1} END AS tier "
        f"FROM posts p WHERE p.search @@ {match.sql}"
    )
    params.extend(match.params)
    if source_id is not None:
        sql += " AND p.source_id = %s"
        params.append(source_id)
    sql += " ORDER BY tier, p.published_at DESC, p.rowid DESC"
    async with db.read() as conn:
        cur = await conn.execute(sql, params)
        return [(str(row["id"]), int(row["tier"])) for row in await cur.fetchall()]


def _page(page: SearchPage) -> tuple[object, ...]:
    return (
        [(hit.post.id, hit.rank) for hit in page.hits],
        page.total,
        page.total_is_estimate,
        page.has_more,
        [(hit.title.plain, hit.snippet.plain, hit.snippet.where) for hit in page.hits],
    )


@pytest.mark.parametrize("source_id", [None, "wire"])
async def test_every_way_finds_the_page_of_ranking_every_match(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch, source_id: str | None
) -> None:
    # Counted exactly up to 25 matches among the newest 200 posts (of 320): estimates happen too.
    monkeypatch.setattr(pg_search, "COUNT_WINDOW", 25)
    monkeypatch.setattr(pg_search, "COUNT_SPAN", 200)
    for text in QUERIES:
        everything = await ranked_at_once(pg, text, source_id)
        for number, per_page in ((1, 5), (2, 5), (1, 50), (3, 7), (40, 10)):
            pages: dict[str, tuple[object, ...]] = {}
            for way, settings in WAYS.items():
                with monkeypatch.context() as patched:
                    for name, value in settings.items():
                        patched.setattr(pg_search, name, value)
                    found = await search(
                        pg, text, page=number, per_page=per_page, source_id=source_id
                    )
                start = (number - 1) * per_page
                expected = [(i, float(t)) for i, t in everything[start : start + per_page]]
                assert [(hit.post.id, hit.rank) for hit in found.hits] == expected, (text, way)
                assert found.has_more is (len(everything) > start + per_page), (text, way)
                pages[way] = _page(found)
            first, *others = pages.values()
            for way, other in zip(list(pages)[1:], others, strict=True):
                assert other == first, (text, number, per_page, way)
        assert everything or text == "nothingmatches"


async def test_counts_are_those_of_counting_the_newest_rowids(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count walks the newest COUNT_SPAN rowids for at most COUNT_WINDOW + 1 matches, as
    SQLite's does, whichever way the matches were found."""
    monkeypatch.setattr(pg_search, "COUNT_WINDOW", 25)
    monkeypatch.setattr(pg_search, "COUNT_SPAN", 200)
    async with pg.read() as conn:
        cur = await conn.execute("SELECT min(rowid) AS low, max(rowid) AS high FROM posts")
        bounds = await cur.fetchone()
    assert bounds is not None
    low, high = int(bounds["low"]), int(bounds["high"])
    for text in ("w00", "w03", "w25", "w39", '"w00 w01"'):
        match = tsquery(compile_query(text).match)
        async with pg.read() as conn:
            cur = await conn.execute(
                f"SELECT p.rowid FROM posts p WHERE p.search @@ {match.sql} AND p.rowid > %s "
                "ORDER BY p.rowid DESC LIMIT 26",
                (*match.params, high - 200),
            )
            rowids = [int(row["rowid"]) for row in await cur.fetchall()]
        if len(rowids) > 25:
            spread = 25 * (high - low + 1) / (high - rowids[24] + 1)
            expected = (max(26, pg_search._two_figures(spread)), True)
        else:
            expected = (pg_search._two_figures(len(rowids) * (high - low + 1) / 200), True)
        for way, settings in WAYS.items():
            with monkeypatch.context() as patched:
                for name, value in settings.items():
                    patched.setattr(pg_search, name, value)
                page = await search(pg, text, per_page=1)
            assert (page.total, page.total_is_estimate) == expected, (text, way)


# --- the work a common word costs ----------------------------------------------------------------


async def _fill(db: PgDatabase, posts: int) -> None:
    """`posts` posts in one statement: `ceasefire` in nine of ten bodies, `truce` in one title."""
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('bulk', 'Bulk', 'rss', 'now')"
        )
        await conn.execute(
            "INSERT INTO posts (id, source_id, published_at, title, body, images, content_hash, "
            "recorded_at) SELECT 'bulk-' || n, 'bulk', "
            "to_char(timestamp '2022-01-01' + n * interval '1 minute', "
            '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'), '
            "CASE WHEN n = 7 THEN 'Truce talks' ELSE 'Update ' || n END, "
            "CASE WHEN n %% 10 = 0 THEN 'Quiet day.' ELSE 'The ceasefire held overnight.' END, "
            "%s, 'h', 'now' FROM generate_series(1, %s) AS n",
            (json.dumps([{"caption": "A street", "credit": "Reuters", "url": None}]), posts),
        )


async def _examined(db: PgDatabase, statements: list[tuple[str, list[Any]]]) -> int:
    """Rows of `posts` the statements read (EXPLAIN ANALYZE: rows out, and rows filtered away)."""

    def walk(node: dict[str, Any]) -> int:
        own = 0
        if node.get("Relation Name") == "posts":
            loops = int(node.get("Actual Loops", 1))
            own = loops * (
                int(node.get("Actual Rows", 0))
                + int(node.get("Rows Removed by Filter", 0))
                + int(node.get("Rows Removed by Index Recheck", 0))
            )
        return own + sum(walk(child) for child in node.get("Plans", []))

    total = 0
    async with db.read() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for sql, params in statements:
            cur = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            row = await cur.fetchone()
            assert row is not None
            plan = row["QUERY PLAN"]
            total += walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return total


async def test_a_common_word_reads_a_small_part_of_its_matches(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """9,000 of 10,000 posts hold `ceasefire`: its first page and its count read the newest
    posts only (the count's 1,001 matches are most of that), not the 9,000 matches."""
    db = await PgDatabase.open(_recreated(postgres_url, CTYPE), size=1)
    try:
        await _fill(db, 10_000)
        async with db.write() as conn:
            await conn.execute("ANALYZE posts")
        statements: list[tuple[str, list[Any]]] = []
        rows = pg_search._Walker._rows

        async def recorded(walker: pg_search._Walker, sql: str, params: list[Any]) -> Any:
            statements.append((sql, params))
            return await rows(walker, sql, params)

        monkeypatch.setattr(pg_search._Walker, "_rows", recorded)
        page = await search(db, "ceasefire", per_page=10)
        assert [hit.post.id for hit in page.hits] == [
            f"bulk-{n}" for n in range(9999, 9988, -1) if n % 10
        ]
        assert page.total_is_estimate and page.total_label == "about 9,000"
        assert statements
        common = await _examined(db, statements)
        assert common < 2_000, common

        statements.clear()
        rare = await search(db, "truce", per_page=10)
        assert [hit.post.id for hit in rare.hits] == ["bulk-7"] and rare.total == 1
        assert await _examined(db, statements) <= pg_search.PROBE_POSTS + 10
    finally:
        await db.close()


# --- the schema ------------------------------------------------------------------------------------


async def test_vectors_stay_in_the_row_and_each_tier_has_an_index(pg: PgDatabase) -> None:
    async with pg.read() as conn:
        cur = await conn.execute(
            "SELECT c.reltoastrelid::regclass::text AS toast FROM pg_class c "
            "WHERE c.relname = 'posts'"
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(f"SELECT count(*) AS n FROM {row['toast']}")
        toasted = await cur.fetchone()
        assert toasted is not None and toasted["n"] == 0  # 320 posts, none of their vectors there
        cur = await conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'posts' "
            "AND indexdef LIKE '%%ts_filter%%' ORDER BY indexname"
        )
        indexes = {str(r["indexname"]): str(r["indexdef"]) for r in await cur.fetchall()}
    assert set(indexes) == {"posts_search_body", "posts_search_heads", "posts_search_title"}
    async with pg.read() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for weights, index in (("{a}", "title"), ("{a,b}", "heads"), ("{c}", "body")):
            cur = await conn.execute(
                f"EXPLAIN SELECT rowid FROM posts p WHERE ts_filter(p.search, '{weights}') @@ "
                "to_tsquery('livedesk_english', 'w39')"
            )
            plan = " ".join(str(r["QUERY PLAN"]) for r in await cur.fetchall())
            assert f"posts_search_{index}" in plan, plan


async def _toasted(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many chunks the posts table keeps in its TOAST table."""
    cur = await conn.execute(
        "SELECT c.reltoastrelid::regclass::text FROM pg_class c WHERE c.relname = 'posts'"
    )
    row = await cur.fetchone()
    assert row is not None
    cur = await conn.execute(f"SELECT count(*) FROM {row[0]}")
    counted = await cur.fetchone()
    assert counted is not None
    return int(counted[0])


async def test_migration_6_moves_the_stored_vectors_into_their_rows(postgres_url: str) -> None:
    """A store at schema 4 (long posts' vectors in the TOAST table) searches the same after
    migration 6, with every vector in its row and the tier indexes there."""
    url = _recreated(postgres_url, CTYPE)
    rng = random.Random(5)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE livedesk_schema (version integer NOT NULL);"
            "CREATE UNIQUE INDEX livedesk_schema_one_row ON livedesk_schema ((true));"
            "INSERT INTO livedesk_schema (version) VALUES (0)"
        )
        for version, migration in enumerate(PG_MIGRATIONS[:4], start=1):
            await conn.execute(migration)
            await conn.execute("UPDATE livedesk_schema SET version = %s", (version,))
        await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('s', 'S', 'rss', 'now')"
        )
        for n in range(40):
            body = " ".join(f"v{rng.randrange(4000)}" for _ in range(400))
            await conn.execute(
                "INSERT INTO posts (id, source_id, published_at, title, body, content_hash, "
                "recorded_at) VALUES (%s, 's', %s, %s, %s, 'h', 'now')",
                (f"p{n}", f"2022-01-01T00:{n:02d}:00.000000Z", f"Post v{n}", body),
            )
        assert await _toasted(conn) > 0  # schema 4 keeps these vectors out of their rows
    db = await PgDatabase.open(url, size=1)  # migrates to the newest schema
    try:
        async with db.read() as conn:
            cur = await conn.execute("SELECT version FROM livedesk_schema")
            row = await cur.fetchone()
            assert row is not None and row["version"] == len(PG_MIGRATIONS)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await _toasted(conn) == 0
        for text in ("v7", "v1*", "v12 OR v300", '"post v3"'):
            page = await search(db, text, per_page=50)
            expected = await ranked_at_once(db, text, None)
            assert expected, text
            assert [(hit.post.id, hit.rank) for hit in page.hits] == [
                (post_id, float(tier)) for post_id, tier in expected
            ], text
    finally:
        await db.close()


async def test_a_long_post_still_stores(pg: PgDatabase) -> None:
    """A post larger than a page keeps working: PostgreSQL moves what does not fit out of the row."""
    body = tuple(
        f"Paragraph {n} about the w39 ceasefire and {'more words ' * 40}" for n in range(60)
    )
    post = Post(id="long", source_id="front", published_at=START, title="Long read", body=body)
    await insert_posts(pg, [post])
    page = await search(pg, '"long read"')
    assert [hit.post.id for hit in page.hits] == ["long"]
    assert (await search(pg, "paragraph")).hits[0].post.id == "long"


async def test_search_statements_are_never_prepared(postgres_url: str) -> None:
    """psycopg prepares a statement after five runs; a prepared statement's generic plan cannot see
    the words (a rare and a common word would share one plan), so search asks it not to."""
    db = await PgDatabase.open(_recreated(postgres_url, CTYPE), size=1)
    try:
        await insert_posts(db, corpus(40))
        for _ in range(8):
            for text in ("w00", "w39", "w1*"):
                await search(db, text, per_page=3)
        async with db.read() as conn:  # the pool's one connection: the one that searched
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [str(row["statement"]) for row in await cur.fetchall()]
        assert prepared  # the inserts above were prepared: the check sees that connection's
        assert not [sql for sql in prepared if "@@" in sql or "ts_headline" in sql], prepared
    finally:
        await db.close()


async def test_a_rare_word_is_ranked_and_shown_in_four_statements(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the probe's window, a rare word's every match is read with its tier in the probe's
    own statement, and the page with every headline (a caption's only where the text holds no
    match) in one more: BEGIN, the probe with the matches, the page, COMMIT. The page is the
    ranked one."""
    db = await PgDatabase.open(_recreated(postgres_url, CTYPE), size=1)
    try:
        old = START - timedelta(days=30)  # older than the probe's window of the newest posts
        kestrel = Image(url="https://example.com/k.jpg", caption="A kestrel hovers")
        rare = [
            Post(
                id=post_id,
                source_id="front",
                published_at=old + timedelta(minutes=minutes),
                title=title,
                body=[body],
                images=images,
            )
            for post_id, minutes, title, body, images in [
                ("in-body", 3, "Harbour", "A kestrel nests on the crane.", []),
                ("in-title", 0, "Kestrel over the port", "Birds return to the docks.", []),
                ("in-caption", 6, "Docks", "Cranes stand still.", [kestrel]),
            ]
        ]
        await insert_posts(db, [*rare, *corpus(pg_search.PROBE_POSTS + 40)])
        statements: list[str] = []
        execute = psycopg.AsyncConnection.execute

        async def recorded(conn: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            statements.append(str(query).split(" ", 1)[0])
            return await execute(conn, query, params, **kw)

        monkeypatch.setattr(psycopg.AsyncConnection, "execute", recorded)
        page = await search(db, "kestrel", per_page=10)
        assert [hit.post.id for hit in page.hits] == ["in-title", "in-body", "in-caption"]
        assert [hit.snippet.where for hit in page.hits] == ["text", "text", "caption"]
        assert "kestrel" in page.hits[1].snippet.plain and page.total == 3
        assert statements == ["BEGIN", "WITH", "SELECT", "COMMIT"], statements
    finally:
        await db.close()


@pytest.mark.parametrize(
    "text",
    [
        "w01",
        "w02 w05",
        '"w00 w01"',
        "w1*",
        '"w00 w1"*',
        "a*",
        "w00 -w03",
        "w1* -w03",
        "w07 OR w2*",
        "the",
        "ridge OR keller",
    ],
)
async def test_a_tier_checked_with_weighted_lexemes_is_the_filtered_vector(
    pg: PgDatabase, text: str
) -> None:
    """A tier's check on posts already read (`search @@` the query with weights) finds exactly the
    posts its index form (`ts_filter(search, weights) @@` the query) finds, for every tier."""
    query = compile_query(text)
    conds = pg_search._tiers(tsquery(query.match), tsquery(query.marks))[:-1]
    assert all(cond.check is not None for cond in conds)
    tiered = 0
    async with pg.read() as conn:
        for cond in conds:
            found = []
            for form in (cond.sql, cond.on_row):
                cur = await conn.execute(
                    f"SELECT p.rowid FROM posts p WHERE {form} ORDER BY p.rowid", cond.params
                )
                found.append([row["rowid"] for row in await cur.fetchall()])
            assert found[0] == found[1], cond.sql
            tiered += len(found[0])
    assert tiered or text == "the"  # a stop word alone matches nothing; every other query some
