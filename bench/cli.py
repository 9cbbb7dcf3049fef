"""CLI start-up: `livedesk --help` and `livedesk latest` as an operator runs them, beside a bare
interpreter.

    python -m bench cli              # 9 runs of each, SQLite and PostgreSQL
    python -m bench cli --quick      # 5 runs
    python -m bench cli --smoke      # 1 run (the smoke test)

Each command is a subprocess of the installed `livedesk` script, timed from spawn to exit on one
core (every timed process, ceilings too, runs on the same one), median of the runs, alternating
with its raw ceilings: `python -c pass` (the interpreter alone) and `python -c "import sqlite3"`
(the least a command that opens an SQLite file imports); for `latest` on PostgreSQL,
`python -c "import psycopg"`. `latest` reads a store holding 1,000 posts. Every
process gets the same environment (tests/netguard on its path), so both sides pay for it.
Goal (issue 13): ≤ 0.15 s for both commands, which need not import the platform SDKs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from bench._common import (
    Figure,
    at_most,
    console,
    drop_database,
    load,
    new_database,
    postgres,
    postgres_available,
    record,
)
from bench._process import compile_bytecode, livedesk_script, run_to_end
from bench.store import Corpus
from storage.pg_store import open_postgres
from storage.store import open_sqlite

GOAL_SECONDS = 0.15
POSTS = 1_000
RAW = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import sqlite3"': [sys.executable, "-c", "import sqlite3"],
    'python -c "import psycopg"': [sys.executable, "-c", "import psycopg"],
    # Not a ceiling: the libraries every command but --help loads (pydantic's models, rich's
    # console, asyncio with aiosqlite); what is left of `latest` above it is Livedesk's own.
    'python -c "import <pydantic, rich, aiosqlite>"': [
        sys.executable,
        "-c",
        "from pydantic import BaseModel; import rich.console, rich.table, aiosqlite",
    ],
}


async def _fill(location: Path | str, posts: int) -> None:
    """`posts` posts in the store at `location` (through the store's own ingest)."""
    store = await (open_postgres(location) if isinstance(location, str) else open_sqlite(location))
    try:
        for document in Corpus().documents(posts, per_document=500):
            await store.ingest(document)
    finally:
        await store.close()


PIN = max(os.sched_getaffinity(0))
"""The core every timed process runs on, ours and the ceilings alike: a start-up is one thread's
work, and a process moved between cores (2 shared ones here) varied by ±30 % from run to run."""


class Timings:
    """Seconds of each command over the runs, with the load of each run."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.loads: list[str] = []

    def time(self, name: str, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
        done = run_to_end(argv, cwd, env, cpu=PIN)
        if done.code != 0:
            raise RuntimeError(f"{name} failed ({done.code}): {done.err.strip()[-500:]}")
        self.seconds.setdefault(name, []).append(done.seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])


def measure(cwd: Path, runs: int, pg_url: str | None, warm: bool = True) -> Timings:
    """Every command and ceiling once per run, alternating; one untimed warm-up round first
    (unless not `warm`: the smoke test)."""
    script = livedesk_script()
    sqlite_env = {"LIVEDESK_DB_PATH": str(cwd / "cli.db")}
    commands: list[tuple[str, list[str], dict[str, str]]] = [
        ("livedesk --help", [*script, "--help"], {}),
        ("livedesk latest (SQLite)", [*script, "latest"], sqlite_env),
    ]
    if pg_url is not None:
        commands.append(
            ("livedesk latest (PostgreSQL)", [*script, "latest"], {"LIVEDESK_DATABASE_URL": pg_url})
        )
    raws: list[tuple[str, list[str], dict[str, str]]] = [(n, a, {}) for n, a in RAW.items()]
    timings = Timings()
    for _, argv, env in commands + raws if warm else []:  # the page cache and the bytecode
        run_to_end(argv, cwd, env, cpu=PIN)
    for _ in range(runs):
        timings.loads.append(load())
        for name, argv, env in commands + raws:
            timings.time(name, argv, cwd, env)
    return timings


def report(timings: Timings, runs: int) -> list[Figure]:
    table = Table(
        title=f"CLI start-up: spawn → exit on core {PIN}, median of {runs} run{'s' if runs > 1 else ''}"
    )
    for column in ("command", "seconds", "÷ python -c pass", "runs", "goal", ""):
        table.add_column(column, justify="left" if column == "command" else "right")
    bare = timings.median("python -c pass")
    for name in timings.seconds:
        seconds = timings.median(name)
        ours = name.startswith("livedesk")
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{seconds / bare:.2f}×",
            ", ".join(f"{s:.3f}" for s in timings.seconds[name]),
            f"≤ {GOAL_SECONDS:.2f} s" if ours else "",
            ("met" if seconds <= GOAL_SECONDS else "MISSED") if ours else "",
        )
    console.print(table)
    console.print(f"load per run: {', '.join(timings.loads)}")
    raw_for = {
        "livedesk --help": ("python -c pass", "—"),
        "livedesk latest (SQLite)": ('python -c "import sqlite3"', "SQLite"),
        "livedesk latest (PostgreSQL)": ('python -c "import psycopg"', "PostgreSQL"),
    }
    figures = []
    for name, (raw, backend) in raw_for.items():
        if name not in timings.seconds:
            continue
        figures.append(
            Figure(
                "cli",
                f"{name.split(' (')[0]} start-up (raw: {raw})",
                backend,
                timings.median(name),
                timings.median(raw),
                "s",
                at_most(GOAL_SECONDS),
                timings.loads,
                runs,
            )
        )
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cli", description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (median shown)")
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="1 run, 20 posts: the smoke test")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    compile_bytecode()  # as installed: the commands do not compile their source each run
    runs = 1 if args.smoke else 5 if args.quick and not args.full else args.runs
    posts = 20 if args.smoke else POSTS
    with tempfile.TemporaryDirectory(prefix="livedesk-bench-cli-") as tmp:
        cwd = Path(tmp)
        asyncio.run(_fill(cwd / "cli.db", posts))
        if args.sqlite_only or not postgres_available():
            if not args.sqlite_only:
                console.print("PostgreSQL: not measured (no initdb/pg_ctl on this machine)")
            timings = measure(cwd, runs, None, warm=not args.smoke)
        else:
            with postgres() as server:
                url = new_database(server, "bench_cli")
                try:
                    asyncio.run(_fill(url, posts))
                    timings = measure(cwd, runs, url, warm=not args.smoke)
                finally:
                    drop_database(server, url)
    record("cli", report(timings, runs))


if __name__ == "__main__":
    main()
