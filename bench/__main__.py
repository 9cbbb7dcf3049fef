"""Run the benchmarks: `python -m bench` runs every bench/<name>.py with a main(); `python -m bench
store` runs one. Options after the names (e.g. --quick) go to each benchmark."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


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
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:first_option], args[first_option:]
    benchmarks = discover()
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(benchmarks)}")
        return 2
    for name in names or list(benchmarks):
        print(f"== bench {name} ==")
        benchmarks[name](options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
