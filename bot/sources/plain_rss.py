"""Plain RSS 2.0 read as a stream: the common shape of big feeds, at expat's speed, in bounded memory.

feedparser reads any feed, however broken, but it holds the whole document and every entry as
dictionaries (1.1 GB for a 164 MB feed of 100k items) and costs about as much per post as the
SQLite insert of it. Most feeds, and the big ones above all, are plain RSS 2.0: items of a title,
a link, a guid, a date, an author and an HTML description. This module reads exactly that shape
with ElementTree's pull parser (expat, in C), item by item, dropping each item's elements once its
post is made, and builds the entry mapping feedparser would have built for it, so `feeds._post`
makes the very same post. Anything outside that shape (another element, an attribute, markup or an entity the
general reader would rewrite, a date in another form) raises `NotPlain` and the caller hands the
document to feedparser; tests/test_plain_rss.py checks that the two readings are equal on every feed
this module accepts.

Why not a library: feedparser is the general reader we keep; no maintained streaming feed parser
gives feedparser's reading, and this one is ~250 lines over the standard library.
"""

from __future__ import annotations

import contextlib
import html as html_module
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from xml.etree import ElementTree

from bot.models import ImportResult, Post, Source, SourceKind
from bot.sources.common import PostIds, SourceError, unreadable_as_source_error
from bot.sources.feeds import _EXPAT_MEANING, _MediaTexts, _post, _text
from bot.sources.text import (
    BLOCK_TAGS,
    HtmlImage,
    clean,
    html_content,
    is_http_url,
    is_tracking_pixel,
    safe_url,
    source_id_from_title,
)
from storage.models import DeferredImport

CHUNK = 1 << 20
"""Bytes handed to the parser at a time."""

