"""Neutral, frozen types that cross module boundaries.

No platform SDK object ever leaves its adapter: sources produce `Post`s, the store hands out `Post`s and
`Subscription`s, handlers take a `Request` and answer a `Reply`, and adapters render `Card`s.
"""

from __future__ import annotations

from enum import StrEnum

from storage.models import (
    EditPolicy,
    EventKind,
    Frozen,
    Highlighted,
    Image,
    ImportResult,
    Post,
    PostEvent,
    PostVersion,
    Segment,
    Source,
    SourceKind,
    Subscription,
    SubscriptionState,
    Target,
    TargetKind,
    UtcDateTime,
)

__all__ = [
    "Button",
    "Card",
    "ChatKind",
    "EditPolicy",
    "EventKind",
    "Frozen",
    "Highlighted",
    "Image",
    "ImportResult",
    "Post",
    "PostEvent",
    "PostVersion",
    "Reply",
    "Request",
    "Segment",
    "Source",
    "SourceKind",
    "Subscription",
    "SubscriptionState",
    "Target",
    "TargetKind",
    "UtcDateTime",
]


class Card(Frozen):
    """A post made ready for a chat: what every adapter renders in its own markup."""

    post_id: str
    number: int | None = None  # the post's short number in the store, for `/post <number>`
    title: str
    url: str | None = None
    published_at: UtcDateTime
    time_estimated: bool = False  # the feed gave no time: show "about 10:55"
    updated_at: UtcDateTime | None = None
    byline: str | None = None
    location: str | None = None
    body: tuple[str, ...] = ()
    images: tuple[Image, ...] = ()
    background: str | None = None
    source_title: str | None = None
    snippet: Highlighted | None = None  # a search hit's excerpt around the match
    matched_terms: tuple[str, ...] = ()  # keyword alert: the subscription's terms that matched
    version: int = 1
    is_update: bool = False  # an "Updated:" follow-up of a post sent before

    @property
    def ref(self) -> str:
        """What a reader types to open this post: its short number when known, else its id."""
        return str(self.number) if self.number is not None else self.post_id


# --- commands ----------------------------------------------------------------------------------------


class ChatKind(StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    CHANNEL = "channel"
    TERMINAL = "terminal"


class Request(Frozen):
    """A command from any platform, in neutral form."""

    platform: str
    command: str
    args: tuple[str, ...] = ()
    user_id: str
    user_name: str | None = None
    target: Target
    chat_kind: ChatKind = ChatKind.PRIVATE
    is_admin: bool = False  # the user administers this chat (a private chat is its own admin)


class Button(Frozen):
    label: str
    command: str  # the command line the button runs, e.g. "search sanctions 2"


class Reply(Frozen):
    """A handler's answer, in neutral form: text lines, post cards, and buttons."""

    text: str = ""
    cards: tuple[Card, ...] = ()
    buttons: tuple[Button, ...] = ()
    # only the asker needs to see it (queries); subscription changes are public
    ephemeral: bool = True
    error: bool = False
