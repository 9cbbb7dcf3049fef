"""The operator's first hour, through the real `livedesk` command: subscribe a webhook and run, see what
waits for a token, keep the demo off real data, and add a blog without flooding anyone."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.cli_process import Finished, livedesk, spawn
from tests.conftest import FIXTURES
from tests.fakes.webhooks import WebhookReceiver

BLOG = str(FIXTURES / "cli_blog.txt")  # 4 posts about a tram line
BLOG_TITLES = (
    "Council approves the tram line by nine votes to four",
    "Shop owners worry about two years of roadworks",
    "Cyclists ask for protected lanes beside the tracks",
    "Debate opens with a packed public gallery",
)


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    """`livedesk ARGS` in a child process, while this loop keeps serving the fake webhooks."""
    return await asyncio.to_thread(livedesk, *args, cwd=cwd, env=env)


def rows(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: what "the database was not written" is checked against."""
    with sqlite3.connect(db_path) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def titles_in(payloads: list[dict[str, Any]], candidates: tuple[str, ...]) -> list[str]:
    text = [json.dumps(p, ensure_ascii=False) for p in payloads]
    return [title for title in candidates if any(title in t for t in text)]


async def test_subscribe_a_webhook_then_a_plain_run_delivers_to_it(tmp_path: Path) -> None:
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("import", BLOG, cwd=tmp_path)).code == 0
        subscribed = await run("subscribe", "slack", url, cwd=tmp_path)
        assert subscribed.code == 0, subscribed.err

        done = await run("run", "--once", cwd=tmp_path)  # no LIVEDESK_SLACK section at all

        assert done.code == 0, done.err
        payloads = hooks.payloads(url)
        assert len(payloads) == 3  # the subscription's greeting: the newest three posts
        assert titles_in(payloads, BLOG_TITLES) == list(BLOG_TITLES[:3])
        assert "Storm Aurora" not in done.out + json.dumps(payloads)  # no demo here
        assert url not in done.out + done.err  # the webhook URL is a secret

        listing = await run("--json", "subscriptions", cwd=tmp_path)
        [sub] = json.loads(listing.out)
        assert sub["edit_policy"] == "follow-up"  # webhooks cannot edit: edits come as follow-ups


async def test_subscriptions_waiting_for_a_token_are_one_line_per_platform(tmp_path: Path) -> None:
    for chat in ("@newsdesk", "-1001234567890", "42"):
        assert (await run("subscribe", "telegram", chat, cwd=tmp_path)).code == 0
    assert (await run("subscribe", "discord", "123456789012345678", cwd=tmp_path)).code == 0
    async with WebhookReceiver() as hooks:
        assert (await run("subscribe", "slack", hooks.url("desk"), cwd=tmp_path)).code == 0

        started = await run("run", "--once", cwd=tmp_path)

    assert started.code == 0, started.err
    # A run with no demo logs at LIVEDESK_LOG_LEVEL (INFO); apart from that, only the two lines.
    assert [line for line in started.err_lines if " INFO " not in line] == [
        "3 telegram subscriptions wait: set LIVEDESK_TELEGRAM__TOKEN",
        "1 discord subscription waits: set LIVEDESK_DISCORD__TOKEN",
    ]
    listing = await run("subscriptions", cwd=tmp_path)
    assert listing.code == 0
    assert "3 telegram subscriptions wait: set LIVEDESK_TELEGRAM__TOKEN" in listing.err_lines
    assert "@newsdesk" in listing.out

    # With the token set the line is gone (the adapter itself is not started by `subscriptions`).
    configured = await run(
        "subscriptions", cwd=tmp_path, env={"LIVEDESK_TELEGRAM__TOKEN": "123456:" + "a" * 35}
    )
    assert configured.err_lines == ["1 discord subscription waits: set LIVEDESK_DISCORD__TOKEN"]


async def test_the_demo_never_writes_a_database_with_a_real_subscription(tmp_path: Path) -> None:
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("import", BLOG, cwd=tmp_path)).code == 0
        assert (await run("subscribe", "slack", url, cwd=tmp_path)).code == 0
        assert (await run("run", "--once", cwd=tmp_path)).code == 0  # its greeting goes out
        delivered = len(hooks.payloads(url))
        before = rows(tmp_path / "livedesk.db")

        asked = await run("run", "--once", cwd=tmp_path, env={"LIVEDESK_DEMO": "true"})

        assert asked.code == 0, asked.err
        [line] = [line for line in asked.err_lines if " INFO " not in line]
        assert "the demo does not run here" in line
        assert "Storm Aurora" not in asked.out
        assert len(hooks.payloads(url)) == delivered  # nothing invented reached the real hook
    assert rows(tmp_path / "livedesk.db") == before


async def test_the_demo_does_not_run_on_a_newsroom_database_and_says_so(tmp_path: Path) -> None:
    assert (await run("import", BLOG, cwd=tmp_path)).code == 0
    assert (await run("subscribe", "telegram", "@newsdesk", cwd=tmp_path)).code == 0
    before = rows(tmp_path / "livedesk.db")

    plain = await run("run", "--once", cwd=tmp_path)  # no platform configured: nothing else to do

    assert plain.code == 2
    assert plain.err_lines[0] == "1 telegram subscription waits: set LIVEDESK_TELEGRAM__TOKEN"
    [refusal] = plain.err_lines[1:]
    assert "the demo does not run here" in refusal and "--db" in refusal
    assert "Traceback" not in plain.err and "Storm Aurora" not in plain.out
    assert rows(tmp_path / "livedesk.db") == before


