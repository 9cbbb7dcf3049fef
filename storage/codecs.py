"""Row codecs: how the store's rows read and write as the models, shared by every module above.

Times are fixed-width ISO 8601 text in UTC (`storage.models.utc_text`), so they sort as text; JSON
columns hold lists and objects; the delivery states and events are the words the rows hold.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from storage.index_text import joined_words
from storage.models import (
    EditPolicy,
    Image,
    Post,
    Source,
    SourceKind,
    Subscription,
    SubscriptionState,
    Target,
    parse_utc_text,
    utc_text,
)

# Delivery states.
PENDING = "pending"
SENT = "sent"
DEAD = "dead"
SKIPPED = "skipped"

# Delivery events: the post store's two, and the greeting of a new subscription.
CREATED = "created"
UPDATED = "updated"
BACKFILL = "backfill"


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_db_time(value: datetime) -> str:
    """ISO 8601 in UTC with a fixed width, so times sort as text (`storage.models.utc_text`)."""
    return utc_text(value)


def from_db_time(value: str) -> datetime:
    return parse_utc_text(value)


def opt_time(value: str | None) -> datetime | None:
    return from_db_time(value) if value else None


def images_json(images: Iterable[Image]) -> str:
    return json.dumps([i.model_dump() for i in images], ensure_ascii=False)


def post_from_row(row: Any) -> Post:
    """Build a Post from a `posts` row (or a `post_versions` row joined with its post's fixed fields)."""
    body = row["body"]
    return Post(
        id=row["id"],
        source_id=row["source_id"],
        published_at=from_db_time(row["published_at"]),
        updated_at=opt_time(row["updated_at"]),
        title=row["title"],
        byline=row["byline"],
        authors=tuple(json.loads(row["authors"])),
        location=row["location"],
        body=tuple(body.split("\n\n")) if body else (),
        images=tuple(Image(**i) for i in json.loads(row["images"])),
        background=row["background"],
        permalink=row["permalink"],
        version=row["version"],
        number=row["rowid"] if "rowid" in row.keys() else None,  # noqa: SIM118 (Row iterates values)
        time_estimated=bool(row["time_estimated"]),
    )


POST_COLUMNS = (
    "p.rowid AS rowid, p.id, p.source_id, p.published_at, p.updated_at, p.title, p.byline, "
    "p.authors, p.location, p.body, p.images, p.background, p.permalink, p.version, p.time_estimated"
)


def post_row(post: Post, digest: str, version: int, now: str) -> tuple[Any, ...]:
    """A post as a `posts` row: (id, source_id, published_at, updated_at, title, byline, authors,
    location, body, images, background, permalink, content_hash, version, recorded_at)."""
    return (
        post.id,
        post.source_id,
        to_db_time(post.published_at),
        to_db_time(post.updated_at) if post.updated_at else None,
        post.title,
        post.byline,
        json.dumps(list(post.authors), ensure_ascii=False),
        post.location,
        "\n\n".join(post.body),
        images_json(post.images),
        post.background,
        post.permalink,
        digest,
        version,
        now,
    )


def post_joined_words(post: Post) -> str | None:
    """The joined forms of the post's dotted and hyphenated words, for the search index."""
    texts = [post.title, post.byline, *post.body, post.background, post.location]
    for image in post.images:
        texts += [image.caption, image.credit]
    return joined_words(texts) or None


def source_from_row(row: Any) -> Source:
    """Build a Source from a `sources` row (id, title, url, kind)."""
    return Source(id=row["id"], title=row["title"], url=row["url"], kind=SourceKind(row["kind"]))


WORD = re.compile(r"[^\W_]+")
"""A word of a blog's title, as `find_sources` matches typed words against it."""


def fold(text: str) -> str:
    """Lowercase without accents, spaces collapsed: how a typed blog name is compared."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def has_words(title_words: list[str], wanted: list[str]) -> bool:
    """Each wanted word begins a word of the title."""
    return all(any(word.startswith(w) for word in title_words) for w in wanted)


def like_escape(text: str) -> str:
    """`text` as a literal in a `LIKE … ESCAPE '\\'` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


SUB_COLUMNS = (
    "id, platform, address, thread, target_kind, options, source_id, query, edit_policy, "
    "created_by, created_at, state, reason"
)


def subscription_from_row(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        target=Target(
            platform=row["platform"],
            address=row["address"],
            thread=row["thread"],
            kind=row["target_kind"],
            options=json.loads(row["options"]),
        ),
        source_id=row["source_id"],
        query=row["query"],
        edit_policy=EditPolicy(row["edit_policy"]),
        created_by=row["created_by"],
        created_at=from_db_time(row["created_at"]),
        state=SubscriptionState(row["state"]),
        reason=row["reason"],
    )


EDIT_POLICIES = {policy.value: policy for policy in EditPolicy}

_target_cache: dict[tuple[str, str, str | None, str, str], Target] = {}


def target_from_row(
    platform: str, address: str, thread: str | None, kind: Any, options: str
) -> Target:
    key = (platform, address, thread, kind, options)
    found = _target_cache.get(key)
    if found is None:
        if len(_target_cache) > 20_000:
            _target_cache.clear()
        found = Target(
            platform=platform,
            address=address,
            thread=thread,
            kind=kind,
            options=json.loads(options),
        )
        _target_cache[key] = found
    return found


def newest_created(rows: list[tuple[Any, ...]], count: int) -> list[tuple[Any, ...]]:
    """Rows (in publication order) keeping only each subscription's newest `count` new posts."""
    kept: list[tuple[Any, ...]] = []
    per_subscription: dict[int, int] = {}
    for row in reversed(rows):
        if row[3] == CREATED:
            seen = per_subscription.get(row[0], 0)
            per_subscription[row[0]] = seen + 1
            if seen >= count:
                continue
        kept.append(row)
    kept.reverse()
    return kept
