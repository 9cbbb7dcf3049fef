"""Search: the query language, ranking, highlighted snippets, paging and filters, on real SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.sources import parse_document
from storage import search as search_module
from storage.db import Database
from storage.ingest import ingest
from storage.models import Highlighted, ImportResult, Post, Source, SourceKind
from storage.posts import PostStore
from storage.query import CompiledQuery, QueryError, compile_query
from storage.search import matched_terms, post_matches, posts_matching, search
from storage.values import SearchPage
from tests.conftest import SEED, shared
from tests.fakes.flaky import import_posts, make_post

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)


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


def _result(source: str, posts: list[Post]) -> ImportResult:
    return ImportResult(
        source=Source(id=source, title=source.title(), kind=SourceKind.PAGE_TEXT),
        posts=tuple(posts),
    )


FIXTURE_POSTS = [
    _post(1, "Markets open lower", "Sanctions on exports were discussed at length today."),
    _post(2, "Sanctions package agreed", "Ministers met in Brussels."),
    _post(3, "Café owners protest", "The café on the corner closed early."),
    _post(4, "Lavrov speaks", "Lavrov said Moscow wants a written response soon."),
    _post(5, "Lavrov and Blinken meet", "Lavrov met Blinken in Geneva."),
    _post(6, "Quote test", "CNN’s reporter said it was “very tense”."),
    _post(7, "Zelensky speaks", "A response that was written by hand arrived."),
]


@pytest.fixture
async def fixture_db(db: Database) -> Database:
    store = PostStore(db)
    await ingest(store.db, _result("blog", FIXTURE_POSTS))
    await ingest(
        store.db,
        _result(
            "other", [_post(8, "Sanctions elsewhere", "Other blog on sanctions.", source="other")]
        ),
    )
    return db


@pytest.fixture
async def seed_db(db: Database) -> Database:
    result = parse_document(shared(SEED).read_bytes(), location=str(SEED))
    await ingest(db, result)
    return db


def _ids(page: SearchPage) -> list[str]:
    return [hit.post.id for hit in page.hits]


def _marked(text: Highlighted) -> list[str]:
    return [run for run, marked in text.segments if marked]


# --- the query language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sanctions", '"sanctions"'),
        ("Sanctions Russia", '"sanctions" AND "russia"'),
        ('"written response"', '"written response"'),
        ("“written response”", '"written response"'),
        ("Lavrov -Blinken", '"lavrov" NOT "blinken"'),
        ("Lavrov NOT Blinken", '"lavrov" NOT "blinken"'),
        ("Lavrov AND Blinken", '"lavrov" AND "blinken"'),
        ("Lavrov OR Blinken", '("lavrov") OR ("blinken")'),
        ("Blink*", '"blink"*'),
        ("CNN's", '"cnn s"'),
        ("CNN’s", '"cnn s"'),
        ("well-known", '("well known" OR "wellknown")'),
        ("U.S.", '"us"'),
        ("de escalate", '("de" AND "escalate") OR ("deescalate")'),
        ('a "b" OR c -d', '("a" AND "b") OR ("c" NOT "d")'),
    ],
)
def test_query_language_compiles_to_quoted_fts(text: str, match: str) -> None:
    compiled = compile_query(text)
    assert compiled.match == match
    assert compiled.notice is None


@pytest.mark.parametrize(
    ("text", "notice"),
    [
        ('"unbalanced', 'unmatched "'),
        ("AND", '"AND" as a plain word'),
        ("OR OR", '"OR" as a plain word'),
        ("sanctions or NATO", '"or" as a plain word'),
        ("or and not", '"and" as a plain word'),
        ("NEAR(a b)", '"NEAR(" as plain words'),
        ("title:x", '"title:x" as plain words'),
        ("a OR -b", "exclusion"),
    ],
)
def test_odd_input_is_read_as_words_with_a_notice(text: str, notice: str) -> None:
    compiled = compile_query(text)
    assert compiled.notice is not None and notice in compiled.notice
    assert compiled.terms


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        ("", "Type a word"),
        ("   ", "Type a word"),
        ('""', "Type a word"),
        ("-", "Type a word"),
        ("🙂🙂", "Type a word"),
        ("*", "letters before *"),
        ("-Blinken", "at least one word"),
        ("NOT Blinken", "at least one word"),
        ("-a -b", "at least one word"),
        (" ".join(f"w{i}" for i in range(100)), "too long"),
        ("x" * 5000, "too long"),
    ],
)
def test_unsearchable_queries_say_how_to_write_one(text: str, advice: str) -> None:
    with pytest.raises(QueryError) as raised:
        compile_query(text)
    message = str(raised.value)
    assert advice in message
    assert "\n" not in message and len(message) < 120


def test_terms_are_the_positive_words_and_phrases() -> None:
    assert compile_query('Lavrov "written response" -Blinken Blink*').terms == (
        "lavrov",
        '"written response"',
        "blink*",
    )


# --- searching --------------------------------------------------------------------------------------


async def test_stemming_and_case_folding(fixture_db: Database) -> None:
    plural = await search(fixture_db, "sanctions")
    singular = await search(fixture_db, "SANCTION")
    assert set(_ids(plural)) == set(_ids(singular)) == {"blog-1", "blog-2", "other-8"}


async def test_title_match_outranks_body_match(fixture_db: Database) -> None:
    page = await search(fixture_db, "sanctions", source_id="blog")
    assert _ids(page) == ["blog-2", "blog-1"]


async def test_diacritics_and_quotes_are_folded(fixture_db: Database) -> None:
    assert _ids(await search(fixture_db, "cafe")) == ["blog-3"]
    assert _ids(await search(fixture_db, "CNN's")) == ["blog-6"]
    assert _ids(await search(fixture_db, '"very tense"')) == ["blog-6"]


async def test_phrase_needs_adjacent_words(fixture_db: Database) -> None:
    assert _ids(await search(fixture_db, '"written response"')) == ["blog-4"]
    assert set(_ids(await search(fixture_db, "written response"))) == {"blog-4", "blog-7"}


async def test_exclusion_and_or(fixture_db: Database) -> None:
    assert _ids(await search(fixture_db, "Lavrov -Blinken")) == ["blog-4"]
    assert set(_ids(await search(fixture_db, "cafe OR Zelensky"))) == {"blog-3", "blog-7"}


async def test_snippet_and_title_carry_highlights(fixture_db: Database) -> None:
    page = await search(fixture_db, "sanction", source_id="blog")
    top = page.hits[0]
    assert _marked(top.title) == ["Sanctions"]
    assert top.title.plain == "Sanctions package agreed"
    body_hit = page.hits[1]
    assert _marked(body_hit.snippet) == ["Sanctions"]
    assert "\x02" not in body_hit.snippet.plain and "\x03" not in body_hit.snippet.plain


async def test_paging_and_totals(fixture_db: Database) -> None:
    first = await search(fixture_db, "sanctions", per_page=2)
    second = await search(fixture_db, "sanctions", page=2, per_page=2)
    assert first.total == second.total == 3
    assert first.has_more and not second.has_more
    assert len(first.hits) == 2 and len(second.hits) == 1
    assert not set(_ids(first)) & set(_ids(second))
    beyond = await search(fixture_db, "sanctions", page=9, per_page=2)
    assert beyond.hits == () and beyond.total == 3


async def test_source_filter(fixture_db: Database) -> None:
    assert _ids(await search(fixture_db, "sanctions", source_id="other")) == ["other-8"]
    assert _ids(await search(fixture_db, "sanctions", source_id="nope")) == []


async def test_no_match_is_an_empty_page(fixture_db: Database) -> None:
    page = await search(fixture_db, "xylophone")
    assert page.hits == () and page.total == 0 and not page.has_more


async def test_ties_go_to_the_newest(db: Database) -> None:
    posts = [_post(n, "Same title", "Same body text.") for n in range(1, 4)]
    await ingest(db, _result("blog", posts))
    assert _ids(await search(db, "same")) == ["blog-3", "blog-2", "blog-1"]


async def test_common_words_are_counted_as_an_estimate(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "COUNT_WINDOW", 3)
    posts = [_post(n, "Update", "Nothing to see.") for n in range(1, 6)]
    posts.append(_post(6, "Update update update", "Update."))
    await ingest(db, _result("blog", posts))
    page = await search(db, "update", per_page=2)
    assert page.total_is_estimate and page.total_label == "about 6"
    assert _ids(page) == ["blog-6", "blog-5"] and page.has_more
    whole = await search(db, "update", per_page=10)  # the walk saw every match: exact
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
    ],
)
async def test_broken_queries_answer_without_an_sql_error(fixture_db: Database, text: str) -> None:
    try:
        page = await search(fixture_db, text)
    except QueryError as error:
        assert str(error) and "\n" not in str(error)
        assert "fts5" not in str(error).lower() and "sql" not in str(error).lower()
    else:
        assert page.total >= 0


async def test_sqlite_errors_become_query_errors(
    fixture_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = CompiledQuery(text="x", match='"x" AND', terms=("x",), notice=None)
    monkeypatch.setattr(search_module, "compile_query", lambda text: broken)
    with pytest.raises(QueryError, match="Search with words"):
        await search(fixture_db, "x")


async def test_post_matches_inside_the_write_transaction(db: Database) -> None:
    query = compile_query("sanctions -Blinken")
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('s', 'S', 'rss', 'now')"
        )
        cursor = await conn.execute(
            "INSERT INTO posts (id, source_id, published_at, title, body, content_hash, recorded_at) "
            "VALUES ('p', 's', '2022-01-21T12:00:00.000000Z', 'New sanctions', 'Text.', 'h', 'now')"
        )
        rowid = cursor.lastrowid
        assert rowid is not None
        assert await post_matches(conn, query, rowid)
        assert not await post_matches(conn, compile_query("Blinken"), rowid)
        assert not await post_matches(conn, query, rowid + 1)


async def test_posts_matching_keeps_only_the_posts_asked_about(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs of rowids are read as ranges: the matches between the posts asked about (here every
    post but one matches) are not answers; rowids far from any other (900, 1200 and one that does
    not exist) are looked up together."""
    await import_posts(
        db,
        [
            make_post(n, title="Quiet day" if n == 300 else f"Sanctions, day {n}")
            for n in range(1, 1201)
        ],
    )
    async with db.reader.execute("SELECT id, rowid FROM posts") as cur:
        rowid = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
    asked = [rowid[f"blog-{n}"] for n in (1, 2, 40, 300, 301, 900, 1200)] + [999_999]
    async with db.write() as conn:
        matched = await posts_matching(conn, compile_query("sanctions"), asked)
        assert matched == {rowid[f"blog-{n}"] for n in (1, 2, 40, 301, 900, 1200)}
        assert await posts_matching(conn, compile_query("sanctions"), []) == set()
        broken = CompiledQuery(text="x", match='"x" AND', terms=("x",), notice=None)
        assert await posts_matching(conn, broken, asked) == set()
    assert [r.message.startswith("post_matches failed") for r in caplog.records] == [True]


