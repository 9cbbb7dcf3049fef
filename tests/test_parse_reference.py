"""The faster readers of plain RSS give exactly what their earlier forms gave.

The references below are those forms, kept here unchanged: `_plain_html` (which HTML the stream
reader accepts), `plain_html_content` (its paragraphs and pictures), `_link` and the guid's URI
fixer, and `html_to_text` (titles, captions, authors). Each new form must agree with its reference
on random and hostile inputs, and whole documents (the real feeds, the fixtures, the benchmark's
newspaper feed, a seeded corpus) must import the same with the references put back.
"""

from __future__ import annotations

import html as html_module
import random
import re
from pathlib import Path

import pytest

from bench._corpus import rss_feed
from bot.models import ImportResult
from bot.sources import SourceError, feeds, parse_document
from bot.sources import plain_rss as plain
from bot.sources.text import (
    BLOCK_TAGS,
    HtmlImage,
    clean,
    html_content,
    html_to_text,
    is_tracking_pixel,
    safe_url,
)
from tests.conftest import FIXTURES
from tests.test_plain_rss import NOW, _random_html, _random_item, feed

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


# --- the references -------------------------------------------------------------------------------


def reference_plain_html(value: str) -> str:
    if not plain._AMPERSAND_OR_TAG.search(value):
        return value
    for match in plain._ENTITY.finditer(value):
        number = match.group(2) or match.group(3)
        if number is not None:
            code = int(number, 16 if match.group(3) else 10)
            if code < 0xA0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise plain.NotPlain("a character reference the readers treat apart")
    rest = plain._ENTITY.sub("", value)
    for match in plain._TAG.finditer(rest):
        if match.group(2).lower() not in plain._PLAIN_TAGS:
            raise plain.NotPlain(f"a <{match.group(2)}> in a description")
        for url in plain._ATTRIBUTE_URL.findall(match.group(3)):
            if plain._URI_FIXER.sub(r"\1\3", url) != url:
                raise plain.NotPlain("a URL feedparser rewrites")
    if plain._AMPERSAND_OR_TAG.search(plain._TAG.sub("", rest)):
        raise plain.NotPlain("markup the readers treat apart")
    return value


def reference_link(value: str) -> str:
    value = plain._URI_FIXER.sub(r"\1\3", value)
    value = value.replace("&amp;", "&")
    return re.sub("&([A-Za-z0-9_]+);", r"&\g<1>", value)


def reference_fixed_uri(value: str) -> str:
    return plain._URI_FIXER.sub(r"\1\3", value)


def reference_plain_html_content(
    markup: str, base: str | None
) -> tuple[list[str], list[HtmlImage]]:
    if "<" not in markup:
        return html_content(markup, base)
    paragraphs: list[str] = []
    images: list[HtmlImage] = []
    buffer: list[str] = []
    caption: list[str] | None = None

    def flush() -> None:
        text = clean(html_module.unescape("".join(buffer)))
        buffer.clear()
        if text:
            paragraphs.append(text)

    position = 0
    for match in plain._TAG.finditer(markup):
        (caption if caption is not None else buffer).append(markup[position : match.start()])
        position = match.end()
        closing, name = match.group(1), match.group(2).lower()
        if not closing and name == "img":
            values = {
                m[0].lower(): m[1] if m[2] is None else m[2] for m in plain._attributes(match)
            }
            url = safe_url(values.get("src"), base)
            if url is not None and not is_tracking_pixel(values):
                images.append(HtmlImage(url, clean(values.get("alt") or "")))
        elif name == "figcaption" and not closing:
            flush()
            caption = []
        elif name == "figcaption" and caption is not None:
            text = clean(html_module.unescape("".join(caption)))
            caption = None
            if text and images and not images[-1].has_figcaption:
                images[-1].caption = text
                images[-1].has_figcaption = True
            elif text:
                paragraphs.append(text)
        elif name in BLOCK_TAGS:
            flush()
    (caption if caption is not None else buffer).append(markup[position:])
    flush()
    return paragraphs, images


def reference_html_to_text(markup: str) -> str:
    paragraphs, _ = html_content(markup)
    return " ".join(paragraphs)


# --- inputs ---------------------------------------------------------------------------------------

HOSTILE = [
    "",
    " ",
    "Plain name",
    "  Ana  Costa ",
    "e\u200b\u0301",
    "A\u202eB",
    "a\rb",
    "a\r\rb",
    "a\n\nb",
    "a\x0b\x0cb",
    "\x1c\x1d",
    "Q&amp;A",
    "AT&T",
    "5 < 6",
    "<b>bold</b>",
    "&lt;script&gt;",
    "naïve café",
    "\u00a0nbsp\u2003em",
    "x\x85y",
    "x\u2028y",
]


