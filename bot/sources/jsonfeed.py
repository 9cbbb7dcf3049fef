"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), read by hand: feedparser 6 does not read it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bot.models import Image, ImportResult, Post, Source, SourceKind
from bot.sources.common import (
    PostIds,
    SourceError,
    entry_post,
    first_seen,
    parse_iso,
    title_from_body,
    undated_warning,
)
from bot.sources.text import (
    clean,
    html_content,
    paragraphs_of_text,
    safe_url,
    short_hash,
    source_id_from_title,
)

VERSION_PREFIX = "https://jsonfeed.org/version/"
# The spec's URL (http or https), or the bare number that some generators write instead ("1.1").
_VERSION = re.compile(
    r"(?:https?://(?:www\.)?jsonfeed\.org/version/)?v?1(?:\.\d+)?/?", re.IGNORECASE
)


def is_json_feed(document: object) -> bool:
    """A JSON object whose `version` names JSON Feed 1.x, as the spec's URL or as a bare number."""
    if not isinstance(document, dict):
        return False
    version = document.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    return isinstance(version, str) and _VERSION.fullmatch(version.strip()) is not None


def looks_like_json_feed(document: object) -> bool:
    """A JSON object with a `version` and an `items` list, whatever version it claims."""
    return (
        isinstance(document, dict)
        and "version" in document
        and isinstance(document.get("items"), list)
    )


def parse(document: dict[str, Any], *, location: str, now: datetime | None = None) -> ImportResult:
    """Import a JSON Feed; `now` (the fetch time) dates the items that carry no date."""
    items = document.get("items")
    if not isinstance(items, list):
        raise SourceError(location, "JSON Feed without an items list")
    title = _str(document.get("title")) or clean(location.rsplit("/", 1)[-1])
    home = safe_url(_str(document.get("home_page_url")))
    own = safe_url(_str(document.get("feed_url")))
    source = Source(
        id=source_id_from_title(title, location),
        title=title,
        url=home or own,
        kind=SourceKind.JSON_FEED,
    )
    feed_authors = _authors(document)
    ids = PostIds(source.id)
    seen_at = now or datetime.now(UTC)
    posts: list[Post] = []
    undated = unusable = 0
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            unusable += 1
            continue
        modified = parse_iso(item.get("date_modified"))
        published = parse_iso(item.get("date_published")) or modified
        dated = published is not None
        published = published or first_seen(seen_at, position)
        post = _post(item, source, ids, published, modified, feed_authors, dated=dated)
        if post is None:
            unusable += 1
            continue
        posts.append(post)
        undated += not dated
    warnings: list[str] = []
    if undated:
        warnings.append(undated_warning(undated))
    if unusable:
        warnings.append(f"skipped {unusable} post(s) without a title or text")
    if items and not posts:
        raise SourceError(location, f"no usable posts ({'; '.join(warnings)})")
    return ImportResult(source=source, posts=tuple(posts), warnings=tuple(warnings))


def _str(value: object) -> str:
    return clean(value) if isinstance(value, str) else ""


def _authors(holder: dict[str, Any]) -> tuple[str, ...]:
    """`authors` (1.1) or `author` (1.0): objects with a name."""
    raw = holder.get("authors")
    if not isinstance(raw, list):
        raw = [holder.get("author")]
    names = [_str(a.get("name")) for a in raw if isinstance(a, dict)]
    return tuple(dict.fromkeys(n for n in names if n))


def _post(
    item: dict[str, Any],
    source: Source,
    ids: PostIds,
    published: datetime,
    modified: datetime | None,
    feed_authors: tuple[str, ...],
    *,
    dated: bool,
) -> Post | None:
    permalink = safe_url(_str(item.get("url")), source.url)
    images: list[Image] = []
    html = item.get("content_html")
    text = item.get("content_text")
    if isinstance(html, str) and html.strip():
        body, found = html_content(html, permalink or source.url)
        images.extend(Image(url=i.url, caption=i.caption) for i in found)
    elif isinstance(text, str):
        body = paragraphs_of_text(text)
    else:
        body = paragraphs_of_text(_str(item.get("summary")))
    title = _str(item.get("title")) or title_from_body(body)
    if not title:
        return None
    for key in ("image", "banner_image"):
        url = safe_url(_str(item.get(key)), permalink)
        if url:
            images.insert(0, Image(url=url))
    for attachment in item.get("attachments") or []:
        if isinstance(attachment, dict) and str(attachment.get("mime_type", "")).startswith(
            "image/"
        ):
            url = safe_url(_str(attachment.get("url")), permalink)
            if url:
                images.append(Image(url=url, caption=_str(attachment.get("title"))))
    native = item.get("id")
    native_id = str(native) if isinstance(native, str | int) and str(native).strip() else None
    native_id = native_id or permalink
    if native_id is None and not dated:
        native_id = f"title-{short_hash(title)}"  # its stand-in time changes; its title does not
    authors = _authors(item) or feed_authors
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
        time_estimated=not dated,
    )
