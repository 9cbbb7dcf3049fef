"""`/api/v1` end to end: a real aiohttp client against `livedesk run` — in this process over both
backends, and as the real command in a subprocess — running a newsroom without the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import App
from bot.models import ImportResult
from tests.blog import BLOG, POSTS, post
from tests.cli_process import control_room_of, livedesk, spawn
from tests.conftest import FIXTURES
from tests.control_room import TOKEN, Api, backend_settings, eventually, running_app, url_of
from tests.fakes.webhooks import WebhookReceiver


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return backend_settings(request, tmp_path)


def text_of(payloads: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(p, ensure_ascii=False) for p in payloads]


def titles(payloads: list[dict[str, Any]], candidates: list[str]) -> list[str]:
    """Which of `candidates` each payload shows, in the order they arrived."""
    return [next(t for t in candidates if t in text) for text in text_of(payloads)]


async def ingest(app: App, *posts: Any) -> None:
    await app.store.ingest(ImportResult(source=BLOG, posts=tuple(posts)))


async def test_an_operator_runs_the_newsroom_through_the_api(
    store_settings: dict[str, Any],
) -> None:
    async with (
        WebhookReceiver() as hooks,
        running_app(admin_token=TOKEN, slack={}, **store_settings) as app,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, url_of(app))
        await ingest(app, *POSTS)

        latest = await api.ok("GET", "/posts", limit=3)
        assert [p["title"] for p in latest["posts"]] == ["Update 11", "Update 10", "Update 9"]
        [blog] = await app.store.posts.sources()
        for named in (str(blog.number), BLOG.id, "Kyiv"):  # as --source takes it
            one = await api.ok("GET", "/posts", limit=1, source=named)
            assert [p["title"] for p in one["posts"]] == ["Update 11"]

        # An edited post: its page lists both versions.
        await ingest(app, POSTS[1].model_copy(update={"title": "Sanctions package agreed"}))
        every = await api.ok("GET", "/posts", limit=20)
        number = next(p["number"] for p in every["posts"] if p["id"] == "kyiv-002")
        page = await api.ok("GET", f"/posts/{number}")
        assert page["post"]["title"] == "Sanctions package agreed"
        assert [v["post"]["title"] for v in page["versions"]] == [
            "Sanctions package outlined",
            "Sanctions package agreed",
        ]
        assert page["source"]["title"] == BLOG.title

        found = await api.ok("GET", "/search", q="sanctions banks")
        assert found["total"] == 1 and found["hits"][0]["post"]["id"] == "kyiv-002"
        marked = [s["text"] for s in found["hits"][0]["snippet"]["segments"] if s["match"]]
        assert [m.lower() for m in marked] == ["sanctions", "banks"]

        # Subscribe a webhook: greeted with the two latest posts, its URL never shown whole.
        desk = hooks.url("desk")
        status, created = await api.call(
            "POST", "/subscriptions", {"platform": "slack", "target": desk, "backfill": 2}
        )
        assert status == 201 and created["created"] is True
        assert desk not in json.dumps(created) and created["target"].endswith("/…/desk")
        greeted = await hooks.wait_for(desk, 2, within=30)
        assert titles(greeted, ["Update 10", "Update 11"]) == ["Update 10", "Update 11"]

        # Paused: a new post does not go out. Resumed with keywords changed in place: only what
        # matches them does (post 14 would arrive between 13 and 15 if it matched).
        sub = created["id"]
        paused = await api.ok("PATCH", f"/subscriptions/{sub}", {"state": "paused"})
        assert paused["state"] == "paused"
        await ingest(app, post(12, "Troops move while paused", "Troops moved overnight."))
        changed = await api.ok(
            "PATCH", f"/subscriptions/{sub}", {"state": "active", "keywords": "troops"}
        )
        assert (changed["id"], changed["state"], changed["keywords"]) == (sub, "active", "troops")
        await ingest(
            app,
            post(13, "Troops withdraw", "Troops withdraw from the border."),
            post(14, "Weather report", "Snow tonight."),
        )
        await ingest(app, post(15, "Troops return", "Troops return to the border."))
        arrived = await hooks.wait_for(desk, 4, within=30)
        candidates = ["Update 10", "Update 11", "Troops withdraw", "Troops return", "Weather"]
        assert titles(arrived, candidates)[2:] == ["Troops withdraw", "Troops return"]

        # A hook that refuses the payload: the delivery is dead; retried, it goes out.
        broken = hooks.url("broken")
        hooks.respond(broken, 400, "invalid_payload", times=1)
        made = await api.ok(
            "POST", "/subscriptions", {"platform": "slack", "target": broken, "backfill": 1}
        )
        dead = await eventually(
            lambda: api.ok("GET", "/deliveries", state="dead"), lambda a: len(a["dead"]) == 1
        )
        [item] = dead["dead"]
        assert item["subscription_id"] == made["id"] and "invalid_payload" in item["reason"]
        assert broken not in json.dumps(dead) and dead["counts"]["dead"] == 1
        assert await api.ok("POST", "/deliveries/retry", {"ids": [item["id"]]}) == {"retried": 1}
        [again] = await hooks.wait_for(broken, 1, within=30)
        assert "Troops return" in json.dumps(again)  # the newest post, greeting the new hook

        # A test message reaches the chat through its adapter.
        sent = await api.ok("POST", f"/subscriptions/{sub}/test")
        assert sent["id"] == sub and desk not in sent["sent"]
        delivered = await hooks.wait_for(desk, 5, within=30)
        assert "Livedesk test message" in json.dumps(delivered[-1])

        # Unsubscribed: gone from the list.
        assert await api.ok("DELETE", f"/subscriptions/{sub}") == {"removed": sub}
        listed = await api.ok("GET", "/subscriptions")
        assert [s["id"] for s in listed["subscriptions"]] == [made["id"]]


async def test_changing_keywords_to_those_of_a_sibling_subscription_is_a_conflict(
    store_settings: dict[str, Any],
) -> None:
    async with (
        running_app(admin_token=TOKEN, **store_settings) as app,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, url_of(app))
        hook = "https://hooks.slack.com/services/T000/B000/conflictconflict"
        first = await api.ok(
            "POST", "/subscriptions", {"platform": "slack", "target": hook, "keywords": "troops"}
        )
        second = await api.ok("POST", "/subscriptions", {"platform": "slack", "target": hook})
        status, answer = await api.call(
            "PATCH", f"/subscriptions/{second['id']}", {"keywords": "troops"}
        )
        assert status == 409 and "already has a subscription" in answer["error"]
        status, answer = await api.call(
            "PATCH", f"/subscriptions/{first['id']}", {"keywords": "-troops"}
        )
        assert status == 400 and answer["field"] == "keywords"
        listed = await api.ok("GET", "/subscriptions")
        assert [s["keywords"] for s in listed["subscriptions"]] == ["troops", None]


async def test_a_test_send_to_a_platform_not_running_says_so(tmp_path: Path) -> None:
    async with (
        running_app(admin_token=TOKEN, db_path=tmp_path / "livedesk.db") as app,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, url_of(app))
        made = await api.ok(
            "POST", "/subscriptions", {"platform": "telegram", "target": "@newsdesk"}
        )
        status, answer = await api.call("POST", f"/subscriptions/{made['id']}/test")
        assert status == 502 and "telegram is not running here" in answer["error"]


# --- the real command ---------------------------------------------------------------------------------


async def stopped(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(process.communicate, timeout=60)
    return process.returncode, out, err


async def test_the_real_livedesk_run_serves_the_api(tmp_path: Path) -> None:
    blog = FIXTURES / "cli_blog.txt"
    done = await asyncio.to_thread(livedesk, "import", str(blog), cwd=tmp_path)
    assert done.code == 0, done.err
    env = {"LIVEDESK_ADMIN_TOKEN": TOKEN, "LIVEDESK_SLACK": "{}", "LIVEDESK_DEMO": "false"}
    async with WebhookReceiver() as hooks, aiohttp.ClientSession() as session:
        child = spawn("run", cwd=tmp_path, env=env)
        try:
            api = Api(session, await control_room_of(child))
            found = await api.ok("GET", "/search", q="tram")
            assert found["total"] >= 1
            assert all("tram" in json.dumps(h).lower() for h in found["hits"])
            latest = await api.ok("GET", "/posts", limit=1)
            assert (
                latest["posts"][0]["title"]
                == "Council approves the tram line by nine votes to four"
            )

            desk = hooks.url("newsroom")
            made = await api.ok(
                "POST", "/subscriptions", {"platform": "slack", "target": desk, "backfill": 1}
            )
            [greeting] = await hooks.wait_for(desk, 1, within=60)
            assert "Council approves the tram line" in json.dumps(greeting)
            paused = await api.ok("PATCH", f"/subscriptions/{made['id']}", {"state": "paused"})
            assert paused["state"] == "paused"
            sent = await api.ok("POST", f"/subscriptions/{made['id']}/test")
            assert desk not in sent["sent"]
            delivered = await hooks.wait_for(desk, 2, within=60)
            assert "Livedesk test message" in json.dumps(delivered[-1])

            broken = hooks.url("broken")
            hooks.respond(broken, 400, "invalid_payload", times=1)
            await api.ok(
                "POST", "/subscriptions", {"platform": "slack", "target": broken, "backfill": 1}
            )
            await eventually(
                lambda: api.ok("GET", "/deliveries", state="dead"),
                lambda a: len(a["dead"]) == 1,
                within=60,
            )
            assert await api.ok("POST", "/deliveries/retry") == {"retried": 1}
            await hooks.wait_for(broken, 1, within=60)
            ready = await session.get(f"{api.base}/readyz")
            assert ready.status == 200 and (await ready.json())["ready"] is True
        finally:
            code, out, err = await stopped(child)
    assert code == 0, err
    assert TOKEN not in out + err and desk not in out + err and broken not in out + err


async def test_blogs_to_follow_are_added_paused_and_removed_through_the_api(
    store_settings: dict[str, Any],
) -> None:
    feed = (FIXTURES / "rss2.xml").read_bytes()

    async def serve_feed(request: web.Request) -> web.Response:
        return web.Response(body=feed, content_type="application/rss+xml")

    publisher = web.Application()
    publisher.router.add_get("/live/feed.xml", serve_feed)
    runner = web.AppRunner(publisher, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/live/feed.xml"
    try:
        async with (
            running_app(admin_token=TOKEN, **store_settings) as app,
            aiohttp.ClientSession() as session,
        ):
            api = Api(session, url_of(app))
            status, added = await api.call("POST", "/sources", {"url": url, "interval": 10})
            assert status == 201 and added["origin"] == "api" and added["enabled"] is True
            # The running poller follows it at once: its posts arrive without a restart.
            posts = await eventually(
                lambda: api.ok("GET", "/posts", limit=5), lambda a: len(a["posts"]) > 0
            )
            assert posts["posts"][0]["source_id"]
            fetched = await eventually(
                lambda: api.ok("GET", f"/sources/{added['id']}"),
                lambda a: a["last_fetch_at"] is not None,
            )
            assert fetched["state"] == "active" and fetched["last_error"] is None

            status, again = await api.call("POST", "/sources", {"url": url})
            assert status == 409 and again["source"]["id"] == added["id"]
            paused = await api.ok("PATCH", f"/sources/{added['id']}", {"enabled": False})
            assert (paused["state"], paused["enabled"]) == ("paused", False)
            slower = await api.ok("PATCH", f"/sources/{added['id']}", {"interval": 600})
            assert slower["interval"] == 600

            secret = "https://feeds.example/live.xml?token=s3cr3t-feed-token"
            hidden = await api.ok("POST", "/sources", {"url": secret, "interval": 60})
            listed = await api.ok("GET", "/sources")
            assert "s3cr3t-feed-token" not in json.dumps(listed)
            assert [s["id"] for s in listed["sources"]] == [added["id"], hidden["id"]]

            status, refused = await api.call("POST", "/sources", {"url": "/etc/passwd"})
            assert status == 400 and refused["field"] == "url"
            assert await api.ok("DELETE", f"/sources/{added['id']}") == {"removed": added["id"]}
            status, _ = await api.call("GET", f"/sources/{added['id']}")
            assert status == 404
            kept = await api.ok("GET", "/posts", limit=5)
            assert kept["posts"] == posts["posts"]  # removing a blog keeps its posts
    finally:
        await runner.cleanup()
