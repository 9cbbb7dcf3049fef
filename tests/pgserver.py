"""A real PostgreSQL server for the test session: `initdb` + `pg_ctl` in a temp dir, 127.0.0.1 only.

`postgres_server` (session) starts one cluster on a free port, with durability switched off for
speed; `postgres_url` (per test) creates a fresh, empty database on it and drops it afterwards.
Without the server binaries the tests that use them skip with one line saying how to get them, except
in CI (`CI` set) or with `LIVEDESK_REQUIRE_POSTGRES=1`, where they fail instead: there they must run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"  # not "localhost": that may resolve to ::1 first, and the server listens on IPv4
SUPERUSER = "postgres"
MISSING = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
START_TIMEOUT = 60  # seconds; a loaded 2-core machine can take a while for the first checkpoint

# Durability off: a test cluster is thrown away, so crash safety only costs time.
SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "jit": "off",
    "max_connections": "200",  # fleet tests run several processes, each with a pool
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # tests provoke errors on purpose; keep the log short
}


def find_binaries() -> tuple[Path, Path] | None:
    """(initdb, pg_ctl) from one folder: PATH first, then Debian's versioned folders, newest first."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if on_path[0] and on_path[1]:
        return Path(on_path[0]), Path(on_path[1])

    def major(folder: str) -> int:
        version = Path(folder).parent.name
        return int(version) if version.isdigit() else 0

    for folder in sorted(glob.glob(DEBIAN_BINARIES), key=major, reverse=True):
        initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def postgres_required() -> bool:
    """Whether missing binaries are a failure (CI, or asked for) rather than a reason to skip."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("LIVEDESK_REQUIRE_POSTGRES") == "1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running test cluster: trust authentication for the superuser on 127.0.0.1."""

    port: int
    root: Path  # the temp dir: data/, the unix socket, server.log
    host: str = HOST
    user: str = SUPERUSER

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq keyword/value connection string."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """A `postgresql://` URL, the form `LIVEDESK_DATABASE_URL` and `--db` take."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


class _Runner:
    """Runs the server binaries as a user PostgreSQL accepts: as root, that is `postgres`."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.prefix: list[str] = []
        self.uid = self.gid = -1
        if not self.as_root:
            return
        try:
            account = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise RuntimeError(
                "running as root, but there is no `postgres` user to run the server as "
                "(the Debian postgresql package creates it)"
            ) from None
        self.uid, self.gid = account.pw_uid, account.pw_gid
        if shutil.which("runuser"):
            self.prefix = ["runuser", "-u", SUPERUSER, "--"]
        elif shutil.which("setpriv"):
            self.prefix = [
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--init-groups",
                "--",
            ]
        else:
            raise RuntimeError("running as root, but neither runuser nor setpriv is installed")

    def own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.prefix, *(str(a) for a in args)]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            check=False,
        )
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"{Path(command[len(self.prefix)]).name} failed: {output}")
        return result


def _settings(port: int, socket_dir: Path) -> str:
    values = {**SETTINGS, "port": str(port), "unix_socket_directories": str(socket_dir)}
    return "".join(f"{name} = '{value}'\n" for name, value in values.items())


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """Start a throwaway cluster; stop it (immediately: nothing in it is kept) and remove it after."""
    binaries = find_binaries()
    if binaries is None:
        if postgres_required():
            pytest.fail(
                f"{MISSING} (required here: CI or LIVEDESK_REQUIRE_POSTGRES=1)", pytrace=False
            )
        pytest.skip(MISSING)
    initdb, pg_ctl = binaries
    runner = _Runner()
    # /tmp, not $TMPDIR: the unix socket's path must stay under 107 bytes, and as root the
    # `postgres` user must be able to reach the folder.
    root = Path(
        tempfile.mkdtemp(prefix="livedesk-pg-", dir="/tmp" if Path("/tmp").is_dir() else None)
    )
    data = root / "data"
    started: PostgresServer | None = None
    try:
        runner.own(root)
        root.chmod(0o700)
        runner.run(
            initdb,
            "--pgdata",
            data,
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            # C.UTF-8 classifies characters as Unicode (text search splits `“very` at the quote);
            # C collation sorts by bytes, as SQLite does.
            "--locale",
            "C.UTF-8",
            "--lc-collate",
            "C",
            "--no-sync",
        )
        for attempt in range(3):  # the free port can be taken between probing and binding
            port = free_port()
            with (data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
                conf.write(_settings(port, root))
            server = PostgresServer(port=port, root=root)
            result = runner.run(
                pg_ctl,
                "start",
                "--pgdata",
                data,
                "--log",
                server.log,
                "--wait",
                "--timeout",
                str(START_TIMEOUT),
                check=False,
            )
            if result.returncode == 0:
                started = server
                break
            if attempt == 2 or "could not bind" not in server.log_tail():
                raise RuntimeError(f"PostgreSQL did not start:\n{server.log_tail()}")
        assert started is not None
        yield started
    finally:
        if started is not None:
            runner.run(
                pg_ctl, "stop", "--pgdata", data, "--mode", "immediate", "--wait", check=False
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (skips or fails without binaries)."""
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped (with any connection left open) after the test."""
    name = f"livedesk_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
