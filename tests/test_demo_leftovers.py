"""What the demo leaves behind never reaches a real chat, through the real `livedesk` command: the
sample blog greets no real subscription, a killed demo's terminal subscription is cleaned up, a run
without the demo logs at its level, and a blog imported by hand floods nobody."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.cli_process import Finished, livedesk
from tests.conftest import FIXTURES
from tests.fakes.webhooks import WebhookReceiver

BLOG = str(FIXTURES / "cli_blog.txt")  # 4 posts about a tram line, the newest first below
NEWEST_THREE = (
    "Council approves the tram line by nine votes to four",
    "Shop owners worry about two years of roadworks",
    "Cyclists ask for protected lanes beside the tracks",
)
OLDEST = "Debate opens with a packed public gallery"


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    return await asyncio.to_thread(livedesk, *args, cwd=cwd, env=env)


def delivered_text(hooks: WebhookReceiver, url: str) -> str:
    return "\n".join(json.dumps(p, ensure_ascii=False) for p in hooks.payloads(url))


async def test_the_sample_blog_never_greets_a_real_subscription(tmp_path: Path) -> None:
    demo = await run("run", "--once", cwd=tmp_path)  # a new database: the demo replays the sample
    assert demo.code == 0, demo.err
    assert "Storm" in demo.out
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        subscribed = await run("subscribe", "slack", url, cwd=tmp_path)
        assert subscribed.code == 0, subscribed.err

        done = await run("run", "--once", cwd=tmp_path)

        assert done.code == 0, done.err
        assert hooks.payloads(url) == []  # invented storm posts stay in the terminal
        assert (await run("import", BLOG, cwd=tmp_path)).code == 0
        assert (await run("run", "--once", cwd=tmp_path)).code == 0
        text = delivered_text(hooks, url)
    assert all(title in text for title in NEWEST_THREE)  # a real blog does reach it
    assert "Storm" not in text


async def test_a_killed_demos_terminal_subscription_is_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    # What a demo killed with SIGKILL leaves: its terminal subscription, with deliveries queued.
    assert (await run("subscribe", "terminal", "console", cwd=tmp_path)).code == 0
    assert (await run("import", BLOG, cwd=tmp_path)).code == 0
    async with WebhookReceiver() as hooks:
        assert (await run("subscribe", "slack", hooks.url("desk"), cwd=tmp_path)).code == 0

        done = await run("run", "--once", cwd=tmp_path)

    assert done.code == 0, done.err
    with sqlite3.connect(tmp_path / "livedesk.db") as conn:
        platforms = [r[0] for r in conn.execute("SELECT platform FROM subscriptions")]
        pending = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()
    assert platforms == ["slack"]
    assert pending == (0,)  # nothing left waiting for a terminal that no process serves


async def test_a_run_without_the_demo_logs_at_its_level(tmp_path: Path) -> None:
    assert (await run("import", BLOG, cwd=tmp_path)).code == 0
    async with WebhookReceiver() as hooks:
        assert (await run("subscribe", "slack", hooks.url("desk"), cwd=tmp_path)).code == 0

        done = await run("run", "--once", cwd=tmp_path)
        quiet = await run("run", "--once", cwd=tmp_path, env={"LIVEDESK_LOG_LEVEL": "WARNING"})

    assert done.code == 0, done.err
    assert any(" INFO bot.app: running: adapters slack" in line for line in done.err_lines)
    assert quiet.code == 0, quiet.err
    assert not any(" INFO " in line for line in quiet.err_lines)


async def test_a_blog_imported_by_hand_sends_only_its_newest_posts(tmp_path: Path) -> None:
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("subscribe", "slack", url, cwd=tmp_path)).code == 0  # no posts yet

        imported = await run("import", BLOG, cwd=tmp_path)
        assert imported.code == 0, imported.err
        done = await run("run", "--once", cwd=tmp_path)

        assert done.code == 0, done.err
        text = delivered_text(hooks, url)
        assert len(hooks.payloads(url)) == 3  # LIVEDESK_BACKFILL's default, not the whole blog
    assert all(title in text for title in NEWEST_THREE)
    assert OLDEST not in text
