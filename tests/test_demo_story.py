"""The demo as a newcomer watches it: numbers that `/post N` opens, "done" after the last post, and
suggested searches that find something in the sample blog."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from bot.app import App
from bot.config import load_settings
from bot.demo import PROMPT_HINT, SUGGESTED_SEARCHES, sample_document
from bot.models import ChatKind, Request, Target
from handlers import Deps, handle
from handlers.base import split_command_line
from storage.db import Database
from storage.posts import PostStore
from storage.store import SqliteStore
from storage.subscriptions import SubscriptionStore


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LIVEDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


async def watch_the_demo(db_path: Path) -> str:
    """Run the live demo (no pauses between posts) to its end; what the terminal showed."""
    screen = Console(record=True, width=160, color_system=None, file=io.StringIO())
    app = App(load_settings(db_path=db_path), prompt=False, demo_step=0.0, console=screen)
    running = asyncio.create_task(app.run())
    await asyncio.wait_for(app.started.wait(), 30)
    await asyncio.wait_for(app.demo.done.wait(), 60)
    app.stop()
    assert await asyncio.wait_for(running, 30) == 0
    return screen.export_text()


async def test_the_replay_is_done_after_its_last_post_and_every_panel_shows_the_post_number(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "demo.db"
    shown = await watch_the_demo(db_path)

    done = shown.index("The sample blog replay is done.")
    document = sample_document()
    for post in document.posts:
        assert -1 < shown.find(post.title) < done
    assert -1 < shown.find("✎ Updated") < done  # the edit too
    assert shown.strip().endswith("The sample blog replay is done.")

    db = await Database.open(db_path)
    try:
        posts = PostStore(db)
        panels = re.findall(r"· #(\d+) .*?/post (\d+)", shown, flags=re.S)
        assert len(panels) == len(document.posts) + 1
        for heading, footer in panels:
            assert heading == footer
            opened = await posts.get(heading)
            assert opened is not None  # `/post N` opens exactly that post
            assert opened.title in shown
        # The terminal channel went with the demo.
        assert await SubscriptionStore(db).list() == []
    finally:
        await db.close()


async def test_the_searches_the_prompt_suggests_find_posts_in_the_sample(tmp_path: Path) -> None:
    suggested = re.findall(r"search ([^,]+),", PROMPT_HINT)
    assert suggested == list(SUGGESTED_SEARCHES)
    db_path = tmp_path / "demo.db"
    await watch_the_demo(db_path)
    db = await Database.open(db_path)
    try:
        deps = Deps(store=SqliteStore(db))
        for words in suggested:
            command, args = split_command_line(f"search {words}")
            reply = await handle(
                Request(
                    platform="terminal",
                    command=command,
                    args=args,
                    user_id="operator",
                    user_name="operator",
                    target=Target(platform="terminal", address="console", kind="terminal"),
                    chat_kind=ChatKind.TERMINAL,
                    is_admin=True,
                ),
                deps,
            )
            assert not reply.error and reply.cards, words
    finally:
        await db.close()
