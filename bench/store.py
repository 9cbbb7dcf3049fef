"""Store benchmarks: import throughput and search latency, each beside the raw SQLite ceiling of the same run.

    python -m bench store            # import 100k, search at 100k and 1M posts
    python -m bench store --quick    # skip the 1M-post database

(1) 100k synthetic posts through PostStore.import_result (documents of 1,000 posts) ÷ raw
    sqlite3.executemany into the same schema (same triggers, one transaction). Goal ≥ 0.5.
(2) search() at 100k and 1M posts ÷ the same raw FTS5 query (highlight + snippet, top 10, bm25):
    p50/p99 per query kind. Goal: p99 ≤ 2× raw and ≤ 20 ms.

The 1M database is built once with raw executemany (it is the search being measured there) and
cached in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from storage.db import Database
from storage.models import ImportResult, Post, Source, SourceKind
from storage.posts import PostStore, to_db_time
from storage.search import RANK_EXPRESSION, search

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 20220121
VOCABULARY = 50_000
IMPORT_POSTS = 100_000
DOCUMENT_POSTS = 1_000
BIG_POSTS = 1_000_000
SEARCH_ROUNDS = 200
SEARCH_BUDGET = 6.0  # seconds per (query, implementation); at least MIN_ROUNDS regardless
MIN_ROUNDS = 20

console = Console(width=110)


# --- synthetic posts --------------------------------------------------------------------------------


class Corpus:
    """Deterministic posts: title ~58 characters, body ~1,200 characters, Zipf vocabulary."""

    def __init__(self, seed: int = SEED) -> None:
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < VOCABULARY:
            word = "".join(rng.choices(letters, k=rng.randint(3, 9)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        self.cum_weights = list(
            itertools.accumulate(1.0 / rank for rank in range(1, VOCABULARY + 1))
        )
        self.seed = seed
        self.start = datetime(2022, 1, 1, tzinfo=UTC)

    def fields(self, rng: random.Random, index: int) -> tuple[str, str, str, str]:
        """(id, published_at, title, body) of post number `index`."""
        words = rng.choices(self.words, cum_weights=self.cum_weights, k=9 + 190)
        title = " ".join(words[:9]).capitalize()[:58]
        body_words = words[9:]
        paragraphs = [" ".join(body_words[i : i + 48]) + "." for i in range(0, 190, 48)]
        published = self.start + timedelta(seconds=30 * index)
        return f"p{index:07d}", to_db_time(published), title, "\n\n".join(paragraphs)

    def rows(self, count: int) -> Iterator[tuple[str, str, str, str]]:
        rng = random.Random(self.seed + 1)
        for index in range(count):
            yield self.fields(rng, index)

    def documents(self, count: int, per_document: int) -> list[ImportResult]:
        source = Source(id="bench", title="Bench blog", kind=SourceKind.PAGE_TEXT)
        documents: list[ImportResult] = []
        batch: list[Post] = []
        for post_id, published, title, body in self.rows(count):
            batch.append(
                Post(
                    id=post_id,
                    source_id=source.id,
                    published_at=datetime.strptime(published, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=UTC
                    ),
                    title=title,
                    byline="By Bench Writer",
                    body=tuple(body.split("\n\n")),
                )
            )
            if len(batch) == per_document:
                documents.append(ImportResult(source=source, posts=tuple(batch)))
                batch = []
        if batch:
            documents.append(ImportResult(source=source, posts=tuple(batch)))
        return documents

    def queries(self) -> dict[str, str]:
        """One query per kind, chosen by frequency rank (common ≈ a third of all posts)."""
        w = self.words
        common = w[40]
        return {
            "common word": common,
            "rare word": w[20_000],
            "two words": f"{w[150]} {w[400]}",
            "phrase": f'"{w[30]} {w[60]}"',
            "phrase, very common words": f'"{w[2]} {w[5]}"',
            "prefix": (common[:4] if len(common) >= 4 else w[60][:4]) + "*",
        }


def _raw_insert(path: Path, corpus: Corpus, count: int) -> float:
    """Insert `count` posts with sqlite3.executemany in one transaction; return seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "INSERT OR IGNORE INTO sources (id, title, kind, added_at) VALUES (?, ?, ?, ?)",
            ("bench", "Bench blog", "page-text", to_db_time(corpus.start)),
        )
        recorded = to_db_time(corpus.start)
        started = time.perf_counter()
        conn.execute("BEGIN")
        rows = corpus.rows(count)
        while chunk := list(itertools.islice(rows, 10_000)):
            conn.executemany(
                "INSERT INTO posts (id, source_id, published_at, title, byline, body, "
                "content_hash, recorded_at) VALUES (?, 'bench', ?, ?, 'By Bench Writer', ?, ?, ?)",
                [(i, p, t, b, i, recorded) for i, p, t, b in chunk],
            )
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def _create_schema(path: Path) -> None:
    async with await Database.open(path):
        pass


# --- (1) import -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportFigures:
    ours_per_s: float
    raw_per_s: float
    generation_per_s: float


async def bench_import(corpus: Corpus, workdir: Path, count: int) -> tuple[ImportFigures, Path]:
    started = time.perf_counter()
    documents = corpus.documents(count, DOCUMENT_POSTS)
    generation = time.perf_counter() - started

    raw_path = workdir / "raw-import.db"
    await _create_schema(raw_path)
    raw_seconds = _raw_insert(raw_path, corpus, count)
    raw_path.unlink()

    ours_path = workdir / "ours-import.db"
    async with await Database.open(ours_path) as db:
        store = PostStore(db)
        started = time.perf_counter()
        for document in documents:
            await store.import_result(document)
        ours_seconds = time.perf_counter() - started
    figures = ImportFigures(count / ours_seconds, count / raw_seconds, count / generation)
    return figures, ours_path