def _hostile_html(rng: random.Random) -> str:
    """Plain HTML with what the readers must treat alike: tags in any case, unknown or broken tags,
    entities in attributes and text, extra slashes in URLs, stray `<` and `&`."""
    pieces = [_random_html(rng)]
    extras = [
        "<P>Up</P>",
        "<Pre>code</Pre>",
        "<h1x>odd</h1x>",
        "<script>x</script>",
        "<p class=bare>unquoted</p>",
        '<a href="https://x.org/?a=1&amp;b=2">entity in a value</a>',
        '<a href="https:///x.org/">slashes</a>',
        '<img src="http:////i.org/a.jpg" alt="x">',
        "5 < 6",
        "AT&T",
        "&#0;",
        "&#x80;",
        "&#160;",
        "<br/>",
        "<BR />",
        "<figure><img src='https://i.org/b.jpg'><FIGCAPTION>Cap</FIGCAPTION></figure>",
        "</figcaption>",
        "<ſection>long s</ſection>",
        "<ul><li>one<li>two</ul>",
        "\u200b\u0301",
    ]
    for _ in range(rng.randint(0, 4)):
        pieces.insert(rng.randint(0, len(pieces)), rng.choice(extras))
    return "".join(pieces)


def _outcome(function: object, *args: object) -> object:
    try:
        return function(*args)  # type: ignore[operator]
    except plain.NotPlain as refused:
        return ("NotPlain", str(refused))


def test_the_plain_html_check_and_reader_agree_with_their_references() -> None:
    rng = random.Random(7)
    for _ in range(4000):
        markup = _hostile_html(rng)
        assert _outcome(plain._plain_html, markup) == _outcome(reference_plain_html, markup)
        base = rng.choice([None, "https://example.org/live/1"])
        assert plain.plain_html_content(markup, base) == reference_plain_html_content(
            markup, base
        ), markup


def test_links_and_guids_are_fixed_as_before() -> None:
    rng = random.Random(11)
    parts = ["https://", "http:///", "HTTPS:////", "ftp://", "x", "/", "a.org", "?a=1", "&amp;",
             "&b;", "&", ";", "#f", " ", "mailto:", "://"]  # fmt: skip
    for _ in range(3000):
        value = "".join(rng.choice(parts) for _ in range(rng.randint(0, 7)))
        assert plain._link(value) == reference_link(value), value
        assert plain._fixed_uri(value) == reference_fixed_uri(value), value


def test_one_line_texts_read_as_before() -> None:
    rng = random.Random(5)
    texts = [*HOSTILE, *(_hostile_html(rng) for _ in range(500))]
    for _ in range(500):
        texts.append("".join(rng.choice(HOSTILE) for _ in range(3)))
    for text in texts:
        assert html_to_text(text) == reference_html_to_text(text), repr(text)


def _documents() -> list[Path]:
    roots = (SHARED / "realworld", FIXTURES)
    return [
        path
        for root in roots
        if root.exists()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".xml", ".rss", ".rdf", ".atom")
    ]


def _read(data: bytes) -> ImportResult | str:
    try:
        return parse_document(data, location="feed.xml", now=NOW)
    except SourceError as error:
        return str(error)


def _with_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plain, "_plain_html", reference_plain_html)
    monkeypatch.setattr(plain, "plain_html_content", reference_plain_html_content)
    monkeypatch.setattr(plain, "_link", reference_link)
    monkeypatch.setattr(plain, "_fixed_uri", reference_fixed_uri)
    monkeypatch.setattr(feeds, "html_to_text", reference_html_to_text)


def test_whole_documents_import_as_with_the_references(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2027)
    documents = [path.read_bytes() for path in _documents()]
    # The repository's own fixtures at least; the real feeds too when ../shared is beside it.
    assert len(documents) > (20 if SHARED.is_dir() else 0)
    documents.append(rss_feed(300))
    documents += [
        feed(*(_random_item(rng, n) for n in range(rng.randint(1, 12)))) for _ in range(40)
    ]
    new = [_read(data) for data in documents]
    with monkeypatch.context() as patched:
        _with_references(patched)
        before = [_read(data) for data in documents]
    for index, (got, expected) in enumerate(zip(new, before, strict=True)):
        assert got == expected, index


def test_a_posts_paragraphs_joined_are_clean_already_unless_the_join_makes_markup() -> None:
    """What lets feeds._body skip clean() on the joined text of a post: in ASCII only, since
    clean() normalises before it drops controls (`y` ZWSP U+0301 comes out as `y` U+0301, which
    a second clean() composes)."""
    rng = random.Random(3)
    for _ in range(3000):
        markup = _hostile_html(rng)
        for paragraphs in (
            html_content(markup)[0],
            plain.plain_html_content(markup, None)[0],
            html_content(html_module.escape(markup))[0],
        ):
            joined = " ".join(paragraphs)
            if joined.isascii() and "<" not in joined:
                assert clean(joined) == joined, markup
