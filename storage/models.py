"""The store's neutral, frozen types: blogs, posts, their versions and events, subscriptions, targets.

They live in `storage/` because the store defines them and imports nothing from `bot/`; `bot.models`
re-exports them beside the chat-facing types.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_require_utc)]
"""An aware datetime, always held in UTC; stored as `utc_text()`."""

_UTC_TEXT = re.compile(r"^(\d{1,4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z$")


def utc_text(value: datetime) -> str:
    """ISO 8601 in UTC with a fixed width (`0999-01-01T10:00:00.000000Z`), so times sort as text.

    The year always has four digits: strftime's `%Y` writes `999` on some platforms, which sorts
    after every real year."""
    value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


def parse_utc_text(text: str) -> datetime:
    """The inverse of `utc_text`; also reads the short years older versions wrote (`999-01-01…`)
    and any other ISO 8601 time (naive ones are UTC)."""
    match = _UTC_TEXT.match(text)
    if match is None:
        parsed = datetime.fromisoformat(text)
        return _require_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    year, month, day, hour, minute, second, fraction = match.groups()
    return datetime(
        max(1, int(year)),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        int((fraction or "0").ljust(6, "0")),
        tzinfo=UTC,
    )


class Frozen(BaseModel):
    # defer_build: a model's validator is built when it is first used, not when this module is
    # imported (~3 ms a model): `livedesk latest` builds the few it shows, not all of them.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class SourceKind(StrEnum):
    PAGE_TEXT = "page-text"
    RSS = "rss"
    ATOM = "atom"
    JSON_FEED = "json-feed"
    JSON_LD = "json-ld"


class Source(Frozen):
    """One live blog."""

    id: str
    title: str
    url: str | None = None
    kind: SourceKind


class Image(Frozen):
    caption: str = ""
    credit: str | None = None
    url: str | None = None


class Post(Frozen):
    """One post of a live blog, as the importers read it and the store keeps it."""

    id: str
    source_id: str
    published_at: UtcDateTime
    updated_at: UtcDateTime | None = None
    title: str
    byline: str | None = None
    authors: tuple[str, ...] = ()
    location: str | None = None
    body: tuple[str, ...] = ()
    images: tuple[Image, ...] = ()
    background: str | None = None
    permalink: str | None = None
    version: int = 1
    number: int | None = None  # the store's short number for the post (`/post 42`); not content
    # The document gave no time of its own: published_at is a stand-in (the feed's date, or when
    # Livedesk first saw the post); the store keeps the first one it stored, and the flag with it
    # (once a post has a time of its own, it keeps it). Not content: no edit of its own.
    time_estimated: bool = False

    @property
    def content_hash(self) -> str:
        """Hash of what a reader sees; a change here is an edit."""
        payload = json.dumps(
            [
                self.title,
                self.byline,
                list(self.authors),
                self.location,
                list(self.body),
                [[i.caption, i.credit, i.url] for i in self.images],
                self.background,
                self.permalink,
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def text(self) -> str:
        """The body as plain text, paragraphs separated by blank lines."""
        return "\n\n".join(self.body)


class ImportResult(Frozen):
    """What an importer read from one document."""

    source: Source
    posts: tuple[Post, ...]
    warnings: tuple[str, ...] = ()


Completer = Callable[[Post], Post]
"""The whole post that a head stands for (see `DeferredImport.complete`)."""


class DeferredImport(ImportResult):
    """An imported document whose posts' text is read while the store writes them.

    Storing a big feed is SQLite's (or PostgreSQL's) work, most of it outside the GIL; reading it
    is Python's. This lets the two overlap: `posts` are heads, holding what ordering, numbering and
    matching ids need (id, blog, dates, title), and `complete(head)` gives the whole post, its
    text, pictures, byline and link read from the document then. The store completes each post
    just before it makes its row (storage.posts, storage.pg_posts), in the order it stores them,
    so the next chunk is read while the last one is written. Any other reader uses `completed()`.

    Completing never changes what the head says: the store may have renamed the blog, the date
    rules may have re-dated the post, and the head's id, blog and dates win. A document that turns
    out unreadable fails with its reader's one-line error, inside the transaction storing it."""

    _completer: Completer = PrivateAttr()

    @classmethod
    def of(cls, result: ImportResult, completer: Completer) -> DeferredImport:
        """`result`, whose posts are heads `completer` turns into whole posts."""
        deferred = cls(source=result.source, posts=result.posts, warnings=result.warnings)
        deferred._completer = completer
        return deferred

    def complete(self, head: Post) -> Post:
        """The whole post of `head` (one of `posts`, or a copy the store renamed or re-dated)."""
        whole = self._completer(head)
        if (whole.id, whole.source_id, whole.published_at, whole.updated_at) == (
            head.id,
            head.source_id,
            head.published_at,
            head.updated_at,
        ) and whole.time_estimated == head.time_estimated:
            return whole  # neither renamed nor re-dated: the usual case, and no copy
        return whole.model_copy(
            update={
                "id": head.id,
                "source_id": head.source_id,
                "published_at": head.published_at,
                "updated_at": head.updated_at,
                "time_estimated": head.time_estimated,
            }
        )

    def completed(self) -> ImportResult:
        """The document with every post whole, as a reader that does not defer makes it."""
        return ImportResult(
            source=self.source,
            posts=tuple(self.complete(post) for post in self.posts),
            warnings=self.warnings,
        )


