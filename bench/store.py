"""Store benchmark: import throughput beside the raw SQLite ceiling of the same run.

    python -m bench store            # import 100k posts
    python -m bench store --quick    # import 20k posts
    python -m bench store --smoke    # import 200 posts (the smoke test)

SQLite: 100k synthetic posts (title and body only) through storage.ingest.ingest (documents of
1,000 posts) ÷ raw sqlite3.executemany into the same schema (same triggers, one transaction, 50
rows a statement as the store writes them: FTS5 costs ~40% more at one row a statement).
PostgreSQL (a throwaway server, when its binaries are here): the store's ingest ÷ raw COPY and
÷ raw executemany into the same schema. Goal ≥ 0.8 (issue 13). Median of --runs runs, alternating
ours and raw, with the load average of each run; every input is generated before timing.
The same import into a store holding SUBSCRIBERS subscriptions (every other one with a keyword
filter), both backends: ÷ raw inserts of the same posts and of the deliveries that import wrote
(SQLite executemany, PostgreSQL COPY), in one transaction, into the same schema holding the same
subscriptions.

The CLI import (both backends): `livedesk import FEED` as an operator runs it (a subprocess, spawn →
exit) of an RSS 2.0 feed shaped like a newspaper's (bench._corpus.rss_feed: HTML descriptions with
links, emphasis and figures; 10k items, --full 100k), into a freshly migrated, empty store ÷ the raw
ceiling: a bare interpreter (a subprocess too, so both pay the start-up) reading the very rows that
import stored (taken from an untimed warm-up run) and writing them with executemany in one
transaction into the same empty schema (on SQLite 50 rows a statement, as the store does). Goal
≥ 0.8 (issue 13).
Search latency, and the SQLite import with captions and background, are in bench/search.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import pickle
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import fleet
from bench import search as search_bench
from bench._common import (
    Line,
    Runs,
    console,
    drop_database,
    from_line,
    hot_path_table,
    new_database,
    postgres,
    postgres_available,
    record,
)
from bench._corpus import SEED, rss_feed, zipf_vocabulary
from bench._process import livedesk_script, run_to_end
from storage.codecs import to_db_time
from storage.db import Database
from storage.ingest import ingest
from storage.models import EditPolicy, ImportResult, Post, Source, SourceKind, Target
from storage.pg_store import open_postgres
from storage.posts import ROWS_PER_INSERT as RAW_ROWS_PER_INSERT
from storage.posts import PostStore
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription
from tests.pgserver import PostgresServer

IMPORT_POSTS = 100_000
DOCUMENT_POSTS = 1_000
FEED_ITEMS = 100_000
"""Items of the feed `livedesk import` reads (--quick: a tenth)."""

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


def _raw_insert(
    path: Path,
    corpus: Corpus,
    rows: Sequence[tuple[str, ...]],
    deliveries: Sequence[tuple[Any, ...]] = (),
) -> float:
    """Insert the prepared rows with sqlite3.executemany in one transaction, as many rows a
    statement as the store puts in one, and `deliveries` (DELIVERY_COLUMNS) in the same
    transaction; return seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "INSERT OR IGNORE INTO sources (id, title, kind, added_at) VALUES (?, ?, ?, ?)",
            ("bench", "Bench blog", "page-text", to_db_time(corpus.start)),
        )
        one = "(?, 'bench', ?, ?, 'By Bench Writer', ?, ?, ?)"
        head = (
            "INSERT INTO posts (id, source_id, published_at, title, byline, body, "
            "content_hash, recorded_at) VALUES "
        )
        whole = len(rows) - len(rows) % RAW_ROWS_PER_INSERT
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(  # as the store writes them: ROWS_PER_INSERT rows a statement
            head + ", ".join([one] * RAW_ROWS_PER_INSERT),
            [
                list(itertools.chain.from_iterable(rows[start : start + RAW_ROWS_PER_INSERT]))
                for start in range(0, whole, RAW_ROWS_PER_INSERT)
            ],
        )
        if whole < len(rows):
            conn.executemany(head + one, rows[whole:])
        if deliveries:
            conn.executemany(
                f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                deliveries,
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


def _remove(workdir: Path, pattern: str) -> None:
    for path in workdir.glob(pattern):
        path.unlink()


def _remove_run(workdir: Path, run: int) -> None:
    _remove(workdir, f"*-{run}.db*")


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


SUBSCRIBERS = 20
"""Subscriptions of the store the "with subscribers" import goes into; every other one has a
keyword filter (`_subscribers`)."""
DELIVERY_COLUMNS = (
    "subscription_id, post_rowid, version, event, order_key, next_attempt_at, created_at"
)


def _subscribers(corpus: Corpus) -> list[NewSubscription]:
    """SUBSCRIBERS newsroom targets: every other one takes every post, the others one of five
    keyword filters (a common word, a rarer one, OR, a prefix, an exclusion)."""
    w = corpus.words
    queries = [w[30], w[200], f"{w[1000]} OR {w[5000]}", f"{w[60][:3]}*", f"{w[40]} -{w[41]}"]
    return [
        NewSubscription(
            Target(platform="terminal", address=f"desk-{n}"),
            "bench",
            None,
            queries[n // 2 % len(queries)] if n % 2 else None,
            EditPolicy.EDIT,
        )
        for n in range(SUBSCRIBERS)
    ]


async def _ours_subscribed(
    path: Path, documents: Sequence[ImportResult], items: Sequence[NewSubscription]
) -> tuple[float, list[tuple[Any, ...]]]:
    """Seconds of the ingest into a store holding `items`, and the deliveries it wrote."""
    async with await Database.open(path) as db:
        await SubscriptionStore(db).put(items)
        started = time.perf_counter()
        for document in documents:
            await ingest(db, document)
        seconds = time.perf_counter() - started
        async with db.reader.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY id"
        ) as cur:
            deliveries = [tuple(row) for row in await cur.fetchall()]
    return seconds, deliveries


def _but_times(deliveries: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Deliveries without their created_at (the last of DELIVERY_COLUMNS), which each run stamps."""
    return [tuple(row[:-1]) for row in deliveries]


async def _subscribed_schema(path: Path, items: Sequence[NewSubscription]) -> None:
    async with await Database.open(path) as db:
        await SubscriptionStore(db).put(items)


async def bench_import_subscribed(corpus: Corpus, workdir: Path, count: int, runs: int) -> Line:
    """SQLite: the import into a store with SUBSCRIBERS subscriptions (half with keywords) ÷ raw
    executemany of the same posts and of the deliveries our import wrote (taken from an untimed
    first run), in one transaction, into the same schema holding the same subscriptions."""
    documents = corpus.documents(count, DOCUMENT_POSTS)
    rows = _raw_rows(corpus, count)
    items = _subscribers(corpus)
    _, deliveries = await _ours_subscribed(workdir / "warm.db", documents, items)
    _remove(workdir, "warm.db*")
    ours, raw = Runs(), Runs()
    for run in range(runs):
        raw_path = workdir / f"raw-{run}.db"
        await _subscribed_schema(raw_path, items)
        raw.add(count / _raw_insert(raw_path, corpus, rows, deliveries))
        seconds, written = await _ours_subscribed(workdir / f"ours-{run}.db", documents, items)
        if _but_times(written) != _but_times(deliveries):
            raise RuntimeError("the import wrote other deliveries than its first run")
        ours.add(count / seconds)
        _remove_run(workdir, run)
    return Line(
        f"SQLite: ingest with {SUBSCRIBERS} subscriptions ({len(deliveries):,} deliveries) ÷ "
        "raw executemany of the posts and deliveries",
        "posts/s",
        ours,
        raw,
        goal=0.8,
    )


RAW_POSTGRES_SUBSCRIBED_COPY = "COPY {table} ({columns}) FROM STDIN"


def _postgres_copy(url: str, columns: list[str], posts: list[Any], deliveries: list[Any]) -> float:
    """The raw ceiling on PostgreSQL: the stored posts (every column ingest writes) and the
    deliveries, each by COPY, in one transaction; seconds."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for table, names, values in (
            ("posts", ", ".join(columns), posts),
            ("deliveries", DELIVERY_COLUMNS, deliveries),
        ):
            with cur.copy(RAW_POSTGRES_SUBSCRIBED_COPY.format(table=table, columns=names)) as copy:
                for row in values:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


async def _pg_subscribed(
    server: PostgresServer, documents: Sequence[ImportResult], items: Sequence[NewSubscription]
) -> tuple[float, str]:
    """Seconds of the ingest into a new database holding `items`, and that database's URL."""
    url = new_database(server, "subscribed")
    store = await open_postgres(url)
    try:
        await store.subscriptions.put(items)
        started = time.perf_counter()
        for document in documents:
            await store.ingest(document)
        return time.perf_counter() - started, url
    finally:
        await store.close()


def _pg_written(url: str) -> tuple[list[str], list[Any], list[Any], list[Any]]:
    """(posts' written columns, sources, posts, deliveries) as an import left them."""
    with psycopg.connect(url) as conn:
        columns = [
            str(r[0])
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'posts' "
                "AND is_generated = 'NEVER' ORDER BY ordinal_position"
            )
        ]
        sources = conn.execute("SELECT * FROM sources").fetchall()
        posts = conn.execute(f"SELECT {', '.join(columns)} FROM posts ORDER BY rowid").fetchall()
        deliveries = conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY id"
        ).fetchall()
    return columns, sources, posts, deliveries


