"""Run the benchmarks: `python -m bench` runs every bench/<name>.py with a main() and ends with ONE
summary table of every hot path; `python -m bench store` runs one. Options after the names go to
each benchmark.

Sizes: by default every benchmark runs at its --quick sizes, so that the whole run fits in about
half an hour on 2 cores; `python -m bench --full` (`make bench FULL=1`) runs the full sizes (1M
subscriptions, 100k fan-out, 1M-post search where the cache holds it: hours). `--smoke` runs each
at a tiny size (what tests/test_bench_smoke.py does): the tables, not the figures, are the point.
`python -m bench --summary` prints the summary of the last run of each benchmark again, from
bench/results/summary-*.json (each benchmark run alone writes its own).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._common import RECORDED, console, load, recorded, summary_table, wide

SIZES = ("--quick", "--full", "--smoke")


def discover() -> dict[str, Callable[..., Any]]:
    """{name: main} for every module in bench/ that defines a main()."""
    found: dict[str, Callable[..., Any]] = {}
    for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        imported = importlib.import_module(f"bench.{module.name}")
        entry = getattr(imported, "main", None)
        if callable(entry):
            found[module.name] = entry
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--summary"]:
        wide.print(summary_table(recorded(), "Every hot path, the last run of each benchmark"))
        return 0
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:first_option], args[first_option:]
    if not any(size in options for size in SIZES):
        options.append("--quick")
    benchmarks = discover()
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(benchmarks)}")
        return 2
    failed: list[str] = []
    started = time.monotonic()
    for name in names or list(benchmarks):
        console.print(f"== bench {name} {' '.join(options)} (load {load()}) ==")
        try:
            benchmarks[name](list(options))
        except (Exception, SystemExit) as error:  # one broken benchmark does not hide the others
            if isinstance(error, SystemExit) and error.code in (0, None):
                continue
            traceback.print_exc()
            console.print(f"bench {name} failed: {type(error).__name__}: {error}")
            failed.append(name)
    minutes = (time.monotonic() - started) / 60
    wide.print(
        summary_table(
            RECORDED,
            f"Every hot path ({' '.join(options)}): ours, the raw ceiling of the same run, "
            f"medians; {minutes:.0f} min, load now {load()}",
        )
    )
    wide.print(
        "ratio = ours ÷ raw (a rate: higher is better; seconds or MB: lower is better); load: the "
        "1-minute load average over the runs (2 cores here, shared)"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