def completer_of(result: ImportResult) -> Completer | None:
    """How to complete the posts of `result`; None when they are whole already."""
    return result.complete if isinstance(result, DeferredImport) else None


class EventKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"


class PostEvent(Frozen):
    """What the store decided was new: a post created, or an edit of one (version + 1)."""

    kind: EventKind
    post_id: str
    version: int
    title: str


class PostVersion(Frozen):
    version: int
    recorded_at: UtcDateTime
    post: Post


# --- highlighted text -------------------------------------------------------------------------------

Segment = tuple[str, bool]
"""A run of text and whether it is a search match to highlight."""


SnippetSource = Literal["text", "caption", "background"]
"""Where a search snippet comes from: the post's text, an image caption, or its background."""

SNIPPET_LABELS: dict[str, str] = {"caption": "📷", "background": "Background:"}


class Highlighted(Frozen):
    """Text with neutral highlight markers; each adapter renders the marked runs its own way."""

    segments: tuple[Segment, ...] = ()
    where: SnippetSource = "text"
    """A search snippet that matched only a caption or the background says so: see `label`."""

    @property
    def label(self) -> str | None:
        """What an adapter shows before a snippet that is not from the text: '📷', 'Background:'."""
        return SNIPPET_LABELS.get(self.where)

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.segments)

    @classmethod
    def of(cls, text: str) -> Highlighted:
        return cls(segments=((text, False),) if text else ())


# --- delivery ----------------------------------------------------------------------------------------


class EditPolicy(StrEnum):
    EDIT = "edit"  # edit the sent message in place
    FOLLOW_UP = "follow-up"  # send an "Updated:" message
    IGNORE = "ignore"


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


TargetKind = Literal["private", "group", "channel", "webhook", "terminal"]


class Target(Frozen):
    """Where a platform delivers: a chat, a channel, a webhook; with an optional thread or topic."""

    platform: str
    address: str
    thread: str | None = None
    kind: TargetKind = "channel"
    options: dict[str, str] = Field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.platform, self.address, self.thread))


class Subscription(Frozen):
    id: int
    target: Target
    source_id: str | None = None  # None: every blog
    query: str | None = None  # keyword filter in the /search language
    edit_policy: EditPolicy = EditPolicy.EDIT
    created_by: str
    created_at: UtcDateTime
    state: SubscriptionState = SubscriptionState.ACTIVE
    reason: str | None = None
