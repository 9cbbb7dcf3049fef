"""Search finds what a reader means, in every text a reader sees: captions and credits, the background,
the location; dotted abbreviations, hyphenated compounds and name variants; ranking by where it matched.

Table-driven over the bundled sample blog and tests/fixtures/search-reader.txt, on real SQLite."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from bot.cli import MigrationBar
from bot.sources import parse_document
from storage import variants
from storage.db import FTS_COLUMNS, MIGRATIONS, Database, LoggedProgress, _split
from storage.ingest import ingest
from storage.models import Highlighted, ImportResult, Post, Source, SourceKind
from storage.posts import PostStore
from storage.query import compile_query
from storage.search import matched_terms, search
from tests.cli_process import child_env, command, livedesk
from tests.conftest import SEED, shared

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "bot" / "data" / "sample_blog.txt"
FIXTURE = ROOT / "tests" / "fixtures" / "search-reader.txt"

# Titles of the posts the table names.
ALLIES = "Allies agree to de-escalate at the border"
KYIV = "Officials in Kyiv prepare for the summit"
JETS = "Jets land at an air base"
MINISTERS = "Ministers meet again"
KHARKIV = "Kharkiv residents queue for fuel"
SHELTERS = "Shelters near capacity in Greywater County"
LANDFALL = "Aurora makes landfall near Port Halden"
HOSPITALS = "Hospitals switch to backup generators"
SCHOOLS = "Schools and offices in the northern counties close early"
BARRIERS = "Flood barriers go up along the Halden river front"
ENVOY = "U.S. envoy lands in Warsaw"


@pytest.fixture(autouse=True)
def bundled_variants() -> Iterator[None]:
    """Every test folds with the bundled table, whatever another test installed."""
    variants.use(variants.load())
    yield
    variants.use(variants.load())


@pytest.fixture
async def reader_db(db: Database) -> Database:
    store = PostStore(db)
    for path in (SAMPLE, FIXTURE):
        await ingest(store.db, parse_document(path.read_bytes(), location=str(path)))
    return db


def _titles(hits: object) -> list[str]:
    return [hit.post.title for hit in hits]  # type: ignore[attr-defined]


def _marked(text: Highlighted) -> list[str]:
    return [run for run, marked in text.segments if marked]


# (query, posts it must find, posts it must not find, where the first hit's snippet comes from)
CASES: list[tuple[str, set[str], set[str], str | None]] = [
    # captions and their credits
    ("Eurofighter", {JETS}, set(), "caption"),
    ('"Eurofighter Typhoon"', {JETS}, set(), "caption"),
    ("Brandon", {JETS}, set(), "caption"),
    ('"Coastline Photo Agency"', {LANDFALL}, set(), "caption"),
    ("blankets", {SHELTERS}, set(), "caption"),
    # the background
    ('"mandatory evacuation"', {SHELTERS}, set(), "background"),
    ('"winter storm"', {HOSPITALS}, set(), "background"),
    ("Zelenskiy", {JETS}, set(), "background"),
    # dotted abbreviations and their plain form
    ("US", {ALLIES, KYIV}, set(), None),
    ("U.S.", {ALLIES, KYIV}, set(), None),
    ("u.s", {ALLIES, KYIV}, set(), None),
    ("UK", {ALLIES, KYIV}, set(), None),
    ("U.K.", {ALLIES, KYIV}, set(), None),
    ("EU", {ALLIES}, {KYIV}, None),
    ("E.U.", {ALLIES}, {KYIV}, None),
    ('"U.S. and the E.U."', {ALLIES}, set(), "text"),
    # hyphenated compounds, both ways, with a hyphen or an en dash
    ("de-escalate", {ALLIES, KYIV}, set(), None),
    ("deescalate", {ALLIES, KYIV}, set(), None),
    ("de escalate", {ALLIES, KYIV}, set(), None),
    ("Biden-Putin", {ALLIES}, set(), "text"),
    ("Biden–Putin", {ALLIES}, set(), "text"),
    ("BidenPutin", {ALLIES}, set(), None),
    ("non-essential", {SCHOOLS}, set(), "text"),
    ("nonessential", {SCHOOLS}, set(), None),
    ("lowestlying", {SHELTERS}, set(), None),
    # a compound with a dotted part, typed with or without the dots
    ("US-Russia", {ALLIES}, {KYIV}, "text"),
    ("U.S.-Russia", {ALLIES}, {KYIV}, "text"),
    ("USRussia", {ALLIES}, set(), None),
    # spelling variants of names
    ("Kiev", {KYIV, MINISTERS}, set(), None),
    ("Kyiv", {KYIV, MINISTERS}, set(), None),
    ("Kharkov", {KHARKIV, MINISTERS}, set(), None),
    ("Zelensky", {JETS}, set(), "background"),
    ("Zelenskyy", {JETS}, set(), "background"),
    ("Kiev -Kyiv", set(), {KYIV, MINISTERS}, None),
    ("Kiev NOT summit", {MINISTERS}, {KYIV}, None),
    # quotes, apostrophes, non-breaking spaces, diacritics, case
    ("Livedesk’s", {KHARKIV}, set(), None),
    ("livedesk's", {KHARKIV}, set(), None),
    ("“fighter jets”", {JETS}, set(), "text"),
    ('"fighter\u00a0jets"', {JETS}, set(), "text"),
    ("KHÁRKIV", {KHARKIV, MINISTERS}, set(), None),
]


@pytest.mark.parametrize(("query", "found", "missing", "where"), CASES)
async def test_a_reader_finds_what_they_mean(
    reader_db: Database, query: str, found: set[str], missing: set[str], where: str | None
) -> None:
    page = await search(reader_db, query, per_page=50)
    titles = set(_titles(page.hits))
    assert found <= titles, f"{query!r} found {sorted(titles)}"
    assert not missing & titles
    if where is not None:
        first = next(hit for hit in page.hits if hit.post.title in found)
        assert first.snippet.where == where
        assert _marked(first.snippet), "the snippet marks what matched"


# (query, titles in the order they must rank): a title match before a body match
RANKING: list[tuple[str, list[str]]] = [
    ("Kharkiv", [KHARKIV, MINISTERS]),
    ("Kharkov", [KHARKIV, MINISTERS]),
    ("Kiev", [KYIV, MINISTERS]),
    ("de-escalate", [ALLIES, KYIV]),
    ('"flood barriers"', [BARRIERS]),
    # a title's `U.S.` is a title match for `US`, though the post is older than the body matches
    ("US", [ENVOY, KYIV, ALLIES]),
    ("US envoy", [ENVOY]),
]


@pytest.mark.parametrize(("query", "order"), RANKING)
async def test_a_title_match_ranks_before_a_body_match(
    reader_db: Database, query: str, order: list[str]
) -> None:
    titles = _titles((await search(reader_db, query, per_page=50)).hits)
    assert [t for t in titles if t in order] == order


async def test_the_dotted_form_is_marked_when_the_plain_one_is_searched(
    reader_db: Database,
) -> None:
    page = await search(reader_db, "US", per_page=50)
    allies = next(hit for hit in page.hits if hit.post.title == ALLIES)
    assert "U.S" in " ".join(_marked(allies.snippet))
    dotted = await search(reader_db, "U.S.", per_page=50)
    kyiv = next(hit for hit in dotted.hits if hit.post.title == KYIV)
    assert "US" in _marked(kyiv.snippet)


async def test_a_caption_hit_says_so_and_a_body_hit_does_not(reader_db: Database) -> None:
    caption = (await search(reader_db, "Typhoon")).hits[0]
    assert caption.snippet.where == "caption" and caption.snippet.label == "📷"
    assert "Alex Brandon/AP" in caption.snippet.plain
    body = (await search(reader_db, "petrol")).hits[0]
    assert body.snippet.where == "text" and body.snippet.label is None
    title_only = (await search(reader_db, '"Markets steady"')).hits[0]
    assert title_only.snippet.where == "text"
    assert title_only.snippet.plain.startswith("Stocks in Europe")


async def test_the_location_is_searched(db: Database) -> None:
    post = Post(
        id="p1",
        source_id="wire",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        title="Port reopens",
        location="Odesa",
        body=("Ships left the harbour.",),
    )
    source = Source(id="wire", title="Wire", kind=SourceKind.RSS)
    await ingest(db, ImportResult(source=source, posts=(post,)))
    assert _titles((await search(db, "Odesa")).hits) == ["Port reopens"]
    assert _titles((await search(db, "Odessa")).hits) == ["Port reopens"]


async def test_an_edit_re_indexes_captions_and_joined_forms(db: Database) -> None:
    store = PostStore(db)
    source = Source(id="wire", title="Wire", kind=SourceKind.RSS)
    post = Post(
        id="p1",
        source_id="wire",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        title="Talks",
        body=("The U.S. spoke.",),
    )
    await ingest(store.db, ImportResult(source=source, posts=(post,)))
    assert (await search(db, "US")).total == 1
    edited = post.model_copy(
        update={"body": ("Nobody spoke.",), "background": "A long-running row."}
    )
    await ingest(store.db, ImportResult(source=source, posts=(edited,)))
    assert (await search(db, "US")).total == 0
    assert (await search(db, "longrunning")).total == 1
    async with db.write() as conn:
        await conn.execute("INSERT INTO posts_fts(posts_fts) VALUES ('integrity-check')")


def test_matched_terms_see_captions_background_and_variants() -> None:
    post = Post(
        id="p1",
        source_id="wire",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        title="Jets land",
        body=("The U.S. said so.",),
        background="Zelenskiy asked for help.",
    )
    query = compile_query("Zelensky OR US OR Typhoon")
    assert matched_terms(query, post) == ("zelensky", "us")


# --- the operator's variants ----------------------------------------------------------------------


def test_the_bundled_table_folds_what_news_writes() -> None:
    table = variants.load()
    for first, second in [
        ("Kyiv", "Kiev"),
        ("Odesa", "Odessa"),
        ("Gaddafi", "Qaddafi"),
        ("Gaddafi", "Kadhafi"),
        ("Beijing", "Peking"),
        ("Mumbai", "Bombay"),
        ("Myanmar", "Burma"),
        ("Türkiye", "Turkey"),
        ("Czechia", "Czech Republic"),
        ("Kolkata", "Calcutta"),
        ("Navalny", "Navalnyy"),
        ("Al Qaeda", "al-Qaida"),
        ("Hezbollah", "Hizbollah"),
        ("Zelensky", "Zelenskyy"),
    ]:
        assert variants.fold(second) in table.of(variants.fold(first)), (first, second)
    assert len(table) >= 40


def test_a_possessive_takes_the_variants_too() -> None:
    assert compile_query("Kiev's").match == '("kiev s" OR "kyiv s")'


def test_a_variant_of_several_words_is_read_from_plain_words() -> None:
    assert compile_query("Czech Republic").match == '("czech republic" OR "czechia")'
    assert compile_query('"Czech Republic" sanctions').match == (
        '("czech republic" OR "czechia") AND "sanctions"'
    )


async def test_an_operator_variant_works_without_re_indexing(
    reader_db: Database, tmp_path: Path
) -> None:
    assert (await search(reader_db, "Haldenburg")).total == 0
    extra = tmp_path / "variants.txt"
    extra.write_text("# ours\nPort Halden = Haldenburg\n", encoding="utf-8")
    variants.use(variants.load(extra))
    page = await search(reader_db, "Haldenburg", per_page=50)
    assert LANDFALL in _titles(page.hits)
    assert (await search(reader_db, "Kiev")).total >= 2  # the bundled table still applies


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Kyiv\n", "line 1"),
        ("# fine\nKyiv = \n", "line 2"),
        ("= Kiev\n", "line 1"),
    ],
)
def test_a_bad_variants_file_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "variants.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(variants.VariantsError) as raised:
        variants.load(path)
    assert problem in str(raised.value) and "\n" not in str(raised.value)


def test_cli_search_folds_the_operators_variants_and_labels_captions(tmp_path: Path) -> None:
    extra = tmp_path / "names.txt"
    extra.write_text("Port Halden = Haldenburg\n", encoding="utf-8")
    env = {"LIVEDESK_SEARCH__VARIANTS_FILE": str(extra)}
    assert livedesk("import", str(SAMPLE), str(FIXTURE), cwd=tmp_path, env=env).code == 0
    found = livedesk("search", "Haldenburg", cwd=tmp_path, env=env)
    assert found.code == 0 and LANDFALL in found.out
    caption = livedesk("search", "Eurofighter", cwd=tmp_path, env=env)
    assert caption.code == 0 and "📷 A Eurofighter Typhoon" in caption.out
    background = livedesk("--json", "search", '"mandatory evacuation"', cwd=tmp_path, env=env)
    hit = json.loads(background.out)["hits"][0]
    assert hit["snippet_from"] == "background" and hit["title"] == SHELTERS


@pytest.mark.parametrize("content", [None, "Kyiv Kiev\n", b"\xff\xfe bad"])
def test_cli_refuses_a_bad_variants_file_in_one_line(
    tmp_path: Path, content: str | bytes | None
) -> None:
    path = tmp_path / "names.txt"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    env = {"LIVEDESK_SEARCH__VARIANTS_FILE": str(path)}
    done = livedesk("search", "Kyiv", cwd=tmp_path, env=env)
    assert done.code == 2
    assert "LIVEDESK_SEARCH__VARIANTS_FILE" in done.err and str(path) in done.err
    assert len(done.err.strip().splitlines()) == 1 and "Traceback" not in done.err


# --- migrating a database indexed before captions were ---------------------------------------------


def _schema_4_database(path: Path) -> None:
    """A database as the Livedesk before schema 5 left it, with posts that have captions."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in MIGRATIONS[:4]:
            assert isinstance(script, str)
            for statement in _split(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('old', 'Old', 'rss', 'now')"
        )
        images = json.dumps([{"caption": "A Eurofighter Typhoon", "credit": "Getty Images"}])
        conn.executemany(
            "INSERT INTO posts (id, source_id, published_at, title, body, images, background, "
            "content_hash, recorded_at) VALUES (?, 'old', ?, ?, ?, ?, ?, 'h', 'now')",
            [
                (
                    f"old-{n}",
                    f"2022-01-21T12:{n % 60:02d}:00.000000Z",
                    f"Post {n}",
                    "The U.S. said it would de-escalate." if n == 7 else "Nothing new.",
                    images if n == 3 else "[]",
                    "Some context." if n == 5 else None,
                )
                for n in range(25)
            ],
        )
    finally:
        conn.close()