async def bench_import_subscribed_postgres(corpus: Corpus, count: int, runs: int) -> Line | str:
    """PostgreSQL: the same ÷ raw COPY of the posts and deliveries our import wrote, each run on
    new databases of a throwaway server holding the same subscriptions."""
    if not postgres_available():
        return "PostgreSQL: not measured (no initdb/pg_ctl on this machine)"
    documents = corpus.documents(count, DOCUMENT_POSTS)
    items = _subscribers(corpus)
    with postgres() as server:
        _, url = await _pg_subscribed(server, documents, items)
        columns, sources, posts, deliveries = _pg_written(url)
        drop_database(server, url)
        ours, raw = Runs(), Runs()
        for _ in range(runs):
            url = new_database(server, "subscribed_raw")
            store = await open_postgres(url)
            await store.subscriptions.put(items)
            await store.close()
            with psycopg.connect(url) as conn:
                marks = ", ".join(["%s"] * len(sources[0]))
                conn.cursor().executemany(f"INSERT INTO sources VALUES ({marks})", sources)
            raw.add(
                count / await asyncio.to_thread(_postgres_copy, url, columns, posts, deliveries)
            )
            drop_database(server, url)
            seconds, url = await _pg_subscribed(server, documents, items)
            written = _pg_written(url)[3]
            drop_database(server, url)
            if _but_times(written) != _but_times(deliveries):
                raise RuntimeError("the import wrote other deliveries than its first run")
            ours.add(count / seconds)
    return Line(
        f"PostgreSQL: ingest with {SUBSCRIBERS} subscriptions ({len(deliveries):,} deliveries) ÷ "
        "raw COPY of the posts and deliveries",
        "posts/s",
        ours,
        raw,
        goal=0.8,
    )


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