def test_matched_terms_are_stemmed_like_the_index() -> None:
    post = _post(1, "New sanctions on Russia", "Blinken spoke about the written response.")
    query = compile_query('sanction OR "written response" OR Lavrov OR Blink*')
    assert matched_terms(query, post) == ("sanction", '"written response"', "blink*")


# --- the seed blog ------------------------------------------------------------------------------------


async def test_seed_sanctions_singular_and_plural(seed_db: Database) -> None:
    plural = await search(seed_db, "sanctions")
    singular = await search(seed_db, "sanction")
    assert plural.total >= 1 and _ids(plural) == _ids(singular)
    top = plural.hits[0]
    assert "Blinken will brief EU foreign ministers" in top.post.title
    assert [w.lower() for w in _marked(top.snippet)] == ["sanctions"] * len(_marked(top.snippet))
    assert _marked(top.snippet)


async def test_seed_phrase(seed_db: Database) -> None:
    page = await search(seed_db, '"written response"')
    assert page.total >= 1
    for hit in page.hits:
        assert "written response" in hit.post.text.lower()
        assert any("written response" in m.lower() for m in _marked(hit.snippet))


async def test_seed_exclusion(seed_db: Database) -> None:
    with_blinken = await search(seed_db, "Lavrov", per_page=50)
    without = await search(seed_db, "Lavrov -Blinken", per_page=50)
    assert with_blinken.total >= 1
    assert set(_ids(without)) < set(_ids(with_blinken)) or without.total == 0
    for hit in without.hits:
        assert "blinken" not in (hit.post.title + hit.post.text).lower()


