"""Bulk subscribe: `livedesk subscribe slack --from-file` of 100k lines beside raw executemany of the
same rows into the same schema.

    python -m bench bulk              # 100k lines, 3 runs, SQLite and PostgreSQL
    python -m bench bulk --quick      # 100k lines, 1 run
    python -m bench bulk --smoke      # 300 lines (the smoke test)

Ours: the installed `livedesk` script as a subprocess, spawn → exit (interpreter start-up, reading
and checking the file, one all-or-nothing transaction), into a store created beforehand. One line in
ten has keywords. Raw: the very rows our run wrote (every column but the id, read back from its
store), inserted with executemany in one transaction (sqlite3; psycopg for PostgreSQL) into a fresh
store of the same schema; the clock runs around the executemany and the commit only, the ceiling of
the database itself. Goal (issue 13): 100k lines in ≤ 5 s, still all-or-nothing (at other
sizes the figures are shown without a goal).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from rich.table import Table

from bench._common import (
    Figure,
    at_most,
    console,
    drop_database,
    load,
    load_range,
    new_database,
    postgres,
    postgres_available,
    record,
)
from bench._process import compile_bytecode, livedesk_script, run_to_end
from storage.pg_store import open_postgres
from storage.store import open_sqlite
from tests.pgserver import PostgresServer

LINES = 100_000
GOAL_SECONDS = 5.0
KEYWORD_SHARE = 10


def write_file(path: Path, lines: int) -> None:
    """`lines` Slack webhooks, one in KEYWORD_SHARE with keywords, a comment and a blank line."""
    with path.open("w") as out:
        out.write("# newsroom desks\n\n")
        for n in range(lines):
            url = f"https://hooks.slack.com/services/T{n % 97:04d}/B{n:07d}/X{n * 7919 % 10**9:09d}"
            keywords = "   sanctions OR NATO" if n % KEYWORD_SHARE == 0 else ""
            out.write(url + keywords + "\n")


async def _create(location: Path | str) -> None:
    """An empty store, migrated: the subscribe that follows does not pay for creating it."""
    store = await (open_postgres(location) if isinstance(location, str) else open_sqlite(location))
    await store.close()


def _ours(location: Path | str, file: Path, cwd: Path, lines: int) -> float:
    asyncio.run(_create(location))
    done = run_to_end(
        [*livedesk_script(), "--db", str(location), "subscribe", "slack", "--from-file", str(file)],
        cwd,
    )
    if done.code != 0:
        raise RuntimeError(f"livedesk subscribe failed ({done.code}): {done.err.strip()[-500:]}")
    written = _count(location)
    if written != lines:
        raise RuntimeError(f"{written} subscriptions for {lines} lines")
    return done.seconds


def _count(location: Path | str) -> int:
    if isinstance(location, str):
        with psycopg.connect(location) as conn:
            row = conn.execute("SELECT count(*) FROM subscriptions").fetchone()
    else:
        with sqlite3.connect(location) as sq:
            row = sq.execute("SELECT count(*) FROM subscriptions").fetchone()
    assert row is not None
    return int(row[0])


def _rows(location: Path | str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(columns, rows) of the subscriptions our run wrote, every column but the id."""
    query = "SELECT * FROM subscriptions ORDER BY id"
    if isinstance(location, str):
        with psycopg.connect(location) as conn, conn.cursor() as cur:
            cur.execute(query)
            assert cur.description is not None
            columns = [c.name for c in cur.description]
            rows = cur.fetchall()
    else:
        sq = sqlite3.connect(location)
        try:
            cursor = sq.execute(query)
            columns = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        finally:
            sq.close()
    keep = [i for i, c in enumerate(columns) if c != "id"]
    return [columns[i] for i in keep], [tuple(r[i] for i in keep) for r in rows]


