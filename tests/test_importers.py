"""The importers as a user meets them: the posts a blog turns into, and one clear line when it can't."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.models import Image, ImportResult, Post, SourceKind
from bot.sources import FetchResult, SourceError, fetch, load, parse_document
from tests.conftest import FIXTURES, ROOT, SEED, shared

SAMPLE = ROOT / "bot" / "data" / "sample_blog.txt"
SEEN = datetime(2024, 9, 1, 8, 0, tzinfo=UTC)  # when a test fetched a document


def parse_file(path: Path) -> ImportResult:
    return parse_document(path.read_bytes(), location=path.name)


def by_title(result: ImportResult, start: str) -> Post:
    return next(post for post in result.posts if post.title.startswith(start))


# --- the seed page ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> ImportResult:
    return parse_document(shared(SEED).read_bytes(), location=SEED.name)


def test_seed_imports_the_nine_posts_on_the_page(seed: ImportResult) -> None:
    assert seed.source.kind is SourceKind.PAGE_TEXT
    assert seed.source.title == "The latest on tensions at the Ukraine-Russia border"
    assert len(seed.posts) == 9
    assert len({post.id for post in seed.posts}) == 9
    assert seed.warnings == ("page is partial: header says 14 posts, found 9",)


def test_seed_times_are_eastern_converted_to_utc(seed: ImportResult) -> None:
    first = seed.posts[0]
    assert first.title == "Blinken will brief EU foreign ministers on Lavrov meeting"
    assert first.published_at == datetime(2022, 1, 21, 15, 55, tzinfo=UTC)
    assert first.updated_at is None
    # the page is out of time order; every post is kept with its own time
    assert by_title(seed, "Russian foreign minister does not rule").published_at == datetime(
        2022, 1, 21, 13, 19, tzinfo=UTC
    )


def test_seed_titles(seed: ImportResult) -> None:
    assert [post.title for post in seed.posts][:3] == [
        "Blinken will brief EU foreign ministers on Lavrov meeting",
        "Biden admitted that western allies are not entirely united on response to Russian "
        "aggression in Ukraine",
        'US-Russia talks indicate "diplomacy has a chance to continue," CNN editor says',
    ]


@pytest.mark.parametrize(
    ("title", "byline", "authors", "location"),
    [
        ("Blinken will brief", "From CNN’s James Frater", ("James Frater",), None),
        ("Biden admitted", "Analysis by CNN's Luke McGee", ("Luke McGee",), None),
        ("Ukraine defense minister", "From CNN's Katya Krebs in Kyiv", ("Katya Krebs",), "Kyiv"),
        ("Russia reiterates", "From CNN’s Vasco Cotovio in London", ("Vasco Cotovio",), "London"),
        (
            "Russia never threatened",
            "From CNN's Anna Chernova in Moscow",
            ("Anna Chernova",),
            "Moscow",
        ),
        (
            "Blinken says Russia's aggressions",
            "From CNN's Kylie Atwood and Ellie Kaufman",
            ("Kylie Atwood", "Ellie Kaufman"),
            None,
        ),
        ("US-Russia talks", None, (), None),
    ],
)
def test_seed_bylines(
    seed: ImportResult,
    title: str,
    byline: str | None,
    authors: tuple[str, ...],
    location: str | None,
) -> None:
    post = by_title(seed, title)
    assert (post.byline, post.authors, post.location) == (byline, authors, location)
    assert byline is None or byline not in post.body


@pytest.mark.parametrize(
    ("line", "authors", "location"),
    [
        ("From Livedesk's Petra Vance at City Hall", ("Petra Vance",), "City Hall"),
        ("From CNN's Kevin Liptak at the White House", ("Kevin Liptak",), "White House"),
        ("From CNN's Ana Ruiz and Ben Cole in Kyiv", ("Ana Ruiz", "Ben Cole"), "Kyiv"),
        (
            "From Livedesk's Omar Said and Pia Holm at Lakeside",
            ("Omar Said", "Pia Holm"),
            "Lakeside",
        ),
        ("Analysis by CNN's Luke McGee", ("Luke McGee",), None),
        ("By Dee Moss in The Hague", ("Dee Moss",), "The Hague"),
    ],
)
def test_bylines_name_the_place(line: str, authors: tuple[str, ...], location: str | None) -> None:
    text = f"Blog\n\n1:00 p.m. ET, March 1, 2024\n\nA post\n\n{line}\n\nIts text.\n"
    (post,) = parse_document(text.encode(), location="blog.txt").posts
    assert (post.byline, post.authors, post.location, post.body) == (
        line,
        authors,
        location,
        ("Its text.",),
    )


def test_seed_image_caption_kept_once_with_its_credit(seed: ImportResult) -> None:
    post = by_title(seed, "Biden admitted")
    (image,) = post.images
    assert image.credit == "Saul Loeb/AFP/Getty Images"
    assert image.caption.startswith("US President Joe Biden speaks about Russia and Ukraine")
    assert not image.caption.endswith(")")
    assert not any("Joe Biden speaks about Russia" in paragraph for paragraph in post.body)
    assert post.body[0].startswith("President Biden's admission")
    assert post.body[-1] == "Read the full analysis here."


def test_seed_background_inline_and_block(seed: ImportResult) -> None:
    inline = by_title(seed, "US-Russia talks")
    assert inline.background is not None
    assert inline.background.startswith("Russia has opposed increased NATO support")
    assert not any("Some background" in paragraph for paragraph in inline.body)
    assert inline.body[-1].startswith('"It\'s very hard not to see"')  # the post goes on after it

    block = by_title(seed, "Ukraine defense minister")
    assert block.background is not None
    paragraphs = block.background.split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[0].startswith("Ukraine insists Russia is seeking to destabilize")
    assert paragraphs[-1].startswith("Tensions between the two countries")
    assert block.body[-1].startswith("The statement added:")


def test_seed_text_is_clean(seed: ImportResult) -> None:
    for post in seed.posts:
        for paragraph in post.body:
            assert paragraph == paragraph.strip()
            assert "\u00a0" not in paragraph
            assert "  " not in paragraph


def test_seed_ids_survive_an_edited_body_and_title(seed: ImportResult) -> None:
    edited = SEED.read_text("utf-8").replace(
        "Blinken will brief EU foreign ministers on Lavrov meeting",
        "Blinken to brief EU foreign ministers on Monday",
    )
    edited = edited.replace("The official reiterated the bloc", "The official repeated the bloc")
    again = parse_document(edited.encode(), location="edited.txt")
    assert again.source.id == seed.source.id
    assert [post.id for post in again.posts] == [post.id for post in seed.posts]
    assert again.posts[0].content_hash != seed.posts[0].content_hash


# --- page text in summer, the sample blog ----------------------------------------------------------


def test_summer_posts_use_daylight_saving_time() -> None:
    result = parse_file(FIXTURES / "summer-page.txt")
    times = {post.title: post.published_at for post in result.posts}
    assert times == {
        "Final race under way": datetime(2023, 7, 4, 17, 5, tzinfo=UTC),  # 1:05 p.m. EDT
        "Wind picks up": datetime(2023, 7, 4, 16, 0, tzinfo=UTC),  # noon
        "Crews arrive": datetime(2023, 7, 4, 13, 30, tzinfo=UTC),  # 9:30 a.m. EDT, spelt out
    }
    crews = by_title(result, "Crews arrive")
    assert crews.authors == ("Pia Holm", "Omar Said")
    assert crews.location == "Lakeside"
    assert result.warnings == ()


def test_sample_blog_is_a_full_page_text_blog() -> None:
    result = parse_file(SAMPLE)
    assert result.source.title == "Live: Storm Aurora hits the northern coast"
    assert len(result.posts) == 12
    assert result.warnings == ()
    text = " ".join(" ".join(post.body) for post in result.posts).lower()
    for word in ("evacuation", "flood", "power outage"):
        assert word in text
    assert sum(len(post.images) for post in result.posts) == 3
    assert all(image.credit for post in result.posts for image in post.images)
    assert sum(post.background is not None for post in result.posts) == 2
    assert {post.location for post in result.posts} >= {"Port Halden", "Greywater"}
    # a summer date: 8:15 a.m. EDT is 12:15 UTC
    assert min(post.published_at for post in result.posts) == datetime(
        2024, 8, 14, 12, 15, tzinfo=UTC
    )


# --- feeds -----------------------------------------------------------------------------------------


def test_rss2() -> None:
    result = parse_file(FIXTURES / "rss2.xml")
    assert result.source.kind is SourceKind.RSS
    assert result.source.title == "Harbour Watch: live"
    assert result.source.url == "https://news.example.org/live/harbour/rss.xml"
    ferry = by_title(result, "Ferry service suspended")
    assert ferry.id == f"{result.source.id}:harbour-post-2"
    assert ferry.published_at == datetime(2024, 7, 2, 10, 30, tzinfo=UTC)
    assert ferry.authors == ("Ana Ruiz", "Ben Cole")
    assert ferry.body == ("All crossings are off until further notice.", "Check the timetable.")
    assert ferry.images[0].url == "https://img.example.org/ferry.jpg"
    assert ferry.images[0].credit == "Ana Ruiz/Example News"
    assert ferry.images[0].caption == "The ferry at its berth"
    master = by_title(result, "Harbour master speaks")
    assert master.body == ("First paragraph.", "Second paragraph.")
    assert master.images[0].url == "https://img.example.org/master.png"
    # no title, no date, no guid: titled from its text, dated by the feed, id from the title
    untitled = by_title(result, "An item with neither")
    assert untitled.published_at == datetime(2024, 7, 2, 12, 0, tzinfo=UTC)
    assert untitled.time_estimated and not ferry.time_estimated
    assert ":title-" in untitled.id


def test_media_rss_captions_belong_to_their_pictures() -> None:
    result = parse_file(FIXTURES / "media-rss.xml")
    square, mayor, fireworks, parade = result.posts
    # an item-level media:description captions the item's picture (the largest of its sizes)
    assert square.body == ("Thousands came out despite the rain.",)
    assert square.images == (
        Image(
            url="https://photos.example.net/img/square-large.jpg",
            caption="Umbrellas fill the square at noon.",
            credit="Lu Wen/Example Photos",
        ),
    )
    # one nested in media:content captions that picture; the post's text is its own content
    assert mayor.body == ("She promised a new bridge.", "Work starts in spring.")
    assert [(i.url, i.caption) for i in mayor.images] == [
        ("https://photos.example.net/img/mayor.jpg", "The mayor at the podium.")
    ]
    # a caption is never repeated as the text, even when the item has no other
    assert fireworks.body == ()
    assert fireworks.images[0].caption == "Rockets over the river."
    # a video's description is the post's text; its thumbnail is the picture
    assert parade.body == ("The parade passes the old town hall.",)
    assert [(i.url, i.caption) for i in parade.images] == [
        ("https://photos.example.net/img/parade.jpg", "")
    ]


def test_rss1_rdf() -> None:
    result = parse_file(FIXTURES / "rss1.rdf")
    assert result.source.title == "Valley floods (RDF)"
    assert [post.title for post in result.posts] == ["River level rising", "Sandbags handed out"]
    assert result.posts[1].published_at == datetime(2024, 3, 5, 8, 40, tzinfo=UTC)
    assert result.posts[0].authors == ("Lena Berg",)


def test_atom() -> None:
    result = parse_file(FIXTURES / "atom.xml")
    assert result.source.kind is SourceKind.ATOM
    leaders = result.posts[0]
    assert leaders.title == "Leaders arrive early"  # escaped <b> is not shown as markup
    assert leaders.updated_at == datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    assert leaders.authors == ("Kim Park", "Jo Reyes")
    assert leaders.body == ("The first delegations landed at dawn.", "Talks open at noon.")
    assert leaders.images[0].url == "https://atom.example.com/img/arrival.jpg"
    assert leaders.images[0].caption == "Delegates on the tarmac"
    undated = result.posts[1]
    assert undated.published_at == datetime(2024, 6, 1, 18, 0, tzinfo=UTC)  # the feed's date
    assert undated.time_estimated and not leaders.time_estimated


def test_json_feed_1_0() -> None:
    result = parse_file(FIXTURES / "feed-1.0.json")
    assert result.source.kind is SourceKind.JSON_FEED
    assert result.source.url == "https://json.example.com/election"
    turnout, polls = result.posts
    assert turnout.published_at == datetime(2024, 11, 6, 1, 5, tzinfo=UTC)
    assert turnout.updated_at == datetime(2024, 11, 6, 1, 30, tzinfo=UTC)
    assert turnout.authors == ("Desk Team",)  # the feed's author
    assert turnout.images[0].url == "https://json.example.com/img/turnout.jpg"
    assert polls.title.startswith("Polls are now open across the country")  # from its text
    assert polls.body[1] == "Second paragraph here."
    assert polls.id == f"{result.source.id}:1"


def test_json_feed_1_1() -> None:
    result = parse_document(
        (FIXTURES / "feed-1.1.json").read_bytes(), location="feed-1.1.json", now=SEEN
    )
    runners, undated = result.posts
    assert runners.authors == ("Sam Ito", "Ruth Ade")
    assert [(i.url, i.caption) for i in runners.images] == [
        ("https://json.example.com/img/start.jpg", "The start line")
    ]
    assert not runners.time_estimated
    # an item without a date is dated when it was first seen (a microsecond per place in the feed)
    assert undated.id == f"{result.source.id}:m-2"
    assert undated.published_at == SEEN - timedelta(microseconds=1)
    assert undated.time_estimated
    assert result.warnings == ("1 post carries no date; using the time it was first seen",)


UNDATED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Undated</title>'
    b"<item><title>Newest</title><description>Top of the feed.</description></item>"
    b"<item><title>Older</title><description>Below it.</description></item>"
    b"</channel></rss>"
)


@pytest.mark.parametrize(
    "data",
    [
        UNDATED,
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "Undated",
                "items": [
                    {"title": "Newest", "content_text": "Top of the feed."},
                    {"title": "Older", "content_text": "Below it."},
                ],
            }
        ).encode(),
    ],
    ids=["rss", "json-feed"],
)
def test_undated_feed_imports_with_the_time_first_seen(data: bytes) -> None:
    first = parse_document(data, location="undated", now=SEEN)
    newest, older = first.posts
    assert (newest.title, older.title) == ("Newest", "Older")
    assert newest.published_at == SEEN and older.published_at < newest.published_at
    assert newest.time_estimated and older.time_estimated
    assert first.warnings == ("2 posts carry no date; using the time they were first seen",)
    # fetched an hour later: other stand-in times, the same ids and the same content
    later = parse_document(data, location="undated", now=SEEN + timedelta(hours=1))
    assert [p.id for p in later.posts] == [p.id for p in first.posts]
    assert [p.content_hash for p in later.posts] == [p.content_hash for p in first.posts]


def test_json_ld_in_graph() -> None:
    result = parse_file(FIXTURES / "liveblog-graph.html")
    assert result.source.kind is SourceKind.JSON_LD
    assert result.source.title == "Total eclipse: live updates"
    totality, clouds = result.posts
    assert totality.id == f"{result.source.id}:https://ld.example.com/live/eclipse#u2"
    assert totality.authors == ("Dee Moss", "Raj Patel")
    assert totality.body == ("The sky went dark for almost four minutes.", "Crowds cheered.")
    assert totality.images[0].caption == "The corona over Dallas"
    assert totality.images[0].credit == "Dee Moss/Example Times"
    assert clouds.published_at == datetime(2024, 4, 8, 21, 10, tzinfo=UTC)
    assert clouds.images[0].url == "https://ld.example.com/img/sky.jpg"


def test_json_ld_without_updates_is_an_empty_blog() -> None:
    result = parse_file(FIXTURES / "liveblog-empty.html")
    assert result.source.title == "Rocket launch: live"
    assert result.posts == ()


def test_same_document_gives_same_ids() -> None:
    for name in ("rss2.xml", "atom.xml", "feed-1.0.json", "liveblog-graph.html"):
        first, second = parse_file(FIXTURES / name), parse_file(FIXTURES / name)
        assert first == second


# --- bad input -------------------------------------------------------------------------------------

RSS_HEAD = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
ITEM = b"<item><title>%s</title><guid>g</guid><pubDate>Tue, 02 Jul 2024 09:00:00 GMT</pubDate>"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty document"),
        (b"  \n\n ", "empty document"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (bytes(range(256)) * 4, "binary data"),
        (RSS_HEAD + b"<item><title>cut", "malformed feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id"', "truncated JSON"),
        (b'{"a": 1}', "neither JSON Feed nor JSON-LD"),
        (b"<html><body><p>Just a page</p></body></html>", "no LiveBlogPosting"),
        (b"Shopping list\n\nmilk\neggs\n", "plain text without post times"),
    ],
)
def test_bad_input_is_one_clear_line(data: bytes, problem: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_document(data, location="feed.xml")
    message = str(caught.value)
    assert message.startswith("feed.xml: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "title"),
    [
        # UTF-16 with a BOM, as Windows tools save it
        (("\ufeff" + "Tág\n\n1:00 p.m. ET, March 1, 2024\n\nPóst\n").encode("utf-16-le"), "Póst"),
        # Latin-1 without any declaration
        ("Blog\n\n1:00 p.m. ET, March 1, 2024\n\nCafé crème\n".encode("latin-1"), "Café crème"),
        # a wrong declaration: says UTF-8, the bytes are Latin-1
        (b'<?xml version="1.0" encoding="utf-8"?>' + RSS_HEAD[21:] + ITEM % "Zürich".encode("latin-1")
         + b"</item></channel></rss>", "Zürich"),
        # BEL and other controls dropped
        (RSS_HEAD + ITEM % b"Bell\x07 rings\x1b" + b"</item></channel></rss>", "Bell rings"),
    ],
)  # fmt: skip
def test_odd_encodings_and_control_characters(data: bytes, title: str) -> None:
    result = parse_document(data, location="odd")
    assert result.posts[0].title == title


def test_declared_latin1_feed() -> None:
    data = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>Notícias</title>'
        "<item><title>Ação</title><guid>1</guid><pubDate>Tue, 02 Jul 2024 09:00:00 GMT</pubDate>"
        "</item></channel></rss>"
    ).encode("latin-1")
    result = parse_document(data, location="jn.xml")
    assert (result.source.title, result.posts[0].title) == ("Notícias", "Ação")


def test_script_and_event_handlers_never_survive() -> None:
    body = (
        '<p onclick="evil()">Hello</p><script>alert(1)</script><style>p{}</style>'
        '<a href="javascript:alert(2)">link</a> &lt;script&gt;alert(3)&lt;/script&gt;'
        '<img src="javascript:alert(4)" alt="x">'
    )
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "T",
        "items": [{"id": "1", "content_html": body, "date_published": "2024-01-01T00:00:00Z"}],
    }
    result = parse_document(json.dumps(document).encode(), location="x.json")
    flat = result.model_dump_json()
    for bad in ("<script", "onclick", "javascript:", "alert(1)", "p{}"):
        assert bad not in flat
    assert result.posts[0].body == ("Hello", "link alert(3)")
    assert result.posts[0].images == ()


def test_huge_post_imports() -> None:
    paragraph = "word " * 2000
    text = "Big blog\n\n1:00 p.m. ET, March 1, 2024\n\nHuge\n\n" + (paragraph + "\n\n") * 100
    assert len(text) > 1_000_000
    (post,) = parse_document(text.encode(), location="big.txt").posts
    assert len(post.body) == 100


def test_hundred_thousand_item_json_feed_imports_whole_and_in_order() -> None:
    items = [
        {"id": str(n), "title": f"Post {n}", "content_text": "Short text.",
         "date_published": "2024-01-01T00:00:00Z"}
        for n in range(100_000)
    ]  # fmt: skip
    data = json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "Many", "items": items}
    )
    result = parse_document(data.encode(), location="many.json")
    # How fast is for `bench/` to measure; here: every item, each once, titles as given.
    assert len(result.posts) == 100_000
    assert len({post.id for post in result.posts}) == 100_000
    assert {post.title for post in result.posts} == {f"Post {n}" for n in range(100_000)}


# --- loading files and URLs ------------------------------------------------------------------------

FEED_BYTES = (FIXTURES / "rss2.xml").read_bytes()
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 02 Jul 2024 12:00:00 GMT"


async def serve_feed(request: web.Request) -> web.Response:
    if request.headers.get("If-None-Match") == ETAG:
        return web.Response(status=304)
    return web.Response(
        body=FEED_BYTES,
        content_type="application/rss+xml",
        headers={"ETag": ETAG, "Last-Modified": LAST_MODIFIED},
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="late")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/feed.xml", serve_feed)
    app.router.add_get("/slow", slow)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


async def test_load_url_then_not_modified(server: TestServer) -> None:
    url = str(server.make_url("/feed.xml"))
    fetched = await load(url)
    assert isinstance(fetched, FetchResult)
    assert fetched.result.source.title == "Harbour Watch: live"
    assert (fetched.etag, fetched.last_modified) == (ETAG, LAST_MODIFIED)
    assert await load(url, etag=fetched.etag, last_modified=fetched.last_modified) is None


async def test_load_url_http_error_is_one_line(server: TestServer) -> None:
    url = str(server.make_url("/missing.xml"))
    with pytest.raises(
        SourceError, match=r"^http://127\.0\.0\.1:\d+/missing\.xml: HTTP 404 Not Found$"
    ):
        await load(url)


async def test_load_url_timeout(server: TestServer) -> None:
    with pytest.raises(SourceError, match=r"timed out after 0\.2 s$"):
        await load(str(server.make_url("/slow")), timeout=0.2)


async def test_load_url_too_large(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "MAX_BYTES", 1000)
    with pytest.raises(SourceError, match=r"response too large"):
        await load(str(server.make_url("/feed.xml")))


async def test_load_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "blog.txt"
    path.write_bytes(shared(SEED).read_bytes())
    fetched = await load(str(path))
    assert fetched is not None
    assert len(fetched.result.posts) == 9
    assert fetched.etag is None
    with pytest.raises(SourceError, match=r"nope\.xml: file not found$"):
        await load(str(tmp_path / "nope.xml"))