# --- (2) search -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float
    p99: float
    rounds: int
    matches: int


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _time_sync(call: Callable[[], object]) -> list[float]:
    call()  # warm the page cache
    samples: list[float] = []
    deadline = time.perf_counter() + SEARCH_BUDGET
    while len(samples) < SEARCH_ROUNDS and (
        len(samples) < MIN_ROUNDS or time.perf_counter() < deadline
    ):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _time_async(call: Callable[[], Awaitable[object]]) -> list[float]:
    await call()
    samples: list[float] = []
    deadline = time.perf_counter() + SEARCH_BUDGET
    while len(samples) < SEARCH_ROUNDS and (
        len(samples) < MIN_ROUNDS or time.perf_counter() < deadline
    ):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


RAW_SEARCH = (
    "SELECT p.rowid, p.id, p.source_id, p.published_at, p.updated_at, p.title, p.byline, "
    "p.authors, p.location, p.body, p.images, p.background, p.permalink, p.version, "
    "highlight(posts_fts, 0, char(2), char(3)), "
    "snippet(posts_fts, 2, char(2), char(3), '…', 32) "
    "FROM posts_fts JOIN posts p ON p.rowid = posts_fts.rowid "
    f"WHERE posts_fts MATCH ? ORDER BY {RANK_EXPRESSION} LIMIT 10"
)


async def bench_search(path: Path, queries: dict[str, str]) -> dict[str, tuple[Latency, Latency]]:
    """{kind: (ours, raw)}"""
    from storage.search import compile_query

    figures: dict[str, tuple[Latency, Latency]] = {}
    raw = sqlite3.connect(path)
    try:
        async with await Database.open(path) as db:
            for kind, text in queries.items():
                match = compile_query(text).match
                row = raw.execute(
                    "SELECT count(*) FROM posts_fts WHERE posts_fts MATCH ?", (match,)
                ).fetchone()
                matches = int(row[0])

                def run_raw(match: str = match) -> list[Any]:
                    return raw.execute(RAW_SEARCH, (match,)).fetchall()

                async def run_ours(text: str = text) -> object:
                    return await search(db, text, per_page=10)

                raw_samples = _time_sync(run_raw)
                our_samples = await _time_async(run_ours)
                figures[kind] = (
                    Latency(*_percentiles(our_samples), len(our_samples), matches),
                    Latency(*_percentiles(raw_samples), len(raw_samples), matches),
                )
    finally:
        raw.close()
    return figures


def big_database(corpus: Corpus, count: int) -> Path:
    """The cached 1M-post database, built with raw executemany if missing."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"search-{count}.db"
    if path.exists():
        return path
    building = path.with_suffix(".building")
    for leftover in RESULTS.glob(building.name + "*"):
        leftover.unlink()
    console.print(f"building {count:,}-post database at {path} (cached for later runs)…")
    asyncio.run(_create_schema(building))
    seconds = _raw_insert(building, corpus, count)
    conn = sqlite3.connect(building)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(building) + suffix).unlink(missing_ok=True)
    building.rename(path)
    console.print(f"built in {seconds:.0f} s ({count / seconds:,.0f} posts/s)")
    return path


# --- report -----------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def print_import(figures: ImportFigures, count: int) -> None:
    table = Table(title=f"Import {count:,} posts (documents of {DOCUMENT_POSTS:,})")
    for column in ("path", "posts/s", "ratio", "goal"):
        table.add_column(column, justify="right" if column != "path" else "left")
    ratio = figures.ours_per_s / figures.raw_per_s
    table.add_row("PostStore.import_result", f"{figures.ours_per_s:,.0f}", f"{ratio:.2f}", "≥ 0.50")
    table.add_row("raw executemany, one transaction", f"{figures.raw_per_s:,.0f}", "1.00", "")
    console.print(table)
    console.print(f"(generating the posts: {figures.generation_per_s:,.0f} posts/s, not timed)")


def print_search(title: str, figures: dict[str, tuple[Latency, Latency]]) -> None:
    table = Table(title=title)
    columns = ("query", "matches", "ours p50", "ours p99", "raw p50", "raw p99", "p99 ratio", "ok")
    for column in columns:
        table.add_column(column, justify="left" if column == "query" else "right", no_wrap=True)
    for kind, (ours, raw) in figures.items():
        ratio = ours.p99 / raw.p99 if raw.p99 else float("inf")
        ok = ours.p99 <= 20 and (ratio <= 2 or ours.p99 <= 2 * raw.p99)
        table.add_row(
            kind,
            f"{ours.matches:,}",
            _ms(ours.p50),
            _ms(ours.p99),
            _ms(raw.p50),
            _ms(raw.p99),
            f"{ratio:.2f}×",
            "yes" if ok else "NO",
        )
    console.print(table)
    console.print("milliseconds; goal: ours p99 ≤ 2× raw p99 and ≤ 20 ms")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-post database")
    parser.add_argument("--posts", type=int, default=IMPORT_POSTS, help="posts to import")
    args = parser.parse_args(argv)

    corpus = Corpus()
    queries = corpus.queries()
    console.print("queries: " + ", ".join(f"{k} = {v}" for k, v in queries.items()))
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-") as workdir:
        figures, path = asyncio.run(bench_import(corpus, Path(workdir), args.posts))
        print_import(figures, args.posts)
        small = asyncio.run(bench_search(path, queries))
        print_search(f"Search at {args.posts:,} posts (top 10, highlight + snippet)", small)
    if not args.quick:
        big = big_database(corpus, BIG_POSTS)
        print_search(
            f"Search at {BIG_POSTS:,} posts (top 10, highlight + snippet)",
            asyncio.run(bench_search(big, queries)),
        )


if __name__ == "__main__":
    main()
