"""Hostile input found by fuzzing: absurd dates, undecodable text, markup the stdlib parser asserts on,
a feed claiming another feed's blog, and redirects towards internal addresses.

Everything runs against the real importers, the real store, and (where the operator would) the real
`livedesk` command as a child process, with the no-network guard on.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.dispatcher import Dispatcher
from bot.models import ChatKind, ImportResult, Post, Request, Source, SourceKind, Target
from bot.sources import SourceError, download, load, parse_document
from bot.sources.fetch import AddressClass, address_class, redirect_allowed
from handlers import Deps, handle, split_command_line
from storage.db import MIGRATIONS, Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.store import SqliteStore
from storage.subscriptions import SubscriptionStore
from storage.values import SourceConflict, may_update
from tests.cli_process import livedesk
from tests.conftest import NetworkBlocked
from tests.fakes.flaky import FlakyAdapter
from tests.test_dispatcher import SETTINGS

SEEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rss(*items: tuple[str, str, str], link: str = "https://old.example/live") -> bytes:
    """An RSS feed of (guid, title, pubDate) items."""
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><description>Text of {title}."
        f"</description><pubDate>{date}</pubDate></item>"
        for guid, title, date in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Old blog</title>'
        f"<link>{link}</link>{body}</channel></rss>"
    ).encode()


def json_feed(*items: dict[str, Any], title: str = "Hostile blog") -> bytes:
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": title, "items": list(items)}
    ).encode()


YEAR_999 = rss(
    ("ancient", "Ancient post", "Mon, 01 Jan 0999 10:00:00 GMT"),
    ("modern", "Modern post", "Wed, 01 Jan 2025 10:00:00 GMT"),
    ("newer", "Newer post", "Thu, 02 Jan 2025 10:00:00 GMT"),
)


async def stored_times(db: Database) -> list[str]:
    async with db.reader.execute("SELECT published_at FROM posts") as cur:
        return [r[0] for r in await cur.fetchall()]


async def ask(deps: Deps, line: str) -> list[str]:
    command, args = split_command_line(line)
    target = Target(platform="fake", address="chat", kind="private")
    reply = await handle(
        Request(
            platform="fake",
            command=command,
            args=args,
            user_id="u1",
            target=target,
            chat_kind=ChatKind.PRIVATE,
        ),
        deps,
    )
    return [card.title for card in reply.cards]


# --- dates ------------------------------------------------------------------------------------------


def test_a_year_999_date_is_replaced_by_the_time_first_seen_with_a_warning() -> None:
    result = parse_document(YEAR_999, location="old.xml", now=SEEN)
    by_title = {p.title: p for p in result.posts}
    assert by_title["Ancient post"].published_at == SEEN  # first in the feed: no microsecond off
    assert by_title["Ancient post"].time_estimated
    assert by_title["Modern post"].published_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert not by_title["Modern post"].time_estimated
    assert any("implausible date (0999-01-01)" in w for w in result.warnings)
    # The id is the feed's own: the next import of the same feed finds the same post.
    again = parse_document(YEAR_999, location="old.xml", now=datetime(2026, 3, 2, tzinfo=UTC))
    assert {p.id for p in again.posts} == {p.id for p in result.posts}


def test_a_date_far_in_the_future_is_implausible_too() -> None:
    feed = json_feed(
        {
            "id": "1",
            "title": "From 2999",
            "content_text": "x",
            "date_published": "2999-01-01T00:00Z",
        },
        {
            "id": "2",
            "title": "Edited later",
            "content_text": "y",
            "date_published": "2026-03-01T10:00:00Z",
            "date_modified": "2999-01-01T00:00:00Z",
        },
    )
    result = parse_document(feed, location="future.json", now=SEEN)
    future, edited = result.posts
    assert future.published_at == SEEN and future.time_estimated
    assert edited.published_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert edited.updated_at is None  # an implausible modification date is dropped
    # Within a day ahead is a zone mistake, not an absurd date: kept.
    soon = json_feed(
        {"id": "1", "title": "Soon", "content_text": "x", "date_published": "2026-03-02T06:00Z"}
    )
    (post,) = parse_document(soon, location="soon.json", now=SEEN).posts
    assert post.published_at == datetime(2026, 3, 2, 6, tzinfo=UTC) and not post.time_estimated


def test_a_date_that_overflows_in_utc_refuses_its_post_and_the_rest_imports() -> None:
    feed = json_feed(
        {
            "id": "a",
            "title": "Late",
            "content_text": "x",
            "date_published": "9999-12-31T23:59:59-05:00",
        },
        {
            "id": "b",
            "title": "Early",
            "content_text": "y",
            "date_published": "0001-01-01T00:00:00+01:00",
        },
        {"id": "c", "title": "Fine", "content_text": "z", "date_published": "2026-02-01T10:00:00Z"},
    )
    result = parse_document(feed, location="over.json", now=SEEN)
    assert [p.title for p in result.posts] == ["Fine"]
    assert any("refused 2 post(s)" in w and '"Late", "Early"' in w for w in result.warnings)

    only_bad = json_feed(
        {
            "id": "a",
            "title": "Late",
            "content_text": "x",
            "date_published": "9999-12-31T23:59:59-05:00",
        }
    )
    with pytest.raises(SourceError) as refused:
        parse_document(only_bad, location="over.json", now=SEEN)
    assert str(refused.value).startswith("over.json: no usable posts")
    assert "\n" not in str(refused.value)


def test_overflowing_dates_in_atom_json_ld_and_page_text_are_refused_the_same_way() -> None:
    atom = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
        b"<entry><id>x</id><title>Late</title><updated>9999-12-31T23:59:59-05:00</updated>"
        b"<content>x</content></entry>"
        b"<entry><id>y</id><title>Fine</title><updated>2026-02-01T10:00:00Z</updated>"
        b"<content>y</content></entry></feed>"
    )
    assert [p.title for p in parse_document(atom, location="a.atom", now=SEEN).posts] == ["Fine"]

    page = (
        b"Far future live\n\n11:55 p.m. ET, December 31, 9999\nLate\nText.\n\n"
        b"10:00 a.m. ET, January 1, 2026\nFine\nText.\n"
    )
    assert [p.title for p in parse_document(page, location="p.txt", now=SEEN).posts] == ["Fine"]

    ld = (
        b'<html><head><script type="application/ld+json">{"@type": "LiveBlogPosting", '
        b'"headline": "LD", "liveBlogUpdate": [{"@type": "BlogPosting", "headline": "Late", '
        b'"datePublished": "9999-12-31T23:59:59-05:00", "articleBody": "x"}, {"@type": '
        b'"BlogPosting", "headline": "Fine", "datePublished": "2026-02-01T10:00:00Z", '
        b'"articleBody": "y"}]}</script></head></html>'
    )
    assert [p.title for p in parse_document(ld, location="ld.html", now=SEEN).posts] == ["Fine"]


async def test_after_a_year_999_import_latest_sources_and_the_dispatcher_all_work(
    db: Database,
) -> None:
    posts = PostStore(db)
    subscriptions = SubscriptionStore(db)
    chat = Target(platform="fake", address="chat", kind="group")
    await subscriptions.add(chat, created_by="u1")
    await ingest(posts.db, parse_document(YEAR_999, location="old.xml"), location="old.xml")

    times = await stored_times(db)
    assert all(len(t) == len("2025-01-01T10:00:00.000000Z") and t[4] == "-" for t in times)
    parsed = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ") for t in times]
    assert sorted(times) == [t for _, t in sorted(zip(parsed, times, strict=True))]

    latest = await posts.latest(3)
    assert [p.title for p in latest][1:] == ["Newer post", "Modern post"]
    assert (await posts.sources())[0].posts == 3

    deps = Deps(store=SqliteStore(db))
    titles = await ask(deps, "/latest")
    assert "Ancient post" in titles and "Modern post" in titles

    adapter = FlakyAdapter()
    await Dispatcher(SqliteOutbox(db), {"fake": adapter}, SETTINGS).run_until_idle()
    assert len(adapter.post_ids_to("chat")) == 3
    async with db.reader.execute("SELECT count(*) FROM deliveries WHERE state = 'sent'") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == 3


async def test_a_database_with_short_years_is_rewritten_fixed_width_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with await Database.open(path) as db:
        posts = PostStore(db)
        await SubscriptionStore(db).add(
            Target(platform="fake", address="chat", kind="group"), created_by="u1"
        )
        source = Source(id="old", title="Old", kind=SourceKind.RSS)
        good = Post(
            id="old:good",
            source_id="old",
            published_at=datetime(2025, 1, 1, 10, tzinfo=UTC),
            title="Good",
        )
        bad = good.model_copy(update={"id": "old:bad", "title": "Bad"})
        await ingest(posts.db, ImportResult(source=source, posts=(good, bad)))
        async with db.write() as conn:  # what an older Livedesk wrote for a year-999 post
            await conn.execute(
                "UPDATE posts SET published_at = '999-01-01T10:00:00.000000Z', "
                "updated_at = '999-01-02T10:00:00.000000Z' WHERE id = 'old:bad'"
            )
            await conn.execute(
                "UPDATE deliveries SET order_key = '999-01-01T10:00:00.000000Z' WHERE post_rowid = "
                "(SELECT rowid FROM posts WHERE id = 'old:bad')"
            )
            await conn.execute("PRAGMA user_version = 3")

    async with await Database.open(path) as db:
        async with db.reader.execute("PRAGMA user_version") as cur:
            version = await cur.fetchone()
        assert version is not None and version[0] == len(MIGRATIONS)
        async with db.reader.execute(
            # Never edited: its first version's time is the post's own (schema 9).
            "SELECT p.published_at, p.updated_at, p.time_estimated, p.recorded_at, d.order_key "
            "FROM posts p JOIN deliveries d ON d.post_rowid = p.rowid WHERE p.id = 'old:bad'"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        assert row["published_at"] == row["recorded_at"] == row["order_key"]
        assert row["updated_at"] is None and row["time_estimated"] == 1
        latest = await PostStore(db).latest(5)
        assert [p.title for p in latest] == ["Bad", "Good"]  # first seen now, after 2025


# --- one bad file never aborts the rest -------------------------------------------------------------


def test_markup_the_stdlib_parser_asserts_on_does_not_lose_a_feed_entry() -> None:
    feed = json_feed(
        {
            "id": "1",
            "title": "Odd markup",
            "content_html": "<p>before<![}</p><p>after<![ x]></p><![foo]>end",
            "date_published": "2026-02-01T10:00:00Z",
        }
    )
    (post,) = parse_document(feed, location="odd.json", now=SEEN).posts
    assert post.body == ("before", "after", "end")  # read as HTML5 reads a bogus comment

    rss_feed = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        b"<item><guid>1</guid><title>Odd markup</title><description>&lt;p&gt;before&lt;![}"
        b"&lt;/p&gt;&lt;p&gt;after&lt;/p&gt;</description>"
        b"<pubDate>Sun, 01 Feb 2026 10:00:00 GMT</pubDate></item></channel></rss>"
    )
    (post,) = parse_document(rss_feed, location="odd.xml", now=SEEN).posts
    assert post.title == "Odd markup" and "after" in post.body


def test_a_lone_surrogate_refuses_the_document_in_one_line() -> None:
    lone = b'{"version": "https://jsonfeed.org/version/1.1", "title": "S",\n "items": [{"id": "1", '
    lone += b'"title": "Half \\ud800 a pair", "content_text": "x"}]}'
    with pytest.raises(SourceError) as refused:
        parse_document(lone, location="lone.json", now=SEEN)
    assert str(refused.value) == (
        "lone.json: malformed JSON (line 2, column 39: lone surrogate \\ud800)"
    )
    # A whole pair is a character, and an escaped backslash is no escape at all.
    pair = json_feed({"id": "1", "title": "Smile \U0001f600 and \\ud800", "content_text": "x"})
    assert "\\ud83d\\ude00" in pair.decode() and "\\\\ud800" in pair.decode()
    (post,) = parse_document(pair, location="pair.json", now=SEEN).posts
    assert post.title == "Smile \U0001f600 and \\ud800"

    xml = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T &#xd800;</title><item>'
        b"<guid>a</guid><title>A</title></item></channel></rss>"
    )
    with pytest.raises(SourceError, match="lone surrogate"):
        parse_document(xml, location="lone.xml", now=SEEN)


def test_livedesk_import_refuses_each_bad_file_in_one_line_and_imports_the_good_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "surrogate.json").write_bytes(
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "S", "items": '
        b'[{"id": "1", "title": "x \\ud800", "content_text": "x"}]}'
    )
    (tmp_path / "marked.html").write_bytes(
        b"<html><head><title>Page</title></head><body><![}<p>text</p></body></html>"
    )
    (tmp_path / "overflow.json").write_bytes(
        json_feed(
            {
                "id": "1",
                "title": "Late",
                "content_text": "x",
                "date_published": "9999-12-31T23:59:59-05:00",
            }
        )
    )
    (tmp_path / "entity.xml").write_bytes(
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>&#xd800;</title></channel></rss>'
    )
    (tmp_path / "good.json").write_bytes(
        json_feed(
            {
                "id": "1",
                "title": "Fine",
                "content_text": "ok",
                "date_published": "2026-02-01T10:00Z",
            },
            title="Good blog",
        )
    )
    (tmp_path / "old.xml").write_bytes(YEAR_999)
    bad = ["surrogate.json", "marked.html", "overflow.json", "entity.xml"]
    done = livedesk("import", *bad, "good.json", "old.xml", cwd=tmp_path)

    assert done.code == 1
    assert "Traceback" not in done.err + done.out
    errors = [line for line in done.err_lines if "warning" not in line]
    assert [line.split(":", 1)[0] for line in errors] == bad
    assert "good.json: 1 new, 0 updated" in done.out
    assert "old.xml: 3 new, 0 updated" in done.out

    latest = livedesk("latest", "-n", "10", cwd=tmp_path)
    assert latest.code == 0, latest.err
    assert "Ancient post" in latest.out and "Fine" in latest.out
    sources = livedesk("sources", cwd=tmp_path)
    assert sources.code == 0, sources.err
    assert "Old blog" in sources.out and "Good blog" in sources.out


# --- a feed cannot take over another feed's blog ----------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def feeds_app(documents: dict[str, bytes]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=documents[request.path], content_type="application/rss+xml")

    app = web.Application()
    for path in documents:
        app.router.add_get(path, answer)
    return app


REAL = rss(
    ("p1", "Real first post", "Sun, 01 Feb 2026 10:00:00 GMT"),
    ("p2", "Real second post", "Sun, 01 Feb 2026 11:00:00 GMT"),
)
IMPOSTOR = rss(
    ("p1", "Rewritten by an impostor", "Sun, 01 Feb 2026 10:00:00 GMT"),
    ("p2", "Also rewritten", "Sun, 01 Feb 2026 11:00:00 GMT"),
)


async def test_a_second_feed_claiming_the_same_channel_and_guids_rewrites_nothing(
    db: Database, serve: Callable[[web.Application], Awaitable[str]]
) -> None:
    base = await serve(feeds_app({"/real.xml": REAL, "/impostor.xml": IMPOSTOR}))
    posts = PostStore(db)
    real, impostor = f"{base}/real.xml", f"{base}/impostor.xml"
    first = await load(real)
    assert first is not None
    await ingest(posts.db, first.result, location=real)

    claimed = await load(impostor)
    assert claimed is not None and claimed.result.source.id == first.result.source.id
    with pytest.raises(SourceConflict) as refused:
        await ingest(posts.db, claimed.result, location=impostor)
    line = str(refused.value)
    assert impostor in line and real in line and "\n" not in line

    stored = await posts.latest(5)
    assert [(p.title, p.version) for p in stored] == [
        ("Real second post", 1),
        ("Real first post", 1),
    ]
    # The real location still updates its own blog; the same URL over https is the same place.
    await ingest(posts.db, first.result, location=real.replace("http://", "https://"))


async def test_livedesk_import_refuses_the_impostor_in_one_line(
    tmp_path: Path, serve: Callable[[web.Application], Awaitable[str]]
) -> None:
    base = await serve(feeds_app({"/real.xml": REAL, "/impostor.xml": IMPOSTOR}))
    real, impostor = f"{base}/real.xml", f"{base}/impostor.xml"
    done = await asyncio.to_thread(livedesk, "import", real, impostor, cwd=tmp_path)
    assert done.code == 1 and "Traceback" not in done.err
    assert done.err_lines == [
        f'{impostor}: refused: it claims the blog "Old blog" '
        f"({done.err_lines[0].split('(')[1].split(')')[0]}), which is imported from {real}; "
        "one feed may not rewrite another's posts"
    ]
    latest = await asyncio.to_thread(livedesk, "latest", cwd=tmp_path)
    assert "Real first post" in latest.out and "impostor" not in latest.out


def test_which_locations_may_update_a_blog() -> None:
    assert may_update("https://a.example/feed", "http://A.example:80/feed")
    assert may_update("https://a.example/feed", "https://a.example:443/feed")
    assert not may_update("https://a.example/feed", "https://a.example/other")
    assert not may_update("https://a.example/feed", "https://b.example/feed")
    assert not may_update("https://a.example/feed", "saved-copy.xml")  # a file cannot take it over
    assert not may_update("blog.txt", "https://a.example/feed")  # nor a URL a file's blog
    assert may_update("blog.txt", "blog (1).txt")  # the operator's own re-saved copy


# --- redirects --------------------------------------------------------------------------------------

PUBLIC = frozenset({AddressClass.PUBLIC})
LOOPBACK = frozenset({AddressClass.LOOPBACK})
PRIVATE = frozenset({AddressClass.PRIVATE})


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        (PUBLIC, "93.184.216.34", True),
        (PUBLIC, "2606:2800:220:1::1", True),
        (PUBLIC, "169.254.169.254", False),
        (PUBLIC, "10.0.0.1", False),
        (PUBLIC, "192.168.1.1", False),
        (PUBLIC, "172.16.5.4", False),
        (PUBLIC, "127.0.0.1", False),
        (PUBLIC, "::1", False),
        (PUBLIC, "::ffff:10.0.0.1", False),
        (PUBLIC, "fc00::1", False),
        (PUBLIC, "fe80::1", False),
        (PUBLIC, "100.64.0.1", False),
        (PUBLIC, "0.0.0.0", False),
        (PUBLIC, "224.0.0.1", False),
        (LOOPBACK, "127.0.0.2", True),
        (LOOPBACK, "::1", True),
        (LOOPBACK, "10.0.0.1", False),
        (LOOPBACK, "169.254.169.254", False),
        (LOOPBACK, "93.184.216.34", True),
        (PRIVATE, "192.168.1.1", True),
        (PRIVATE, "10.0.0.1", True),
        (PRIVATE, "127.0.0.1", False),
        (PRIVATE, "169.254.169.254", False),
        (frozenset({AddressClass.LINK_LOCAL}), "169.254.1.1", True),
        (frozenset({AddressClass.RESERVED}), "0.0.0.0", False),
    ],
)
def test_the_redirect_rule(source: frozenset[AddressClass], target: str, allowed: bool) -> None:
    assert redirect_allowed(source, target) is allowed


def test_address_classes() -> None:
    assert address_class("8.8.8.8") is AddressClass.PUBLIC
    assert address_class("::ffff:127.0.0.1") is AddressClass.LOOPBACK
    assert address_class("fe80::1%eth0") is AddressClass.LINK_LOCAL
    assert address_class("240.0.0.1") is AddressClass.RESERVED


class Connects:
    """Every connect() the code under test attempts, recorded before the no-network guard sees it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.addresses: list[Any] = []
        guarded = socket.socket.connect
        guarded_ex = socket.socket.connect_ex

        def connect(sock: socket.socket, address: Any) -> Any:
            self.addresses.append(address)
            return guarded(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            self.addresses.append(address)
            return guarded_ex(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    @property
    def hosts(self) -> set[str]:
        return {a[0] for a in self.addresses if isinstance(a, tuple)}


def redirecting_app(target: str) -> web.Application:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(target)

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/feed.xml")

    async def feed(request: web.Request) -> web.Response:
        return web.Response(body=REAL, content_type="application/rss+xml")

    app = web.Application()
    app.router.add_get("/moved", moved)
    app.router.add_get("/hop", hop)
    app.router.add_get("/feed.xml", feed)
    return app


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/feed",
        "http://192.168.1.1:8080/",
        "http://[fd00::1]/feed",
    ],
)
async def test_a_loopback_source_redirecting_to_an_internal_address_is_refused_before_connecting(
    target: str,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[web.Application], Awaitable[str]],
) -> None:
    base = await serve(redirecting_app(target))
    connects = Connects(monkeypatch)
    with pytest.raises(SourceError) as refused:
        await load(f"{base}/moved", timeout=10)
    message = str(refused.value)
    assert "redirect to" in message and "refused" in message, message
    assert "may only redirect to loopback or public addresses" in message
    assert not isinstance(refused.value.__context__, NetworkBlocked)
    assert connects.hosts == {"127.0.0.1"}  # nothing ever tried to reach the target


