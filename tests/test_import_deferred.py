"""`livedesk import` reads a plain RSS 2.0 feed while the store writes it (a `DeferredImport`).

The reader hands the store heads (id, blog, dates, title) and the store completes each post just
before it makes its row, so parsing overlaps the inserts. Nothing a user sees may differ from the
whole reading: the same posts, numbers, events and edits on both backends, the same one-line
error for a feed that turns out unreadable, with nothing of it kept. And importing a file loads
no HTTP client.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from bench._corpus import rss_feed
from bot.sources import SourceError, load, parse_document
from bot.sources.text import clean, is_http_url, safe_url
from storage.models import DeferredImport, ImportResult
from storage.store import open_sqlite
from storage.values import SourceInfo
from tests.cli_process import livedesk
from tests.test_plain_rss import PLAIN_SHAPES, _random_item, _real_documents, feed, item

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def readings(data: bytes) -> tuple[ImportResult | str, ImportResult | str]:
    """(the whole reading, the deferred one completed); a refusal is its one line."""
    results: list[ImportResult | str] = []
    for deferred in (False, True):
        try:
            result = parse_document(data, location="feed.xml", now=NOW, deferred=deferred)
        except SourceError as error:
            results.append(str(error))
            continue
        if isinstance(result, DeferredImport):
            assert deferred
            result = result.completed()
        assert type(result) is ImportResult
        results.append(result)
    return results[0], results[1]


def _documents() -> dict[str, bytes]:
    rng = random.Random(2026)
    documents = dict(PLAIN_SHAPES)
    documents.update({f"real {path.name}": path.read_bytes() for path in _real_documents()})
    for round_ in range(30):
        count = rng.randint(1, 12)
        documents[f"random {round_}"] = feed(*(_random_item(rng, n) for n in range(count)))
    documents["newspaper"] = rss_feed(120)
    return documents


DOCUMENTS = _documents()


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_deferred_reading_completes_to_the_whole_reading(name: str) -> None:
    whole, deferred = readings(DOCUMENTS[name])
    assert deferred == whole


def test_only_a_plain_feed_is_deferred_and_its_heads_carry_no_text() -> None:
    result = parse_document(rss_feed(5), location="feed.xml", now=NOW, deferred=True)
    assert isinstance(result, DeferredImport)
    assert all(post.title and not post.body for post in result.posts)
    atom = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><entry><id>1</id>'
        b"<title>One</title><updated>2022-01-01T10:00:00Z</updated>"
        b"<content>Text</content></entry></feed>"
    )
    assert type(parse_document(atom, location="a.atom", now=NOW, deferred=True)) is ImportResult
    json_feed = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [{"id": "1", '
        b'"content_text": "Hi", "date_published": "2022-01-01T10:00:00Z"}]}'
    )
    assert (
        type(parse_document(json_feed, location="j.json", now=NOW, deferred=True)) is ImportResult
    )


# --- storing: the same posts, numbers and events on both backends ---------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Two empty stores of one backend: one given whole documents, one deferred ones."""
    opened: list[Any] = []
    if request.param == "sqlite":
        for name in ("whole", "deferred"):
            opened.append(await open_sqlite(tmp_path / f"{name}.db"))
    else:
        from storage.pg_store import open_postgres

        for _ in range(2):
            opened.append(await open_postgres(request.getfixturevalue("postgres_url_factory")()))
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
def postgres_url_factory(postgres_server: Any) -> Any:
    """Fresh databases on the test server, as many as a test asks for."""
    import uuid

    import psycopg
    from psycopg import sql

    names: list[str] = []

    def make() -> str:
        name = f"livedesk_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        names.append(name)
        return str(postgres_server.url(name))

    yield make
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def _import_both(
    stores: list[Any], path: Path, data: bytes, location: str | None = None
) -> list[Any]:
    """Import `data` (written to `path`) whole into the first store and deferred into the second;
    the events of both, which must be equal."""
    await asyncio.to_thread(path.write_bytes, data)
    events = []
    for store, deferred in zip(stores, (False, True), strict=True):
        fetched = await load(str(path), deferred=deferred)
        assert fetched is not None
        assert isinstance(fetched.result, DeferredImport) is deferred
        events.append(await store.ingest(fetched.result, location=location or str(path)))
    assert events[1] == events[0]
    return list(events[0])


async def _same_contents(stores: list[Any]) -> None:
    whole, deferred = stores
    assert await deferred.posts.latest(1000) == await whole.posts.latest(1000)
    assert [_blog(s) for s in await deferred.posts.sources()] == [
        _blog(s) for s in await whole.posts.sources()
    ]
    for post in await whole.posts.latest(1000):
        assert [(v.version, v.post) for v in await deferred.posts.history(post.id)] == [
            (v.version, v.post) for v in await whole.posts.history(post.id)
        ]


def _blog(info: SourceInfo) -> tuple[object, ...]:
    """What `livedesk sources` shows of a blog, but the time it was imported."""
    return (info.number, info.source, info.location, info.posts, info.newest, info.last_error)


def _edited(data: bytes) -> bytes:
    """The newspaper feed with every third item's text and every fifth one's title changed."""
    text = data.decode()
    pieces = text.split("<item>")
    for index in range(1, len(pieces)):
        if index % 3 == 0:
            pieces[index] = pieces[index].replace("&lt;/p&gt;", " (updated)&lt;/p&gt;", 1)
        if index % 5 == 0:
            pieces[index] = pieces[index].replace("<title>", "<title>Edited: ", 1)
    return "<item>".join(pieces).encode()


