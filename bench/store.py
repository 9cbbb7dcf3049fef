"""Store benchmark: import throughput beside the raw SQLite ceiling of the same run.

    python -m bench store            # import 100k posts
    python -m bench store --quick    # import 20k posts
    python -m bench store --smoke    # import 200 posts (the smoke test)

SQLite: 100k synthetic posts (title and body only) through storage.ingest.ingest (documents of
1,000 posts) ÷ raw sqlite3.executemany into the same schema (same triggers, one transaction).
PostgreSQL (a throwaway server, when its binaries are here): the store's ingest ÷ raw COPY and
÷ raw executemany into the same schema. Goal ≥ 0.8 (issue 13). Median of --runs runs, alternating
ours and raw, with the load average of each run; every input is generated before timing.
Search latency, and the SQLite import with captions and background, are in bench/search.py.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import fleet
from bench import search as search_bench
from bench._common import (
    Line,
    Runs,
    console,
    from_line,
    hot_path_table,
    postgres,
    postgres_available,
    record,
)
from bench._corpus import SEED, zipf_vocabulary
from storage.codecs import to_db_time
from storage.db import Database
from storage.ingest import ingest
from storage.models import ImportResult, Post, Source, SourceKind
from storage.posts import PostStore

IMPORT_POSTS = 100_000
DOCUMENT_POSTS = 1_000

# --- synthetic posts --------------------------------------------------------------------------------


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


def _raw_rows(corpus: Corpus, count: int) -> list[tuple[str, str, str, str, str, str]]:
    """The rows the raw ceiling inserts, built before its clock starts (as ours are)."""
    recorded = to_db_time(corpus.start)
    return [(i, p, t, b, i, recorded) for i, p, t, b in corpus.rows(count)]


def _raw_insert(path: Path, corpus: Corpus, rows: Sequence[tuple[str, ...]]) -> float:
    """Insert the prepared rows with sqlite3.executemany in one transaction; return seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "INSERT OR IGNORE INTO sources (id, title, kind, added_at) VALUES (?, ?, ?, ?)",
            ("bench", "Bench blog", "page-text", to_db_time(corpus.start)),
        )
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO posts (id, source_id, published_at, title, byline, body, "
            "content_hash, recorded_at) VALUES (?, 'bench', ?, ?, 'By Bench Writer', ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def _create_schema(path: Path) -> None:
    async with await Database.open(path):
        pass


# --- (1) import -------------------------------------------------------------------------------------


async def _ours_insert(path: Path, documents: Sequence[ImportResult]) -> float:
    async with await Database.open(path) as db:
        store = PostStore(db)
        started = time.perf_counter()
        for document in documents:
            await ingest(store.db, document)
        return time.perf_counter() - started


def _remove_run(workdir: Path, run: int) -> None:
    for path in workdir.glob(f"*-{run}.db*"):
        path.unlink()


async def bench_import(corpus: Corpus, workdir: Path, count: int, runs: int) -> Line:
    """SQLite: ours and the raw ceiling, alternating, each on a fresh file; every input is built
    before any clock starts."""
    documents = corpus.documents(count, DOCUMENT_POSTS)
    rows = _raw_rows(corpus, count)
    ours, raw = Runs(), Runs()
    for run in range(runs):
        raw_path = workdir / f"raw-{run}.db"
        await _create_schema(raw_path)
        raw.add(count / _raw_insert(raw_path, corpus, rows))
        ours_path = workdir / f"ours-{run}.db"
        ours.add(count / await _ours_insert(ours_path, documents))
        _remove_run(workdir, run)
    return Line("SQLite: store ingest ÷ raw executemany", "posts/s", ours, raw, goal=0.8)


async def bench_import_postgres(count: int, runs: int) -> tuple[Line, Line] | str:
    """PostgreSQL: ours ÷ raw COPY and ÷ raw executemany into the same schema (bench.fleet's import,
    posts with captions and background), or why it did not run."""
    if not postgres_available():
        return "PostgreSQL: not measured (no initdb/pg_ctl on this machine)"
    with postgres() as server:
        figures, _ = await fleet.bench_import(server, search_bench.Corpus(), count, runs)
    loads = [text.removeprefix("load ") for text in figures.loads]
    ours = Runs(figures.ours, loads)
    copy = Runs(figures.copy, loads)
    many = Runs(figures.executemany, loads)
    return (
        Line("PostgreSQL: store ingest ÷ raw COPY", "posts/s", ours, copy, goal=0.8),
        Line("PostgreSQL: store ingest ÷ raw executemany", "posts/s", ours, many, goal=0.8),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="import 20k posts, fewer runs")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="import 200 posts: the smoke test")
    parser.add_argument("--posts", type=int, default=IMPORT_POSTS, help="posts to import")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (median shown)")
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL side")
    args = parser.parse_args(argv)

    corpus = Corpus()
    quick = args.quick and not args.full
    count = 200 if args.smoke else args.posts // 5 if quick else args.posts
    runs = 1 if quick or args.smoke else args.runs
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-") as workdir:
        lines.append(asyncio.run(bench_import(corpus, Path(workdir), count, runs)))
    note = ""
    if not args.sqlite_only:
        pg = asyncio.run(bench_import_postgres(count, runs))
        if isinstance(pg, str):
            note = pg
        else:
            lines.extend(pg)
    title = f"Import {count:,} posts (documents of {DOCUMENT_POSTS:,}), median of {runs} run{'s' if runs > 1 else ''}"
    console.print(hot_path_table(title, lines))
    console.print(
        "Every input is generated before the clocks start. SQLite raw: title and body into `posts` "
        "(its FTS triggers included); PostgreSQL raw: every column ingest writes (the tsvector is "
        "generated). " + note
    )
    named = [
        ("SQLite", f"import {count:,} posts (raw: executemany)"),
        ("PostgreSQL", f"import {count:,} posts (raw: COPY)"),
        ("PostgreSQL", f"import {count:,} posts (raw: executemany)"),
    ]
    record(
        "store",
        [from_line("store", line, b, path) for line, (b, path) in zip(lines, named, strict=False)],
    )


if __name__ == "__main__":
    main()
