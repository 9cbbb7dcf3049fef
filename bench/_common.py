"""What every benchmark prints the same way: medians of several runs, the load average beside each
run, and each figure's ratio to the raw ceiling measured in the same run.

A figure alone means little on a shared 2-core machine; its ratio to a ceiling measured seconds
before, under the same load, is what a reader can compare across runs and machines.

Every benchmark also records its headline figures (`record`): `python -m bench` gathers them into
one summary table at the end, and each benchmark writes them to bench/results/summary-<name>.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from tests.pgserver import PostgresServer, find_binaries, running_server

console = Console(width=132)
wide = Console(width=200)
"""The summary's: one line per hot path."""

RESULTS = Path(
    os.environ.get("LIVEDESK_BENCH_RESULTS", Path(__file__).resolve().parent / "results")
)
"""Cached databases and the summary-*.json files (gitignored); the smoke test points it elsewhere."""


def load() -> str:
    """The 1- and 5-minute load averages, as printed beside a run."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


@dataclass
class Runs:
    """Rates (or any figure, higher is better) of several runs of one path, with each run's load."""

    values: list[float] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)
        self.loads.append(load())

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> str:
        """Lowest–highest of the runs, for the reader to judge the noise."""
        if len(self.values) < 2:
            return ""
        return f"{min(self.values):,.0f}–{max(self.values):,.0f}"


@dataclass(frozen=True, slots=True)
class Line:
    """One row of a hot-path table: ours beside the raw ceiling of the same runs."""

    path: str
    unit: str
    ours: Runs
    raw: Runs
    goal: float | None = None
    """The ratio ours ÷ raw the path should reach (None: reported, no goal)."""

    @property
    def ratio(self) -> float:
        return self.ours.median / self.raw.median


def hot_path_table(title: str, lines: Sequence[Line]) -> Table:
    table = Table(title=title)
    for column in ("path", "ours", "raw", "ratio", "goal", "", "runs (ours)", "load per run"):
        table.add_column(column, justify="left" if column in ("path", "load per run") else "right")
    for line in lines:
        met = "" if line.goal is None else ("met" if line.ratio >= line.goal else "MISSED")
        table.add_row(
            line.path,
            f"{line.ours.median:,.0f} {line.unit}",
            f"{line.raw.median:,.0f} {line.unit}",
            f"{line.ratio:.2f}×",
            "" if line.goal is None else f"≥ {line.goal:.2f}×",
            met,
            f"{len(line.ours.values)}: {line.ours.spread()}",
            ", ".join(line.ours.loads),
        )
    return table


# --- the summary ------------------------------------------------------------------------------------

GoalKind = Literal["ratio>=", "ratio<=", "<=", ">="]


@dataclass(frozen=True, slots=True)
class Goal:
    """What a figure should reach: its ratio to raw (ours ÷ raw) at least or at most `value`, or
    the figure itself at most or at least `value` (in its unit)."""

    kind: GoalKind
    value: float
    note: str = ""
    """Why the goal may not apply here (e.g. it needs more cores than this machine has)."""
    of: str = "raw"
    """What the "raw" column holds when it is not a raw ceiling (e.g. one worker)."""

    def met(self, ours: float, raw: float | None) -> bool | None:
        if self.kind in ("ratio>=", "ratio<="):
            if not raw:
                return None
            ratio = ours / raw
            return ratio >= self.value if self.kind == "ratio>=" else ratio <= self.value
        return ours <= self.value if self.kind == "<=" else ours >= self.value

    def shown(self, unit: str) -> str:
        text = {
            "ratio>=": f"≥ {self.value:.2f}× {self.of}",
            "ratio<=": f"≤ {self.value:.2f}× {self.of}",
            "<=": f"≤ {_number(self.value)} {unit}",
            ">=": f"≥ {_number(self.value)} {unit}",
        }[self.kind]
        return f"{text} ({self.note})" if self.note else text


def at_least_raw(value: float, note: str = "") -> Goal:
    return Goal("ratio>=", value, note)


def at_most_raw(value: float, note: str = "") -> Goal:
    return Goal("ratio<=", value, note)