async def test_a_deferred_import_stores_what_a_whole_one_stores(
    stores: list[Any], tmp_path: Path
) -> None:
    data = rss_feed(300)
    created = await _import_both(stores, tmp_path / "news.xml", data)
    assert len(created) == 300 and {e.kind.value for e in created} == {"created"}
    await _same_contents(stores)
    # the same feed again: nothing; edited: the same edits, as new versions
    assert await _import_both(stores, tmp_path / "news.xml", data) == []
    edited = await _import_both(stores, tmp_path / "news.xml", _edited(data))
    assert len(edited) == 140 and {e.kind.value for e in edited} == {"updated"}
    await _same_contents(stores)
    # a second blog of the same title from elsewhere is renamed (`-2`): its posts follow it
    other = data.replace(b"https://news.example.org/world</link>", b"https://other.example/</link>")
    renamed = await _import_both(stores, tmp_path / "other.xml", other)
    assert len(renamed) == 300
    assert {e.post_id.split(":", 1)[0] for e in renamed} == {"the-example-news-world-live-2"}
    await _same_contents(stores)


async def test_a_feed_read_as_it_is_stored_that_proves_unreadable_keeps_nothing(
    tmp_path: Path,
) -> None:
    """An item whose picture has a broken address fails as the whole reading fails, in one line,
    and the transaction that had begun to store the feed keeps nothing."""
    broken = '<p>Text</p><img src="http://[broken/a.jpg" alt="x">'
    data = feed(*(item(n) for n in range(1, 6)), item(6, description=broken))
    path = tmp_path / "feed.xml"
    path.write_bytes(data)
    with pytest.raises(SourceError) as whole:
        await load(str(path))
    fetched = await load(str(path), deferred=True)
    assert fetched is not None and isinstance(fetched.result, DeferredImport)
    store = await open_sqlite(tmp_path / "livedesk.db")
    try:
        with pytest.raises(SourceError) as deferred:
            await store.ingest(fetched.result, location=str(path))
        assert str(deferred.value) == str(whole.value)
        assert "unreadable document (ValueError" in str(whole.value)
        assert await store.posts.count() == 0 and await store.posts.sources() == []
    finally:
        await store.close()
    done = await asyncio.to_thread(
        livedesk, "import", str(path), cwd=tmp_path
    )  # its store: livedesk.db, the one above
    assert done.code == 1 and done.err_lines == [str(whole.value)]
    store = await open_sqlite(tmp_path / "livedesk.db")
    try:
        assert await store.posts.count() == 0 and await store.posts.sources() == []
    finally:
        await store.close()


def test_importing_a_file_loads_no_http_client(tmp_path: Path) -> None:
    (tmp_path / "feed.xml").write_bytes(rss_feed(3))
    probe = (
        "import sys, bot.cli\n"
        "code = bot.cli.main(['import', 'feed.xml'])\n"
        "print('exit', code, sorted(m for m in ('aiohttp', 'yarl', 'multidict') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "LIVEDESK_DB_PATH": str(tmp_path / "livedesk.db")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "exit 0 []"


# --- the faster forms of what completing a post does -----------------------------------------------------


def reference_safe_url(url: str | None, base: str | None = None) -> str | None:
    """bot.sources.text.safe_url as it was before its shortcut for plain absolute URLs."""
    if not url:
        return None
    url = clean(url)
    if base and is_http_url(base):
        url = urljoin(base, url)
    return url if is_http_url(url) else None


URLS = [
    "https://news.example.org/world/2022/0000123/a-b-c",
    "http://a",
    "http://a/",
    "HTTP://A/b",
    "https://a/b?",
    "https://a/b#",
    "https://a/b;",
    "https://a/b;p?q=1#f",
    "https://a/./b/../c",
    "https://a//b",
    "https://user:pw@a:8080/b",
    "https://a:notaport/b",
    "https://a b/c",
    " https://a/b ",
    "https:///b",
    "https:/a/b",
    "https:a/b",
    "//a/b",
    "/relative/x.png",
    "relative.png",
    "?q",
    "#f",
    "javascript:alert(1)",
    "data:image/png;base64,xyz",
    "ftp://a/b",
    "https://a/b\u200b",
    "https://ünï.example/b",
    "https://a/ü",
    "https://[::1]/b",
    "https://[::1/b",
    "http://a\tb/c",
    "",
    None,
]
BASES = [None, "", "https://news.example.org/world", "http://a/b/c", "ftp://x/", "not a url"]


@pytest.mark.parametrize("base", BASES)
def test_safe_url_gives_what_urljoin_gives(base: str | None) -> None:
    rng = random.Random(13)
    pieces = ["http", "https", "://", "/", "a", "b.c", "?", "#", ";", ":", "[", "]", "@", " ", "."]
    urls: list[str | None] = [*URLS]
    urls += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 9))) for _ in range(400)]
    for url in urls:
        try:
            expected: str | None = reference_safe_url(url, base)
        except ValueError as error:
            with pytest.raises(ValueError, match=re.escape(str(error))):
                safe_url(url, base)
            continue
        assert safe_url(url, base) == expected, url