_DC = "{http://purl.org/dc/elements/1.1/}"
_CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
_ATOM = "{http://www.w3.org/2005/Atom}"
_ITEM_TEXTS = frozenset({"title", "link", "guid", "pubDate", "description", f"{_CONTENT}encoded"})
_ITEM_IGNORED = frozenset({"category", "comments"})  # read by feedparser, used by no post
_CHANNEL_TEXTS = frozenset({"title", "link"})
_CHANNEL_IGNORED = frozenset(
    {
        "description", "language", "copyright", "managingEditor", "webMaster", "generator",
        "docs", "ttl", "category", "lastBuildDate", "pubDate", f"{_DC}date", f"{_DC}language",
    }
)  # fmt: skip
"""Channel elements no post reads: the feed's dates only date undated items, and every item here
has a date of its own."""
# atom:link relations feedparser files among the feed's links without making them its link.
_OTHER_RELATIONS = frozenset({"hub", "next", "previous", "first", "last"})
# The tags a description may hold: HTML that feedparser's sanitizer and our text extraction read
# alike (every one is in the sanitizer's acceptable elements; none hides its text).
_PLAIN_TAGS = frozenset(
    {
        "p", "br", "b", "i", "em", "strong", "a", "span", "div", "ul", "ol", "li", "blockquote",
        "h1", "h2", "h3", "h4", "h5", "h6", "img", "hr", "sup", "sub", "small", "u", "s", "q",
        "cite", "code", "figure", "figcaption",
    }
)  # fmt: skip
_TAG = re.compile(
    r"<(/?)([A-Za-z][A-Za-z0-9]*)"
    r"""((?:\s+[A-Za-z][A-Za-z-]*\s*=\s*(?:"[^"<>&]*"|'[^'<>&]*'))*)\s*/?>"""
)
# The tags of `_TAG` that shape the text (`plain_html_content`): a block tag ends a paragraph, an
# <img> is a picture, a <figcaption> a caption; every other tag only goes. The same extent as
# `_TAG`'s match at the same `<` (a tag name is read to its end either way), ASCII names in any case.
_STRUCTURE = re.compile(
    r"<(/?)((?ai:"
    + "|".join(sorted(BLOCK_TAGS | {"img", "figcaption"}, key=len, reverse=True))
    + r"))"
    r"""((?:\s+[A-Za-z][A-Za-z-]*\s*=\s*(?:"[^"<>&]*"|'[^'<>&]*'))*)\s*/?>"""
)
_ATTRIBUTE = re.compile(r"""\s+([A-Za-z][A-Za-z-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_ATTRIBUTE_URL = re.compile(r"""\s(?:src|href)\s*=\s*["']\s*([^"']*)""", re.IGNORECASE)
# Entities both readers turn into the same character.
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|nbsp);|#([0-9]{1,7});|#[xX]([0-9a-fA-F]{1,6});)")
_AMPERSAND_OR_TAG = re.compile(r"[&<]")
# feedparser's own rules, repeated so the readings agree (feedparser/urls.py, mixin.py).
_URI_FIXER = re.compile(r"^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")
# Where _URI_FIXER changes a URL: slashes after the scheme's `://` (it removes them).
_EXTRA_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+-.]*:///")
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_LOOKS_LIKE_HTML = re.compile(r"</(\w+)>|&#?\w+;")
_RFC822 = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) (GMT|UT|Z|[+-]\d{4})"
)
_MONTHS = {
    month: number
    for number, month in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


_CUT_SHORT = _EXPAT_MEANING["no element found"]


class Malformed(SourceError):
    """The document is not well-formed XML. feedparser may still read some of it (with a warning):
    a caller that still has the bytes hands them on; a stream's reader says this one line."""


class NotPlain(Exception):
    """The document is not plain RSS 2.0 as this module reads it; feedparser must read it."""


def is_rss_start(data: bytes) -> bool:
    """Whether a document starts as a plain RSS 2.0 feed this module may read: UTF-8 (a BOM at
    most), the declaration (if any) first, no doctype, the `rss` root straight after it."""
    head = data[:4096].removeprefix(b"\xef\xbb\xbf")
    if head.startswith(b"<?xml"):
        end = head.find(b"?>")
        if end == -1:
            return False
        declaration = head[: end + 2].lower().replace(b"'", b'"')
        if b"encoding=" in declaration and b'encoding="utf-8"' not in declaration:
            return False
        head = head[end + 2 :].lstrip(b" \t\r\n")
    return head.startswith(b"<rss")  # nothing before the root: no doctype, no entities


def parse_stream(
    chunks: Iterable[bytes],
    *,
    location: str,
    content_type: str | None = None,
    deferred: bool = False,
) -> ImportResult:
    """Read plain RSS 2.0 from `chunks`; `NotPlain` when it is not, `Malformed` when it is not
    well-formed XML, `SourceError` when no item makes a post (one line, as the general reader's).
    Every item carries its date, so no post needs the fetch time.

    `deferred`: a `DeferredImport` whose posts are heads (id, date, title), each item's text read
    when the store completes its post: every check of the shape is made here all the same, so a
    feed that is not plain still raises `NotPlain` before anything is stored. The items are kept
    until then, so this is for documents held in memory anyway."""
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
        if charset not in ("utf-8", "utf8"):
            raise NotPlain("a charset other than UTF-8")
    return _Reader(location, deferred=deferred).read(chunks)


class _Reader:
    def __init__(self, location: str, *, deferred: bool = False) -> None:
        self.location = location
        self.posts: list[Post] = []
        self.skipped = 0
        self.deferred = deferred
        # The items whose posts are heads, by the post's id within its blog.
        self.items: dict[str, tuple[dict[str, Any], datetime]] = {}

    def read(self, chunks: Iterable[bytes]) -> ImportResult:
        events = self._events(chunks)
        root = self._expect_start(events, "rss")
        if root.attrib != {"version": "2.0"}:
            raise NotPlain("an rss root other than version 2.0")
        channel = self._expect_start(events, "channel")
        if channel.attrib:
            raise NotPlain("attributes on the channel")
        feed: dict[str, Any] = {}
        source: Source | None = None
        ids: PostIds | None = None
        position = 0
        depth = 2  # inside the channel
        for event, element in events:
            if event == "start":
                depth += 1
                if depth == 3 and element.tag == "item" and source is None:
                    source = self._source(feed)
                    ids = PostIds(source.id)
                continue
            depth -= 1
            if depth == 1:  # the channel ends
                break
            if depth != 2:
                continue  # inside an item or a channel element: read when that ends
            if element.tag == "item":
                assert source is not None and ids is not None
                post = self._post(element, source, ids)
                position += 1
                if post is None:
                    self.skipped += 1
                else:
                    self.posts.append(post)
            elif source is not None:
                raise NotPlain("channel elements after the first item")
            else:
                _channel_element(element, feed)
            channel.remove(element)  # memory stays bounded by one item
        else:
            raise Malformed(self.location, f"malformed feed ({_CUT_SHORT})")
        for _ in events:
            pass  # the rest of the document must still be well-formed
        if source is None:
            source = self._source(feed)
        warnings: list[str] = []
        if self.skipped:
            warnings.append(f"skipped {self.skipped} post(s) without a title or text")
        if position and not self.posts:
            raise SourceError(self.location, f"no usable posts ({'; '.join(warnings)})")
        result = ImportResult(source=source, posts=tuple(self.posts), warnings=tuple(warnings))
        if not self.deferred:
            return result
        return DeferredImport.of(result, _Completer(source, self.items, self.location))

    def _post(self, item: ElementTree.Element, source: Source, ids: PostIds) -> Post | None:
        entry, published = _entry_of(item)
        if not self.deferred:
            return _whole_post(entry, source, published, ids)
        title = _text(entry, "title")
        if not title:  # titled by its text, or skipped: read whole now
            return _whole_post(entry, source, published, ids)
        # The id as `feeds._post` gives it, in the same order (ids count repeats).
        native = entry.get("id") or entry.get("guid") or entry.get("link")
        post_id = ids.own(str(native)) if native else ids.by_time(published)
        self.items[post_id.removeprefix(f"{source.id}:")] = (entry, published)
        return Post(id=post_id, source_id=source.id, published_at=published, title=title)

    def _source(self, feed: dict[str, Any]) -> Source:
        title = _text(feed, "title") or clean(self.location.rsplit("/", 1)[-1])
        url = feed.get("self") or safe_url(feed.get("link"))
        return Source(
            id=source_id_from_title(title, self.location), title=title, url=url, kind=SourceKind.RSS
        )

    def _events(self, chunks: Iterable[bytes]) -> Iterator[tuple[str, ElementTree.Element]]:
        parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(
            events=("start", "end")
        )
        try:
            for chunk in chunks:
                parser.feed(chunk)
                yield from _read(parser)
            parser.close()
            yield from _read(parser)
        except ElementTree.ParseError as error:
            raise Malformed(self.location, f"malformed feed ({_reason(error)})") from None

    def _expect_start(
        self, events: Iterator[tuple[str, ElementTree.Element]], tag: str
    ) -> ElementTree.Element:
        for event, element in events:
            if event == "start" and element.tag == tag:
                return element
            raise NotPlain(f"{element.tag} where {tag} was expected")
        raise Malformed(self.location, f"malformed feed ({_CUT_SHORT})")


def _read(
    parser: ElementTree.XMLPullParser[ElementTree.Element],
) -> Iterator[tuple[str, ElementTree.Element]]:
    # Only start and end events were asked for: each is (event, element).
    return cast("Iterator[tuple[str, ElementTree.Element]]", parser.read_events())


def _reason(error: ElementTree.ParseError) -> str:
    """expat's words as the general reader puts them (bot.sources.feeds._bozo_reason)."""
    text = str(error).split(":", 1)[0]
    line = error.position[0] if error.position else None
    where = f", at line {line}" if line else ""
    return clean(f"{_EXPAT_MEANING.get(text, text)}{where}")


def _channel_element(element: ElementTree.Element, feed: dict[str, Any]) -> None:
    tag = element.tag
    if tag in _CHANNEL_TEXTS:
        if element.attrib or len(element) or tag in feed:
            raise NotPlain(f"an unusual channel {tag}")
        value = _popped(element.text or "")
        if tag == "title":
            if _LOOKS_LIKE_HTML.search(value):
                raise NotPlain("a channel title that may be HTML")
            feed["title"] = value
            feed["title_detail"] = {"type": "text/plain"}
        else:
            feed["link"] = _link(value)
    elif tag == f"{_ATOM}link":
        href = element.get("href", "")
        if set(element.attrib) - {"href", "rel", "type"} or len(element):
            raise NotPlain("an unusual atom:link")
        if element.get("rel") in _OTHER_RELATIONS:
            return
        if element.get("rel") != "self":
            raise NotPlain("an atom:link other than rel=self")
        if "self" in feed or not is_http_url(href) or _EXTRA_SLASHES.match(href):
            raise NotPlain("an unusual atom:link")
        feed["self"] = href.strip()
    elif tag == "image":
        pass  # feedparser files it apart from the channel's own texts
    elif tag not in _CHANNEL_IGNORED or (element.attrib and tag != "category"):
        raise NotPlain(f"a channel element {tag}")


def _popped(text: str) -> str:
    """A text as feedparser's `pop` leaves it: stripped, mojibake of UTF-8 read as Latin-1 undone,
    and refused (NotPlain) where it would map cp1252 characters."""
    output = text.strip()
    if not output.isascii():
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            output = output.encode("iso-8859-1").decode("utf-8")
        if any("\x80" <= c <= "\x9f" for c in output):
            raise NotPlain("C1 characters feedparser maps as cp1252")
    return output


def _fixed_uri(value: str) -> str:
    """`value` as feedparser's URI fixer leaves it (no slashes after the scheme's `://`)."""
    return _URI_FIXER.sub(r"\1\3", value) if _EXTRA_SLASHES.match(value) else value


def _link(value: str) -> str:
    """An item or channel link as feedparser stores it."""
    value = _fixed_uri(value)
    if "&" not in value:
        return value
    value = value.replace("&amp;", "&")
    return _LINK_ENTITY.sub(r"&\g<1>", value)


def _plain_html(value: str) -> str:
    """`value` when feedparser's sanitizer would leave its text and pictures as they are."""
    if not _AMPERSAND_OR_TAG.search(value):
        return value
    rest = value
    if "&" in value:
        if "&#" in value:
            for match in _ENTITY.finditer(value):
                number = match.group(2) or match.group(3)
                if number is not None:
                    code = int(number, 16 if match.group(3) else 10)
                    if code < 0xA0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                        raise NotPlain("a character reference the readers treat apart")
        rest = _ENTITY.sub("", value)
    tags = _TAG.findall(rest)
    for _, name, attributes in tags:
        if name not in _PLAIN_TAGS and name.lower() not in _PLAIN_TAGS:
            raise NotPlain(f"a <{name}> in a description")
        if attributes:
            for url in _ATTRIBUTE_URL.findall(attributes):
                if _EXTRA_SLASHES.match(url):
                    raise NotPlain("a URL feedparser rewrites")
    # What is left once the tags go: every tag holds exactly one `<` (its attribute values hold
    # none), so a `<` more than there are tags, or any `&` (entities are gone), is markup.
    if "&" in rest or rest.count("<") != len(tags):
        raise NotPlain("markup the readers treat apart")
    return value


def _date(value: str) -> datetime:
    match = _RFC822.fullmatch(value)
    if match is None:
        raise NotPlain("a date in a form other than RFC 822")
    day, month, year, hour, minute, second, zone = match.groups()
    if not 1000 <= int(year) <= 9998 or int(second) > 59:
        raise NotPlain("a date feedparser reads apart")
    try:
        moment = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    except ValueError:
        raise NotPlain("an impossible date") from None
    if zone[0] in "+-":
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        moment = moment - offset if zone[0] == "+" else moment + offset
    return moment.replace(tzinfo=UTC)


def _entry_of(item: ElementTree.Element) -> tuple[dict[str, Any], datetime]:
    """The entry mapping feedparser would make of an item, and its date; `NotPlain` for an item
    outside the plain shape."""
    if item.attrib:
        raise NotPlain("attributes on an item")
    entry: dict[str, Any] = {}
    published: datetime | None = None
    has_link = False
    for child in item:
        tag = child.tag
        if tag in _ITEM_IGNORED:
            continue
        if len(child):
            raise NotPlain(f"elements inside an item's {tag}")
        value = _popped(child.text or "")
        if tag == "guid":
            if "id" in entry or set(child.attrib) - {"isPermaLink"}:
                raise NotPlain("an unusual guid")
            # A permalink guid is a URI to feedparser (and its link until a <link> replaces it,
            # which every item here has).
            is_link = child.get("isPermaLink", "true") == "true"
            entry["id"] = _fixed_uri(value) if is_link and value else value
        elif tag in _ITEM_TEXTS:
            if child.attrib:
                raise NotPlain(f"attributes on an item's {tag}")
            if tag == "title":
                if "title" in entry or _LOOKS_LIKE_HTML.search(value):
                    raise NotPlain("a title that may be HTML")
                entry["title"] = value
                entry["title_detail"] = {"type": "text/plain"}
            elif tag == "link":
                if has_link:
                    raise NotPlain("two links")
                has_link = True
                entry["link"] = _link(value)
            elif tag == "pubDate":
                if published is not None:
                    raise NotPlain("two dates")
                published = _date(value)
            elif tag == "description":
                if "summary_detail" in entry or "content" in entry:
                    raise NotPlain("a description after the content")
                entry["summary"] = _plain_html(value)
                entry["summary_detail"] = {"type": "text/html", "value": entry["summary"]}
            else:  # content:encoded
                if "content" in entry:
                    raise NotPlain("two contents")
                content = _plain_html(value)
                entry["content"] = [{"type": "text/html", "value": content}]
                entry.setdefault("summary", content)
        elif tag == f"{_DC}creator":
            if "author" in entry or child.attrib or not value or "@" in value:
                raise NotPlain("an unusual author")
            if _AMPERSAND_OR_TAG.search(value):
                raise NotPlain("an author that may be HTML")
            entry["author"] = value
            entry["authors"] = [{"name": value}]
        else:
            raise NotPlain(f"an item element {tag}")
    if published is None or not has_link:
        raise NotPlain("an item without a date or a link")
    return entry, published


def _whole_post(
    entry: dict[str, Any], source: Source, published: datetime, ids: PostIds
) -> Post | None:
    return _post(
        entry, source, published, None, ids, _MediaTexts(), dated=True, read_html=plain_html_content
    )


class _GivenId(PostIds):
    """The id a head already has: completing its post hands out no id of its own."""

    def __init__(self, post_id: str) -> None:
        super().__init__("")
        self.post_id = post_id

    def own(self, native_id: str) -> str:
        return self.post_id

    def by_time(self, published_at: datetime) -> str:
        return self.post_id


class _Completer:
    """The whole post of a head of `_Reader(deferred=True)`: its item read as `_whole_post` does."""

    def __init__(
        self, source: Source, items: dict[str, tuple[dict[str, Any], datetime]], location: str
    ) -> None:
        self.source = source
        self.items = items
        self.location = location

    def __call__(self, head: Post) -> Post:
        found = self.items.get(head.id.removeprefix(f"{head.source_id}:"))
        if found is None:  # titled by its text: read whole already
            assert head.body, f"no item for {head.id}"
            return head
        entry, published = found
        with unreadable_as_source_error(self.location):
            post = _whole_post(entry, self.source, published, _GivenId(head.id))
        assert post is not None and post.title == head.title  # a titled item always makes one
        return post


def plain_html_content(markup: str, base: str | None) -> tuple[list[str], list[HtmlImage]]:
    """`text.html_content` for the HTML `_plain_html` lets through, without html.parser.

    That HTML is text between well-formed tags of `_PLAIN_TAGS` (quoted attribute values without
    `&`, `<` or `>`; no comment, doctype or marked section) with the entities of `_ENTITY`, so a
    regex finds its tags as html.parser does, and the rules are `text._TextExtractor`'s: a block
    tag ends a paragraph, an <img> is a picture (not a tracking pixel), a <figcaption> captions the
    picture before it (measured: ~45 → ~12 µs a post). tests/test_plain_rss.py compares the two."""
    if "<" not in markup:
        return html_content(markup, base)
    paragraphs: list[str] = []
    images: list[HtmlImage] = []
    buffer: list[str] = []
    caption: list[str] | None = None  # inside a <figcaption>

    def flush() -> None:
        if not buffer:
            return
        joined = "".join(buffer)
        buffer.clear()
        if joined.isspace():
            return  # clean() would leave nothing (the usual text between </p> and <p>)
        text = clean(html_module.unescape(joined) if "&" in joined else joined)
        if text:
            paragraphs.append(text)

    # One split in C, not a match object a tag: [text, closing, name, attributes, text, …].
    parts = _STRUCTURE.split(markup)
    for index in range(0, len(parts) - 1, 4):
        piece = parts[index]
        if piece:
            (caption if caption is not None else buffer).append(
                _TAG.sub("", piece) if "<" in piece else piece
            )
        closing, name = parts[index + 1], parts[index + 2].lower()
        if name == "img":
            if not closing:
                # findall gives "" for the quote that did not match: the value is the other one
                values = {
                    key.lower(): double or single
                    for key, double, single in _ATTRIBUTE.findall(parts[index + 3])
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
    piece = parts[-1]
    (caption if caption is not None else buffer).append(
        _TAG.sub("", piece) if "<" in piece else piece
    )
    flush()
    return paragraphs, images


def _attributes(tag: re.Match[str]) -> list[tuple[str, str | None, str | None]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in _ATTRIBUTE.finditer(tag.group(3))]


def chunks_of(data: bytes) -> Iterator[bytes]:
    """`data` in parser-sized pieces: the pull parser keeps every element of a piece until read."""
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
