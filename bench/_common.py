"""What every benchmark prints the same way: medians of several runs, the load average beside each
run, and each figure's ratio to the raw ceiling measured in the same run.

A figure alone means little on a shared 2-core machine; its ratio to a ceiling measured seconds
before, under the same load, is what a reader can compare across runs and machines.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

console = Console(width=132)


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
