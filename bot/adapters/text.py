"""Length limits shared by every adapter: cut cleanly on a word, never mid-character."""

from __future__ import annotations

from urllib.parse import urlsplit

ELLIPSIS = "…"


def cut(text: str, limit: int, *, suffix: str = ELLIPSIS) -> str:
    """`text` if it fits in `limit` characters, else cut at the last word boundary with `suffix`."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    if len(suffix) >= limit:
        return suffix[:limit]
    room = limit - len(suffix)
    head = text[:room]
    if text[room].isspace():
        return head.rstrip() + suffix
    boundary = max(head.rfind(" "), head.rfind("\n"))
    if boundary >= room // 2:
        head = head[:boundary]
    return head.rstrip() + suffix


def fits(parts: list[str], limit: int) -> bool:
    return sum(len(p) for p in parts) <= limit


def link_url(url: str | None, *, max_length: int | None = None) -> str | None:
    """The URL if it may become a link in a chat (http/https with a host, within length), else None.

    `javascript:`, `data:` and relative URLs never become links, whatever a feed says."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if max_length is not None and len(url) > max_length:
        return None
    return url