async def test_an_old_database_is_re_indexed_on_open_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _schema_4_database(path)
    monkeypatch.setattr("storage.db.REINDEX_BATCH", 10)
    seen: list[tuple[str, int, int]] = []
    async with await Database.open(path, progress=lambda *report: seen.append(report)) as db:
        assert [done for _, done, _ in seen] == [0, 10, 20, 25]
        assert {total for _, _, total in seen} == {25}
        assert _titles((await search(db, "Getty")).hits) == ["Post 3"]
        assert (await search(db, "Getty")).hits[0].snippet.where == "caption"
        assert _titles((await search(db, "context")).hits) == ["Post 5"]
        assert _titles((await search(db, "US")).hits) == ["Post 7"]
        assert _titles((await search(db, "deescalate")).hits) == ["Post 7"]
        async with db.reader.execute("PRAGMA table_info(posts_fts)") as cur:
            assert tuple(row[1] for row in await cur.fetchall()) == FTS_COLUMNS
        async with db.write() as conn:
            await conn.execute("INSERT INTO posts_fts(posts_fts) VALUES ('integrity-check')")
    seen.clear()
    async with await Database.open(path, progress=lambda *report: seen.append(report)):
        assert seen == []  # once only


async def test_a_schema_6_database_re_joins_its_dotted_compounds(tmp_path: Path) -> None:
    """Schema 6 joined `U.S.-Russia` as `us srussia`; schema 7 re-joins such posts only."""
    path = tmp_path / "old.db"
    async with await Database.open(path) as db:
        store = PostStore(db)
        source = Source(id="old", title="Old", kind=SourceKind.RSS)
        published = datetime(2022, 2, 10, 12, tzinfo=UTC)
        await ingest(
            store.db,
            ImportResult(
                source=source,
                posts=(
                    Post(
                        id="a",
                        source_id="old",
                        published_at=published,
                        title="Talks",
                        body=("U.S.-Russia talks resume.",),
                    ),
                    Post(
                        id="b",
                        source_id="old",
                        published_at=published,
                        title="Other",
                        body=("Nothing to join.",),
                    ),
                ),
            ),
        )
        async with db.write() as conn:
            await conn.execute("UPDATE posts SET joined_words = 'us srussia' WHERE id = 'a'")
            await conn.execute("PRAGMA user_version = 6")  # before schema 7 re-joined them
        assert not (await search(db, "US-Russia")).hits
    seen: list[tuple[str, int, int]] = []
    async with await Database.open(path, progress=lambda *report: seen.append(report)) as db:
        assert [(done, total) for _, done, total in seen] == [(0, 1), (1, 1)]
        assert _titles((await search(db, "US-Russia")).hits) == ["Talks"]
        async with db.write() as conn:
            await conn.execute("INSERT INTO posts_fts(posts_fts) VALUES ('integrity-check')")


