"""HTML live-blog pages that describe themselves with schema.org `LiveBlogPosting` JSON-LD.

The blog may sit at the top level, in a list, or inside an `@graph`; its posts are the `liveBlogUpdate`
entries (`BlogPosting`s). A blog without `liveBlogUpdate` is a blog with no posts yet, not an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

from bot.models import Image, ImportResult, Post, Source, SourceKind
from bot.sources.common import PostIds, SourceError, entry_post, parse_iso, title_from_body
from bot.sources.text import (
    clean,
    html_content,
    html_to_text,
    readable_markup,
    safe_url,
    source_id_from_title,
)

_MAX_DEPTH = 12


class _PageScanner(HTMLParser):
    """Collects the JSON-LD scripts, the page title and the canonical link of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.title = ""
        self.canonical: str | None = None
        self._in_ld = False
        self._in_title = False
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        if tag == "script" and values.get("type", "").strip().lower() == "application/ld+json":
            self._in_ld, self._buffer = True, []
        elif tag == "title" and not self.title:
            self._in_title, self._buffer = True, []
        elif tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.canonical = self.canonical or values.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_ld:
            self.scripts.append("".join(self._buffer))
            self._in_ld = False
        elif tag == "title" and self._in_title:
            self.title = clean("".join(self._buffer))
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_ld or self._in_title:
            self._buffer.append(data)


def scan_html(text: str) -> tuple[list[object], str, str | None, int]:
    """The JSON-LD documents of a page, its title, canonical URL and how many scripts were unreadable."""
    scanner = _PageScanner()
    scanner.feed(readable_markup(text))
    scanner.close()
    documents: list[object] = []
    broken = 0
    for script in scanner.scripts:
        try:
            documents.append(json.loads(script))
        except ValueError:
            broken += 1
    return documents, scanner.title, scanner.canonical, broken


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("@type")
    kinds = kind if isinstance(kind, list) else [kind]
    return {str(k).rsplit("/", 1)[-1] for k in kinds if k}


def find_live_blogs(node: object, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every LiveBlogPosting object in a JSON-LD document, wherever it is nested."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, list):
        for child in node:
            yield from find_live_blogs(child, depth + 1)
    elif isinstance(node, dict):
        if "LiveBlogPosting" in _types(node):
            yield node
            return
        for key, child in node.items():
            if key != "liveBlogUpdate" and isinstance(child, dict | list):
                yield from find_live_blogs(child, depth + 1)


def parse(
    documents: list[object],
    *,
    location: str,
    page_title: str = "",
    canonical: str | None = None,
    warnings: tuple[str, ...] = (),
) -> ImportResult:
    blogs = [blog for document in documents for blog in find_live_blogs(document)]
    if not blogs:
        raise SourceError(location, "not a live blog or feed (no LiveBlogPosting data on the page)")
    blog = blogs[0]
    title = _text(blog.get("headline")) or _text(blog.get("name")) or page_title
    url = safe_url(_url(blog)) or safe_url(canonical)
    title = title or clean(location.rsplit("/", 1)[-1])
    source = Source(
        id=source_id_from_title(title, location),
        title=title,
        url=url,
        kind=SourceKind.JSON_LD,
    )
    updates = blog.get("liveBlogUpdate") or []
    if not isinstance(updates, list):
        updates = [updates]
    notes = list(warnings)
    if len(blogs) > 1:
        notes.append(f"page holds {len(blogs)} live blogs; imported the first")
    ids = PostIds(source.id)
    posts: list[Post] = []
    skipped = 0
    for update in updates:
        post = _post(update, source, ids) if isinstance(update, dict) else None
        if post is None:
            skipped += 1
        else:
            posts.append(post)
    if skipped:
        notes.append(f"skipped {skipped} update(s) without a date, title or text")
    return ImportResult(source=source, posts=tuple(posts), warnings=tuple(notes))


def _text(value: object) -> str:
    return html_to_text(value) if isinstance(value, str) else ""


def _url(node: dict[str, Any]) -> str | None:
    for key in ("url", "@id", "mainEntityOfPage"):
        value = node.get(key)
        if isinstance(value, dict):
            value = value.get("@id") or value.get("url")
        if isinstance(value, str) and safe_url(value):
            return value
    return None


def _names(value: object) -> tuple[str, ...]:
    """`author` as a string, an object with a name, or a list of either."""
    values = value if isinstance(value, list) else [value]
    names: list[str] = []
    for author in values:
        if isinstance(author, str):
            names.append(clean(author))
        elif isinstance(author, dict):
            names.append(_text(author.get("name")))
    return tuple(dict.fromkeys(n for n in names if n))


def _images(value: object, base: str | None) -> list[Image]:
    """`image` as a URL, an ImageObject (url/contentUrl, caption, creditText), or a list of either."""
    values = value if isinstance(value, list) else [value]
    images: list[Image] = []
    for image in values:
        if isinstance(image, str):
            url = safe_url(image, base)
            if url:
                images.append(Image(url=url))
        elif isinstance(image, dict):
            url = safe_url(str(image.get("url") or image.get("contentUrl") or ""), base)
            caption = _text(image.get("caption")) or _text(image.get("description"))
            credit = _text(image.get("creditText")) or _text(image.get("copyrightHolder"))
            if url or caption:
                images.append(Image(url=url, caption=caption, credit=credit or None))
    return images


def _post(update: dict[str, Any], source: Source, ids: PostIds) -> Post | None:
    modified: datetime | None = parse_iso(update.get("dateModified"))
    published = parse_iso(update.get("datePublished")) or modified
    if published is None:
        return None
    permalink = safe_url(_url(update), source.url)
    raw_body = update.get("articleBody") or update.get("text") or update.get("description") or ""
    body, found = html_content(raw_body, permalink) if isinstance(raw_body, str) else ([], [])
    title = _text(update.get("headline")) or _text(update.get("name")) or title_from_body(body)
    if not title:
        return None
    images = _images(update.get("image"), permalink) + [
        Image(url=i.url, caption=i.caption) for i in found
    ]
    authors = _names(update.get("author"))
    native = update.get("@id") or update.get("url")
    native_id = native if isinstance(native, str) and native.strip() else None
    return entry_post(
        post_id=ids.own(native_id) if native_id else ids.by_time(published),
        source_id=source.id,
        published=published,
        modified=modified,
        title=title,
        authors=authors,
        body=body,
        images=images,
        permalink=permalink,
    )
