"""A database file that cannot serve: every command says so in one line and exits, none hangs.

Each case runs the real `livedesk` as a child process (`tests/cli_process.py`), which fails the test
after its timeout instead of hanging: before, an aiosqlite connection left open by a failed
`PRAGMA` kept the process alive for ever.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_process import Finished, child_env, command, livedesk
from tests.conftest import FIXTURES

BLOG = FIXTURES / "cli_blog.txt"

# Every command, with arguments that would succeed against a good database.
READING: list[tuple[str, ...]] = [
    ("latest",),
    ("search", "tram"),
    ("post", "1"),
    ("sources",),
    ("subscriptions",),
    ("deliveries",),
    ("deliveries", "--dead"),
]
WRITING: list[tuple[str, ...]] = [
    ("import", str(BLOG)),
    ("subscribe", "telegram", "5"),
    ("pause", "1"),
    ("resume", "1"),
    ("unsubscribe", "1"),
    ("deliveries", "retry"),
    ("run", "--once"),
]
EVERY = READING + WRITING


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Livedesk database with posts and a subscription, made by the real commands."""
    folder = tmp_path_factory.mktemp("good")
    path = folder / "livedesk.db"
    assert livedesk("--db", str(path), "import", str(BLOG), cwd=folder).code == 0
    assert livedesk("--db", str(path), "subscribe", "telegram", "5", cwd=folder).code == 0
    return path


def one_line_failure(done: Finished, *, code: int, says: str, names: str) -> str:
    assert "Traceback" not in done.err, done.err
    assert len(done.err_lines) == 1, done.err
    line = done.err_lines[0]
    assert done.code == code, (done.code, line)
    assert says in line and names in line, line
    return line


def every_command(
    db: Path,
    cwd: Path,
    commands: list[tuple[str, ...]] = EVERY,
    runner: Callable[..., Finished] = livedesk,
) -> list[tuple[tuple[str, ...], Finished]]:
    return [(args, runner("--db", str(db), *args, cwd=cwd)) for args in commands]


# --- not a Livedesk database ------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_one_line_for_every_command(tmp_path: Path) -> None:
    path = tmp_path / "livedesk.db"
    text = "Ceci n'est pas une base de données.\n" * 200
    path.write_text(text)
    for args, done in every_command(path, tmp_path):
        line = one_line_failure(done, code=1, says="is not a Livedesk database", names=str(path))
        assert "(not an SQLite file)" in line, args
    assert path.read_text() == text  # nothing written into someone else's file


def test_another_programs_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "photos.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE albums (name TEXT)")
        conn.execute("INSERT INTO albums VALUES ('summer')")
    before = path.read_bytes()
    for _, done in every_command(path, tmp_path, [("latest",), ("subscribe", "telegram", "5")]):
        one_line_failure(done, code=1, says="is not a Livedesk database", names=str(path))
    assert path.read_bytes() == before  # not migrated, not switched to WAL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_newer_schema_asks_for_a_newer_livedesk(good_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    shutil.copy(good_db, path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    for _, done in every_command(path, tmp_path, [("latest",), ("run", "--once")]):
        one_line_failure(done, code=1, says="schema version 99", names=str(path))


# --- damaged ----------------------------------------------------------------------------------------


def _garbage_in_page_one(path: Path) -> None:
    with path.open("r+b") as file:
        file.seek(100)  # past the header: the schema's own page
        file.write(b"\xab" * 3996)


def _garbage_in_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 3)
        file.write(b"\x5a" * (size // 3))


def _cut_in_half(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_garbage_in_page_one, _garbage_in_the_middle, _cut_in_half])
def test_a_damaged_database_is_one_line_for_every_command(
    good_db: Path, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "livedesk.db"
    shutil.copy(good_db, path)
    damage(path)
    for args, done in every_command(path, tmp_path):
        line = one_line_failure(done, code=1, says="is damaged", names=str(path))
        assert "restore it from a backup" in line, args


# --- a folder, a missing folder ----------------------------------------------------------------------


def test_a_folder_given_as_the_database_is_one_line_for_every_command(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for _, done in every_command(folder, tmp_path):
        one_line_failure(done, code=1, says="is a folder, not a database file", names=str(folder))
    assert list(folder.iterdir()) == []


def test_a_missing_folder_is_an_error_for_commands_that_only_read(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "livedesk.db"
    reading_and_changing = [
        *READING,
        ("unsubscribe", "1"),
        ("pause", "1"),
        ("resume", "1"),
        ("deliveries", "retry"),
    ]
    for _, done in every_command(path, tmp_path, reading_and_changing):
        one_line_failure(done, code=1, says="does not exist", names=str(path.parent))
    assert not path.parent.exists()  # no empty store made somewhere unexpected


def test_commands_that_add_create_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "livedesk.db"
    done = livedesk("--db", str(path), "import", str(BLOG), cwd=tmp_path)
    assert done.code == 0, done.err
    assert livedesk("--db", str(path), "latest", cwd=tmp_path).code == 0


# --- read-only ----------------------------------------------------------------------------------------


def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions hold. Root ignores them (CAP_DAC_OVERRIDE);
    `setpriv` starts the child without that capability, as an operator's own account would be."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is absent: permissions cannot be made to hold")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def unprivileged(tmp_path: Path) -> Callable[..., Finished]:
    """`livedesk` run as an account that read-only permissions stop; skips when none can be had."""
    prefix = _without_root_powers()
    probe = tmp_path / "probe"
    probe.write_text("")
    probe.chmod(0o444)
    writes = f"""
try:
    open({str(probe)!r}, "a")
except PermissionError:
    raise SystemExit(3)
"""
    tried = subprocess.run(
        [*prefix, sys.executable, "-c", writes], capture_output=True, check=False, timeout=60
    )
    probe.unlink()
    if tried.returncode != 3:  # 0: it could write; anything else: the prefix itself failed
        pytest.skip(f"no way here to run a process that read-only permissions stop ({tried})")

    def run(*args: str, cwd: Path) -> Finished:
        done = subprocess.run(
            [*prefix, *command(*args)],
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Finished(done.returncode, done.stdout, done.stderr)

    return run


def test_a_read_only_file_is_one_line_for_every_command(
    good_db: Path, tmp_path: Path, unprivileged: Callable[..., Finished]
) -> None:
    path = tmp_path / "livedesk.db"
    shutil.copy(good_db, path)
    path.chmod(0o444)
    try:
        for _, done in every_command(path, tmp_path, runner=unprivileged):
            one_line_failure(done, code=1, says="is read-only", names=str(path))
    finally:
        path.chmod(0o644)


def test_a_read_only_folder_is_one_line_for_every_command(
    good_db: Path, tmp_path: Path, unprivileged: Callable[..., Finished]
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / "livedesk.db"
    shutil.copy(good_db, path)
    folder.chmod(0o555)
    try:
        for _, done in every_command(path, tmp_path, runner=unprivileged):
            line = one_line_failure(done, code=1, says="is read-only", names=str(folder))
            assert "livedesk.db-wal" in line  # why a folder matters to a database file
    finally:
        folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["livedesk.db"]


# --- a good database still works --------------------------------------------------------------------


def test_the_good_database_serves_every_command(good_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "livedesk.db"
    shutil.copy(good_db, path)
    for args, done in every_command(path, tmp_path):
        assert "Traceback" not in done.err
        if args == ("run", "--once"):
            # A newsroom database with no platform configured: nothing to run, and no demo on it.
            assert done.code == 2, done.err
            assert "the demo does not run here" in done.err
            continue
        assert done.code == 0, (args, done.err)