# --- (2) livedesk import through the CLI -------------------------------------------------------------

RAW_SQLITE = """
import pickle, sqlite3, sys
sources, posts = pickle.load(open(sys.argv[1], "rb"))
conn = sqlite3.connect(sys.argv[2], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
per = int(sys.argv[3])
one = "(" + ",".join("?" * len(posts[0])) + ")"
whole = len(posts) - len(posts) % per
conn.execute("BEGIN IMMEDIATE")
conn.executemany(f"INSERT INTO sources VALUES ({','.join('?' * len(sources[0]))})", sources)
conn.executemany(
    "INSERT INTO posts VALUES " + ",".join([one] * per),
    [[v for row in posts[i : i + per] for v in row] for i in range(0, whole, per)],
)
conn.executemany("INSERT INTO posts VALUES " + one, posts[whole:])
conn.execute("COMMIT")
conn.close()
"""
"""The raw ceiling of the SQLite import: the stored rows (sources, posts: every column) back in,
`per` rows a statement as the store writes them (one row a statement costs FTS5 ~40% more)."""

RAW_POSTGRES = """
import pickle, sys
import psycopg
columns, sources, posts = pickle.load(open(sys.argv[1], "rb"))
with psycopg.connect(sys.argv[2]) as conn:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO sources VALUES ({','.join(['%s'] * len(sources[0]))})", sources
        )
        cur.executemany(
            f"INSERT INTO posts ({', '.join(columns)}) VALUES ({','.join(['%s'] * len(columns))})",
            posts,
        )
"""
"""The raw ceiling of the PostgreSQL import: every column ingest writes (the tsvector is generated)."""