def at_most(value: float, note: str = "") -> Goal:
    return Goal("<=", value, note)


def at_least(value: float, note: str = "") -> Goal:
    return Goal(">=", value, note)


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the summary: a hot path on one backend, ours beside raw, medians of the runs."""

    bench: str
    path: str
    backend: str
    """"SQLite", "PostgreSQL", or "—" where the path does not touch the store."""
    ours: float
    raw: float | None
    unit: str
    goal: Goal | None
    loads: list[str]
    runs: int = 1

    @property
    def ratio(self) -> float | None:
        return self.ours / self.raw if self.raw else None

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.ours, self.raw)


def from_line(bench: str, line: Line, backend: str, path: str | None = None) -> Figure:
    """A hot-path table's line (a rate, goal: ratio ≥ line.goal) as a summary figure."""
    return Figure(
        bench,
        path or line.path,
        backend,
        line.ours.median,
        line.raw.median,
        line.unit,
        None if line.goal is None else at_least_raw(line.goal),
        sorted(set(line.ours.loads + line.raw.loads)),
        len(line.ours.values),
    )


RECORDED: list[Figure] = []
"""Every figure recorded in this process, in order (what `python -m bench` summarises)."""


def record(bench: str, figures: Sequence[Figure]) -> None:
    """Keep `figures` for the summary and write them to RESULTS/summary-<bench>.json."""
    RECORDED.extend(figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    mine = [asdict(f) for f in RECORDED if f.bench == bench]
    (RESULTS / f"summary-{bench}.json").write_text(json.dumps(mine, indent=1) + "\n")


def recorded(folder: Path | None = None) -> list[Figure]:
    """The figures of the last run of every benchmark, from RESULTS/summary-*.json."""
    found: list[Figure] = []
    for path in sorted((folder or RESULTS).glob("summary-*.json")):
        for item in json.loads(path.read_text()):
            goal = item.pop("goal")
            found.append(Figure(**item, goal=None if goal is None else Goal(**goal)))
    return found


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def load_range(loads: Sequence[str]) -> str:
    """The 1-minute load averages of the runs as lowest–highest."""
    ones = sorted(float(text.removeprefix("load ").split("/")[0]) for text in loads if text)
    if not ones:
        return ""
    low, high = f"{ones[0]:.1f}", f"{ones[-1]:.1f}"
    return low if low == high else f"{low}–{high}"


def summary_table(figures: Sequence[Figure], title: str = "Every hot path") -> Table:
    """ONE table: path, backend, ours, raw, ratio, goal, met?, load (1-minute, lowest–highest)."""
    table = Table(title=title)
    for column in ("path", "backend", "ours", "raw", "ratio", "goal", "met?", "runs", "load"):
        table.add_column(
            column, justify="left" if column in ("path", "backend", "goal") else "right"
        )
    for f in figures:
        met = {None: "", True: "met", False: "MISSED"}[f.met]
        table.add_row(
            f.path,
            f.backend,
            f"{_number(f.ours)} {f.unit}",
            "" if f.raw is None else f"{_number(f.raw)} {f.unit}",
            "" if f.ratio is None else f"{f.ratio:.2f}×",
            "" if f.goal is None else f.goal.shown(f.unit),
            met,
            str(f.runs),
            load_range(f.loads),
        )
    return table


# --- PostgreSQL -------------------------------------------------------------------------------------

SHARED_SERVER: PostgresServer | None = None
"""A server every benchmark of this process uses instead of starting its own (the smoke test)."""


def postgres_available() -> bool:
    return SHARED_SERVER is not None or find_binaries() is not None


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (tests/pgserver.py), or the shared one when it is set."""
    if SHARED_SERVER is not None:
        yield SHARED_SERVER
        return
    with running_server() as server:
        yield server


def new_database(server: PostgresServer, prefix: str) -> str:
    """The URL of a new, empty database on `server`."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return server.url(name)


def drop_database(server: PostgresServer, url: str) -> None:
    """Drop the database `url` names (with any connection left open)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
