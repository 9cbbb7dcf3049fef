"""The plain RSS 2.0 stream reader gives feedparser's reading, post for post, or steps aside.

bot.sources.plain_rss reads the common shape of RSS 2.0 with expat, item by item; anything else
(`NotPlain`) and anything malformed (`Malformed`) goes to the general reader (feeds.parse, through
feedparser). Every document it does accept must import exactly as the general reader imports it:
the real feeds, the fixtures, a table of the shapes it reads and a seeded corpus of random items.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from bot.models import ImportResult
from bot.sources import SourceError, parse_document
from bot.sources import plain_rss as plain
from bot.sources.common import settle_dates
from bot.sources.feeds import parse as general_parse
from bot.sources.text import html_content
from tests.conftest import FIXTURES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DC = 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
CONTENT = 'xmlns:content="http://purl.org/rss/1.0/modules/content/"'
ATOM = 'xmlns:atom="http://www.w3.org/2005/Atom"'


def general(data: bytes, location: str = "feed.xml") -> ImportResult:
    return settle_dates(
        general_parse(data, location=location, now=NOW), location=location, seen_at=NOW
    )


def streamed(data: bytes, location: str = "feed.xml") -> ImportResult:
    result = plain.parse_stream(plain.chunks_of(data), location=location)
    return settle_dates(result, location=location, seen_at=NOW)


def both(data: bytes) -> tuple[ImportResult | str, ImportResult | str | None]:
    """(the general reading, the stream's reading or None when it stepped aside); a refusal is its
    one line."""
    try:
        expected: ImportResult | str = general(data)
    except SourceError as error:
        expected = str(error)
    if not plain.is_rss_start(data):
        return expected, None
    try:
        return expected, streamed(data)
    except (plain.NotPlain, plain.Malformed):
        return expected, None
    except SourceError as error:
        return expected, str(error)


def feed(*items: str, channel: str = "<title>The live blog</title>", head: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{head}<rss version="2.0" {DC} {CONTENT} {ATOM}>'
        f"<channel>{channel}{''.join(items)}</channel></rss>"
    ).encode()


def item(
    n: int = 1,
    *,
    title: str | None = "Post title",
    description: str | None = "<p>Some text.</p>",
    date: str = "Sat, 01 Jan 2022 10:00:00 GMT",
    extra: str = "",
    guid: str | None = None,
    link: str | None = None,
) -> str:
    parts = [
        f"<title>{escape(title)}</title>" if title is not None else "",
        f"<link>{link or f'https://example.org/live/{n}'}</link>",
        f"<guid isPermaLink='false'>{guid or f'post-{n}'}</guid>",
        f"<pubDate>{date}</pubDate>",
        f"<description>{escape(description)}</description>" if description is not None else "",
        extra,
    ]
    return f"<item>{''.join(parts)}</item>"


# Shapes the stream reader reads; each must import as feedparser's reading does.
PLAIN_SHAPES: dict[str, bytes] = {
    "one item": feed(item()),
    "no items": feed(),
    "no channel title": feed(item(), channel=""),
    "channel link and self": feed(
        item(),
        channel="<title>Blog</title><link>https://example.org/</link>"
        '<atom:link href="https://example.org/feed.xml" rel="self" type="application/rss+xml"/>'
        '<atom:link href="https://hub.example.org/" rel="hub"/>'
        "<description>x</description><language>en</language>"
        "<dc:date>2022-01-01T00:00:00Z</dc:date>",
    ),
    "channel link, no self": feed(
        item(), channel="<title>Blog</title><link>https://example.org/home</link>"
    ),
    "entities in a title": feed(item(title="Q&A: 5 < 6 > 4 \"quoted\" 'single'")),
    "non-ASCII": feed(item(title="Kharkív — Zürich ☃", description="<p>naïve café 日本語</p>")),
    "Latin-1 mojibake of UTF-8": feed(item(title="CafÃ© owner")),
    "several paragraphs": feed(
        item(
            description="<p>One</p>\n<p>Two <b>bold</b> <a href='https://x.org/a?b=1'>link</a></p>"
        )
    ),
    "images": feed(
        item(
            description='<p>Text</p><img src="https://img.example.org/a.jpg" alt="A picture">'
            '<img src="/relative.png" alt="Relative"><img src="https://t.example.org/p.gif" '
            'width="1" height="1">'
        )
    ),
    "figure and caption": feed(
        item(
            description='<figure><img src="https://i.example.org/b.jpg" alt="alt">'
            "<figcaption>The caption</figcaption></figure><p>After</p>"
        )
    ),
    "entities in HTML": feed(
        item(description="<p>A&amp;B &lt;tag&gt; &quot;q&quot; a&nbsp;b &#8217; &#x2014;</p>")
    ),
    "plain-text description": feed(item(description="Just text\n\nwith a blank line")),
    "empty description": feed(item(description="")),
    "no description": feed(item(description=None)),
    "no title": feed(item(title=None, description="<p>The first words of the body make it.</p>")),
    "empty item": feed(item(title=None, description=None), item(2)),
    "date with offset": feed(item(date="Sat, 01 Jan 2022 00:30:00 +0100")),
    "date without weekday": feed(item(date="1 Jan 2022 10:00:00 -0530")),
    "implausible date": feed(item(date="Fri, 01 Jan 1800 10:00:00 GMT")),
    "future date": feed(item(date="Fri, 01 Jan 2100 10:00:00 GMT")),
    "permalink guid": feed(
        item(guid="https://example.org/p/1").replace(" isPermaLink='false'", "")
    ),
    "same guid twice": feed(item(1, guid="same"), item(2, guid="same")),
    "link with a query": feed(item(link="https://example.org/p?a=1&amp;b=2")),
    "author": feed(item(extra="<dc:creator>Jane Doe and John Roe</dc:creator>")),
    "categories and comments": feed(
        item(extra="<category>News</category><comments>https://example.org/c</comments>")
    ),
    "content after description": feed(
        item(
            extra="<content:encoded><![CDATA[<p>The full text, longer than the summary.</p>]]>"
            "</content:encoded>"
        )
    ),
    "content only": feed(
        item(description=None, extra="<content:encoded>&lt;p&gt;Full&lt;/p&gt;</content:encoded>")
    ),
    "CDATA description": feed(
        item().replace(
            "<description>&lt;p&gt;Some text.&lt;/p&gt;</description>",
            "<description><![CDATA[<p>Some <i>text</i>.</p>]]></description>",
        )
    ),
    "image of the channel": feed(
        item(),
        channel="<title>Blog</title><image><url>https://e.org/i.png</url><title>Logo</title>"
        "<link>https://e.org/</link></image>",
    ),
    "many items": feed(*(item(n, date=f"Sat, 01 Jan 2022 10:{n:02d}:00 GMT") for n in range(60))),
}

# Shapes it leaves to the general reader.
NOT_PLAIN: dict[str, bytes] = {
    "media": feed(item(extra='<media:content url="https://e.org/a.jpg"/>')).replace(
        b"<rss ", b'<rss xmlns:media="http://search.yahoo.com/mrss/" '
    ),
    "enclosure": feed(item(extra='<enclosure url="https://e.org/a.mp3" type="audio/mpeg"/>')),
    "script": feed(item(description="<p>x</p><script>alert(1)</script>")),
    "comment in HTML": feed(item(description="<p>x<!-- note --></p>")),
    "unknown tag": feed(item(description="<p>x<font>y</font></p>")),
    "stray <": feed(item(description="<p>1 < 2</p>")),
    "bare ampersand": feed(item(description="<p>AT&T</p>")),
    "C1 reference": feed(item(description="<p>&#146;</p>")),
    "HTML-like title": feed(item(title="<b>Bold</b> title")),
    "ISO date": feed(item(date="2022-01-01T10:00:00Z")),
    "no date": feed(item().replace("<pubDate>Sat, 01 Jan 2022 10:00:00 GMT</pubDate>", "")),
    "author email": feed(item(extra="<dc:creator>jane@example.org (Jane)</dc:creator>")),
    "rss 0.91": feed(item()).replace(b'version="2.0"', b'version="0.91"'),
    "doctype": feed(item(), head='<!DOCTYPE rss [<!ENTITY x "y">]>'),
    "latin-1 declared": feed(item()).replace(b"UTF-8", b"ISO-8859-1"),
    "xml:base": feed(item()).replace(b"<channel>", b'<channel xml:base="https://e.org/">'),
    "channel element after items": feed(item(), "<ttl>5</ttl>"),
}


@pytest.mark.parametrize("name", PLAIN_SHAPES)
def test_the_stream_reads_each_plain_shape_as_feedparser_does(name: str) -> None:
    expected, got = both(PLAIN_SHAPES[name])
    assert got is not None, f"{name}: the stream reader stepped aside"
    assert got == expected


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_the_stream_leaves_other_shapes_to_the_general_reader(name: str) -> None:
    data = NOT_PLAIN[name]
    expected, got = both(data)
    assert got is None
    # and through parse_document the general reader's reading is what imports
    try:
        result: ImportResult | str = parse_document(data, location="feed.xml", now=NOW)
    except SourceError as error:
        result = str(error)
    assert result == expected


def _real_documents() -> list[Path]:
    roots = [FIXTURES, SHARED / "realworld", SHARED / "seed"]
    return [
        path
        for root in roots
        if root.is_dir()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".xml", ".rss", ".rdf", ".atom", ".txt", ".json")
    ]


@pytest.mark.parametrize("path", _real_documents(), ids=lambda p: p.name)
def test_every_real_feed_the_stream_accepts_reads_the_same(path: Path) -> None:
    expected, got = both(path.read_bytes())
    if got is not None:
        assert got == expected


def _random_item(rng: random.Random, n: int) -> str:
    words = ["tram", "Zürich", "Q&A", "5 < 6", "naïve", "AT&T", "—", "“quoted”", "x", "CafÃ©"]
    tags = ["p", "b", "i", "em", "strong", "span", "div", "li", "h2", "blockquote", "br"]
    pieces: list[str] = []
    for _ in range(rng.randint(0, 8)):
        tag = rng.choice(tags)
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))
        text = escape(text)
        pieces.append(f"<{tag}>{text}</{tag}>" if tag != "br" else "<br>")
        if rng.random() < 0.2:
            pieces.append(
                f'<img src="https://i.example.org/{n}.jpg" alt="{rng.choice(("tram", "Zürich", "naïve"))}">'
            )
        if rng.random() < 0.1:
            pieces.append("&nbsp;&#8217;&amp;")
    title = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
    return item(
        n,
        title=title if rng.random() < 0.9 else None,
        description="".join(pieces) if rng.random() < 0.95 else None,
        date=f"{rng.choice(['Sat, ', ''])}{rng.randint(1, 28)} Feb 20{rng.randint(10, 30)} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
        f"{rng.choice(['GMT', '+0200', '-0930', 'UT', 'Z'])}",
        extra="<dc:creator>Petra Vance</dc:creator>" if rng.random() < 0.5 else "",
    )


def test_a_seeded_corpus_of_random_items_reads_the_same() -> None:
    rng = random.Random(2026)
    accepted = 0
    for round_ in range(40):
        data = feed(*(_random_item(rng, n) for n in range(rng.randint(1, 12))))
        expected, got = both(data)
        if got is not None:
            accepted += 1
            assert got == expected, f"round {round_}"
    assert accepted >= 20  # the corpus is mostly plain: the comparison means something


def test_a_malformed_plain_feed_is_read_by_the_general_reader() -> None:
    """Cut short: feedparser still reads the items before the cut (with its warning); the stream
    says one line and steps aside, so parse_document gives the general reading."""
    data = feed(item(1), item(2))[:-40]
    with pytest.raises(plain.Malformed) as refused:
        plain.parse_stream(plain.chunks_of(data), location="feed.xml")
    assert str(refused.value).startswith("feed.xml: malformed feed (")
    assert "\n" not in str(refused.value)
    assert parse_document(data, location="feed.xml", now=NOW) == general(data)


def _random_html(rng: random.Random) -> str:
    tags = [*sorted(plain._PLAIN_TAGS), "P", "BR", "Img", "FIGCAPTION"]
    texts = ["tram", "Zürich", "Q&amp;A", "5 &lt; 6", "a&nbsp;b", "&#8217;", " ", "\n", "x y"]
    pieces: list[str] = []
    for _ in range(rng.randint(0, 14)):
        roll = rng.random()
        tag = rng.choice(tags)
        if roll < 0.4:
            pieces.append(rng.choice(texts))
        elif roll < 0.55:
            pieces.append(f"</{tag}>")
        elif tag.lower() == "img":
            attributes = [
                f'src="{rng.choice(["https://i.example.org/a.jpg", "/b.png", "", "javascript:x"])}"',
                f"alt='{rng.choice(['An alt', '', ' spaced  alt '])}'",
                rng.choice(['width="1"', 'height="0px"', 'width="640"', ""]),
            ]
            rng.shuffle(attributes)
            pieces.append(f"<{tag} {' '.join(attributes)}{rng.choice(['', '/', ' /'])}>")
        else:
            ending = rng.choice(["", ' class="c"', "/"])
            pieces.append(f"<{tag}{ending}>")
    return "".join(pieces)


def test_the_plain_html_reader_reads_as_html_content_does() -> None:
    """Paragraphs and pictures, figcaptions and tracking pixels included, of random plain HTML."""
    rng = random.Random(13)
    for _ in range(3000):
        markup = _random_html(rng)
        assert plain._plain_html(markup) == markup
        base = rng.choice([None, "https://example.org/live/1"])
        assert plain.plain_html_content(markup, base) == html_content(markup, base), markup
