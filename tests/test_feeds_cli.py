"""`livedesk sources add|set|pause|resume|remove|import|export`, the real command as an operator runs it,
and a running `livedesk run` that follows what other `livedesk` processes change."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.cli_process import Finished, livedesk, spawn
from tests.conftest import FIXTURES

BLOG = FIXTURES / "cli_blog.txt"
TITLE = "Live: City council votes on the new tram line"


def feeds(cwd: Path, *options: str) -> list[dict[str, Any]]:
    """The followed blogs as `livedesk --json sources` gives them (each beside its blog, if any),
    by id."""
    done = livedesk(*options, "--json", "sources", cwd=cwd)
    assert done.code == 0, done.err
    found = [entry["feed"] for entry in json.loads(done.out) if entry["feed"] is not None]
    return sorted(found, key=lambda feed: int(feed["id"]))


def one_error_line(done: Finished) -> str:
    assert len(done.err_lines) == 1, done.err
    assert "Traceback" not in done.out + done.err
    return done.err_lines[0]


def test_add_list_pause_resume_set_and_remove(tmp_path: Path) -> None:
    (tmp_path / "blogs").mkdir()
    (tmp_path / "blogs" / "council.txt").write_text(BLOG.read_text())
    added = livedesk("sources", "add", "blogs/council.txt", "--interval", "30", cwd=tmp_path)
    assert added.code == 0, added.err
    absolute = str(tmp_path / "blogs" / "council.txt")
    assert f"Following #1 {absolute} every 30 s" in added.out  # resolved at add

    twice = livedesk("sources", "add", absolute, cwd=tmp_path)
    assert twice.code == 1
    assert one_error_line(twice) == f"{absolute} is already followed (#1, every 30 s)"

    too_often = livedesk(
        "sources", "add", "https://example.org/feed", "--interval", "5", cwd=tmp_path
    )
    assert too_often.code == 2
    assert "at least 10 seconds" in one_error_line(too_often)
    not_a_feed = livedesk("sources", "add", "ftp://example.org/feed.xml", cwd=tmp_path)
    assert not_a_feed.code == 2
    assert "not a file path or an http(s) URL" in one_error_line(not_a_feed)

    missing = livedesk("sources", "add", "blogs/typo.txt", cwd=tmp_path)
    assert missing.code == 0
    assert "does not exist (yet)" in one_error_line(missing)  # a warning: it may appear later

    [first, second] = feeds(tmp_path)
    assert (first["id"], first["state"], first["interval"], first["origin"]) == (
        1,
        "active",
        30,
        "cli",
    )
    assert first["next_attempt_at"] is None  # due at once
    assert second["location"] == str(tmp_path / "blogs" / "typo.txt")

    said = []
    for verb, wanted in (("pause", "paused"), ("pause", "paused"), ("resume", "active")):
        done = livedesk("sources", verb, "#1", cwd=tmp_path)
        assert done.code == 0, done.err
        assert feeds(tmp_path)[0]["state"] == wanted
        said.append(done.out)
    assert said[0].startswith(f"Paused #1 {absolute}")
    assert said[1].startswith(f"#1 {absolute} is already paused")
    assert said[2].startswith(f"Resumed #1 {absolute}")
    changed = livedesk("sources", "set", "1", "--interval", "120", cwd=tmp_path)
    assert changed.code == 0 and "every 120 s now" in changed.out
    assert feeds(tmp_path)[0]["interval"] == 120

    for verb in ("pause", "resume", "remove"):
        unknown = livedesk("sources", verb, "42", cwd=tmp_path)
        assert unknown.code == 1
        assert one_error_line(unknown).startswith("no followed blog #42")

    listed = livedesk("sources", cwd=tmp_path, env={"COLUMNS": "80"})
    assert listed.code == 0
    assert "Followed" in listed.out and "active" in listed.out and "120 s" in listed.out
    assert all(len(line) <= 80 for line in listed.out.splitlines())

    # Removing a feed keeps its blog's posts.
    assert livedesk("import", absolute, cwd=tmp_path).code == 0
    removed = livedesk("sources", "remove", "1", cwd=tmp_path)
    assert removed.code == 0 and "its posts stay" in removed.out
    [remaining] = feeds(tmp_path)
    assert remaining["id"] == 2
    blogs = json.loads(livedesk("--json", "sources", cwd=tmp_path).out)
    assert [(b["title"], b["posts"]) for b in blogs if b["id"]] == [(TITLE, 4)]


def test_a_token_in_a_feeds_url_is_never_shown(tmp_path: Path) -> None:
    url = "https://news.example/live/feed.xml?edition=uk&token=s3cr3t-value-42"
    added = livedesk("sources", "add", url, cwd=tmp_path)
    assert added.code == 0
    listed = livedesk("sources", cwd=tmp_path)
    as_json = livedesk("--json", "sources", cwd=tmp_path)
    paused = livedesk("sources", "pause", "1", cwd=tmp_path)
    for done in (added, listed, as_json, paused):
        assert "s3cr3t" not in done.out + done.err
    assert "token=[secret]" in added.out
    # The export is for a feed reader: the URL as it is, and a warning saying so.
    exported = livedesk("sources", "export", cwd=tmp_path)
    assert exported.code == 0
    assert "token=s3cr3t-value-42" in exported.out
    assert "keep it private" in one_error_line(exported)
    assert "s3cr3t" not in exported.err


OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>My reader</title></head>
  <body>
    <outline text="Politics">
      <outline type="rss" text="Council live" xmlUrl="file://{blog}"/>
      <outline type="rss" text="Elsewhere" xmlUrl="https://elsewhere.example/live.xml"/>
    </outline>
    <outline type="rss" text="Broken" xmlUrl="gopher://old.example/feed"/>
    <outline type="rss" text="Same again" xmlUrl="https://elsewhere.example/live.xml"/>
  </body>
</opml>
"""


