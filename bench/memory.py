"""Memory and start-up of the real `livedesk run` with many webhook subscriptions.

    python -m bench memory            # 0, 100k and 1M subscriptions, 3 runs, SQLite and PostgreSQL
    python -m bench memory --quick    # 0 and 100k
    python -m bench memory --smoke    # 1,000, one run (the smoke test)

Ours: `livedesk run` (the installed script, Slack-style webhooks on with none configured, no demo,
the control room on a free port) on a store holding N Slack webhook subscriptions. Start-up is
spawn → its /readyz answering 200 (probed every 5 ms); the process then runs one more second and is
stopped with SIGTERM; its peak RSS is the kernel's high-water mark (VmHWM) read just before.
Raw ceiling: a bare interpreter (the same environment) that opens the same database and reads the
subscriptions' count — sqlite3 for SQLite, psycopg for PostgreSQL — timed spawn → exit, its peak
RSS (VmHWM) printed by itself as it ends. It is the least any process must pay to answer for that store; the ratio says how much
more Livedesk holds. The subscriptions are made by `livedesk subscribe` (one) and copied by SQL
inside the database (not timed; only the running process is measured).
Goals (issue 13): peak ≤ 150 MB at 100k subscriptions, ≤ 250 MB at 1M, start-up ≤ 1 s.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg
from rich.table import Table

from bench._common import (
    Figure,
    Goal,
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
from bench._process import (
    HIGH_WATER_LINE,
    Measured,
    compile_bytecode,
    livedesk_script,
    run_to_end,
    run_until_ready,
)
from tests.pgserver import PostgresServer

SIZES = (0, 100_000, 1_000_000)
QUICK_SIZES = (0, 100_000)
SMOKE_SIZES = (1_000,)
GOAL_MB = {100_000: 150.0, 1_000_000: 250.0}
GOAL_START = 1.0
TEMPLATE = "https://hooks.slack.com/services/T0000/B0000/XXXX"
RUN_ENV = {
    "LIVEDESK_DEMO": "false",
    "LIVEDESK_SLACK__WEBHOOKS": "[]",
    "LIVEDESK_LOG_LEVEL": "WARNING",
}
RAW_SQLITE = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1])\n"
    "print(db.execute('SELECT count(*) FROM subscriptions').fetchone()[0])\n" + HIGH_WATER_LINE
)
RAW_PG = (
    "import psycopg, sys\n"
    "with psycopg.connect(sys.argv[1]) as db:\n"
    "    print(db.execute('SELECT count(*) FROM subscriptions').fetchone()[0])\n" + HIGH_WATER_LINE
)


def _columns(names: Sequence[str]) -> tuple[str, str]:
    """(the columns to copy, the same with each copy's address made unique by `i`)."""
    kept = [c for c in names if c != "id"]
    picked = [("address || i" if c == "address" else c) for c in kept]
    return ", ".join(kept), ", ".join(picked)


def _fill(location: Path | str, cwd: Path, count: int) -> None:
    """`count` Slack webhook subscriptions: one by `livedesk subscribe`, copied in the database."""
    done = run_to_end(
        [*livedesk_script(), "--db", str(location), "subscribe", "slack", TEMPLATE], cwd
    )
    if done.code != 0:
        raise RuntimeError(f"livedesk subscribe failed: {done.err.strip()[-500:]}")
    if count <= 1:
        if count == 0:
            _execute(location, "DELETE FROM subscriptions")
        return
    if isinstance(location, str):
        with psycopg.connect(location) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM subscriptions LIMIT 0")
            assert cur.description is not None
            kept, picked = _columns([c.name for c in cur.description])
            cur.execute(
                f"INSERT INTO subscriptions ({kept}) SELECT {picked.replace('address || i', 'address || i::text')} "
                "FROM subscriptions CROSS JOIN generate_series(1, %s) AS g(i)",
                (count - 1,),
            )
        return
    sq = sqlite3.connect(location, isolation_level=None)
    try:
        names = [c[0] for c in sq.execute("SELECT * FROM subscriptions LIMIT 0").description]
        kept, picked = _columns(names)
        sq.execute("BEGIN")
        sq.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            f"INSERT INTO subscriptions ({kept}) SELECT {picked} FROM subscriptions, n",
            (count - 1,),
        )
        sq.execute("COMMIT")
    finally:
        sq.close()


def _execute(location: Path | str, statement: str) -> None:
    if isinstance(location, str):
        with psycopg.connect(location) as conn:
            conn.execute(statement)
        return
    with sqlite3.connect(location) as sq:
        sq.execute(statement)


