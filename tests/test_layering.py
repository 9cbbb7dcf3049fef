"""The layering rules: the store and the handlers stay platform-neutral, the store stands alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_PACKAGES = frozenset({"discord", "telegram", "slack_sdk", "aiohttp", "rich", "httpx"})


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, including imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, path.parent.name))  # relative: stays in its own package
    return found


def sources(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found under {package}/"
    return files


@pytest.mark.parametrize("package", ["handlers", "storage"])
def test_no_platform_package_is_imported(package: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources(package)
        for line, name in imported_modules(path)
        if name in PLATFORM_PACKAGES
    ]
    assert offences == []


def test_storage_imports_nothing_from_bot_or_handlers() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources("storage")
        for line, name in imported_modules(path)
        if name in ("bot", "handlers")
    ]
    assert offences == []


def test_importing_the_handlers_loads_no_platform_sdk() -> None:
    """What the handlers pull in through bot.models and bot.cards must stay neutral too."""
    probe = (
        "import sys, handlers; "
        f"print(sorted(m for m in {sorted(PLATFORM_PACKAGES)!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
