"""Search on PostgreSQL (storage.pg_search): the SQLite search's tests, on a real server.

Posts are written here with plain SQL (the PostgreSQL post store is another module's): the generated
`search` column indexes them as the store's own inserts would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from storage.codecs import images_json, to_db_time
from storage.index_text import joined_words
from storage.models import Post
from storage.pg_db import PgDatabase
from storage.pg_search import TsQuery, post_matches, tsquery
from storage.query import HOW_TO, QueryError, compile_query

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(postgres_url, size=2)
    try:
        yield db
    finally:
        await db.close()


async def insert_posts(db: PgDatabase, posts: Iterable[Post]) -> dict[str, int]:
    """Store the posts (and their blogs) as the post store would; their rowids by id."""
    rowids: dict[str, int] = {}
    async with db.write() as conn:
        for post in posts:
            await conn.execute(
                "INSERT INTO sources (id, title, kind, added_at) VALUES (%s, %s, 'page-text', %s) "
                "ON CONFLICT (id) DO NOTHING",
                (post.source_id, post.source_id.title(), to_db_time(START)),
            )
            texts = [post.title, post.byline, *post.body, post.background, post.location]
            for image in post.images:
                texts += [image.caption, image.credit]
            cur = await conn.execute(
                "INSERT INTO posts (id, source_id, published_at, updated_at, title, byline, "
                "authors, location, body, images, background, permalink, content_hash, version, "
                "recorded_at, time_estimated, joined_words) VALUES "
                "(%s, %s, %s, NULL, %s, %s, '[]', %s, %s, %s, %s, %s, 'x', 1, %s, 0, %s) "
                "RETURNING rowid",
                (
                    post.id,
                    post.source_id,
                    to_db_time(post.published_at),
                    post.title,
                    post.byline,
                    post.location,
                    "\n\n".join(post.body),
                    images_json(post.images),
                    post.background,
                    post.permalink,
                    to_db_time(START),
                    joined_words(texts) or None,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            rowids[post.id] = int(row["rowid"])
    return rowids


def _post(
    n: int, title: str, body: str, *, source: str = "blog", byline: str | None = None
) -> Post:
    return Post(
        id=f"{source}-{n}",
        source_id=source,
        published_at=START + timedelta(minutes=n),
        title=title,
        byline=byline,
        body=(body,),
    )


# --- the translator ---------------------------------------------------------------------------------


def test_tsquery_of_a_phrase_is_a_parameter() -> None:
    assert tsquery('"u s sanctions"') == TsQuery(
        "phraseto_tsquery('livedesk_english', %s)", ("u s sanctions",)
    )


def test_tsquery_keeps_fts5_precedence_not_and_or() -> None:
    compiled = tsquery('"a" OR "b" AND "c" NOT "d"')
    assert compiled.params == ("a", "b", "c", "d")
    p = "phraseto_tsquery('livedesk_english', %s)"
    assert compiled.sql == f"({p} || ({p} && ({p} && !!{p})))"
    grouped = tsquery('("a" OR "b") AND "c"')
    assert grouped.sql == f"(({p} || {p}) && {p})"


def test_tsquery_prefix_and_phrase_prefix() -> None:
    single = tsquery('"blink"*')
    assert single.params == ("blink", "blink")
    assert "to_tsquery('livedesk_english', %s || ':*')" in single.sql
    assert "to_tsquery('simple', %s || ':*')" in single.sql
    phrase = tsquery('"u s"*')
    assert phrase.params == ("u", "s", "s")
    assert phrase.sql.startswith("(phraseto_tsquery('livedesk_english', %s) <-> ")


_FRAGMENTS = (
    "phraseto_tsquery('livedesk_english', %s)",
    "(SELECT CASE WHEN numnode(q) = 0 THEN to_tsquery('simple', %s || ':*') ELSE q END "
    "FROM to_tsquery('livedesk_english', %s || ':*') AS q)",
)


@pytest.mark.parametrize(
    "text",
    [
        "sanctions",
        '"written response"',
        "Blink*",
        "U.S.",
        "de-escalate",
        "de escalate",
        "Lavrov -Blinken",
        "sanctions OR NATO -Russia",
        "a AND NOT b",
        "Kyiv",
        "US-Russia talks",
        '"u.s. sanctions"*',
        "İstanbul",
    ],
)
def test_tsquery_reads_whatever_the_compiler_writes(text: str) -> None:
    query = compile_query(text)
    for expression in (query.match, query.marks):
        compiled = tsquery(expression)
        assert compiled.sql.count("%s") == len(compiled.params)
        rest = compiled.sql
        for fragment in _FRAGMENTS:
            rest = rest.replace(fragment, "")
        assert set(rest) <= set("()&|!<-> "), rest  # nothing of the query's text is SQL


@pytest.mark.parametrize(
    "match",
    [
        "",
        "sanctions",
        '"Sanctions"',
        '"a" "b"',
        '"a" AND',
        '("a"',
        '"a")',
        '"a" NEAR "b"',
        '"a"**',
        '"a b:*"',
        '"it\'s"',
        '"a  b"',
        '""',
        '{title} : "a"',
        'OR "a"',
    ],
)
def test_tsquery_refuses_anything_else(match: str) -> None:
    with pytest.raises(QueryError) as raised:
        tsquery(match)
    assert str(raised.value) == f"Couldn't search for that. {HOW_TO}"


# --- one post ---------------------------------------------------------------------------------------


async def test_post_matches(pg: PgDatabase) -> None:
    rowids = await insert_posts(
        pg,
        [
            _post(1, "Lavrov speaks", "Lavrov said Moscow wants a written response soon."),
            _post(2, "Café owners protest", "The café on the corner closed early."),
        ],
    )
    async with pg.write() as conn:
        assert await post_matches(conn, compile_query("lavrov"), rowids["blog-1"])
        assert not await post_matches(conn, compile_query("lavrov"), rowids["blog-2"])
        assert await post_matches(conn, compile_query('"written response"'), rowids["blog-1"])
        assert not await post_matches(conn, compile_query('"response written"'), rowids["blog-1"])
        assert await post_matches(conn, compile_query("cafe"), rowids["blog-2"])
        assert await post_matches(conn, compile_query("Lav*"), rowids["blog-1"])
        assert not await post_matches(conn, compile_query("lavrov -moscow"), rowids["blog-1"])
        assert not await post_matches(conn, compile_query("lavrov"), 999_999)
        # A broken expression is no match, and the caller's transaction goes on.
        broken = compile_query("lavrov")
        object.__setattr__(broken, "match", "lavrov")
        assert not await post_matches(conn, broken, rowids["blog-1"])
        assert await post_matches(conn, compile_query("speaks"), rowids["blog-1"])
