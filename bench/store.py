"""Store benchmark: import throughput beside the raw SQLite ceiling of the same run.

    python -m bench store            # import 100k posts
    python -m bench store --quick    # import 20k posts

100k synthetic posts (title and body only) through storage.ingest.ingest (documents of 1,000
posts) ÷ raw sqlite3.executemany into the same schema (same triggers, one transaction).
Goal ≥ 0.5. Search latency, and the import with captions and background, are in bench/search.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from storage.codecs import to_db_time
from storage.db import Database
from storage.ingest import ingest
from storage.models import ImportResult, Post, Source, SourceKind
from storage.posts import PostStore

SEED = 20220121
VOCABULARY = 50_000
IMPORT_POSTS = 100_000
DOCUMENT_POSTS = 1_000

console = Console(width=110)


# --- synthetic posts --------------------------------------------------------------------------------


def zipf_vocabulary(seed: int = SEED) -> tuple[list[str], list[float]]:
    """VOCABULARY distinct invented words and their cumulative Zipf weights (rank r weighs 1/r):
    the same words for every benchmark that uses the seed."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choices(letters, k=rng.randint(3, 9)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = list(itertools.accumulate(1.0 / rank for rank in range(1, VOCABULARY + 1)))
    return words, weights


class Corpus:
    """Deterministic posts: title ~58 characters, body ~1,200 characters, Zipf vocabulary."""

    def __init__(self, seed: int = SEED) -> None:
        self.words, self.cum_weights = zipf_vocabulary(seed)
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
            await ingest(store.db, document)
        ours_seconds = time.perf_counter() - started
    figures = ImportFigures(count / ours_seconds, count / raw_seconds, count / generation)
    return figures, ours_path


# --- report -----------------------------------------------------------------------------------------


def print_import(figures: ImportFigures, count: int) -> None:
    table = Table(title=f"Import {count:,} posts (documents of {DOCUMENT_POSTS:,})")
    for column in ("path", "posts/s", "ratio", "goal"):
        table.add_column(column, justify="right" if column != "path" else "left")
    ratio = figures.ours_per_s / figures.raw_per_s
    table.add_row("storage.ingest.ingest", f"{figures.ours_per_s:,.0f}", f"{ratio:.2f}", "≥ 0.50")
    table.add_row("raw executemany, one transaction", f"{figures.raw_per_s:,.0f}", "1.00", "")
    console.print(table)
    console.print(f"(generating the posts: {figures.generation_per_s:,.0f} posts/s, not timed)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="import 20k posts")
    parser.add_argument("--posts", type=int, default=IMPORT_POSTS, help="posts to import")
    args = parser.parse_args(argv)

    corpus = Corpus()
    count = args.posts // 5 if args.quick else args.posts
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-") as workdir:
        figures, _ = asyncio.run(bench_import(corpus, Path(workdir), count))
        print_import(figures, count)


if __name__ == "__main__":
    main()