async def test_seed_prefix(seed_db: Database) -> None:
    page = await search(seed_db, "Blink*", per_page=50)
    assert page.total >= 3
    for hit in page.hits:
        assert "blink" in (hit.post.title + hit.post.text).lower()
    assert any(m.lower().startswith("blink") for m in _marked(page.hits[0].title))


async def test_seed_curly_and_straight_apostrophes_find_the_same(seed_db: Database) -> None:
    curly = await search(seed_db, "CNN’s", per_page=50)
    straight = await search(seed_db, "CNN's", per_page=50)
    assert curly.total >= 2
    assert _ids(curly) == _ids(straight)
    bylines = {hit.post.byline or "" for hit in curly.hits}
    assert any("CNN’s" in b for b in bylines) and any("CNN's" in b for b in bylines)


async def test_seed_paging(seed_db: Database) -> None:
    first = await search(seed_db, "Russia", per_page=3)
    second = await search(seed_db, "Russia", page=2, per_page=3)
    assert first.total > 3 and first.has_more
    assert second.page == 2 and second.hits
    assert not set(_ids(first)) & set(_ids(second))


async def test_seed_source_filter(seed_db: Database) -> None:
    store = PostStore(seed_db)
    (source,) = await store.all_sources()
    assert (await search(seed_db, "Russia", source_id=source.id)).total >= 1
    assert (await search(seed_db, "Russia", source_id="elsewhere")).total == 0