def _livedesk_import(feed: Path, cwd: Path, env: dict[str, str], count: int) -> float:
    """Seconds of `livedesk import FEED`, spawn → exit; it must store every item."""
    done = run_to_end([*livedesk_script(), "import", str(feed)], cwd, env)
    if done.code != 0 or f"{count} new" not in done.out:
        raise RuntimeError(f"livedesk import failed ({done.code}): {(done.out + done.err)[-800:]}")
    return done.seconds


def _raw_process(script: str, rows: Path, target: str, cwd: Path, *extra: str) -> float:
    done = run_to_end([sys.executable, "-c", script, str(rows), target, *extra], cwd)
    if done.code != 0:
        raise RuntimeError(f"raw import failed ({done.code}): {done.err[-800:]}")
    return done.seconds


def _sqlite_rows(path: Path, rows: Path) -> int:
    """The rows an import stored (sources, posts), pickled for the raw ceiling; how many posts."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        sources = conn.execute("SELECT * FROM sources").fetchall()
        posts = conn.execute("SELECT * FROM posts ORDER BY rowid").fetchall()
    rows.write_bytes(pickle.dumps((sources, posts)))
    return len(posts)


def bench_cli_import(workdir: Path, feed: Path, count: int, runs: int) -> Line:
    """SQLite: `livedesk import` ÷ raw executemany of the rows it stored, alternating, each on a
    fresh copy of the same empty, migrated store; one untimed warm-up import gives the rows."""
    empty = workdir / "empty.db"
    asyncio.run(_create_schema(empty))
    rows = workdir / "rows.pickle"
    target = workdir / "cli.db"

    def fresh() -> dict[str, str]:
        for path in workdir.glob("cli.db*"):
            path.unlink()
        shutil.copyfile(empty, target)
        return {"LIVEDESK_DB_PATH": str(target)}

    _livedesk_import(feed, workdir, fresh(), count)  # the warm-up: page cache, bytecode, the rows
    if _sqlite_rows(target, rows) != count:
        raise RuntimeError("the warm-up import did not store every item")
    ours, raw = Runs(), Runs()
    for _ in range(runs):
        fresh()
        raw.add(
            count / _raw_process(RAW_SQLITE, rows, str(target), workdir, str(RAW_ROWS_PER_INSERT))
        )
        ours.add(count / _livedesk_import(feed, workdir, fresh(), count))
    return Line("SQLite: livedesk import FEED ÷ raw executemany", "posts/s", ours, raw, goal=0.8)


async def _migrated_postgres(server: PostgresServer) -> str:
    url = new_database(server, "cli_import")
    store = await open_postgres(url)
    await store.close()
    return url


def _postgres_rows(url: str, rows: Path) -> int:
    columns, sources, posts, _ = _pg_written(url)
    rows.write_bytes(pickle.dumps((columns, sources, posts)))
    return len(posts)


def bench_cli_import_postgres(workdir: Path, feed: Path, count: int, runs: int) -> Line | str:
    """PostgreSQL: the same, each run on a new, migrated database of a throwaway server."""
    if not postgres_available():
        return "PostgreSQL: not measured (no initdb/pg_ctl on this machine)"
    rows = workdir / "pg-rows.pickle"
    with postgres() as server:

        def fresh() -> str:
            return asyncio.run(_migrated_postgres(server))

        url = fresh()
        _livedesk_import(feed, workdir, {"LIVEDESK_DATABASE_URL": url}, count)
        stored = _postgres_rows(url, rows)
        drop_database(server, url)
        if stored != count:
            raise RuntimeError("the warm-up import did not store every item")
        ours, raw = Runs(), Runs()
        for _ in range(runs):
            url = fresh()
            raw.add(count / _raw_process(RAW_POSTGRES, rows, url, workdir))
            drop_database(server, url)
            url = fresh()
            ours.add(count / _livedesk_import(feed, workdir, {"LIVEDESK_DATABASE_URL": url}, count))
            drop_database(server, url)
    return Line(
        "PostgreSQL: livedesk import FEED ÷ raw executemany", "posts/s", ours, raw, goal=0.8
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="import 20k posts")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="import 200 posts: the smoke test")
    parser.add_argument("--posts", type=int, default=IMPORT_POSTS, help="posts to import")
    parser.add_argument(
        "--feed-items", type=int, default=FEED_ITEMS, help="items of the feed livedesk imports"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (median shown)")
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL side")
    parser.add_argument("--cli-only", action="store_true", help="only the import through the CLI")
    args = parser.parse_args(argv)

    corpus = Corpus()
    quick = args.quick and not args.full
    count = 200 if args.smoke else args.posts // 5 if quick else args.posts
    runs = 1 if args.smoke else args.runs  # --quick too: a median, not one run
    items = 50 if args.smoke else args.feed_items // 10 if quick else args.feed_items
    cli_runs = 1 if args.smoke else args.runs
    lines: list[tuple[str, str, Line]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-") as folder:
        workdir = Path(folder)
        if not args.cli_only:
            line = asyncio.run(bench_import(corpus, workdir, count, runs))
            lines.append(("SQLite", f"import {count:,} posts (raw: executemany)", line))
            line = asyncio.run(bench_import_subscribed(corpus, workdir, count, runs))
            subscribed = f"import {count:,} posts into a store with {SUBSCRIBERS} subscriptions"
            lines.append(("SQLite", f"{subscribed} (raw: executemany)", line))
            if not args.sqlite_only:
                pg = asyncio.run(bench_import_postgres(count, runs))
                if isinstance(pg, str):
                    notes.append(pg)
                else:
                    lines.append(("PostgreSQL", f"import {count:,} posts (raw: COPY)", pg[0]))
                    lines.append(
                        ("PostgreSQL", f"import {count:,} posts (raw: executemany)", pg[1])
                    )
                pg_subscribed = asyncio.run(bench_import_subscribed_postgres(corpus, count, runs))
                if isinstance(pg_subscribed, str):
                    notes.append(pg_subscribed)
                else:
                    lines.append(("PostgreSQL", f"{subscribed} (raw: COPY)", pg_subscribed))
            title = (
                f"Import {count:,} posts (documents of {DOCUMENT_POSTS:,}), median of {runs} "
                f"run{'s' if runs > 1 else ''}"
            )
            console.print(hot_path_table(title, [line for _, _, line in lines]))
            console.print(
                "Every input is generated before the clocks start. SQLite raw: title and body "
                "into `posts` (its FTS triggers included); PostgreSQL raw: every column ingest "
                "writes (the tsvector is generated). " + " ".join(notes)
            )
        feed = workdir / "feed.xml"
        feed.write_bytes(rss_feed(items))  # before any clock starts
        named = f"livedesk import of a {items:,}-item feed, spawn → exit (raw: executemany)"
        cli_lines = [bench_cli_import(workdir, feed, items, cli_runs)]
        cli_named = [("SQLite", named)]
        cli_note = ""
        if not args.sqlite_only:
            pg_line = bench_cli_import_postgres(workdir, feed, items, cli_runs)
            if isinstance(pg_line, str):
                cli_note = pg_line
            else:
                cli_lines.append(pg_line)
                cli_named.append(("PostgreSQL", named))
        console.print(
            hot_path_table(
                f"livedesk import of a {items:,}-item RSS feed ({feed.stat().st_size / 1e6:.1f} MB)"
                f" through the CLI, median of {cli_runs} run{'s' if cli_runs > 1 else ''}",
                cli_lines,
            )
        )
        console.print(
            "Ours: the `livedesk` script, spawn → exit, into an empty migrated store. Raw: a bare "
            "interpreter inserting the rows that import stored (every column) with executemany "
            "in one transaction into the same empty schema. " + cli_note
        )
    sqlite_lines = [item for item in lines if item[0] == "SQLite"]
    pg_lines = [item for item in lines if item[0] == "PostgreSQL"]
    figures = [from_line("store", line, b, path) for b, path, line in sqlite_lines]
    figures.append(from_line("store", cli_lines[0], *cli_named[0]))
    figures += [from_line("store", line, b, path) for b, path, line in pg_lines]
    figures += [
        from_line("store", line, b, path)
        for line, (b, path) in zip(cli_lines[1:], cli_named[1:], strict=True)
    ]
    record("store", figures)


if __name__ == "__main__":
    main()