async def test_the_re_index_is_logged_without_a_progress_bar(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    _schema_4_database(path)
    with caplog.at_level(logging.INFO, logger="storage.db"):
        async with await Database.open(path):
            pass
    lines = [r.getMessage() for r in caplog.records if "re-indexing" in r.getMessage()]
    assert lines[0].endswith("re-indexing posts for search, 25 posts")
    assert lines[-1].endswith("25 of 25 done")


def test_logged_progress_says_each_tenth_once(caplog: pytest.LogCaptureFixture) -> None:
    progress = LoggedProgress(Path("x.db"))
    with caplog.at_level(logging.INFO, logger="storage.db"):
        for done in range(0, 1001, 10):
            progress("re-indexing", done, 1000)
    assert len(caplog.records) == 11


def test_the_progress_bar_counts_up_and_goes_away() -> None:
    console = Console(record=True, force_terminal=True, width=80, file=io.StringIO())
    bar = MigrationBar(console)
    for done in (0, 10, 25):
        bar("re-indexing posts for search", done, 25)
    bar.close()
    bar.close()  # closing twice is harmless
    assert "re-indexing posts for search" in console.export_text()


def test_cli_re_indexes_an_old_database_on_first_use(tmp_path: Path) -> None:
    _schema_4_database(tmp_path / "livedesk.db")
    done = livedesk("search", "Eurofighter", cwd=tmp_path)
    assert done.code == 0 and "Post 3" in done.out and "📷" in done.out
    assert "re-indexing" not in done.err  # no terminal: no bar


def _on_a_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run `livedesk ARGS…` with its stderr on a pseudo-terminal: (exit code, stdout, terminal)."""
    master, slave = pty.openpty()
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            command(*args),
            cwd=cwd,
            env=child_env({"TERM": "xterm"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=60,
            check=False,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return done.returncode, done.stdout.decode(), b"".join(seen).decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals on this system")
def test_cli_shows_the_re_index_as_a_bar_on_a_terminal(tmp_path: Path) -> None:
    _schema_4_database(tmp_path / "livedesk.db")
    code, out, terminal = _on_a_terminal("search", "Eurofighter", cwd=tmp_path)
    assert code == 0 and "Post 3" in out
    assert "re-indexing posts for search" in terminal and "25/25" in terminal


# --- the seed --------------------------------------------------------------------------------------


async def test_seed_spells_the_capital_two_ways_and_both_find_both(db: Database) -> None:
    result = parse_document(shared(SEED).read_bytes(), location=str(SEED))
    await ingest(db, result)
    kyiv = await search(db, "Kyiv", per_page=50)
    kiev = await search(db, "Kiev", per_page=50)
    assert kyiv.total == kiev.total >= 2
    texts = [
        " ".join([h.post.title, h.post.text, h.post.background or "", h.post.byline or ""]).lower()
        for h in kyiv.hits
    ]
    assert any("kiev" in t for t in texts) and any("kyiv" in t for t in texts)
    getty = await search(db, "Getty", per_page=50)
    assert getty.total >= 3 and {h.snippet.where for h in getty.hits} == {"caption"}
    assert (await search(db, "Eurofighter")).total >= 1
    assert (await search(db, "deescalate")).total >= 1
    assert (await search(db, "BidenPutin")).total >= 1
