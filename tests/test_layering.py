"""The layering rules: the store and the handlers stay platform-neutral, the store stands alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from storage.store import open_sqlite

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


# --- the store's own layers ---------------------------------------------------------------------------

STORAGE_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"models", "index_text", "variants"}),  # the models and pure text
    frozenset(
        {"codecs", "query", "values", "match_syntax"}
    ),  # row codecs; the query compiler; the stores' values; a MATCH expression's syntax tree
    frozenset({"matching"}),  # a compiled query matched against one post, in memory
    frozenset(
        {"db", "interface", "feed_rows"}
    ),  # the SQLite engine and its migrations; the stores' contract; the feed rows' codec
    frozenset({"pg_schema"}),  # PostgreSQL's migrations
    frozenset({"pg_db"}),  # the PostgreSQL engine: its pool
    frozenset({"pg_fleet"}),  # the fleet's registry and leader locks
    frozenset(  # the stores, on either engine
        {
            "posts",
            "search",
            "subscriptions",
            "replays",
            "pg_posts",
            "pg_search",
            "pg_subscriptions",
            "pg_replays",
            "feeds",
            "pg_feeds",
        }
    ),
    frozenset(
        {"outbox", "pg_outbox"}
    ),  # deliveries: written with the posts' changes, read by the dispatcher
    frozenset(
        {"ingest", "pg_ingest", "migrate"}
    ),  # one document, its posts and their deliveries, in one transaction; the copy to PostgreSQL
    frozenset({"store", "pg_store"}),  # the backend a setting names, behind the contract
)
"""Each storage module imports only from layers below its own: no circles, and none hidden."""


def _layer_of(module: str) -> int:
    for index, layer in enumerate(STORAGE_LAYERS):
        if module in layer:
            return index
    raise AssertionError(f"storage/{module}.py has no layer in STORAGE_LAYERS: give it one")


def _storage_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, storage module, at module level) of every import of a storage module in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "storage":
                names = [alias.name for alias in node.names]
            elif node.module.startswith("storage."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("storage.")]
        line = getattr(node, "lineno", 0)
        found.extend((line, name, id(node) in top_level) for name in names)
    return found


def test_every_storage_module_has_a_layer() -> None:
    for path in sources("storage"):
        if path.name != "__init__.py":
            _layer_of(path.stem)


def test_storage_imports_only_from_the_layers_below() -> None:
    offences = [
        f"storage/{path.name}:{line} imports storage.{name}"
        for path in sources("storage")
        if path.name != "__init__.py"
        for line, name, _ in _storage_imports(path)
        if _layer_of(name) >= _layer_of(path.stem)
    ]
    assert offences == []


def test_storage_has_no_lazy_or_type_checking_imports() -> None:
    """An import inside a function or under `if TYPE_CHECKING:` hides a circle: none in storage."""
    offences: list[str] = []
    for path in sources("storage"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        offences += [
            f"storage/{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top_level
        ]
    assert offences == []


def test_the_layer_rule_sees_a_lazy_import_of_a_higher_layer(tmp_path: Path) -> None:
    """The checker itself: a function-level import of a higher layer is caught."""
    probe = tmp_path / "posts.py"
    probe.write_text("def f() -> None:\n    from storage.ingest import ingest\n")
    assert _storage_imports(probe) == [(2, "ingest", False)]
    assert _layer_of("ingest") > _layer_of("posts")


NEUTRAL_STORAGE = frozenset({"models", "values", "interface", "query", "codecs", "variants"})
"""What bot/ and handlers/ may import from storage: the contract and its values, never an engine.
Only the composition roots (bot/app.py, bot/cli.py) choose and open a backend (storage.store)."""
COMPOSITION_ROOTS = frozenset({"bot/app.py", "bot/cli.py"})
ALLOWED = {("bot/dispatcher.py", "search")}
"""storage.search.matched_terms: which terms a post holds, in memory; it reads no store."""


@pytest.mark.parametrize("package", ["bot", "handlers"])
def test_only_the_composition_roots_touch_a_storage_engine(package: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports storage.{name}"
        for path in sources(package)
        if str(path.relative_to(ROOT)) not in COMPOSITION_ROOTS
        for line, name, _ in _storage_imports(path)
        if name not in NEUTRAL_STORAGE and (str(path.relative_to(ROOT)), name) not in ALLOWED
    ]
    assert offences == []


# --- what a command loads -----------------------------------------------------------------------------

POSTGRES_PACKAGES = frozenset({"psycopg", "psycopg_pool"})
FEED_PACKAGES = frozenset({"feedparser"})
"""Loaded by the commands that use them only: PostgreSQL's driver for a postgresql:// store
(storage.pg_store), the feed code for `import`, `sources` and `run`."""
UNUSED_PACKAGES = frozenset({"pydantic_settings"})
"""Installed alongside (another package may bring it) but never loaded: the settings are read by
bot.config itself, ~40 ms less start-up for every command."""
NOT_AT_START = PLATFORM_PACKAGES - {"rich"} | POSTGRES_PACKAGES | FEED_PACKAGES | UNUSED_PACKAGES


def _loaded_by(code: str, tmp_path: Path, watched: frozenset[str] = NOT_AT_START) -> list[str]:
    """What running `code` in a fresh interpreter prints, then (its last line) the modules of
    `watched` it loaded: a name is a package with its submodules (`rich` is rich.*)."""
    probe = (
        "import sys\n"
        f"{code}\n"
        f"watched = {sorted(watched)!r}\n"
        "print(sorted(w for w in watched if any(m == w or m.startswith(w + '.') "
        "for m in sys.modules)))"
    )
    env = {"PATH": "/usr/bin:/bin", "LIVEDESK_DB_PATH": str(tmp_path / "livedesk.db")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def _running(argv: list[str]) -> str:
    """Code that runs the command line on `argv` and prints its exit code."""
    return (
        f"import bot.cli\ntry:\n    print('exit', bot.cli.main({argv!r}))"
        "\nexcept SystemExit as done:\n    print('exit', done.code)"
    )


def test_the_sqlite_store_loads_no_postgres_driver(tmp_path: Path) -> None:
    assert _loaded_by("import storage.store", tmp_path) == ["[]"]


@pytest.mark.parametrize(
    "argv",
    [
        [],  # importing the command line only
        ["--help"],
        ["latest"],
        ["search", "sanctions"],
        ["subscriptions"],
    ],
)
async def test_a_command_on_an_sqlite_store_loads_no_platform_sdk_nor_postgres_driver(
    argv: list[str], tmp_path: Path
) -> None:
    """`livedesk --help`, `latest` and the other commands on an SQLite store start without the
    platform SDKs, aiohttp, the feed code and psycopg: each costs start-up time."""
    store = await open_sqlite(tmp_path / "livedesk.db")
    await store.close()
    said = _loaded_by(_running(argv) if argv else "import bot.cli", tmp_path)
    if argv:
        assert "exit 0" in said
    assert said[-1] == "[]"


PARSING_NEEDS_NONE = frozenset(
    {"pydantic", "pydantic_core", "pydantic_settings", "dotenv", "asyncio", "rich", "storage"}
    | {"aiosqlite", "sqlite3", "bot.config", "bot.models", "bot.platforms"}
)
"""`livedesk --help`, each command's --help and a command line argparse refuses are argparse over
plain values (bot.choices): the settings, the store, rich and the event loop load only once a
command runs."""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], None),  # importing the command line only
        (["--help"], 0),
        (["subscribe", "--help"], 0),
        (["search", "--help"], 0),
        (["sources", "add", "--help"], 0),
        (["deliveries", "retry", "--help"], 0),
        (["--version"], 0),
        (["latest", "--no-such-option"], 2),
        (["--json", "subscribe", "nowhere", "x"], 2),
    ],
)
def test_help_and_a_refused_command_line_load_the_parser_alone(
    argv: list[str], code: int | None, tmp_path: Path
) -> None:
    said = _loaded_by(_running(argv) if argv else "import bot.cli", tmp_path, PARSING_NEEDS_NONE)
    if code is not None:
        assert f"exit {code}" in said
    assert said[-1] == "[]"


A_READER_NEEDS_NONE = NOT_AT_START | {
    "rich.progress",  # the bars of `import`, `run` and a migration
    "bot.app",
    "bot.dispatcher",
    "bot.sources",
    "bot.poller",
    "bot.adapters.slack",
    "storage.pg_store",
    "jinja2",  # the control room's
    "prometheus_client",
}
"""What `latest`, `search` and `subscriptions` on an SQLite store start without."""


@pytest.mark.parametrize("argv", [["latest"], ["search", "sanctions"], ["subscriptions"]])
async def test_a_reading_command_loads_what_it_reads_and_prints_with_only(
    argv: list[str], tmp_path: Path
) -> None:
    store = await open_sqlite(tmp_path / "livedesk.db")
    await store.close()
    said = _loaded_by(_running(argv), tmp_path, A_READER_NEEDS_NONE)
    assert "exit 0" in said
    assert said[-1] == "[]"