async def test_the_demo_leaves_no_subscription_behind_and_runs_again_on_its_own_database(
    tmp_path: Path,
) -> None:
    first = await run("run", "--once", cwd=tmp_path)
    assert first.code == 0, first.err
    assert "Storm Aurora" in first.out
    # Each panel is numbered with the post's own number, the one `/post N` opens.
    numbers = re.findall(r"· #(\d+) ", first.out)
    opens = re.findall(r"/post (\d+)", first.out)
    assert len(numbers) >= 12 and set(numbers) == set(opens)

    listing = await run("--json", "subscriptions", cwd=tmp_path)
    assert json.loads(listing.out) == []  # the terminal's subscription went with the demo

    again = await run("run", "--once", cwd=tmp_path)
    assert again.code == 0, again.err
    assert "already in this database" in again.out  # still the demo's own database
    assert json.loads((await run("--json", "subscriptions", cwd=tmp_path)).out) == []


def feed(items: int, *, newest: datetime) -> str:
    """An RSS 2.0 feed of `items` posts, one every ten minutes up to `newest`."""
    entries = []
    for n in range(items):
        when = newest - timedelta(minutes=10 * (items - 1 - n))
        entries.append(
            f"<item><title>Harbour update {n + 1}</title><guid>harbour-{n + 1}</guid>"
            f"<link>https://example.org/live/{n + 1}</link>"
            f"<pubDate>{format_datetime(when)}</pubDate>"
            f"<description>Ferry news number {n + 1}.</description></item>"
        )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour live</title>'
        f"<link>https://example.org/live</link>{''.join(entries)}</channel></rss>"
    )


async def test_a_new_blogs_first_poll_sends_only_its_newest_posts(tmp_path: Path) -> None:
    newest = datetime(2024, 7, 2, 18, 0, tzinfo=UTC)
    source = tmp_path / "harbour.xml"
    source.write_text(feed(8, newest=newest), encoding="utf-8")
    env = {"LIVEDESK_SOURCES": json.dumps([str(source)]), "LIVEDESK_FIRST_POLL_BACKFILL": "2"}
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("subscribe", "slack", url, cwd=tmp_path)).code == 0

        first = await run("run", "--once", cwd=tmp_path, env=env)

        assert first.code == 0, first.err
        everything = tuple(f"Harbour update {n}" for n in range(1, 10))
        assert titles_in(hooks.payloads(url), everything) == [
            "Harbour update 7",
            "Harbour update 8",
        ]
        stored = await run("--json", "latest", "-n", "50", cwd=tmp_path)
        assert len(json.loads(stored.out)) == 8  # the whole history is kept, just not sent

        # Once the blog is known, every new post goes out again.
        source.write_text(feed(9, newest=newest + timedelta(minutes=10)), encoding="utf-8")
        later = await run("run", "--once", cwd=tmp_path, env=env)
        assert later.code == 0, later.err
        assert titles_in(hooks.payloads(url), everything) == [
            "Harbour update 7",
            "Harbour update 8",
            "Harbour update 9",
        ]


async def test_the_first_poll_backfill_defaults_to_the_backfill_setting(tmp_path: Path) -> None:
    source = tmp_path / "harbour.xml"
    source.write_text(feed(6, newest=datetime(2024, 7, 2, 18, 0, tzinfo=UTC)), encoding="utf-8")
    env = {"LIVEDESK_SOURCES": json.dumps([str(source)]), "LIVEDESK_BACKFILL": "1"}
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("subscribe", "slack", url, cwd=tmp_path, env=env)).code == 0
        assert (await run("run", "--once", cwd=tmp_path, env=env)).code == 0
        everything = tuple(f"Harbour update {n}" for n in range(1, 7))
        assert titles_in(hooks.payloads(url), everything) == ["Harbour update 6"]


async def test_edit_in_place_is_refused_for_webhooks_in_one_line(tmp_path: Path) -> None:
    url = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"
    refused = await run("subscribe", "slack", url, "--edit-policy", "edit", cwd=tmp_path)
    assert refused.code == 2
    [line] = refused.err_lines
    assert "cannot edit" in line and "follow-up" in line and "SECRETSECRET" not in line
    assert json.loads((await run("--json", "subscriptions", cwd=tmp_path)).out) == []

    assert (await run("subscribe", "slack", url, "--edit-policy", "ignore", cwd=tmp_path)).code == 0
    assert (await run("subscribe", "telegram", "@newsdesk", cwd=tmp_path)).code == 0
    policies = {
        s["platform"]: s["edit_policy"]
        for s in json.loads((await run("--json", "subscriptions", cwd=tmp_path)).out)
    }
    assert policies == {"slack": "ignore", "telegram": "edit"}  # Telegram edits in place


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_running_livedesk_delivers_webhooks_and_serves_no_unsigned_endpoint(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("import", BLOG, cwd=tmp_path)).code == 0
        assert (await run("subscribe", "slack", url, cwd=tmp_path)).code == 0
        child = spawn("run", cwd=tmp_path, env={"LIVEDESK_HTTP_PORT": str(port)})
        try:
            payloads = await hooks.wait_for(url, 3, within=60)
            assert titles_in(payloads, BLOG_TITLES) == list(BLOG_TITLES[:3])
            # No signing secret: the port serves the control room, but no slash-command endpoint.
            async with aiohttp.ClientSession() as client:
                async with client.post(f"http://127.0.0.1:{port}/slack/commands") as answer:
                    assert answer.status == 404
                async with client.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    assert answer.status == 200
        finally:
            child.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(child.communicate, timeout=60)
    assert child.returncode == 0, err
    assert "demo" not in out + err and url not in out + err
