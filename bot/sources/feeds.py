"""RSS 2.0, RSS 1.0 (RDF) and Atom feeds, read by feedparser.

feedparser decodes the bytes itself (BOM, XML declaration, HTTP charset) and sanitises entry HTML; we then
turn that HTML into plain paragraphs. Before that, `tidy_prologue` puts the XML declaration first (feeds
served with a newline, a second BOM or a comment before it) and hands UTF-16/32 on as UTF-8. A feed that
is not well-formed but still yields entries imports with a warning; one that yields nothing is an error.
A post's text is the richest of the entry's texts, whichever key feedparser filed it under.

Media RSS captions (`media:description`) are read with a small ElementTree pass of our own: feedparser
files them as the entry's summary or content, so they would otherwise become the post's text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

from bot.models import Image, ImportResult, Post, Source, SourceKind
from bot.sources.common import (
    PostIds,
    SourceError,
    entry_post,
    first_seen,
    from_struct_time,
    split_names,
    title_from_body,
    undated_warning,
)
from bot.sources.text import (
    BOMS,
    HtmlImage,
    bom_encoding,
    clean,
    html_content,
    html_to_text,
    is_http_url,
    paragraphs_of_text,
    safe_url,
    short_hash,
    source_id_from_title,
)

_HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")
# feedparser flags these although the text was read fine: not worth a warning on every poll.
_HARMLESS_BOZO = ("CharacterEncodingOverride", "NonXMLContentType")
# expat's words for the usual faults, in a reader's.
_EXPAT_MEANING = {
    "no element found": "cut short: it ends before its elements close",
    "unclosed token": "cut short: it ends inside a tag",
    "unbound prefix": "a namespace prefix that is never declared",
    "not well-formed (invalid token)": "a character XML does not allow",
}
_MEDIA_NAMESPACES = ("{http://search.yahoo.com/mrss/}", "{http://search.yahoo.com/mrss}")
_ENTRY_TAGS = frozenset({"item", "entry"})
_CONTROL_BYTES = bytes(c for c in range(32) if c not in (9, 10, 13))
_DECLARED_ENCODING = re.compile(r"""\A(<\?xml[^<>]*?encoding\s*=\s*["'])[A-Za-z0-9._:-]+(["'])""")
# Comments before the XML declaration (where it may not be), and the declaration itself.
_MISPLACED_DECLARATION = re.compile(
    r"(?P<before>(?:[ \t\r\n]*<!--(?:[^-]|-(?!->))*-->)+[ \t\r\n]*)"
    r"(?P<declaration><\?xml[ \t\r\n][^<>]*?\?>)"
)


HtmlReader = Callable[[str, str | None], tuple[list[str], list[HtmlImage]]]
"""HTML to paragraphs and pictures: `html_content`, or a faster reader of a narrower HTML."""


@dataclass
class _MediaTexts:
    """The `media:description`s of one entry, as feedparser does not keep them apart."""

    by_url: dict[str, str] = field(default_factory=dict)  # caption of a media:content/thumbnail
    general: str = ""  # an item- or media:group-level description
    general_is_caption: bool = True  # False when it describes a video or audio, not the picture
    texts: set[str] = field(default_factory=set)  # every description, to keep out of the body


def parse(
    data: bytes, *, location: str, content_type: str | None = None, now: datetime | None = None
) -> ImportResult:
    """Import a feed; `now` (the fetch time) dates the items that carry no date at all."""
    headers = {"content-type": content_type} if content_type else None
    data = tidy_prologue(data)
    import feedparser  # here: the plain RSS reader (bot.sources.plain_rss) never needs it

    parsed = feedparser.parse(data, response_headers=headers, sanitize_html=True)
    feed: Mapping[str, Any] = parsed.get("feed", {})
    entries: list[Mapping[str, Any]] = list(parsed.get("entries", []))
    bozo = _bozo_reason(parsed)
    if not entries and bozo is not None:
        raise SourceError(location, f"malformed feed ({bozo})")
    version = str(parsed.get("version") or "")
    if not entries and not version:
        raise SourceError(location, "not a live blog or feed (XML without an RSS or Atom root)")

    title = _text(feed, "title") or clean(location.rsplit("/", 1)[-1])
    url = _feed_url(feed)
    source = Source(
        id=source_id_from_title(title, location),
        title=title,
        url=url,
        kind=SourceKind.ATOM if version.startswith("atom") else SourceKind.RSS,
    )
    warnings: list[str] = []
    if bozo is not None:
        warnings.append(f"feed is not well-formed ({bozo}); imported what could be read")
    fallback_date = from_struct_time(
        _date(feed, "updated_parsed") or _date(feed, "published_parsed")
    )
    ids = PostIds(source.id)
    seen_at = now or datetime.now(UTC)
    media = _media_texts(data, len(entries))
    posts: list[Post] = []
    undated = skipped_empty = 0
    for position, entry in enumerate(entries):
        published = from_struct_time(
            _date(entry, "published_parsed") or _date(entry, "created_parsed")
        )
        updated = from_struct_time(_date(entry, "updated_parsed"))
        dated = published is not None or updated is not None
        published = published or updated or fallback_date or first_seen(seen_at, position)
        texts = media[position] if media is not None else _MediaTexts()
        post = _post(entry, source, published, updated, ids, texts, dated=dated)
        if post is None:
            skipped_empty += 1
            continue
        posts.append(post)
        undated += not dated and fallback_date is None
    if undated:
        warnings.append(undated_warning(undated))
    if skipped_empty:
        warnings.append(f"skipped {skipped_empty} post(s) without a title or text")
    if entries and not posts:
        if bozo is not None:
            raise SourceError(location, f"malformed feed ({bozo})")
        raise SourceError(location, f"no usable posts ({'; '.join(warnings)})")
    return ImportResult(source=source, posts=tuple(posts), warnings=tuple(warnings))


def tidy_prologue(data: bytes) -> bytes:
    """The document with its XML declaration first, where XML wants it.

    Feeds are served with a newline, spaces or a second BOM before `<?xml`, or (feedparser's own test
    files) a comment; expat calls that not well-formed and would hide the document's real faults
    behind it. The bytes after the prologue are left as they are, in their own encoding.
    """
    encoding = bom_encoding(data) or "utf-8"
    bom = next((mark for mark, name in BOMS if name == encoding and data.startswith(mark)), b"")
    if encoding.startswith(("utf-16", "utf-32")):
        # Read here and handed on as UTF-8: expat reads UTF-32 only when the declaration names it.
        try:
            text = data[len(bom) :].decode(encoding)
        except UnicodeDecodeError:
            return data
        text = _tidy_prologue_text(text, "\ufeff")
        return _DECLARED_ENCODING.sub(r"\g<1>utf-8\g<2>", text, count=1).encode("utf-8")
    # Latin-1 maps bytes to characters one to one, so the prologue (ASCII) can be edited as text
    # while every other byte comes back unchanged, whatever the encoding really is.
    text = data[len(bom) :].decode("latin-1")
    tidied = _tidy_prologue_text(text, "\xef\xbb\xbf")
    return data if tidied == text else bom + tidied.encode("latin-1")


def _tidy_prologue_text(text: str, bom: str) -> str:
    start = 0
    while True:
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        if not text.startswith(bom, start):
            break
        start += len(bom)
    text = text[start:]
    misplaced = _MISPLACED_DECLARATION.match(text[:65536]) if text.startswith("<!--") else None
    if misplaced is not None:
        text = misplaced["declaration"] + misplaced["before"] + text[misplaced.end() :]
    return text


def _date(item: Mapping[str, Any], key: str) -> Any:
    # dict.get: feedparser's own get() maps a missing `updated_parsed` to `published_parsed`, with a
    # DeprecationWarning; we want to know which one the feed really gave.
    return dict.get(item, key) if isinstance(item, dict) else None


def _bozo_reason(parsed: Mapping[str, Any]) -> str | None:
    if not parsed.get("bozo"):
        return None
    error = parsed.get("bozo_exception")
    if error is None or type(error).__name__ in _HARMLESS_BOZO:
        return None
    reason = getattr(error, "getMessage", None)
    text = reason() if callable(reason) else str(error)
    text = _EXPAT_MEANING.get(text, text)
    line = getattr(error, "getLineNumber", None)
    where = f", at line {line()}" if callable(line) else ""
    return clean(f"{text}{where}") or type(error).__name__


def _feed_url(feed: Mapping[str, Any]) -> str | None:
    """The feed's own address (rel=self) when it states one, else its home page."""
    for link in feed.get("links", []):
        if link.get("rel") == "self" and is_http_url(str(link.get("href", ""))):
            return str(link["href"]).strip()
    return safe_url(feed.get("link"))


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        return ""
    detail = item.get(f"{key}_detail") or {}
    if detail.get("type") in _HTML_TYPES:
        return html_to_text(value)
    return clean(value)


def _post(
    entry: Mapping[str, Any],
    source: Source,
    published: datetime,
    updated: datetime | None,
    ids: PostIds,
    media: _MediaTexts,
    *,
    dated: bool,
    read_html: HtmlReader = html_content,
) -> Post | None:
    permalink = safe_url(entry.get("link"), source.url)
    media_images = _media_images(entry, media)
    captions = {image.caption for image in media_images if image.caption}
    body, inline_images = _body(entry, permalink or source.url, captions, media.texts, read_html)
    title = _text(entry, "title") or title_from_body(body)
    if not title:
        return None
    native = entry.get("id") or entry.get("guid") or entry.get("link")
    if native:
        post_id = ids.own(str(native))
    elif dated:
        post_id = ids.by_time(published)
    else:
        # Neither an id nor a date of its own: the feed's date moves on every rebuild, the title does not.
        post_id = ids.own(f"title-{short_hash(title)}")
    authors = _authors(entry)
    return entry_post(
        post_id=post_id,
        source_id=source.id,
        published=published,
        modified=updated,
        title=title,
        authors=authors,
        body=body,
        images=media_images + inline_images,
        permalink=permalink,
        time_estimated=not dated,
    )


def _body(
    entry: Mapping[str, Any],
    base: str | None,
    captions: set[str],
    media_texts: set[str],
    read_html: HtmlReader = html_content,
) -> tuple[list[str], list[Image]]:
    """The richest text the entry has: the longest of its contents and its summary.

    feedparser files an item's texts by the order they come in: `content:encoded`, `description`,
    `itunes:summary` and an empty `media:description` land in `content` or `summary` (whose `_detail`
    may even hold another one's value), so none of them can be trusted by its key alone. On equal
    length HTML beats plain text, then the first. A media description that captions one of the post's
    pictures is not its text; one that describes a video is text only when the entry has no other."""
    best: tuple[int, bool, list[str], list[Image]] | None = None
    described: list[tuple[list[str], list[Image]]] = []
    pictures: list[Image] = []
    for value, kind in _candidates(entry):
        is_html = kind in _HTML_TYPES
        if is_html:
            paragraphs, found = read_html(value, base)
            images = [Image(url=i.url, caption=i.caption) for i in found]
        else:
            paragraphs, images = paragraphs_of_text(value), []
        if not paragraphs and not images:
            continue
        joined = " ".join(paragraphs)
        # Each paragraph is clean() already; in ASCII text without markup that makes their join
        # clean too (not so in all Unicode: clean() normalises before it drops controls).
        text = joined if joined.isascii() and "<" not in joined else clean(joined)
        pictures = pictures or images
        if text in media_texts:
            if text not in captions:
                described.append((paragraphs, images))
            continue
        if best is None or (len(text), is_html) > best[:2]:
            best = (len(text), is_html, paragraphs, images)
    if best is not None:
        # a text-less candidate's pictures (an Atom content that is only an <img>) still count
        return best[2], best[3] or pictures
    return described[0] if described else ([], pictures)


def _candidates(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(value, content type) of every text feedparser kept for the entry, contents first."""
    found: list[tuple[object, str]] = []
    for content in entry.get("content") or []:
        if isinstance(content, Mapping):
            found.append((content.get("value"), str(content.get("type") or "text/html")))
    detail = entry.get("summary_detail") or {}
    kind = str(detail.get("type") or "text/html")
    found.append((entry.get("summary"), kind))
    found.append((detail.get("value"), kind))
    unique: dict[str, str] = {}
    for value, kind in found:
        if isinstance(value, str) and value.strip():
            unique.setdefault(value, kind)
    return list(unique.items())


def _authors(entry: Mapping[str, Any]) -> tuple[str, ...]:
    names = [
        name
        for author in entry.get("authors", [])
        if isinstance(author, Mapping)
        for name in _names(str(author.get("name") or ""))
    ]
    if not names and isinstance(entry.get("author"), str):
        names = list(_names(entry["author"]))
    return tuple(dict.fromkeys(names))


@functools.lru_cache(maxsize=4096)
def _names(author: str) -> tuple[str, ...]:
    """The names an author field holds; a feed repeats a few bylines on every item."""
    return split_names(html_to_text(author))


def _media_images(entry: Mapping[str, Any], texts: _MediaTexts) -> list[Image]:
    """Image enclosures, and one Media RSS picture (feeds list the same picture in several sizes)."""
    credits = [c for c in entry.get("media_credit") or [] if isinstance(c, Mapping)]
    credit = clean(str(credits[0].get("content") or "")) or None if credits else None
    general = texts.general if texts.general_is_caption else ""
    images: list[Image] = []
    for enclosure in entry.get("enclosures", []):
        url = safe_url(enclosure.get("href") or enclosure.get("url"))
        if url and str(enclosure.get("type", "")).startswith("image/"):
            images.append(Image(url=url, caption=texts.by_url.get(url, general), credit=credit))
    pictures = [
        media
        for media in entry.get("media_content", [])
        if str(media.get("medium") or media.get("type") or "image").startswith("image")
    ] or list(entry.get("media_thumbnail", []))  # a video's thumbnail when there is no photo
    pictures = [media for media in pictures if safe_url(media.get("url"))]
    if pictures:
        largest = max(pictures, key=lambda media: _int(media.get("width")))
        url = safe_url(largest.get("url"))
        caption = texts.by_url.get(url or "") or general
        images.append(Image(url=url, caption=caption, credit=credit))
    return images


def _media_texts(data: bytes, count: int) -> list[_MediaTexts] | None:
    """Each entry's Media RSS descriptions, in document order; None when we cannot tell them apart.

    A feed feedparser could read only leniently, or whose entries we count differently, keeps
    feedparser's reading. (expat refuses entity expansion bombs and never fetches external entities.)
    """
    if b"search.yahoo.com/mrss" not in data:
        return None
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, ValueError, LookupError):
        # Stray control characters (a BEL in a real El País feed) break strict XML; in a byte-oriented
        # encoding they are single bytes that never occur inside a multi-byte character.
        if data.startswith((b"\xfe\xff", b"\xff\xfe", b"\x00", b"<\x00")):
            return None
        try:
            root = ElementTree.fromstring(data.translate(None, _CONTROL_BYTES))
        except (ElementTree.ParseError, ValueError, LookupError):
            return None
    entries = [element for element in root.iter() if _local_name(element.tag) in _ENTRY_TAGS]
    if len(entries) != count:
        return None
    return [_entry_media(entry) for entry in entries]


def _entry_media(entry: ElementTree.Element) -> _MediaTexts:
    texts = _MediaTexts()
    scopes = [entry, *(child for child in entry if _media_name(child) == "group")]
    for scope in scopes:
        for child in scope:
            name = _media_name(child)
            if name == "description":
                text = _description(child)
                texts.general = texts.general or text
                texts.texts.add(text)
            elif name in ("content", "thumbnail"):
                kind = child.get("medium") or child.get("type") or "image"
                if name == "content" and not kind.startswith("image"):
                    texts.general_is_caption = False  # a group's text then describes the video
                nested = [_description(d) for d in child if _media_name(d) == "description"]
                caption = next((text for text in nested if text), "")
                texts.texts.update(nested)
                # the element's own URL, and those of the thumbnails it holds (a video's still)
                for element in (child, *(d for d in child if _media_name(d) == "thumbnail")):
                    url = safe_url(element.get("url"))
                    if url and caption:
                        texts.by_url.setdefault(url, caption)
    texts.texts.discard("")
    return texts


def _description(element: ElementTree.Element) -> str:
    text = "".join(element.itertext())
    return html_to_text(text) if element.get("type") == "html" else clean(text)


def _local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _media_name(element: ElementTree.Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str):
        return None
    for namespace in _MEDIA_NAMESPACES:
        if tag.startswith(namespace):
            return tag[len(namespace) :]
    return None


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
