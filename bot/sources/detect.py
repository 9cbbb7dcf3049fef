"""Recognise a document's format from its content and hand it to the right importer.

The content decides, not the file name: JSON (JSON Feed or JSON-LD), XML feeds (RSS 2.0, RSS 1.0,
Atom), HTML pages with LiveBlogPosting JSON-LD, and page text. The declared content type only breaks ties.
Plain RSS 2.0 is read by `plain_rss` (expat, item by item); every other feed, and any RSS it steps
aside from, by `feeds` (feedparser), with the same result.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from bot.models import ImportResult
from bot.sources import feeds, jsonfeed, jsonld, pagetext, plain_rss
from bot.sources.common import SourceError, settle_dates, unreadable_as_source_error
from bot.sources.text import BinaryData, decode

# What may precede the root element: XML declaration, processing instructions, comments, doctype.
_PROLOGUE = re.compile(r"^(?:\s+|<\?.*?\?>|<!--.*?(?:-->|$)|<!doctype[^>]*>)*", re.DOTALL | re.I)
_ROOT = re.compile(r"<([A-Za-z][\w.:-]*)")
_FEED_ROOTS = frozenset({"rss", "rdf:rdf", "feed", "rdf"})
_HTML_ROOTS = frozenset({"html", "head", "body"})
# A JSON `\uXXXX` escape of a UTF-16 surrogate (group 1), unless its backslash is itself escaped;
# only a high one followed by a low one is a character.
_SURROGATE_ESCAPE = re.compile(
    r"(?<!\\)(?:\\\\)*"
    r"(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def parse_document(
    data: bytes,
    *,
    location: str,
    content_type: str | None = None,
    now: datetime | None = None,
    deferred: bool = False,
) -> ImportResult:
    """Detect the format of `data` and import it; raises `SourceError` with one readable line.

    `location` (a path or URL) names the document in messages; `content_type` is the HTTP header, if any;
    `now` (default: the current time) is when it was fetched, the time given to posts without a date
    or with an implausible one (`bot.sources.common.settle_dates`).

    No failure of the parsers escapes as anything but `SourceError`: a lone surrogate, markup the
    stdlib HTML parser asserts on, a date that overflows, a malformed structure.

    `deferred`: a plain RSS 2.0 feed may come back as a `storage.models.DeferredImport`, whose
    posts' text is read as the store writes them (any other document is read whole, as without it).
    """
    seen_at = now or datetime.now(UTC)
    if not data.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise SourceError(location, "empty document")
    try:
        text = decode(data)
    except BinaryData:
        raise SourceError(location, "not a live blog or feed (binary data)") from None
    if _mostly_control(text):
        raise SourceError(location, "not a live blog or feed (binary data)")
    with unreadable_as_source_error(location):
        result = _dispatch(
            data, text, location, (content_type or "").lower(), seen_at, deferred=deferred
        )
        result = settle_dates(result, location=location, seen_at=seen_at)
    return result


def _dispatch(
    data: bytes, text: str, location: str, content_type: str, now: datetime, *, deferred: bool
) -> ImportResult:
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("{", "[") or ("json" in content_type and not stripped.startswith("<")):
        return _json(stripped, location, now)
    if stripped.startswith("<"):
        after_prologue = _PROLOGUE.sub("", stripped[:65536], count=1)
        if not after_prologue.strip() and len(stripped) <= 65536:
            raise SourceError(location, "empty document (nothing after the XML prologue)")
        root = _ROOT.match(after_prologue)
        name = root.group(1).lower() if root else ""
        if name == "rss" and plain_rss.is_rss_start(data):
            try:
                return plain_rss.parse_stream(
                    plain_rss.chunks_of(data),
                    location=location,
                    content_type=content_type,
                    deferred=deferred,
                )
            except (plain_rss.NotPlain, plain_rss.Malformed):
                pass  # the general reader reads the rest (and what it can of a malformed feed)
        if name in _FEED_ROOTS or name.endswith(":rdf"):
            return feeds.parse(data, location=location, content_type=content_type or None, now=now)
        if name in _HTML_ROOTS or "html" in content_type or "application/ld+json" in stripped:
            return _html(stripped, location)
        if pagetext.looks_like_page_text(stripped):
            return pagetext.parse(stripped, location=location)
        return feeds.parse(data, location=location, content_type=content_type or None, now=now)
    if pagetext.looks_like_page_text(stripped):
        return pagetext.parse(stripped, location=location)
    raise SourceError(location, "not a live blog or feed (plain text without post times)")


def _json(text: str, location: str, now: datetime) -> ImportResult:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        problem = "truncated" if error.pos >= len(text.rstrip()) else "malformed"
        raise SourceError(
            location, f"{problem} JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    _refuse_lone_surrogates(text, location)
    if jsonfeed.is_json_feed(document):
        assert isinstance(document, dict)
        return jsonfeed.parse(document, location=location, now=now)
    if any(True for _ in jsonld.find_live_blogs(document)):
        return jsonld.parse([document], location=location)
    if jsonfeed.looks_like_json_feed(document):
        assert isinstance(document, dict)
        version = " ".join(str(document["version"]).split())[:80]
        raise SourceError(location, f"not a JSON Feed version we read (version {version!r})")
    raise SourceError(
        location, "not a live blog or feed (JSON that is neither JSON Feed nor JSON-LD)"
    )


def _refuse_lone_surrogates(text: str, location: str) -> None:
    """JSON may escape half a UTF-16 pair (`"\\ud800"`); Python keeps it, nothing can store or send it."""
    if "\\u" not in text:
        return
    for match in _SURROGATE_ESCAPE.finditer(text):
        if len(match.group(1)) == 6:
            start = match.start(1)
            line = text.count("\n", 0, start) + 1
            column = start - (text.rfind("\n", 0, start) + 1) + 1
            raise SourceError(
                location,
                f"malformed JSON (line {line}, column {column}: lone surrogate {match.group(1)})",
            )


def _html(text: str, location: str) -> ImportResult:
    documents, title, canonical, broken = jsonld.scan_html(text)
    warnings = (f"skipped {broken} unreadable JSON-LD block(s)",) if broken else ()
    if not documents and broken:
        raise SourceError(location, "not a live blog or feed (its JSON-LD is malformed)")
    return jsonld.parse(
        documents, location=location, page_title=title, canonical=canonical, warnings=warnings
    )


def _mostly_control(text: str) -> bool:
    """Bytes that decoded but are not text (e.g. a Latin-1 reading of random binary)."""
    sample = text[:4096]
    if not sample:
        return False
    odd = sum(1 for c in sample if (c < " " and c not in "\n\r\t") or "\x7f" <= c <= "\x9f")
    return odd / len(sample) > 0.1 or sample.count("\ufffd") / len(sample) > 0.1
