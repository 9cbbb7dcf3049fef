"""Hostile slash-command headers and replays: a real aiohttp client against the real endpoint.

A timestamp that is not plain ASCII digits of a time within five minutes is a 401 (never a 500) and runs
nothing; a signed request seen once is refused again after a restart, because the signatures seen are
kept in the store for the validity window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.adapters.base import AdapterContext, FirstSeen
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack_commands import PATH, signature
from bot.config import SlackSettings
from bot.models import Reply
from storage.db import Database
from storage.replays import WINDOW, ReplayStore
from tests.cli_process import spawn
from tests.test_slack_commands import SECRET, Recorder, form


def raw_signature(stamp: str, body: bytes) -> str:
    """What a sender would compute for any timestamp text (UTF-8), valid or not."""
    base = b"v0:" + stamp.encode("utf-8") + b":" + body
    return "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()


def headers(stamp: str, sig: str) -> dict[str, str]:
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def started(recorder: Recorder, first_seen: FirstSeen | None = None) -> SlackAdapter:
    adapter = SlackAdapter(SlackSettings(signing_secret=SecretStr(SECRET)))
    await adapter.start(
        AdapterContext(handle=recorder, http_host="127.0.0.1", http_port=0, first_seen=first_seen)
    )
    return adapter


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    client: aiohttp.ClientSession, adapter: SlackAdapter, body: bytes, sent: dict[str, str]
) -> int:
    url = f"http://127.0.0.1:{adapter.http_port}{PATH}"
    async with client.post(url, data=body, headers=sent) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(
    "stamp",
    [
        "١٢٣٤٥٦٧٨٩٠",  # Arabic-Indic digits: str.isdigit() says yes, int() reads them
        "１７００００００００",  # fullwidth digits
        "²",  # a superscript: isdigit() yes, int() no
        str(10**30),
        "9" * 5000,  # beyond int()'s default digit limit
        "-1700000000",
        "1700000000.5",
        pytest.param(f"{time.time():.3f}", id="now-with-a-fraction"),  # an id that every run shares
        " 1700000000",
        "+1700000000",
        "",
        "now",
    ],
)
async def test_a_bad_timestamp_is_a_401_and_runs_nothing(
    client: aiohttp.ClientSession, stamp: str
) -> None:
    recorder = Recorder()
    adapter = await started(recorder)
    try:
        body = form("latest")
        status = await post(client, adapter, body, headers(stamp, raw_signature(stamp, body)))
    finally:
        await adapter.stop()
    assert status == 401
    assert recorder.requests == []


@pytest.mark.parametrize("sig", ["v0=" + "é" * 64, "v0=" + "A" * 64, "v0=", "x" * 4_000])
async def test_a_malformed_signature_is_a_401(client: aiohttp.ClientSession, sig: str) -> None:
    recorder = Recorder()
    adapter = await started(recorder)
    try:
        body = form("latest")
        status = await post(client, adapter, body, headers(str(int(time.time())), sig))
    finally:
        await adapter.stop()
    assert status == 401
    assert recorder.requests == []


async def test_a_replay_is_refused_after_a_restart_on_the_same_database(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "livedesk.db"
    body = form("latest")
    stamp = str(int(time.time()))
    signed = headers(stamp, signature(SECRET, stamp, body))
    other = form("help")
    recorder = Recorder(Reply(text="ok"))

    async with await Database.open(path) as db:
        adapter = await started(recorder, ReplayStore(db).first_seen)
        try:
            assert await post(client, adapter, body, signed) == 200
            assert await post(client, adapter, body, signed) == 401  # the same process
        finally:
            await adapter.stop()

    # A new process would open the database afresh and start a new adapter.
    async with await Database.open(path) as db:
        adapter = await started(recorder, ReplayStore(db).first_seen)
        try:
            assert await post(client, adapter, body, signed) == 401
            fresh = headers(stamp, signature(SECRET, stamp, other))
            assert await post(client, adapter, other, fresh) == 200  # a new request still works
        finally:
            await adapter.stop()
    assert [r.command for r in recorder.requests] == ["latest", "help"]


async def serving(process: subprocess.Popen[str]) -> int:
    """The slash-command port a `livedesk run` child announces in its log (it binds port 0)."""
    assert process.stderr is not None
    seen: list[str] = []
    while line := await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 60):
        seen.append(line)
        found = re.search(r"Slack slash commands on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("livedesk run never served slash commands: " + "".join(seen))


async def stopped(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(process.communicate, timeout=60)  # reads and closes its pipes
    return process.returncode


async def test_a_replay_is_refused_by_a_restarted_livedesk_run(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    env = {
        "LIVEDESK_DB_PATH": str(tmp_path / "livedesk.db"),
        "LIVEDESK_SLACK": json.dumps({"signing_secret": SECRET}),
        "LIVEDESK_HTTP_PORT": "0",
        "LIVEDESK_DEMO": "false",
    }
    body = form("help")
    stamp = str(int(time.time()))
    signed = headers(stamp, signature(SECRET, stamp, body))
    answers = []
    for _run in range(2):  # the second process is a restart on the same database
        process = spawn("run", cwd=tmp_path, env=env)
        try:
            url = f"http://127.0.0.1:{await serving(process)}{PATH}"
            async with client.post(url, data=body, headers=signed) as response:
                answers.append(response.status)
        finally:
            assert await stopped(process) == 0
    assert answers == [200, 401]


async def test_old_signatures_are_pruned_after_the_window(db: Database) -> None:
    store = ReplayStore(db)
    assert await store.first_seen("v0=a", 1_000.0)
    assert not await store.first_seen("v0=a", 1_000.0 + WINDOW - 1)
    assert await store.first_seen("v0=b", 1_000.0 + WINDOW + 1)  # prunes v0=a
    assert await store.count() == 1
    assert await store.first_seen("v0=a", 1_000.0 + WINDOW + 2)
