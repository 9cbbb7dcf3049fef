"""The importer keeps what the feed says: the whole article, literal text, odd prologues and encodings,
the reason it refuses, and whether a post's time was only estimated."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import feedparser
import pytest
from rich.console import Console

from bot.adapters.discord_render import render_card as discord_card
from bot.adapters.slack_render import render_card as slack_card
from bot.adapters.telegram_render import render_card as telegram_card
from bot.adapters.terminal import CONSOLE_TARGET, TerminalAdapter
from bot.cards import card_from_post
from bot.models import Card, ImportResult, Post, Source, SourceKind
from bot.sources import SourceError, parse_document
from bot.sources.text import clean
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from tests.cli_process import livedesk
from tests.conftest import FIXTURES, REALWORLD

FIDELITY = (FIXTURES / "fidelity.xml").read_bytes()
UNDATED = FIXTURES / "undated-feed.xml"
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def fidelity_posts(data: bytes = FIDELITY) -> dict[str, Post]:
    result = parse_document(data, location="fidelity.xml")
    assert result.warnings == ()
    return {post.id.rsplit(":", 1)[-1]: post for post in result.posts}


# --- the article, not a teaser -------------------------------------------------------------------


def test_an_empty_media_description_does_not_cost_the_article() -> None:
    post = fidelity_posts()["count"]
    assert post.body[0].startswith("Counting has begun in the east ward, where volunteers")
    assert post.body[-1] == "Observers from all four parties were in the hall."
    assert len(post.body) == 3
    assert post.images[0].url == "https://harbour.example/img/hall.jpg"


def test_content_encoded_beats_a_plain_itunes_summary() -> None:
    post = fidelity_posts()["podcast"]
    assert post.body == (
        "Our reporters sum up the night so far: the turnout, the first boxes opened, and what the "
        "parties expect from the harbour wards.",
    )


ITEM = (
    '<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" '
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel><title>T</title>'
    "<link>https://t.example/</link><item><title>Item</title><guid>g</guid>"
    "<pubDate>Tue, 01 Dec 2026 10:00:00 GMT</pubDate>{}</item></channel></rss>"
)
ARTICLE = "<p>" + "The long article about the harbour vote goes on. " * 12 + "</p>"
DESCRIPTION = f"<description><![CDATA[{ARTICLE}]]></description>"
ENCODED = f"<content:encoded><![CDATA[{ARTICLE}]]></content:encoded>"
TEASER = "<description>Teaser.</description>"
ITUNES = "<itunes:summary>A plain summary.</itunes:summary>"
EMPTY_MEDIA = '<media:content url="https://t.example/a.jpg" medium="image"><media:description/></media:content>'
EMPTY_DESCRIPTION = "<media:description></media:description>"


@pytest.mark.parametrize(
    "parts",
    [
        (DESCRIPTION, ITUNES),
        (DESCRIPTION, ITUNES, EMPTY_MEDIA),
        (ITUNES, ENCODED),
        (EMPTY_MEDIA, ITUNES, ENCODED),
        (EMPTY_DESCRIPTION, TEASER, ENCODED),
        (EMPTY_MEDIA, TEASER, ENCODED),
        (TEASER, ITUNES, ENCODED),
    ],
    ids=[
        "description-itunes",
        "description-itunes-media",
        "itunes-encoded",
        "media-itunes-encoded",
        "empty-description-teaser-encoded",
        "media-teaser-encoded",
        "teaser-itunes-encoded",
    ],
)
def test_the_richest_text_is_the_post_whatever_order_the_feed_uses(parts: tuple[str, ...]) -> None:
    (post,) = parse_document(ITEM.format("".join(parts)).encode(), location="t.xml").posts
    assert post.text == "The long article about the harbour vote goes on. " * 11 + (
        "The long article about the harbour vote goes on."
    )


def test_a_picture_only_content_keeps_its_picture_beside_the_summary_text() -> None:
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Desk</title>'
        "<id>urn:desk</id><updated>2026-12-01T20:00:00Z</updated><entry><id>urn:1</id>"
        "<title>Harbour at dusk</title><updated>2026-12-01T20:00:00Z</updated>"
        "<summary>Boats wait for the result in the harbour.</summary>"
        '<content type="html">&lt;img src="https://t.example/dusk.jpg" alt="Boats"&gt;</content>'
        "</entry></feed>"
    )
    (post,) = parse_document(atom.encode(), location="desk.atom").posts
    assert post.body == ("Boats wait for the result in the harbour.",)
    assert [(i.url, i.caption) for i in post.images] == [("https://t.example/dusk.jpg", "Boats")]


# --- literal text stays literal -------------------------------------------------------------------


def test_a_lone_less_than_sign_keeps_the_rest_of_the_text() -> None:
    post = fidelity_posts()["turnout"]
    assert post.title == "Turnout <half of last year"
    assert post.body == ("Turnout <half of last year in the east ward, the clerk said.",)


def test_angle_bracketed_words_and_script_names_in_prose_stay() -> None:
    post = fidelity_posts()["tags"]
    assert post.title == "Why <entry> tags matter"
    assert post.body == (
        "JavaScript: the good parts, and VBScript: the rest. Results page explains the feed's "
        "<entry> elements.",
    )
    assert "javascript:alert" not in post.model_dump_json()


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Turnout <half of last year", "Turnout <half of last year"),
        ("Why <entry> tags matter", "Why <entry> tags matter"),
        ("JavaScript: the good parts", "JavaScript: the good parts"),
        ("VBScript: a history", "VBScript: a history"),
        ("1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
        ('See <a href="javascript:alert(1)">this</a> now', "See this now"),
        ("<b>Bold</b> claim", "Bold claim"),
        ("safe<script>alert(1)</script> text", "safe alert(1) text"),
        ("before <!-- a comment --> after", "before after"),
        ("<![CDATA[wrapped]]> text", "wrapped text"),
    ],
)
def test_clean_removes_only_real_markup(text: str, kept: str) -> None:
    assert clean(text) == kept


# --- bidi controls ----------------------------------------------------------------------------------


def test_bidi_controls_leave_title_body_byline_and_captions() -> None:
    post = fidelity_posts()["mayor"]
    assert post.title == "Mayor concedes defeat tonight"
    assert post.byline == "By Ana Ruiz"
    assert post.body == ("The mayor spoke at ten to supporters in the hall.",)
    assert post.images[0].caption == "The mayor on stage"
    assert BIDI.search(post.model_dump_json()) is None


@pytest.mark.parametrize(
    "control", [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
)
def test_every_bidi_control_is_removed(control: str) -> None:
    assert clean(f"left{control} right") == "left right"


def test_bidi_controls_leave_json_feed_text() -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Night \u202edesk\u202c",
        "authors": [{"name": "Ana \u2067Ruiz\u2069"}],
        "items": [
            {
                "id": "1",
                "title": "Polls \u202bclose\u202c",
                "content_text": "All \u2066polls\u2069 closed at ten.",
                "date_published": "2026-12-01T22:00:00Z",
            }
        ],
    }
    result = parse_document(json.dumps(document).encode(), location="night.json")
    (post,) = result.posts
    assert (result.source.title, post.title, post.byline, post.body) == (
        "Night desk",
        "Polls close",
        "By Ana Ruiz",
        ("All polls closed at ten.",),
    )


# --- prologues and encodings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        b"\n",
        b"\r\n\r\n",
        b"   \t\n",
        b"\xef\xbb\xbf\n",
        b"\n\xef\xbb\xbf",
        b"\xef\xbb\xbf\xef\xbb\xbf",
    ],
    ids=["newline", "crlf", "spaces", "bom-newline", "newline-bom", "two-boms"],
)
def test_whitespace_or_a_bom_before_the_declaration_is_not_malformed(prefix: bytes) -> None:
    posts = fidelity_posts(prefix + FIDELITY)  # no warning at all
    assert posts["count"].body[-1] == "Observers from all four parties were in the hall."
    assert posts["tags"].title == "Why <entry> tags matter"


def test_a_comment_before_the_declaration_is_not_malformed() -> None:
    data = b"<!--\n  exported by the desk tool\n-->\n" + FIDELITY
    assert len(fidelity_posts(data)) == 5


@pytest.mark.parametrize("encoding", ["utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("prefix", ["", "\n"])
def test_wide_encodings_without_a_bom_are_read(encoding: str, prefix: str) -> None:
    text = FIDELITY.decode("utf-8").replace(
        'encoding="UTF-8"', f'encoding="{encoding[:6].upper()}"'
    )
    posts = fidelity_posts((prefix + text).encode(encoding))
    assert posts["turnout"].title == "Turnout <half of last year"
    assert posts["mayor"].byline == "By Ana Ruiz"


@pytest.mark.parametrize("encoding", ["utf-32-le", "utf-32-be"])
def test_a_json_feed_in_utf32_without_a_bom_is_read(encoding: str) -> None:
    document = {"version": "https://jsonfeed.org/version/1", "title": "Zürich", "items": [
        {"id": "1", "content_text": "Grüezi", "date_published": "2026-12-01T20:00:00Z"}]}  # fmt: skip
    result = parse_document(json.dumps(document).encode(encoding), location="z.json")
    assert (result.source.title, result.posts[0].body) == ("Zürich", ("Grüezi",))


@pytest.mark.parametrize(
    "version",
    ["1.1", "1", "1.0", 1.1, "https://jsonfeed.org/version/1.1", "http://jsonfeed.org/version/1"],
)
def test_json_feed_version_as_a_number_or_url_is_read(version: object) -> None:
    document = {"version": version, "title": "Night desk", "items": [
        {"id": "1", "title": "Polls close", "date_published": "2026-12-01T22:00:00Z"}]}  # fmt: skip
    (post,) = parse_document(json.dumps(document).encode(), location="night.json").posts
    assert post.title == "Polls close"


# --- refusals name the real reason ----------------------------------------------------------------

RSS_START = b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>T</title>\n'


@pytest.mark.parametrize(
    ("data", "reason", "not_said"),
    [
        (b"<!--\nnothing here but a comment\n-->\n", "empty document", "malformed"),
        (b"<!-- note -->\n" + RSS_START + b"<item><title><![CD", "cut short", "declaration"),
        (RSS_START + b"<item><title>Cut", "cut short", "token"),
        (RSS_START + b"</channel></rss", "cut short", "token"),
        (
            b'{"version": "2", "title": "T", "items": []}',
            "not a JSON Feed version we read (version '2')",
            "neither JSON Feed",
        ),
        (b'{"version": "1.1", "title": "T"}', "JSON Feed without an items list", "neither"),
    ],
)
def test_a_refusal_names_the_real_reason(data: bytes, reason: str, not_said: str) -> None:
    with pytest.raises(SourceError) as refused:
        parse_document(data, location="feed.xml")
    message = str(refused.value)
    assert message.startswith("feed.xml: ") and "\n" not in message
    assert reason in message
    assert not_said not in message


@pytest.mark.parametrize("encoding", ["utf-32-le", "utf-32-be"])
def test_utf32_without_a_bom_or_a_declared_encoding_is_read(encoding: str) -> None:
    data = RSS_START.decode() + "<item><title>Fähre</title><guid>1</guid></item></channel></rss>"
    (post,) = parse_document(data.encode(encoding), location="feed.xml").posts
    assert post.title == "Fähre"


# --- time_estimated: stored and shown ------------------------------------------------------------

SEEN = datetime(2026, 12, 1, 10, 55, tzinfo=UTC)
SOURCE = Source(id="ferries", title="Ferry desk", kind=SourceKind.RSS)


def undated(body: str = "The first crossing left at seven.", **changes: Any) -> Post:
    fields: dict[str, Any] = {
        "id": "ferries:morning",
        "source_id": "ferries",
        "published_at": SEEN,
        "time_estimated": True,
        "title": "Morning ferry",
        "body": (body,),
    }
    fields.update(changes)
    return Post(**fields)


async def test_time_estimated_round_trips_through_the_store(db: Database) -> None:
    store = PostStore(db)
    dated = undated(id="ferries:noon", title="Noon ferry", time_estimated=False)
    await ingest(store.db, ImportResult(source=SOURCE, posts=(undated(), dated)))
    stored = {post.id: post for post in await store.latest(5)}
    assert stored["ferries:morning"].time_estimated is True
    assert stored["ferries:noon"].time_estimated is False
    assert (await store.get("ferries:morning")) == stored["ferries:morning"]
    assert all(v.post.time_estimated for v in await store.history("ferries:morning"))

    # an edit seen later keeps the first time, still an estimate
    later = undated(
        "The first crossing left at ten past seven.", published_at=SEEN + timedelta(hours=2)
    )
    await ingest(store.db, ImportResult(source=SOURCE, posts=(later,)))
    edited = await store.get("ferries:morning")
    assert edited is not None and edited.version == 2
    assert (edited.published_at, edited.time_estimated) == (SEEN, True)

    # once the feed gives a time of its own, the post is no longer an estimate
    real = SEEN - timedelta(hours=4)
    fixed = undated("Left at 07:10.", published_at=real, time_estimated=False)
    await ingest(store.db, ImportResult(source=SOURCE, posts=(fixed,)))
    final = await store.get("ferries:morning")
    assert final is not None and (final.published_at, final.time_estimated) == (real, False)


def estimated_card(**changes: Any) -> Card:
    return card_from_post(
        undated(**changes).model_copy(update={"number": 7}), source_title="Ferry desk"
    )


ZONE = ZoneInfo("UTC")


def test_cards_carry_the_estimate() -> None:
    assert estimated_card().time_estimated is True
    assert estimated_card(time_estimated=False).time_estimated is False


def test_telegram_shows_about() -> None:
    assert "about 01 Dec 2026, 10:55" in telegram_card(estimated_card(), ZONE)
    assert "about" not in telegram_card(estimated_card(time_estimated=False), ZONE)


def test_discord_shows_about_in_the_footer_and_keeps_the_timestamp() -> None:
    embed = discord_card(estimated_card(), zone=ZONE)
    assert embed.timestamp == SEEN
    assert "about 01 Dec 10:55" in (embed.footer.text or "")
    plain = discord_card(estimated_card(time_estimated=False), zone=ZONE)
    assert "about" not in (plain.footer.text or "")


@pytest.mark.parametrize("flavor", ["slack", "mattermost", "teams"])
def test_webhooks_show_about(flavor: str) -> None:
    assert "about 1 Dec 2026, 10:55" in json.dumps(slack_card(flavor, estimated_card(), ZONE))
    plain = json.dumps(slack_card(flavor, estimated_card(time_estimated=False), ZONE))
    assert "about 1 Dec" not in plain


async def test_terminal_shows_about() -> None:
    console = Console(record=True, width=100, color_system=None)
    adapter = TerminalAdapter(console=console, timezone=ZONE)
    await adapter.send(CONSOLE_TARGET, estimated_card())
    assert "about 1 Dec 2026, 10:55" in console.export_text()


def test_livedesk_latest_and_post_show_about(tmp_path: Path) -> None:
    db = str(tmp_path / "livedesk.db")
    imported = livedesk("--db", db, "import", str(UNDATED), cwd=tmp_path)
    assert imported.code == 0, imported.err
    latest = livedesk("--db", db, "latest", cwd=tmp_path)
    assert latest.code == 0, latest.err
    (row,) = [line for line in latest.out.splitlines() if "Morning ferry leaves on time" in line]
    assert re.search(r"about \d{4}-\d\d-\d\d \d\d:\d\d", row), row
    shown = livedesk("--db", db, "post", "1", cwd=tmp_path)
    assert shown.code == 0, shown.err
    assert re.search(r"about \d{4}-\d\d-\d\d \d\d:\d\d · Harbour Town ferry desk", shown.out)
    as_json = livedesk("--db", db, "latest", "--json", cwd=tmp_path)
    assert json.loads(as_json.out)[0]["time_estimated"] is True


# --- beside feedparser, over real feeds ------------------------------------------------------------
#
# For every RSS/Atom item of ../shared/realworld that feedparser reads with some text, our post's body
# must keep at least KEEP of feedparser's richest text (the longest of its `content` values and its
# summary, tags stripped, whitespace folded; a text that is one of the document's `media:description`s
# is a caption, kept on the picture, and does not count). 80 %: our reading drops what a chat must not
# show (figure captions move to the picture, tracking pixels, scripts), never whole paragraphs.

KEEP = 0.8
FEEDS = sorted(p for p in REALWORLD.rglob("*.xml") if p.is_file())


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def reference_text(value: str, kind: str) -> str:
    if "html" in kind:
        parser = _Text()
        parser.feed(value)
        parser.close()
        value = " ".join(parser.parts)
    return " ".join(html.unescape(value).split()) if "html" in kind else " ".join(value.split())


def media_descriptions(data: bytes) -> set[str]:
    try:
        root = ElementTree.fromstring(data.lstrip())
    except ElementTree.ParseError:
        return set()
    return {
        " ".join("".join(e.itertext()).split())
        for e in root.iter()
        if isinstance(e.tag, str) and e.tag.endswith("}description") and "mrss" in e.tag
    }


def richest(entry: Any, captions: set[str]) -> str:
    detail = entry.get("summary_detail") or {}
    candidates = [(c.get("value") or "", c.get("type") or "") for c in entry.get("content", [])]
    candidates += [(entry.get("summary") or "", detail.get("type") or "text/html")]
    candidates += [(detail.get("value") or "", detail.get("type") or "text/html")]
    texts = [reference_text(value, kind) for value, kind in candidates]
    return max((t for t in texts if t and t not in captions), key=len, default="")


def compare(path: Path) -> tuple[int, list[str]]:
    data = path.read_bytes()
    parsed = feedparser.parse(data, sanitize_html=True)
    try:
        result = parse_document(data, location=path.name)
    except SourceError:
        return 0, []
    posts = {post.id: post for post in result.posts}
    captions = media_descriptions(data)
    compared, short = 0, []
    for entry in parsed.entries:
        native = entry.get("id") or entry.get("guid") or entry.get("link")
        reference = richest(entry, captions)
        post = posts.get(f"{result.source.id}:{' '.join(str(native).split())}") if native else None
        if not reference or post is None:
            continue
        compared += 1
        if len(" ".join(post.body)) < KEEP * len(reference):
            short.append(
                f"{path.name}: {post.title[:50]!r} {len(' '.join(post.body))}/{len(reference)}"
            )
    return compared, short


@pytest.mark.skipif(not FEEDS, reason=f"no shared feeds in {REALWORLD}")
def test_every_post_keeps_the_text_feedparser_reads() -> None:
    compared, short = 0, []
    for path in FEEDS:
        count, mismatches = compare(path)
        compared += count
        short += mismatches
    assert compared >= 300
    assert short == []


def test_the_fixture_keeps_the_text_feedparser_reads() -> None:
    compared, short = compare(FIXTURES / "fidelity.xml")
    assert (compared, short) == (5, [])