async def test_redirects_within_the_source_s_own_class_are_still_followed(
    serve: Callable[[web.Application], Awaitable[str]],
) -> None:
    base = await serve(redirecting_app("/hop"))
    fetched = await load(f"{base}/moved", timeout=10)
    assert fetched is not None
    assert [p.title for p in fetched.result.posts] == ["Real first post", "Real second post"]


class FakeNames(AbstractResolver):
    """A resolver that knows a few invented names (no real lookup ever happens)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise OSError(f"unknown name {host}")
        address = self.names[host]
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=kind,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def test_a_redirect_to_a_name_that_resolves_internal_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[web.Application], Awaitable[str]]
) -> None:
    names = {
        "blog.test": "127.0.0.1",
        "metadata.test": "169.254.169.254",
        "intranet.test": "10.0.0.7",
    }
    monkeypatch.setattr(aiohttp, "ThreadedResolver", lambda: FakeNames(names))
    base = await serve(redirecting_app("http://metadata.test/latest/meta-data/"))
    port = base.rsplit(":", 1)[1]
    connects = Connects(monkeypatch)
    with pytest.raises(SourceError) as refused:
        await load(f"http://blog.test:{port}/moved", timeout=10)
    assert "redirect to metadata.test (169.254.169.254) refused: a link-local address" in str(
        refused.value
    )
    assert connects.hosts == {"127.0.0.1"}

    # The source's own name is the operator's choice, whatever it resolves to; its redirect within
    # loopback is followed.
    fetched = await load(f"http://blog.test:{port}/hop", timeout=10)
    assert fetched is not None and len(fetched.result.posts) == 2


async def test_the_resolver_refuses_a_hop_whose_name_resolves_only_to_internal_addresses() -> None:
    guard = download._GuardedResolver(
        FakeNames({"news.test": "93.184.216.34", "intranet.test": "10.0.0.7"})
    )
    assert [r["host"] for r in await guard.resolve("news.test", 80)] == ["93.184.216.34"]
    guard.following = True
    with pytest.raises(OSError, match=r"intranet\.test \(10\.0\.0\.7\) refused"):
        await guard.resolve("intranet.test", 80)
    assert guard.refusal is not None and "only redirect to public addresses" in guard.refusal


async def test_livedesk_import_refuses_a_redirect_to_the_metadata_address_in_one_line(
    tmp_path: Path, serve: Callable[[web.Application], Awaitable[str]]
) -> None:
    base = await serve(redirecting_app("http://169.254.169.254/latest/meta-data/"))
    done = await asyncio.to_thread(livedesk, "import", f"{base}/moved", f"{base}/hop", cwd=tmp_path)
    assert done.code == 1 and "Traceback" not in done.err
    assert done.err_lines == [
        f"{base}/moved: redirect to 169.254.169.254 refused: a link-local address; "
        "this source may only redirect to loopback or public addresses"
    ]  # the child's own guard would have turned a connect attempt into "cannot fetch (…)"
    assert f"{base}/hop: 2 new, 0 updated" in done.out
