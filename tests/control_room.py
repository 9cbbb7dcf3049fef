"""Helpers for the control-room tests: a real `App` running in-process, and a client for its API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from bot.app import App
from bot.config import load_settings

TOKEN = "ct-4f9a1c0d7e2b44e8a1b9-admin"
T = TypeVar("T")


def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The store settings of one backend: `request.param` is "sqlite" or "postgresql"."""
    if request.param == "postgresql":
        return {"database_url": request.getfixturevalue("postgres_url")}
    return {"db_path": tmp_path / "livedesk.db"}


@contextlib.asynccontextmanager
async def running_app(**settings: Any) -> AsyncIterator[App]:
    """`livedesk run` in this process (demo off, the control room on a free port) until the block ends."""
    settings.setdefault("http_port", 0)
    app = App(load_settings(demo=False, **settings), prompt=False, idle_timeout=30.0)
    running = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    done, _ = await asyncio.wait({running, started}, timeout=60, return_when="FIRST_COMPLETED")
    if started not in done:
        started.cancel()
        code = running.result() if running.done() else None
        raise AssertionError(f"the app did not start (exit code {code})")
    try:
        yield app
    finally:
        app.stop()
        assert await asyncio.wait_for(running, 60) == 0


def url_of(app: App) -> str:
    assert app.control_room is not None, "the control room is not serving"
    return app.control_room.url


class Api:
    """`/api/v1` of a running app, as a script or a browser's fetch would call it."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = TOKEN):
        self.session = session
        self.base = base.rstrip("/")
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self, method: str, path: str, body: Any = None, **params: str | int
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            f"{self.base}/api/v1{path}",
            json=body,
            params={k: str(v) for k, v in params.items()},
            headers=self.headers(),
        ) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: str | int) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert 200 <= status < 300, (status, answer)
        return answer


async def eventually(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, within: float = 30.0
) -> T:
    """Ask `probe` until its answer satisfies `until` (a hang fails after `within` seconds)."""
    async with asyncio.timeout(within):
        while True:
            answer = await probe()
            if until(answer):
                return answer
            await asyncio.sleep(0.1)
