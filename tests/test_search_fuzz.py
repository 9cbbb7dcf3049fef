"""The query language under random input: every query is answered (results or one how-to line), never
an exception or FTS5's own error text; and at 100,000 posts none takes anywhere near a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.sources import parse_document
from storage import variants
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from storage.query import QueryError, compile_query
from storage.search import search

ROOT = Path(__file__).resolve().parent.parent
CORPUS = [
    ROOT / "bot" / "data" / "sample_blog.txt",
    ROOT / "tests" / "fixtures" / "search-reader.txt",
]

# Pieces a reader (or a cat on the keyboard) might type: words of the corpus, every operator and
# every character that means something to FTS5 or to our lexer.
WORDS = [
    "storm", "Aurora", "flood", "U.S.", "US", "E.U.", "de-escalate", "deescalate", "de", "Kiev",
    "Kyiv", "Biden–Putin", "Czech", "Republic", "Zelensky", "Eurofighter", "Getty", "power",
    "Blink", "café", "CNN’s", "x", "a", "the", "of",
]  # fmt: skip
SYMBOLS = [
    "OR", "AND", "NOT", "or", "and", "not", "NEAR(", "NEAR", ")", "(", '"', "“", "”", "'", "’",
    "-", "–", "*", ":", "^", "+", "{", "}", "title:", "body:", "\u00a0", " ", "  ", ".", ",", "🙂",
    "\x00", "\x02", "\x03", "\\", "%", "_", "[", "]", "NEAR(a b, 2)", "{title body}:", "--",
]  # fmt: skip
QUERIES = st.lists(st.sampled_from(WORDS + SYMBOLS) | st.text(max_size=6), max_size=12).map(
    lambda parts: "".join(
        part + (" " if index % 2 == 0 else "") for index, part in enumerate(parts)
    )
)
FTS_WORDS = ("fts5", "sql", "syntax", "malformed", "no such column", "unterminated")


@pytest.fixture(autouse=True)
def bundled_variants() -> Iterator[None]:
    variants.use(variants.load())
    yield


def _answered(text: str, outcome: object) -> None:
    """One how-to line without FTS5's words, or a page: never the catch-all for an SQLite error."""
    if isinstance(outcome, QueryError):
        message = str(outcome)
        assert message and "\n" not in message and len(message) < 200
        assert not any(word in message.lower() for word in FTS_WORDS), (text, message)
        assert not message.startswith("Couldn't search"), f"SQLite refused the query for {text!r}"
    else:
        assert not isinstance(outcome, BaseException), (text, outcome)


def test_random_queries_are_always_answered(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(Database.open(tmp_path / "fuzz.db"))
        store = PostStore(db)
        for path in CORPUS:
            result = parse_document(path.read_bytes(), location=str(path))
            loop.run_until_complete(ingest(store.db, result))

        async def attempt(text: str) -> object:
            try:
                return await search(db, text, per_page=5)
            except QueryError as error:
                return error

        @settings(
            max_examples=2500,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(QUERIES)
        def check(text: str) -> None:
            _answered(text, loop.run_until_complete(attempt(text)))

        check()
        loop.run_until_complete(db.close())
    finally:
        loop.close()


@settings(max_examples=2000, deadline=None, database=None)
@given(QUERIES)
def test_every_compiled_query_is_valid_fts5(text: str) -> None:
    try:
        compiled = compile_query(text)
    except QueryError as error:
        _answered(text, error)
        return
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(a, b)")
        for expression in (compiled.match, compiled.marks):
            conn.execute("SELECT * FROM t WHERE t MATCH ?", (expression,)).fetchall()
    finally:
        conn.close()


# --- at 100,000 posts ----------------------------------------------------------------------------

POSTS = 100_000
COMMON = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "said",
    "on",
    "for",
    "with",
    "that",
    "is",
    "at",
    "by",
]
_rng = random.Random(10)
RARE = [
    "".join(_rng.choice("bcdfghklmnprstvz") + _rng.choice("aeiou") for _ in range(3))
    for _ in range(3000)
]
NAMES = ["Kyiv", "Kiev", "U.S.", "US", "de-escalate", "NATO", "Biden–Putin", "sanctions", "Moscow"]


def _words(rng: random.Random, count: int) -> str:
    pool = [*COMMON, *COMMON, *NAMES]
    return " ".join(
        rng.choice(pool) if rng.random() < 0.6 else rng.choice(RARE) for _ in range(count)
    )


@pytest.fixture(scope="session")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 synthetic posts, some with captions and a background, written with executemany."""
    path = tmp_path_factory.mktemp("big") / "big.db"

    async def create() -> None:
        async with await Database.open(path):
            pass

    asyncio.run(create())
    rng = random.Random(7)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) VALUES ('big', 'Big', 'rss', 'now')"
        )
        rows = []
        for n in range(POSTS):
            images = (
                json.dumps([{"caption": _words(rng, 8), "credit": "Getty Images"}])
                if n % 10 == 0
                else "[]"
            )
            rows.append(
                (
                    f"big-{n}",
                    f"2022-01-{1 + n % 28:02d}T{n % 24:02d}:00:00.000000Z",
                    _words(rng, 6),
                    _words(rng, 16),
                    images,
                    _words(rng, 10) if n % 20 == 0 else None,
                    "us deescalate" if n % 50 == 0 else None,
                )
            )
        conn.executemany(
            "INSERT INTO posts (id, source_id, published_at, title, body, images, background, "
            "joined_words, content_hash, recorded_at) VALUES (?, 'big', ?, ?, ?, ?, ?, ?, 'h', 'now')",
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


KINDS = [
    "the",  # a common word
    RARE[17],  # a rare word
    f"sanctions {RARE[3]}",  # two words
    f'"{RARE[5]} the"',  # a phrase
    '"said the"',  # a phrase of very common words
    '"the of and to in"',  # one that finds nothing
    "sa*",  # prefixes of 2-4 letters
    "sai*",
    "said*",
    "t*",
    "Kiev OR NATO",  # an OR
    "the -sanctions",  # an exclusion
    "U.S.",
    "de escalate",
    "Biden-Putin",
    "Czech Republic",
    "Getty",
    'NEAR( "unbalanced',
    "the of and to in a said on for with that is at by " * 2,
]
SAFETY_BOUND = 1.0  # seconds: far above any real figure (see `python -m bench search`)


async def _best_time(db: Database, text: str) -> float:
    """The best of up to three runs: a loaded machine may stall one, not three in a row."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with contextlib.suppress(QueryError):
            await search(db, text, per_page=5)
        best = min(best, time.perf_counter() - started)
        if best < SAFETY_BOUND:
            break
    return best


async def test_no_query_kind_takes_a_second_at_100k_posts(big_db: Path) -> None:
    async with await Database.open(big_db) as db:
        for text in KINDS:
            assert await _best_time(db, text) < SAFETY_BOUND, text
        for text in KINDS[:5] + KINDS[6:12]:  # the benchmark's kinds all find posts here
            assert (await search(db, text)).total >= 1, text


async def test_random_queries_take_no_second_at_100k_posts(big_db: Path) -> None:
    rng = random.Random(3)
    pieces = [*WORDS, *SYMBOLS, *COMMON, *RARE[:50]]
    async with await Database.open(big_db) as db:
        for _ in range(150):
            text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            assert await _best_time(db, text) < SAFETY_BOUND, text
