"""What every importer shares: the error type, post ids, dates, names and derived titles.

Post ids: `<source id>:<the document's own id>` when the post carries one (RSS guid, Atom id, JSON Feed
id, JSON-LD @id/url, else its link); otherwise `<source id>:<published minute, UTC>-<n>`, where n counts
posts published in the same minute in page order. An edited body or title therefore keeps its id.
A feed item with neither an id, a link nor a date of its own gets `<source id>:title-<hash of title>`.

A feed item with no date at all (nor a feed date) is dated when it was first seen, marked
`time_estimated`; the store keeps that first time on every later import.

Dates (`settle_dates`, applied to every document): a date before 1900 (a year-999 typo, a `0001-01-01`
placeholder) or more than a day after the document was fetched is implausible. The post keeps its id
(ids use the document's own date, so they stay stable) but is dated when it was first seen, marked
`time_estimated`, with a warning; an implausible modification date is dropped. A date that cannot even
be converted to UTC (`9999-12-31T23:59:59-05:00`, `0001-01-01T00:00:00+01:00`) is refused with its
post, with a warning naming the post; a document left with no posts is refused in one line.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from bot.models import Image, ImportResult, Post
from bot.redact import printable
from bot.sources.text import clean

EARLIEST_PLAUSIBLE = datetime(1900, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
# What the date readers return for a date that exists in its own zone but not in UTC (or not at all):
# a marker, so the post carrying it is refused by `settle_dates` and the rest of the document imports.
OUT_OF_RANGE = datetime.max.replace(tzinfo=UTC)


class SourceError(Exception):
    """A document or location that cannot be imported; `str()` is one line a user can read."""

    def __init__(self, location: str, problem: str) -> None:
        self.location = location
        self.problem = problem
        super().__init__(f"{_one_line(location, 200)}: {_one_line(problem, 300)}")


def _one_line(text: str, limit: int) -> str:
    line = " ".join(printable(text).split())  # a reason phrase may carry terminal escapes
    return line if len(line) <= limit else line[: limit - 1] + "…"


class PostIds:
    """Hands out ids unique within one document, stable across imports of the same blog."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._seen: Counter[str] = Counter()

    def _unique(self, key: str) -> str:
        self._seen[key] += 1
        count = self._seen[key]
        return key if count == 1 else f"{key}#{count}"

    def own(self, native_id: str) -> str:
        return self._unique(f"{self.source_id}:{' '.join(native_id.split())}")

    def by_time(self, published_at: datetime) -> str:
        minute = published_at.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
        key = f"{self.source_id}:{minute}"
        self._seen[key] += 1
        return f"{key}-{self._seen[key]}"


@contextmanager
def unreadable_as_source_error(location: str) -> Iterator[None]:
    """Any failure of a reader of the document at `location` as `SourceError`, one line: a lone
    surrogate, markup the stdlib HTML parser asserts on, a date that overflows, a malformed
    structure the format checks let through."""
    try:
        yield
    except SourceError:
        raise
    except RecursionError:
        raise SourceError(location, "document is nested too deeply to read") from None
    except UnicodeError:
        # feedparser turns `&#xD800;` into a character it then cannot encode
        raise SourceError(
            location, "text with a lone surrogate (not a Unicode character)"
        ) from None
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        AssertionError,
        OverflowError,
        IndexError,
    ) as error:
        raise SourceError(
            location, f"unreadable document ({type(error).__name__}: {error})"
        ) from None


