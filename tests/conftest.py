"""Shared fixtures: no network but loopback, real SQLite files in tmp_path, paths to shared data."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.db import Database
from storage.store import SqliteStore, open_sqlite
from tests.netguard.livedesk_netguard import is_loopback, name_allowed
from tests.pgserver import postgres_server, postgres_url  # noqa: F401  (fixtures for every module)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seed" / "cnn-ukraine-2022-01-21.txt"
REALWORLD = SHARED / "realworld"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _absent(path: Path) -> str:
    folder = SHARED if not SHARED.is_dir() else path
    return f"{folder} is absent (shared test data kept beside the clone; CI has it)"


def shared(path: Path) -> Path:
    """`path` from the shared test data; the test skips, naming what is missing, when it is absent."""
    if not path.exists():
        pytest.skip(_absent(path))
    return path


def needs_shared(path: Path = SHARED) -> pytest.MarkDecorator:
    """Skip a test or module, naming the missing folder, when `path` from the shared data is absent."""
    return pytest.mark.skipif(not path.exists(), reason=_absent(path))


class NetworkBlocked(RuntimeError):
    """A test tried to reach something other than 127.0.0.1."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every connection to anything but loopback fails, and so does resolving a public name."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
            raise NetworkBlocked(f"network access to {address!r} is blocked in tests")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
            raise NetworkBlocked(f"network access to {address!r} is blocked in tests")
        return real_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not name_allowed(host):
            raise socket.gaierror(f"name resolution of {host!r} is blocked in tests")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield


@pytest.fixture(autouse=True)
def free_http_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process `livedesk run` serves its control room on a free port, not on 8080."""
    monkeypatch.setenv("LIVEDESK_HTTP_PORT", "0")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "livedesk.db")
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open store on a fresh SQLite file in tmp_path."""
    opened = await open_sqlite(tmp_path / "livedesk.db")
    try:
        yield opened
    finally:
        await opened.close()
