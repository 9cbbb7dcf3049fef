"""Search on PostgreSQL (storage.pg_search): the SQLite search's tests, on a real server, less those
tests/test_store_contract.py runs on both backends (tests/test_search.py's fixture posts, and
tests/test_search_reader.py's tables of queries: found, order, totals).

Posts are written here with plain SQL (the PostgreSQL post store is another module's): the generated
`search` column indexes them as the store's own inserts would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg import sql

from bot.sources import parse_document
from storage import pg_search, values, variants
from storage import search as sqlite_search_module
from storage.codecs import images_json, to_db_time
from storage.db import Database
from storage.index_text import joined_words
from storage.ingest import ingest
from storage.models import Post
from storage.pg_db import PgDatabase
from storage.pg_search import COUNT_WINDOW, TsQuery, post_matches, search, tsquery
from storage.query import HOW_TO, CompiledQuery, QueryError, compile_query
from storage.search import search as sqlite_search
from storage.values import SearchPage
from tests import test_search, test_search_fuzz, test_search_ranking, test_search_reader
from tests.conftest import SEED, shared

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)


CTYPE = "C.UTF-8"
"""The character classes the text search parser needs: under the C locale, it
takes every character outside ASCII for a letter, so `“very` is one word with its curly quote and
`"very tense"` is not found. A production database needs a UTF-8 LC_CTYPE (see the report)."""


def _recreated(url: str, ctype: str) -> str:
    """The fresh database of `url` made again with `ctype` (postgres_url still drops it)."""
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LC_CTYPE {} LC_COLLATE 'C'").format(
                sql.Identifier(name), sql.Literal(ctype)
            )
        )
    return url


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.open(_recreated(postgres_url, CTYPE), size=2)
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
    assert tsquery('"written response"') == TsQuery(
        "phraseto_tsquery('livedesk_english', %s)", ("written response",)
    )


def test_tsquery_reads_single_letters_as_a_dotted_abbreviation_too() -> None:
    """PostgreSQL's parser reads `U.S.` as the one lexeme `u.s`, FTS5 as the words `u s`."""
    p = "phraseto_tsquery('livedesk_english', %s)"
    assert tsquery('"u s sanctions"') == TsQuery(
        f"({p} || {p})", ("u s sanctions", "u.s sanctions")
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


# --- searching: what the contract suite does not cover (stop words, locale, estimates, errors) -----

FIXTURE_POSTS = [
    *test_search.FIXTURE_POSTS,
    test_search._post(8, "Sanctions elsewhere", "Other blog on sanctions.", source="other"),
]


@pytest.fixture
async def fixture_db(pg: PgDatabase) -> PgDatabase:
    await insert_posts(pg, FIXTURE_POSTS)
    return pg


@pytest.fixture
async def seed_db(pg: PgDatabase) -> PgDatabase:
    result = parse_document(shared(SEED).read_bytes(), location=str(SEED))
    await insert_posts(pg, result.posts)
    return pg


def _ids(page: SearchPage) -> list[str]:
    return [hit.post.id for hit in page.hits]


_marked = test_search._marked


async def _has_stop_words(db: PgDatabase) -> bool:
    """Whether the schema's configuration drops stop words (schema 2 does; FTS5 does not)."""
    async with db.read() as conn:
        cur = await conn.execute("SELECT numnode(phraseto_tsquery('livedesk_english', 'the')) AS n")
        row = await cur.fetchone()
        assert row is not None
        return int(row["n"]) == 0


async def test_ties_go_to_the_newest(pg: PgDatabase) -> None:
    await insert_posts(pg, [_post(n, "Same title", "Same body text.") for n in range(1, 4)])
    newest_first = ["blog-3", "blog-2", "blog-1"]
    assert _ids(await search(pg, "title")) == newest_first
    assert _ids(await search(pg, "same title")) == newest_first
    if await _has_stop_words(pg):
        # DIFFERENCE: `same` is an English stop word here (SQLite's test searches for it): the
        # stored vector does not hold it, so a query of nothing else finds nothing.
        assert _ids(await search(pg, "same")) == []
    else:
        assert _ids(await search(pg, "same")) == newest_first


async def test_stop_words_differ_from_fts5(pg: PgDatabase) -> None:
    """DIFFERENCE while the configuration has stop words (FTS5 has none): a stop word alone finds
    nothing, is left out of AND / OR / NOT, and still takes its place inside a phrase; a prefix
    that is a stop word reads as typed (`A*` finds apple). Without stop words: as FTS5."""
    await insert_posts(
        pg,
        [
            _post(1, "Talks on the border", "Sanctions on Russia."),
            _post(2, "Apple harvest", "Sanctions over Russia."),
        ],
    )
    assert _ids(await search(pg, "a*")) == ["blog-2"]
    assert _ids(await search(pg, "talks AND the")) == ["blog-1"]
    if await _has_stop_words(pg):
        assert _ids(await search(pg, "the")) == []
        assert _ids(await search(pg, "talks -the")) == ["blog-1"]
        # `on` and `over` are both stop words: either takes the place between the two.
        assert _ids(await search(pg, '"sanctions on russia"')) == ["blog-2", "blog-1"]
        assert _ids(await search(pg, '"sanctions russia"')) == []
    else:
        assert _ids(await search(pg, "the")) == ["blog-1"]
        assert _ids(await search(pg, "talks -the")) == []
        assert _ids(await search(pg, '"sanctions on russia"')) == ["blog-1"]
        assert _ids(await search(pg, '"sanctions russia"')) == []


async def test_the_c_locale_reads_curly_quotes_as_letters(postgres_url: str) -> None:
    """DIFFERENCE (of the database, not the code): under LC_CTYPE C the parser keeps `“` in the
    word, so a word in curly quotes is not found; under a UTF-8 LC_CTYPE it is."""
    db = await PgDatabase.open(_recreated(postgres_url, "C"), size=1)
    try:
        await insert_posts(db, [_post(6, "Quote test", "It was “very tense”.")])
        assert _ids(await search(db, "tense")) == []
        assert _ids(await search(db, "quote")) == ["blog-6"]
    finally:
        await db.close()


async def test_common_words_are_counted_as_an_estimate(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_search, "COUNT_WINDOW", 3)
    posts = [_post(n, "Update", "Nothing to see.") for n in range(1, 6)]
    posts.append(_post(6, "Update update update", "Update."))
    await insert_posts(pg, posts)
    page = await search(pg, "update", per_page=2)
    assert page.total_is_estimate and page.total_label == "about 6"
    assert _ids(page) == ["blog-6", "blog-5"] and page.has_more
    whole = await search(pg, "update", per_page=10)  # every match was ranked: exact
    assert not whole.total_is_estimate and whole.total_label == "6"
    assert _ids(whole) == ["blog-6", "blog-5", "blog-4", "blog-3", "blog-2", "blog-1"]


@pytest.mark.parametrize(
    "text",
    [
        '"unbalanced',
        "AND",
        "NEAR(",
        "NEAR(a b, 2)",
        "title:x",
        "OR OR",
        "a NOT",
        "^start",
        "col:(x OR y)",
        "{title body}: x",
        'x" OR "y',
        "🙂",
        "Блинкен",
        "x" * 2000,
        " ".join(["sanctions"] * 200),
        "-",
        '""',
        "*",
        "***a",
        "a**",
        "'",
        "\x00\x02\x03",
        "a:* & b",
        "it's!",
        "the",
        "the OR a*",
    ],
)
async def test_broken_queries_answer_without_an_sql_error(
    fixture_db: PgDatabase, text: str
) -> None:
    try:
        page = await search(fixture_db, text)
    except QueryError as error:
        assert str(error) and "\n" not in str(error)
        assert "tsquery" not in str(error).lower() and "sql" not in str(error).lower()
    else:
        assert page.total >= 0


async def test_postgres_errors_become_query_errors(
    fixture_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = CompiledQuery(text="x", match='"x" AND', terms=("x",), notice=None)
    monkeypatch.setattr(pg_search, "compile_query", lambda text: broken)
    with pytest.raises(QueryError, match="Search with words"):
        await search(fixture_db, "x")

    def failing(conn: object, *args: object) -> object:
        raise psycopg.errors.SyntaxError("boom")

    monkeypatch.setattr(pg_search, "compile_query", compile_query)
    monkeypatch.setattr(pg_search, "_candidates", failing)
    with pytest.raises(QueryError, match="Search with words"):
        await search(fixture_db, "x")

    def unreachable(conn: object, *args: object) -> object:
        raise psycopg.OperationalError("server closed the connection")

    monkeypatch.setattr(pg_search, "_candidates", unreachable)
    with pytest.raises(psycopg.OperationalError):  # the store's failure, not the query's
        await search(fixture_db, "x")


async def test_post_matches_inside_the_write_transaction(pg: PgDatabase) -> None:
    query = compile_query("sanctions -Blinken")
    async with pg.write() as conn:
        await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('s', 'S', 'rss', 'now')"
        )
        cur = await conn.execute(
            "INSERT INTO posts (id, source_id, published_at, title, body, content_hash, recorded_at) "
            "VALUES ('p', 's', '2022-01-21T12:00:00.000000Z', 'New sanctions', 'Text.', 'h', 'now') "
            "RETURNING rowid"
        )
        row = await cur.fetchone()
        assert row is not None
        rowid = int(row["rowid"])
        assert await post_matches(conn, query, rowid)
        assert not await post_matches(conn, compile_query("Blinken"), rowid)
        assert not await post_matches(conn, query, rowid + 1)


async def test_a_failing_post_matches_leaves_the_transaction_usable(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    rowids = await insert_posts(pg, [_post(1, "Lavrov speaks", "Text.")])
    bad = TsQuery("to_tsquery('livedesk_english', %s)", ("a & & b",))
    monkeypatch.setattr(pg_search, "tsquery", lambda match: bad)
    async with pg.write() as conn:
        assert not await post_matches(conn, compile_query("lavrov"), rowids["blog-1"])
        monkeypatch.undo()
        assert await post_matches(conn, compile_query("lavrov"), rowids["blog-1"])
        await conn.execute("UPDATE posts SET title = 'Lavrov spoke'")
    async with pg.read() as conn:
        cur = await conn.execute("SELECT title FROM posts")
        assert [row["title"] for row in await cur.fetchall()] == ["Lavrov spoke"]


# --- the seed blog ------------------------------------------------------------------------------------


async def test_seed_sanctions_singular_and_plural(seed_db: PgDatabase) -> None:
    plural = await search(seed_db, "sanctions")
    singular = await search(seed_db, "sanction")
    assert plural.total >= 1 and _ids(plural) == _ids(singular)
    top = plural.hits[0]
    assert "Blinken will brief EU foreign ministers" in top.post.title
    assert [w.lower() for w in _marked(top.snippet)] == ["sanctions"] * len(_marked(top.snippet))
    assert _marked(top.snippet)


async def test_seed_phrase(seed_db: PgDatabase) -> None:
    page = await search(seed_db, '"written response"')
    assert page.total >= 1
    for hit in page.hits:
        assert "written response" in hit.post.text.lower()
        assert any("written response" in m.lower() for m in _marked(hit.snippet))


async def test_seed_exclusion(seed_db: PgDatabase) -> None:
    with_blinken = await search(seed_db, "Lavrov", per_page=50)
    without = await search(seed_db, "Lavrov -Blinken", per_page=50)
    assert with_blinken.total >= 1
    assert set(_ids(without)) < set(_ids(with_blinken)) or without.total == 0
    for hit in without.hits:
        assert "blinken" not in (hit.post.title + hit.post.text).lower()


async def test_seed_prefix(seed_db: PgDatabase) -> None:
    page = await search(seed_db, "Blink*", per_page=50)
    assert page.total >= 3
    for hit in page.hits:
        assert "blink" in (hit.post.title + hit.post.text).lower()
    assert any(m.lower().startswith("blink") for m in _marked(page.hits[0].title))


async def test_seed_curly_and_straight_apostrophes_find_the_same(seed_db: PgDatabase) -> None:
    curly = await search(seed_db, "CNN’s", per_page=50)
    straight = await search(seed_db, "CNN's", per_page=50)
    assert curly.total >= 2
    assert _ids(curly) == _ids(straight)
    bylines = {hit.post.byline or "" for hit in curly.hits}
    assert any("CNN’s" in b for b in bylines) and any("CNN's" in b for b in bylines)


async def test_seed_paging(seed_db: PgDatabase) -> None:
    first = await search(seed_db, "Russia", per_page=3)
    second = await search(seed_db, "Russia", page=2, per_page=3)
    assert first.total > 3 and first.has_more
    assert second.page == 2 and second.hits
    assert not set(_ids(first)) & set(_ids(second))


async def test_seed_source_filter(seed_db: PgDatabase) -> None:
    (source,) = await _sources(seed_db)
    assert (await search(seed_db, "Russia", source_id=source)).total >= 1
    assert (await search(seed_db, "Russia", source_id="elsewhere")).total == 0


async def _sources(db: PgDatabase) -> list[str]:
    async with db.read() as conn:
        cur = await conn.execute("SELECT id FROM sources ORDER BY id")
        return [str(row["id"]) for row in await cur.fetchall()]


async def test_seed_results_are_those_of_sqlite(seed_db: PgDatabase, db: Database) -> None:
    """The same blog in both stores: the same posts, in the same order, for common queries."""
    result = parse_document(shared(SEED).read_bytes(), location=str(SEED))
    await ingest(db, result)
    for text in [
        "sanctions",
        '"written response"',
        "Lavrov -Blinken",
        "Blink*",
        "Russia OR Ukraine",
    ]:
        on_pg = await search(seed_db, text, per_page=50)
        on_sqlite = await sqlite_search(db, text, per_page=50)
        assert _ids(on_pg) == _ids(on_sqlite), text
        assert on_pg.total == on_sqlite.total, text


# --- ranking and counting: tests/test_search_ranking.py on PostgreSQL --------------------------------

_rpost = test_search_ranking._post
_body_matches = test_search_ranking._body_matches


async def test_a_title_match_is_not_lost_behind_a_thousand_newer_body_matches(
    pg: PgDatabase,
) -> None:
    oldest = _rpost(1, "Ceasefire agreed", "Both sides signed.")
    await insert_posts(pg, [oldest, *_body_matches(COUNT_WINDOW + 100)])
    page = await search(pg, "ceasefire", per_page=5)
    assert _ids(page)[0] == "blog-1"
    assert _ids(page)[1:] == [f"blog-{n}" for n in range(COUNT_WINDOW + 101, COUNT_WINDOW + 97, -1)]
    assert page.has_more
    assert page.total_is_estimate and page.total_label.startswith("about ")
    assert page.total > COUNT_WINDOW


async def test_a_title_match_ranks_first_in_a_phrase_and_a_prefix_too(pg: PgDatabase) -> None:
    await insert_posts(pg, [_rpost(1, "Ceasefire talks resume"), *_body_matches(COUNT_WINDOW + 10)])
    assert _ids(await search(pg, '"ceasefire talks"', per_page=1)) == ["blog-1"]
    assert _ids(await search(pg, "ceasef*", per_page=1)) == ["blog-1"]
    assert _ids(await search(pg, "ceas*", per_page=1)) == ["blog-1"]


async def test_an_exclusion_still_applies_to_the_whole_post_of_a_title_match(
    pg: PgDatabase,
) -> None:
    await insert_posts(
        pg,
        [
            _rpost(1, "Lavrov speaks", "He met Blinken."),
            _rpost(2, "Lavrov travels", "He flew to Geneva."),
            _rpost(3, "Markets", "Lavrov was quoted."),
        ],
    )
    assert _ids(await search(pg, "Lavrov -Blinken")) == ["blog-2", "blog-3"]


async def test_tiers_title_then_byline_or_location_then_body_then_captions(pg: PgDatabase) -> None:
    posts = [
        _rpost(1, "Typhoon jets arrive"),
        _rpost(2, "Air show", byline="By Typhoon Reporter"),
        _rpost(3, "Air show", location="Typhoon Bay"),
        _rpost(4, "Air show", "A Typhoon flew past."),
        _rpost(5, "Air show", caption="A Eurofighter Typhoon over the base"),
        _rpost(6, "Air show", background="The Typhoon entered service in 2003."),
    ]
    await insert_posts(pg, posts)
    page = await search(pg, "typhoon", per_page=10)
    assert _ids(page) == ["blog-1", "blog-3", "blog-2", "blog-4", "blog-6", "blog-5"]
    assert [hit.rank for hit in page.hits] == [0.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    assert page.total == 6 and not page.total_is_estimate and page.total_label == "6"


async def test_ties_go_to_the_newest_post_not_the_last_imported(pg: PgDatabase) -> None:
    await insert_posts(pg, [_rpost(n, "Sirens in Kyiv") for n in (5, 4, 3)])
    await insert_posts(pg, [_rpost(n, "Sirens in Kyiv", minutes=n) for n in (9, 1)])
    assert _ids(await search(pg, "sirens")) == ["blog-9", "blog-5", "blog-4", "blog-3", "blog-1"]


async def test_pages_across_tiers_have_no_gaps_or_repeats(pg: PgDatabase) -> None:
    posts = [
        _rpost(n, "Grain deal" if n % 3 == 0 else "Update", "The grain deal held." * (n % 2))
        for n in range(1, 30)
    ]
    posts += [_rpost(n, "Ports", caption="Grain ships") for n in range(30, 35)]
    await insert_posts(pg, posts)
    whole = await search(pg, "grain", per_page=50)
    pages: list[str] = []
    for number in range(1, 20):
        page = await search(pg, "grain", page=number, per_page=4)
        pages += _ids(page)
        assert page.total == whole.total
        if not page.has_more:
            break
    assert pages == _ids(whole)
    expected = {n for n in range(1, 30) if n % 3 == 0 or n % 2} | set(range(30, 35))
    assert set(pages) == {f"blog-{n}" for n in expected}
    assert len(pages) == whole.total == len(expected)


async def test_counts_are_exact_up_to_the_window(pg: PgDatabase) -> None:
    await insert_posts(pg, _body_matches(COUNT_WINDOW, first=1))
    page = await search(pg, "ceasefire")
    assert page.total == COUNT_WINDOW and not page.total_is_estimate
    assert page.total_label == f"{COUNT_WINDOW:,}"


async def test_counts_above_the_window_are_labelled_estimates(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_search, "COUNT_WINDOW", 10)
    await insert_posts(
        pg, [_rpost(n, "Update", "ceasefire" if n % 2 else "quiet") for n in range(1, 41)]
    )
    page = await search(pg, "ceasefire", per_page=5)
    assert page.total_is_estimate and page.total == 20 and page.total_label == "about 20"
    assert page.has_more
    exact = await search(pg, "quiet", source_id="elsewhere")
    assert exact.total == 0 and not exact.total_is_estimate


async def test_counts_in_a_table_larger_than_the_span_are_labelled_estimates(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_search, "COUNT_SPAN", 10)
    await insert_posts(
        pg, [_rpost(n, "Update", "ceasefire" if n % 4 == 0 else "quiet") for n in range(1, 41)]
    )
    page = await search(pg, "ceasefire", per_page=1)
    assert _ids(page) == ["blog-40"] and page.has_more
    assert page.total_is_estimate and page.total_label == "about 12"
    whole = await search(pg, "ceasefire", per_page=20)  # every match was ranked: exact
    assert whole.total == 10 and not whole.total_is_estimate


def test_the_count_constants_are_sqlite_s() -> None:
    assert (pg_search.COUNT_WINDOW, pg_search.COUNT_SPAN, pg_search.MAX_PER_PAGE) == (
        sqlite_search_module.COUNT_WINDOW,
        sqlite_search_module.COUNT_SPAN,
        values.MAX_PER_PAGE,
    )


# --- what a reader means (the CASES and RANKING tables run on both backends in
# tests/test_store_contract.py, with where PostgreSQL differs) ----------------------------------------


@pytest.fixture
async def reader_db(pg: PgDatabase) -> PgDatabase:
    variants.use(variants.load())
    for path in (test_search_reader.SAMPLE, test_search_reader.FIXTURE):
        await insert_posts(pg, parse_document(path.read_bytes(), location=str(path)).posts)
    return pg


async def test_the_dotted_form_is_marked_when_the_plain_one_is_searched(
    reader_db: PgDatabase,
) -> None:
    page = await search(reader_db, "US", per_page=50)
    allies = next(hit for hit in page.hits if hit.post.title == test_search_reader.ALLIES)
    assert "U.S" in " ".join(_marked(allies.snippet))
    dotted = await search(reader_db, "U.S.", per_page=50)
    kyiv = next(hit for hit in dotted.hits if hit.post.title == test_search_reader.KYIV)
    assert "US" in _marked(kyiv.snippet)


async def test_a_caption_hit_says_so_and_a_body_hit_does_not(reader_db: PgDatabase) -> None:
    caption = (await search(reader_db, "Typhoon")).hits[0]
    assert caption.snippet.where == "caption" and caption.snippet.label == "📷"
    assert "Alex Brandon/AP" in caption.snippet.plain
    body = (await search(reader_db, "petrol")).hits[0]
    assert body.snippet.where == "text" and body.snippet.label is None
    title_only = (await search(reader_db, '"Markets steady"')).hits[0]
    assert title_only.snippet.where == "text"
    assert title_only.snippet.plain.startswith("Stocks in Europe")


async def test_the_location_is_searched(pg: PgDatabase) -> None:
    variants.use(variants.load())
    post = Post(
        id="p1",
        source_id="wire",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        title="Port reopens",
        location="Odesa",
        body=("Ships left the harbour.",),
    )
    await insert_posts(pg, [post])
    assert [hit.post.title for hit in (await search(pg, "Odesa")).hits] == ["Port reopens"]
    assert [hit.post.title for hit in (await search(pg, "Odessa")).hits] == ["Port reopens"]
    assert (await search(pg, "Odesa")).hits[0].rank == 1.0


async def test_snippets_are_elided_where_they_cut_the_text(pg: PgDatabase) -> None:
    words = " ".join(f"word{n}" for n in range(100))
    await insert_posts(pg, [_post(1, "Long", f"{words} ceasefire {words}")])
    (hit,) = (await search(pg, "ceasefire")).hits
    assert hit.snippet.plain.startswith("…") and hit.snippet.plain.endswith("…")
    assert _marked(hit.snippet) == ["ceasefire"]
    assert len(hit.snippet.plain.split()) <= pg_search.SNIPPET_WORDS
    (start,) = (await search(pg, "long")).hits  # a title match shows the text's start
    assert start.snippet.plain.startswith("word0 word1") and start.snippet.plain.endswith("…")
    assert _marked(start.snippet) == [] and _marked(start.title) == ["Long"]


# --- random input: tests/test_search_fuzz.py's queries --------------------------------------------------


async def _migrated(url: str) -> None:
    db = await PgDatabase.open(url, size=1)
    await db.close()


def test_every_compiled_query_is_a_valid_tsquery(postgres_url: str) -> None:
    """Whatever the compiler writes for random input, the translator reads, and PostgreSQL runs."""
    url = _recreated(postgres_url, CTYPE)
    asyncio.run(_migrated(url))
    variants.use(variants.load())
    with psycopg.connect(url, autocommit=True) as conn:

        @settings(
            max_examples=1500,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(test_search_fuzz.QUERIES)
        def check(text: str) -> None:
            try:
                compiled = compile_query(text)
            except QueryError:
                return
            for expression in (compiled.match, compiled.marks):
                translated = tsquery(expression)
                conn.execute(f"SELECT {translated.sql}", translated.params).fetchall()

        check()


def test_random_queries_are_always_answered(postgres_url: str) -> None:
    url = _recreated(postgres_url, CTYPE)
    variants.use(variants.load())
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(PgDatabase.open(url, size=1))
        for path in test_search_fuzz.CORPUS:
            result = parse_document(path.read_bytes(), location=str(path))
            loop.run_until_complete(insert_posts(db, result.posts))

        async def attempt(text: str) -> object:
            try:
                return await search(db, text, per_page=5)
            except QueryError as error:
                return error

        @settings(
            max_examples=400,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(test_search_fuzz.QUERIES)
        def check(text: str) -> None:
            outcome = loop.run_until_complete(attempt(text))
            if isinstance(outcome, QueryError):
                message = str(outcome)
                assert message and "\n" not in message and len(message) < 200
                assert not message.startswith("Couldn't search"), (
                    f"PostgreSQL refused the query for {text!r}"
                )
            else:
                assert isinstance(outcome, SearchPage), (text, outcome)

        check()
        loop.run_until_complete(db.close())
    finally:
        loop.close()