def test_opml_import_is_idempotent_and_an_export_imports_back(tmp_path: Path) -> None:
    blog = tmp_path / "council.txt"
    blog.write_text(BLOG.read_text())
    reader = tmp_path / "feeds.opml"
    reader.write_text(OPML.format(blog=blog))

    first = livedesk("sources", "import", str(reader), "--interval", "90", cwd=tmp_path)
    assert first.code == 0, first.err
    assert first.out.splitlines()[-1] == f"{reader}: 2 new, 1 already followed, 1 skipped."
    assert first.err_lines == [
        'outline "Broken": skipped, "gopher://old.example/feed" is not an http(s) or file URL'
    ]
    again = livedesk("--json", "sources", "import", str(reader), cwd=tmp_path)
    assert again.code == 0
    answer = json.loads(again.out)
    assert (len(answer["added"]), len(answer["already_followed"]), len(answer["skipped"])) == (
        0,
        3,  # the outline listed twice is followed once
        1,
    )
    followed = feeds(tmp_path)
    assert [(f["location"], f["title"], f["interval"], f["origin"]) for f in followed] == [
        (str(blog), "Council live", 90, "opml"),
        ("https://elsewhere.example/live.xml", "Elsewhere", 90, "opml"),
    ]
    assert livedesk("sources", "pause", "2", cwd=tmp_path).code == 0

    exported = tmp_path / "export.opml"
    done = livedesk("sources", "export", str(exported), cwd=tmp_path)
    assert done.code == 0 and "Exported 2 followed blogs" in done.out
    assert exported.read_text().startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">'
    )

    other = tmp_path / "other"
    other.mkdir()
    imported = livedesk("sources", "import", str(exported), cwd=other)
    assert imported.code == 0, imported.err
    assert [(f["location"], f["title"], f["interval"], f["state"]) for f in feeds(other)] == [
        (str(blog), "Council live", 90, "active"),
        ("https://elsewhere.example/live.xml", "Elsewhere", 90, "paused"),
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<opml version="2.0"><body><outline text="&x;" xmlUrl="https://a.example/"/></body></opml>',
            "refused: it declares entities",
        ),
        ("this is not xml", "not well-formed XML"),
        (None, "cannot read"),
    ],
)
def test_a_bad_opml_file_is_one_line_and_follows_nothing(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "feeds.opml"
    if content is not None:
        path.write_text(content)
    done = livedesk("sources", "import", str(path), cwd=tmp_path)
    assert done.code == 1
    assert says in one_error_line(done)
    assert "root:" not in done.out + done.err
    assert livedesk("--json", "sources", cwd=tmp_path).out.strip() == "[]"


def test_livedesk_sources_is_synced_into_the_feeds_at_start(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(BLOG.read_text())
    b.write_text(BLOG.read_text().replace("tram", "bus"))
    quiet = {"LIVEDESK_DEMO": "false"}
    settings = {
        **quiet,
        "LIVEDESK_SOURCES": json.dumps(["a.txt", {"url": "b.txt", "interval": 20}]),
    }
    assert livedesk("run", "--once", cwd=tmp_path, env=settings).code == 0
    assert livedesk("sources", "add", "https://c.example/feed", cwd=tmp_path).code == 0
    listed = feeds(tmp_path)
    assert [(f["location"], f["origin"], f["interval"], f["posts"]) for f in listed] == [
        (str(a), "settings", 60, 4),
        (str(b), "settings", 20, 4),
        ("https://c.example/feed", "cli", 60, 0),
    ]
    assert all(f["last_fetch_at"] for f in listed[:2])

    fewer = {**quiet, "LIVEDESK_SOURCES": json.dumps([{"url": "a.txt", "interval": 30}])}
    done = livedesk("run", "--once", cwd=tmp_path, env=fewer)
    assert done.code == 0
    assert [(f["location"], f["interval"]) for f in feeds(tmp_path)] == [
        (str(a), 30),
        ("https://c.example/feed", 60),
    ]


class LiveBlogs:
    """Blogs on 127.0.0.1, each path counting its requests."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests[name] = self.requests.get(name, 0) + 1
        body = BLOG.read_text().replace("tram line", f"tram line ({name})")
        return web.Response(text=body, content_type="text/plain")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def count(self, name: str) -> int:
        return self.requests.get(name, 0)


@pytest.fixture
async def live_blogs() -> AsyncIterator[LiveBlogs]:
    blogs = LiveBlogs()
    app = web.Application()
    app.router.add_get("/{name}", blogs.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    blogs.port = runner.addresses[0][1]
    try:
        yield blogs
    finally:
        await runner.cleanup()


async def wait_until(check: Any, what: str, within: float = 90.0) -> None:
    """Poll `check()` (sync or async) until true; fail naming `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


async def test_a_running_livedesk_follows_feeds_other_processes_add_pause_and_remove(
    tmp_path: Path, live_blogs: LiveBlogs
) -> None:
    async def cli(*args: str) -> Finished:
        done = await asyncio.to_thread(livedesk, *args, cwd=tmp_path)
        assert done.code == 0, done.err
        return done

    async def posts_of(location: str) -> int:
        listed = await asyncio.to_thread(feeds, tmp_path)
        return next((f["posts"] for f in listed if f["location"] == location), -1)

    # A fast settings feed keeps the runner busy, as a clock the test can read.
    env = {
        "LIVEDESK_DEMO": "false",
        "LIVEDESK_SOURCES": json.dumps([{"url": live_blogs.url("ticker"), "interval": 0.2}]),
    }
    child = spawn("run", cwd=tmp_path, env=env)
    try:
        await wait_until(lambda: live_blogs.count("ticker") >= 2, "the settings feed")
        await cli("sources", "add", live_blogs.url("added"), "--interval", "10")
        await wait_until(lambda: posts_of(live_blogs.url("added")), "the added feed's posts")
        assert live_blogs.count("added") >= 1

        await cli("sources", "pause", "2")  # the added feed
        # Another feed added after the pause: once it is fetched, the runner read both changes.
        await cli("sources", "add", live_blogs.url("later"), "--interval", "10")
        await wait_until(lambda: live_blogs.count("later") >= 1, "the later feed")
        paused_at = live_blogs.count("added")
        ticks = live_blogs.count("ticker")
        await wait_until(lambda: live_blogs.count("ticker") >= ticks + 15, "more ticks")
        assert live_blogs.count("added") <= paused_at + 1  # at most a fetch already under way

        await cli("sources", "remove", "3")
        await cli("sources", "resume", "2")
        resumed_at = live_blogs.count("added")
        await wait_until(lambda: live_blogs.count("added") > resumed_at, "the resumed feed")
        later = live_blogs.count("later")
        ticks = live_blogs.count("ticker")
        await wait_until(lambda: live_blogs.count("ticker") >= ticks + 15, "more ticks")
        assert live_blogs.count("later") <= later + 1
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(child.communicate, timeout=60)
    assert child.returncode == 0, err
    assert "Traceback" not in out + err
    assert f"following {live_blogs.url('added')} every 10s" in err
    assert f"source {live_blogs.url('added')} paused" in err
    assert f"no longer following {live_blogs.url('later')}" in err


def test_followed_blogs_are_something_to_run_without_any_platform(tmp_path: Path) -> None:
    """No platform configured, a store with a real blog: the demo stays out, and `livedesk run`
    polls the followed blogs instead of stopping for want of anything to do."""
    blog = tmp_path / "council.txt"
    blog.write_text(BLOG.read_text())
    assert livedesk("sources", "add", str(blog), cwd=tmp_path).code == 0
    assert livedesk("import", str(blog), cwd=tmp_path).code == 0
    done = livedesk("run", "--once", cwd=tmp_path)
    assert done.code == 0, done.err
    assert "Traceback" not in done.out + done.err
    [feed] = feeds(tmp_path)
    assert feed["last_fetch_at"] is not None and feed["posts"] == 4


def test_the_sources_commands_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    db = ("--db", postgres_url)
    url = "https://news.example/live.xml"
    added = livedesk(*db, "sources", "add", url, "--interval", "45", cwd=tmp_path)
    assert added.code == 0, added.err
    twice = livedesk(*db, "sources", "add", url, cwd=tmp_path)
    assert twice.code == 1
    assert one_error_line(twice) == f"{url} is already followed (#1, every 45 s)"
    assert livedesk(*db, "sources", "pause", "1", cwd=tmp_path).code == 0
    [feed] = feeds(tmp_path, *db)
    assert (feed["location"], feed["interval"], feed["state"]) == (url, 45, "paused")
    exported = livedesk(*db, "sources", "export", cwd=tmp_path)
    assert f'xmlUrl="{url}"' in exported.out and 'livedeskPaused="true"' in exported.out
    assert livedesk(*db, "sources", "remove", "1", cwd=tmp_path).code == 0
    assert feeds(tmp_path, *db) == []
