"""What the dashboard's pages show, as plain values built from the store's (no HTML here).

The templates (bot/web/templates/) turn these into HTML with Jinja2's autoescape on: every text
from a feed, a post or a remote answer arrives there as a plain string and is escaped there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from bot.platforms import BY_NAME, mask_address
from bot.redact import clean
from storage.models import Highlighted, Post, Subscription
from storage.values import DeadDelivery, Feed
from storage.values import feed_state as stored_feed_state

HOURS = 24
SPARK_WIDTH = 120
SPARK_HEIGHT = 24


@dataclass(frozen=True, slots=True)
class Sparkline:
    counts: tuple[int, ...]
    """Posts per hour, oldest hour first, the current hour last."""
    points: str
    """The SVG polyline's points, in a SPARK_WIDTH × SPARK_HEIGHT box."""

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def last_hour(self) -> int:
        return self.counts[-1] if self.counts else 0

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


def hourly_counts(times: Iterable[datetime], now: datetime, hours: int = HOURS) -> tuple[int, ...]:
    """How many of `times` fall in each of the last `hours` hours before `now`, oldest first."""
    counts = [0] * hours
    for at in times:
        age = now - at
        if timedelta(0) <= age < timedelta(hours=hours):
            counts[hours - 1 - int(age.total_seconds() // 3600)] += 1
    return tuple(counts)


def sparkline(counts: Sequence[int]) -> Sparkline:
    """A line through the counts; a flat line along the bottom when there is nothing to show."""
    peak = max(counts, default=0)
    step = SPARK_WIDTH / max(len(counts) - 1, 1)
    usable = SPARK_HEIGHT - 2  # a pixel of margin keeps the stroke inside the box
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 1 - (usable * c / peak if peak else 0):.1f}"
        for i, c in enumerate(counts)
    )
    return Sparkline(tuple(counts), points)


@dataclass(frozen=True, slots=True)
class BlogRow:
    feed: Feed
    shown_location: str
    state: str
    """"active", "paused", "failing" or "waiting" (not fetched yet)."""
    error: str | None
    spark: Sparkline


def feed_state(feed: Feed) -> str:
    """As `livedesk sources` says (paused, failing, active), and "waiting" before a first fetch."""
    state = stored_feed_state(feed)
    return "waiting" if state == "active" and feed.last_fetch_at is None else state


def blog_row(feed: Feed, published: Iterable[datetime], now: datetime) -> BlogRow:
    return BlogRow(
        feed=feed,
        shown_location=clean(feed.location),
        state=feed_state(feed),
        error=clean(feed.last_error) if feed.last_error else None,
        spark=sparkline(hourly_counts(published, now)),
    )


def safe_link(url: str | None) -> str | None:
    """An http(s) URL to link to; anything else (`javascript:`, `data:`) is not a link."""
    if not url:
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


@dataclass(frozen=True, slots=True)
class PostLine:
    number: int | None
    title: str
    first: str
    source: str
    at: str
    link: str | None


def post_line(post: Post, source_title: str, zone: ZoneInfo) -> PostLine:
    first = next((p for p in post.body if p.strip()), "")
    if len(first) > 280:
        first = first[:279].rstrip() + "…"
    return PostLine(
        number=post.number,
        title=post.title,
        first=first,
        source=source_title,
        at=when(post.published_at, zone),
        link=safe_link(post.permalink),
    )


def when(at: datetime | None, zone: ZoneInfo) -> str:
    if at is None:
        return "never"
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def segments(text: Highlighted) -> list[tuple[str, bool]]:
    """(text, is a hit) runs for the template, which escapes each and marks the hits."""
    return [(part, hit) for part, hit in text.segments if part]


@dataclass(frozen=True, slots=True)
class SubscriptionLine:
    id: int
    where: str
    thread: str | None
    blog: str
    query: str | None
    edit_policy: str
    state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class PlatformGroup:
    label: str
    lines: list[SubscriptionLine]


def subscription_groups(
    subscriptions: Iterable[Subscription], blog_titles: dict[str, str]
) -> list[PlatformGroup]:
    groups: dict[str, list[SubscriptionLine]] = {}
    for sub in subscriptions:
        groups.setdefault(sub.target.platform, []).append(
            SubscriptionLine(
                id=sub.id,
                where=mask_address(sub.target),
                thread=sub.target.thread,
                blog=blog_titles.get(sub.source_id, sub.source_id)
                if sub.source_id
                else "every blog",
                query=sub.query,
                edit_policy=sub.edit_policy.value,
                state=sub.state.value,
                reason=clean(sub.reason) if sub.reason else None,
            )
        )
    return [
        PlatformGroup(BY_NAME[name].label if name in BY_NAME else name, lines)
        for name, lines in sorted(groups.items())
    ]


@dataclass(frozen=True, slots=True)
class DeadLine:
    id: int
    where: str
    post_title: str
    event: str
    attempts: int
    reason: str
    created_at: str


def stored_time(text: str, zone: ZoneInfo) -> str:
    """A time the store gave as ISO 8601 text, shown as every other time on the page."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when(at if at.tzinfo else at.replace(tzinfo=UTC), zone)


def dead_line(dead: DeadDelivery, zone: ZoneInfo) -> DeadLine:
    return DeadLine(
        id=dead.id,
        where=f"{BY_NAME[p].label if (p := dead.target.platform) in BY_NAME else p}: "
        f"{mask_address(dead.target)}",
        post_title=dead.post_title,
        event=dead.event,
        attempts=dead.attempts,
        reason=clean(dead.last_error) if dead.last_error else "no reason recorded",
        created_at=stored_time(dead.created_at, zone),
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
