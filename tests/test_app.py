"""`livedesk run`: the demo end to end, a bad setting at start, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.adapters.base import Adapter, AdapterContext, Capabilities
from bot.app import App
from bot.cli import main
from bot.config import load_settings
from bot.demo import replay_steps, sample_document
from bot.models import Card, Target
from bot.sources import load
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox
from storage.subscriptions import SubscriptionStore
from tests.conftest import FIXTURES


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LIVEDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")


async def counts(path: Path) -> dict[str, int]:
    db = await Database.open(path)
    try:
        return await Outbox(db).counts()
    finally:
        await db.close()


async def subscriptions(path: Path) -> list[str]:
    db = await Database.open(path)
    try:
        return [s.target.platform for s in await SubscriptionStore(db).list()]
    finally:
        await db.close()


def test_run_once_in_demo_mode_delivers_every_sample_post_to_the_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db_path = tmp_path / "demo.db"
    assert main(["--db", str(db_path), "run", "--once"]) == 0
    out = capsys.readouterr().out
    document = sample_document()
    assert len(document.posts) >= 10
    for post in document.posts:
        assert post.title in out
    assert out.count("✎ Updated") == 1  # every post, and the edit
    state = asyncio.run(counts(db_path))
    assert state["pending"] == 0 and state["dead"] == 0
    # The terminal's subscription, and its deliveries with it, did not outlive the demo.
    assert asyncio.run(subscriptions(db_path)) == []

    # Again: the store already has it all, so nothing is delivered twice.
    assert main(["--db", str(db_path), "run", "--once"]) == 0
    again = capsys.readouterr().out
    assert "already in this database" in again
    latest = max(document.posts, key=lambda p: p.published_at)
    assert latest.title in again  # the terminal is greeted with the latest posts
    state = asyncio.run(counts(db_path))
    assert state["pending"] == 0 and state["dead"] == 0


def test_the_replay_adds_posts_in_time_order_and_edits_one_earlier_post() -> None:
    document = sample_document()
    steps = replay_steps(document)
    assert len(steps) == len(document.posts) + 1
    sizes = [len(step.posts) for step in steps]
    assert sizes == sorted(sizes) and sizes[-1] == len(document.posts)
    first_id = min(document.posts, key=lambda p: p.published_at).id
    texts = [next(p for p in step.posts if p.id == first_id).body for step in steps]
    assert len(set(texts)) == 2  # the first post changes exactly once, then stays edited


def test_a_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEDESK_TIMEZONE", "Mars/Base")
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "LIVEDESK_TIMEZONE" in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert not Path("livedesk.db").exists()


class SlowAdapter(Adapter):
    """A platform that takes its time: sends are in flight when the stop comes."""

    platform = "slow"
    capabilities = Capabilities(max_text=4096, markup="plain", can_edit=False)

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started_sending = asyncio.Event()
        self.finished: list[str] = []
        self.stopped = False

    async def start(self, context: AdapterContext) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, target: Target, card: Card) -> str:
        self.started_sending.set()
        await asyncio.sleep(self.delay)
        self.finished.append(card.post_id)
        return card.post_id


async def test_sigterm_stops_cleanly_and_undelivered_posts_stay_pending(tmp_path: Path) -> None:
    db_path = tmp_path / "run.db"
    db = await Database.open(db_path)
    fetched = await load(str(FIXTURES / "cli_blog.txt"))
    assert fetched is not None
    await SubscriptionStore(db).add(
        Target(platform="slow", address="room", kind="channel"), created_by="test"
    )
    await ingest(db, fetched.result)
    await db.close()
    assert (await counts(db_path))["pending"] == 4

    adapter = SlowAdapter(delay=0.3)
    settings = load_settings(db_path=db_path, demo=False)
    app = App(settings, prompt=False, extra_adapters=[adapter])
    running = asyncio.create_task(app.run())
    await asyncio.wait_for(adapter.started_sending.wait(), 10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 15) == 0

    assert adapter.stopped
    state = await counts(db_path)
    assert state["dead"] == 0
    assert state["sent"] == len(adapter.finished) >= 1  # the send in flight finished
    assert state["pending"] == 4 - state["sent"] >= 1  # the rest wait for the next run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers removed on the way out


async def test_configured_webhooks_and_sources_deliver_with_run_once(tmp_path: Path) -> None:
    from aiohttp import web

    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_post("/hooks/desk", hook)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = load_settings(
            db_path=tmp_path / "hooks.db",
            sources=[{"url": str(FIXTURES / "cli_blog.txt"), "interval": 60}],
            slack={
                "webhooks": [
                    {"url": f"http://127.0.0.1:{port}/hooks/desk", "keywords": "tram OR cyclists"}
                ]
            },
        )
        assert not settings.demo_mode
        assert await App(settings, once=True).run() == 0
    finally:
        await runner.cleanup()
    text = repr(received)
    assert len(received) == 3  # the posts that match the hook's keywords, and only those
    assert "Council approves the tram line" in text
    assert "Cyclists ask for protected lanes" in text
    assert "Shop owners" not in text


async def test_a_second_run_on_the_same_database_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path = tmp_path / "run.db"
    adapter = SlowAdapter(delay=0.0)
    first = App(load_settings(db_path=db_path, demo=False), prompt=False, extra_adapters=[adapter])
    running = asyncio.create_task(first.run())
    await asyncio.wait_for(first.started.wait(), 10)

    second = App(load_settings(db_path=db_path, demo=False), prompt=False)
    assert await second.run() == 1  # it would send every post a second time
    error = capsys.readouterr().err
    assert "another `livedesk run` is already using" in error and "Traceback" not in error

    first.stop()
    assert await asyncio.wait_for(running, 15) == 0
    # Once the first has stopped, the database is free again.
    third = App(load_settings(db_path=db_path, demo=False), prompt=False, once=True)
    assert await third.run() == 0