def _raw(location: Path | str, cwd: Path, count: int) -> Measured:
    script = RAW_PG if isinstance(location, str) else RAW_SQLITE
    done = run_to_end([sys.executable, "-c", script, str(location)], cwd)
    lines = done.out.split()
    if done.code != 0 or len(lines) != 2 or lines[0] != str(count):
        raise RuntimeError(f"the raw reader failed: {done.out.strip()} {done.err.strip()[-300:]}")
    return Measured(done.seconds, int(lines[1]) / 1024, done.code)


def _ours(location: Path | str, cwd: Path) -> Measured:
    where = (
        {"LIVEDESK_DATABASE_URL": location}
        if isinstance(location, str)
        else {"LIVEDESK_DB_PATH": str(location)}
    )
    done = run_until_ready(cwd, {**RUN_ENV, **where})
    if done.code != 0:
        raise RuntimeError(f"livedesk run stopped with {done.code}: {done.err.strip()[-500:]}")
    return done


def bench_size(
    backend: str, count: int, runs: int, cwd: Path, server: PostgresServer | None
) -> list[Figure]:
    location: Path | str = (
        cwd / f"memory-{count}.db" if server is None else new_database(server, "bench_memory")
    )
    ours: list[Measured] = []
    raws: list[Measured] = []
    loads: list[str] = []
    try:
        _fill(location, cwd, count)
        for _ in range(runs):
            loads.append(load())
            raws.append(_raw(location, cwd, count))
            ours.append(_ours(location, cwd))
    finally:
        if server is not None:
            drop_database(server, str(location))
    goal_mb = GOAL_MB.get(count)
    subscriptions = f"{count:,} webhook subscriptions"
    return [
        Figure(
            "memory",
            f"livedesk run peak RSS, {subscriptions}",
            backend,
            statistics.median(m.peak_mb or 0.0 for m in ours),
            statistics.median(m.peak_mb or 0.0 for m in raws),
            "MB",
            None if goal_mb is None else at_most(goal_mb),
            loads,
            runs,
        ),
        Figure(
            "memory",
            f"livedesk run spawn → ready, {subscriptions}",
            backend,
            statistics.median(m.seconds for m in ours),
            statistics.median(m.seconds for m in raws),
            "s",
            at_most(GOAL_START),
            loads,
            runs,
        ),
    ]


def report(figures: list[Figure]) -> None:
    table = Table(
        title="livedesk run: peak RSS and start-up beside a bare reader of the same store"
    )
    for column in ("path", "backend", "ours", "raw", "ours ÷ raw", "goal", "", "load"):
        table.add_column(column, justify="left" if column in ("path", "backend") else "right")
    for f in figures:
        goal: Goal | None = f.goal
        table.add_row(
            f.path,
            f.backend,
            f"{f.ours:,.1f} {f.unit}" if f.unit == "MB" else f"{f.ours:.3f} {f.unit}",
            f"{f.raw:,.1f} {f.unit}" if f.unit == "MB" else f"{f.raw:.3f} {f.unit}",
            "" if f.ratio is None else f"{f.ratio:.1f}×",
            "" if goal is None else goal.shown(f.unit),
            {None: "", True: "met", False: "MISSED"}[f.met],
            load_range(f.loads),
        )
    console.print(table)
    console.print(
        "ours: `livedesk run` spawn → /readyz 200, peak RSS (VmHWM) at ready + 1 s, then SIGTERM; "
        "raw: python opening the same store and reading count(*) of subscriptions, spawn → exit; "
        "medians of the runs"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="0 and 100k subscriptions")
    parser.add_argument("--full", action="store_true", help="1M as well (as without --quick)")
    parser.add_argument("--smoke", action="store_true", help="1,000, one run: the smoke test")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    compile_bytecode()  # as installed: the commands do not compile their source each run
    sizes: tuple[int, ...]
    if args.smoke:
        sizes, runs = SMOKE_SIZES, 1
    else:
        sizes, runs = (QUICK_SIZES if args.quick and not args.full else SIZES), args.runs
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-memory-") as tmp:
        for count in sizes:
            figures += bench_size("SQLite", count, runs, Path(tmp), None)
        if not args.sqlite_only and postgres_available():
            with postgres() as server:
                for count in sizes:
                    figures += bench_size("PostgreSQL", count, runs, Path(tmp), server)
        elif not args.sqlite_only:
            console.print("PostgreSQL: not measured (no initdb/pg_ctl on this machine)")
    report(figures)
    record("memory", figures)


if __name__ == "__main__":
    main()