def from_struct_time(value: time.struct_time | None) -> datetime | None:
    """feedparser's UTC struct_time to an aware datetime; None for a missing date.

    A date outside what a datetime holds (year 0, year 10000 after feedparser's own UTC conversion)
    is `OUT_OF_RANGE`."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return OUT_OF_RANGE


def first_seen(seen_at: datetime, position: int) -> datetime:
    """The stand-in time of an undated post: when it was first seen (`seen_at`, the fetch time).

    Feeds list their newest post first, so each later place is a microsecond older: the posts keep
    the document's order when sorted by time. The store keeps the time of the first import.
    """
    return seen_at.astimezone(UTC) - timedelta(microseconds=position)


def undated_warning(count: int) -> str:
    if count == 1:
        return "1 post carries no date; using the time it was first seen"
    return f"{count} posts carry no date; using the time they were first seen"


def parse_iso(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 date (JSON Feed, JSON-LD) to aware UTC; naive dates are taken as UTC.

    None for no date or an unreadable one; `OUT_OF_RANGE` for one that overflows in UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return OUT_OF_RANGE


def plausible(value: datetime, seen_at: datetime) -> bool:
    """Whether a post could really have been published (or edited) at `value`; see the module doc."""
    return EARLIEST_PLAUSIBLE <= value <= seen_at + FUTURE_SLACK and value != OUT_OF_RANGE


def day_of(value: datetime) -> str:
    """`0999-01-01`: always four digits, whatever the platform's strftime does with small years."""
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def settle_dates(result: ImportResult, *, location: str, seen_at: datetime) -> ImportResult:
    """Apply the shared rule for dates to an imported document (see the module doc).

    Raises `SourceError` when every post of a document that had posts was refused."""
    if not result.posts:
        return result
    seen_at = seen_at.astimezone(UTC)
    posts: list[Post] = []
    refused: list[str] = []
    implausible: list[datetime] = []
    changed = False
    for position, post in enumerate(result.posts):
        if post.published_at == OUT_OF_RANGE:
            refused.append(post.title)
            continue
        changes: dict[str, object] = {}
        if post.updated_at is not None and not plausible(post.updated_at, seen_at):
            changes["updated_at"] = None
        if not plausible(post.published_at, seen_at):
            implausible.append(post.published_at)
            changes["published_at"] = first_seen(seen_at, position)
            changes["time_estimated"] = True
        changed = changed or bool(changes)
        posts.append(post.model_copy(update=changes) if changes else post)
    if not changed and not refused:
        return result
    warnings = list(result.warnings)
    if implausible:
        example = day_of(implausible[0])
        if len(implausible) == 1:
            warnings.append(
                f"1 post carries an implausible date ({example}); using the time it was first seen"
            )
        else:
            warnings.append(
                f"{len(implausible)} posts carry implausible dates (e.g. {example}); "
                "using the time they were first seen"
            )
    if refused:
        names = ", ".join(f'"{_one_line(title, 60)}"' for title in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        warnings.append(
            f"refused {len(refused)} post(s) whose date cannot be converted to UTC: {names}{more}"
        )
    if not posts:
        raise SourceError(location, f"no usable posts ({'; '.join(warnings)})")
    return result.model_copy(update={"posts": tuple(posts), "warnings": tuple(warnings)})


_NAME_SPLIT = re.compile(r"\s*(?:,\s*and\s+|,\s*|\s+and\s+|\s*&\s*)\s*")


def split_names(text: str) -> tuple[str, ...]:
    """`A, B and C` to `("A", "B", "C")`."""
    return tuple(name for name in (clean(n) for n in _NAME_SPLIT.split(text)) if name)


def title_from_body(paragraphs: list[str], words: int = 12) -> str:
    """A title for a post that has none: the first words of its text."""
    if not paragraphs:
        return ""
    tokens = paragraphs[0].split()
    title = " ".join(tokens[:words])
    return title + "…" if len(tokens) > words else title


def dedupe_images(images: list[Image]) -> tuple[Image, ...]:
    """Keep the first image of each URL (or caption, for images without one)."""
    seen: set[str] = set()
    out: list[Image] = []
    for image in images:
        key = image.url or f"caption:{image.caption}"
        if key not in seen:
            seen.add(key)
            out.append(image)
    return tuple(out)


def join_names(names: tuple[str, ...]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def entry_post(
    *,
    post_id: str,
    source_id: str,
    published: datetime,
    modified: datetime | None,
    title: str,
    authors: tuple[str, ...],
    body: list[str],
    images: list[Image],
    permalink: str | None,
    time_estimated: bool = False,
) -> Post:
    """A feed entry (RSS/Atom, JSON Feed, JSON-LD update) as a post, by the rules they share."""
    return Post(
        id=post_id,
        source_id=source_id,
        published_at=published,
        updated_at=modified if modified and modified != published else None,
        title=title,
        byline=f"By {join_names(authors)}" if authors else None,
        authors=authors,
        body=tuple(body),
        images=dedupe_images(images),
        permalink=permalink,
        time_estimated=time_estimated,
    )
