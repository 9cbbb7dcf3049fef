"""Big documents: above MAX_BYTES a plain RSS 2.0 feed is read as a stream, from its file or from a
temporary file the download went to, up to MAX_STREAM_BYTES; anything else that big is refused in
one line. The limits are lowered here so the documents stay small."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.sources import SourceError, fetch, load, parse_document
from tests.test_plain_rss import feed, item

ITEMS = 40
BIG = feed(*(item(n, date=f"Sat, 01 Jan 2022 10:{n:02d}:00 GMT") for n in range(ITEMS)))


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "MAX_BYTES", 1000)
    monkeypatch.setattr(fetch, "MAX_STREAM_BYTES", 100_000)
    assert 1000 < len(BIG) < 100_000


def spooled() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("livedesk-feed-*")}


async def test_a_big_plain_feed_file_is_read_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(BIG)
    fetched = await load(str(path))
    assert fetched is not None
    assert fetched.result == parse_document(BIG, location=str(path))  # as if read whole
    assert len(fetched.result.posts) == ITEMS


async def test_a_big_document_of_another_kind_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(BIG.replace(b"<guid", b"<enclosure url='https://e.org/a.mp3'/><guid"))
    with pytest.raises(SourceError) as refused:
        await load(str(path))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: too large to read whole (")
    assert "not plain RSS 2.0: an item element enclosure" in message
    path.write_text('{"version": "https://jsonfeed.org/version/1.1", "items": []}' + " " * 2000)
    with pytest.raises(SourceError, match=r"too large to read whole .* not an RSS 2\.0 feed$"):
        await load(str(path))


async def test_a_big_malformed_feed_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(BIG[:-200])
    with pytest.raises(SourceError) as refused:
        await load(str(path))
    assert str(refused.value).startswith(f"{path}: malformed feed (")
    assert "\n" not in str(refused.value)


async def test_above_the_stream_limit_a_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "MAX_STREAM_BYTES", 5000)
    path = tmp_path / "huge.xml"
    path.write_bytes(BIG)
    with pytest.raises(SourceError, match=r"huge\.xml: too large \(.*; limit .*\)$"):
        await load(str(path))


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/rss+xml")

    async def chunked(request: web.Request) -> web.StreamResponse:  # no Content-Length
        response = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await response.prepare(request)
        for start in range(0, len(BIG), 700):
            await response.write(BIG[start : start + 700])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big.xml", big)
    app.router.add_get("/chunked.xml", chunked)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


@pytest.mark.parametrize("name", ["big.xml", "chunked.xml"])
async def test_a_big_download_goes_to_disk_and_is_read_as_a_stream(
    server: TestServer, name: str
) -> None:
    before = spooled()
    url = str(server.make_url(f"/{name}"))
    fetched = await load(url)
    assert fetched is not None
    assert fetched.result == parse_document(BIG, location=url)
    assert spooled() == before  # the temporary file is gone


async def test_a_download_above_the_stream_limit_is_refused_and_leaves_nothing(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "MAX_STREAM_BYTES", 5000)
    before = spooled()
    for name in ("big.xml", "chunked.xml"):
        with pytest.raises(SourceError, match=r"response too large \(limit "):
            await load(str(server.make_url(f"/{name}")))
    assert spooled() == before