def _raw(location: Path | str, columns: list[str], rows: list[tuple[Any, ...]]) -> float:
    """Seconds for executemany of `rows` in one transaction into the fresh store at `location`."""
    asyncio.run(_create(location))
    names = ", ".join(columns)
    if isinstance(location, str):
        marks = ", ".join(["%s"] * len(columns))
        with psycopg.connect(location) as conn:
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO subscriptions ({names}) VALUES ({marks})", rows)
            conn.commit()
            return time.perf_counter() - started
    sq = sqlite3.connect(location, isolation_level=None)
    try:
        sq.execute("PRAGMA synchronous=NORMAL")
        marks = ", ".join(["?"] * len(columns))
        started = time.perf_counter()
        sq.execute("BEGIN IMMEDIATE")
        sq.executemany(f"INSERT INTO subscriptions ({names}) VALUES ({marks})", rows)
        sq.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        sq.close()


def bench_backend(
    backend: str, lines: int, runs: int, cwd: Path, server: PostgresServer | None
) -> Figure:
    """Ours and raw, alternating, each into a fresh store."""
    file = cwd / "desks.txt"
    write_file(file, lines)
    ours: list[float] = []
    raws: list[float] = []
    loads: list[str] = []
    for run in range(runs):
        loads.append(load())
        if server is None:
            mine: Path | str = cwd / f"ours-{run}.db"
            theirs: Path | str = cwd / f"raw-{run}.db"
        else:
            mine, theirs = new_database(server, "bench_bulk"), new_database(server, "bench_bulk")
        try:
            ours.append(_ours(mine, file, cwd, lines))
            columns, rows = _rows(mine)
            raws.append(_raw(theirs, columns, rows))
            if _count(theirs) != lines:
                raise RuntimeError("the raw insert lost rows")
        finally:
            if server is not None:
                drop_database(server, str(mine))
                drop_database(server, str(theirs))
    return Figure(
        "bulk",
        f"subscribe --from-file, {lines:,} lines (raw: executemany of the same rows)",
        backend,
        statistics.median(ours),
        statistics.median(raws),
        "s",
        at_most(GOAL_SECONDS) if lines >= LINES else None,
        loads,
        runs,
    )


def report(figures: list[Figure], lines: int) -> None:
    table = Table(title=f"livedesk subscribe slack --from-file, {lines:,} lines")
    for column in (
        "backend",
        "ours",
        "raw executemany",
        "ours ÷ raw",
        "lines/s",
        "goal",
        "",
        "load",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for f in figures:
        assert f.raw is not None
        table.add_row(
            f.backend,
            f"{f.ours:.2f} s",
            f"{f.raw:.3f} s",
            f"{f.ours / f.raw:.1f}×",
            f"{lines / f.ours:,.0f}",
            "" if f.goal is None else f.goal.shown("s"),
            {None: "", True: "met", False: "MISSED"}[f.met],
            load_range(f.loads),
        )
    console.print(table)
    console.print(
        "ours: spawn → exit of the CLI (start-up included); raw: the same rows, executemany and "
        "commit only; medians of the runs"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bulk", description=__doc__)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the same as without it")
    parser.add_argument("--full", action="store_true", help="the same as without it")
    parser.add_argument("--smoke", action="store_true", help="300 lines, one run: the smoke test")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    compile_bytecode()  # as installed: the commands do not compile their source each run
    lines = 300 if args.smoke else args.lines
    runs = 1 if args.smoke else args.runs  # --quick too: a median, not one run
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-bulk-") as tmp:
        figures.append(bench_backend("SQLite", lines, runs, Path(tmp), None))
        if not args.sqlite_only and postgres_available():
            with postgres() as server:
                figures.append(bench_backend("PostgreSQL", lines, runs, Path(tmp), server))
        elif not args.sqlite_only:
            console.print("PostgreSQL: not measured (no initdb/pg_ctl on this machine)")
    report(figures, lines)
    record("bulk", figures)


if __name__ == "__main__":
    main()
