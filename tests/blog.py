"""A small invented live blog shared by the platform tests: one source and eleven posts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.models import Post, Source, SourceKind

KYIV = ZoneInfo("Europe/Kyiv")
T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
BLOG = Source(id="kyiv-live", title="Kyiv live", kind=SourceKind.PAGE_TEXT)


def post(n: int, title: str, *body: str, **extra: object) -> Post:
    return Post.model_validate(
        {
            "id": f"kyiv-{n:03d}",
            "source_id": BLOG.id,
            "published_at": T0 + timedelta(minutes=n),
            "title": title,
            "body": body or (f"Routine update number {n}.",),
            "permalink": f"https://news.example/live/kyiv-{n:03d}",
            **extra,
        }
    )


POSTS = [
    post(1, "Blinken meets Lavrov in Geneva", "Talks on sanctions and troops."),
    post(2, "Sanctions package outlined", "The EU outlines new sanctions on banks."),
    post(3, "Troops near the border", "Satellite images show troops."),
    *[post(n, f"Update {n}", f"Routine update number {n} on sanctions.") for n in range(4, 12)],
]
