"""Length limits shared by every adapter: cut cleanly on a word, never mid-character."""

from __future__ import annotations

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
