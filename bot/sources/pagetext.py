"""Live-blog pages saved as text (what a browser's "select all, copy" gives for a CNN-style live blog).

The layout: the blog title, a `By A, B and C, CNN` line, `Updated …`, `14 Posts`, some page chrome; then
posts, each opening with a time line (`10:55 a.m. ET, January 21, 2022`), then a title, an optional byline
(`From CNN's Katya Krebs in Kyiv`, `… at City Hall`), paragraphs, image captions (printed twice, the second time with the
credit in parentheses), and `Some background:` notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from bot.models import Image, ImportResult, Post, Source, SourceKind
from bot.sources.common import OUT_OF_RANGE, PostIds, SourceError, day_of, split_names
from bot.sources.text import clean, source_id_from_title

EASTERN = ZoneInfo("America/New_York")
_FIXED_ZONES = {"EDT": timezone(timedelta(hours=-4)), "EST": timezone(timedelta(hours=-5))}
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip

TIME_LINE = re.compile(
    r"^(?:(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<meridiem>[ap])\.?\s?m\.?|(?P<noon>noon|midnight))"
    r"\s+(?P<zone>ET|EDT|EST)\s*,?\s+"
    r"(?P<month>[A-Za-z]+)\.?\s+(?P<day>\d{1,2}),?\s+(?P<year>\d{4})$",
    re.IGNORECASE,
)
_BYLINE = re.compile(
    r"^(?:(?:From|Reporting from)\s+(?P<org>[\w.&\- ]{1,40}?)[’']s?\s+"
    r"|(?:Analysis|Reporting|Written|Updated)\s+by\s+(?:(?P<org2>[\w.&\- ]{1,40}?)[’']s?\s+)?"
    r"|By\s+(?:(?P<org3>[\w.&\- ]{1,40}?)[’']s?\s+)?)"
    r"(?P<names>.+)$"
)
# "Katya Krebs in Kyiv", "Petra Vance at City Hall", "Kevin Liptak at the White House"
_IN_PLACE = re.compile(r"^(?P<name>.+?)\s+(?:in|at)\s+(?:the\s+)?(?P<place>[A-Z][^,]*)$")
_CREDITED = re.compile(r"^(?P<caption>.+?)\s*\((?P<credit>[^()]+)\)$")
_POST_COUNT = re.compile(r"^(?P<count>[\d,]+)\s+Posts?$", re.IGNORECASE)
_BACKGROUND = re.compile(r"^Some background\s*:\s*(?P<rest>.*)$", re.IGNORECASE)


def looks_like_page_text(text: str) -> bool:
    """At least one post time line near the top of the document."""
    return any(TIME_LINE.match(clean(line)) for line in text.splitlines()[:400])


def parse_time_line(line: str) -> datetime | None:
    """`10:55 a.m. ET, January 21, 2022` to aware UTC (ET follows New York's daylight saving).

    `OUT_OF_RANGE` for a real time line whose time does not exist in UTC (late on December 31, 9999)."""
    match = TIME_LINE.match(line)
    if match is None:
        return None
    month = _MONTHS.get(match["month"].lower())
    if month is None:
        return None
    if match["noon"]:
        hour, minute = (12 if match["noon"].lower() == "noon" else 0), 0
    else:
        hour, minute = int(match["hour"]), int(match["minute"] or 0)
        if not 1 <= hour <= 12 or minute > 59:
            return None
        hour = hour % 12 + (12 if match["meridiem"].lower() == "p" else 0)
    zone = _FIXED_ZONES.get(match["zone"].upper(), EASTERN)
    try:
        local = datetime(int(match["year"]), month, int(match["day"]), hour, minute, tzinfo=zone)
    except ValueError:
        return None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        return OUT_OF_RANGE


@dataclass
class Byline:
    text: str
    authors: tuple[str, ...]
    location: str | None


def parse_byline(line: str) -> Byline | None:
    """`From CNN's Katya Krebs in Kyiv` to its authors and place; None for an ordinary paragraph."""
    if len(line) > 160 or (line.endswith((".", "!", "?", ":")) and not line.endswith(" Jr.")):
        return None
    match = _BYLINE.match(line)
    if match is None:
        return None
    names = match["names"].strip()
    location: str | None = None
    authors: list[str] = []
    for name in split_names(names):
        place = _IN_PLACE.match(name)
        if place is not None:
            name = place["name"]
            location = location or place["place"].strip()
        authors.append(name)
    if not authors or any(len(a.split()) > 6 for a in authors):
        return None  # a sentence, not a list of names
    return Byline(text=line, authors=tuple(authors), location=location)


@dataclass
class _Block:
    published_at: datetime
    lines: list[str] = field(default_factory=list)


def parse(text: str, *, location: str) -> ImportResult:
    lines = [clean(line) for line in text.splitlines()]
    header: list[str] = []
    blocks: list[_Block] = []
    for line in lines:
        published = parse_time_line(line) if line else None
        if published is not None:
            blocks.append(_Block(published))
        elif blocks:
            if line:
                blocks[-1].lines.append(line)
        elif line:
            header.append(line)
    if not header:
        raise SourceError(location, "not a live blog or feed (no blog title before the first post)")
    title = header[0]
    source = Source(
        id=source_id_from_title(title, location), title=title, kind=SourceKind.PAGE_TEXT
    )
    warnings: list[str] = []
    ids = PostIds(source.id)
    posts: list[Post] = []
    for block in blocks:
        post = _post(block, source.id, ids)
        if post is None:
            when = f"{day_of(block.published_at)} {block.published_at:%H:%M}"
            warnings.append(f"skipped a post at {when} UTC: no title")
        else:
            posts.append(post)
    declared = next((_POST_COUNT.match(h) for h in header if _POST_COUNT.match(h)), None)
    if declared is not None:
        count = int(declared["count"].replace(",", ""))
        if count > len(posts):
            warnings.append(f"page is partial: header says {count} posts, found {len(posts)}")
    return ImportResult(source=source, posts=tuple(posts), warnings=tuple(warnings))


def _post(block: _Block, source_id: str, ids: PostIds) -> Post | None:
    if not block.lines:
        return None
    title, rest = block.lines[0], block.lines[1:]
    byline = parse_byline(rest[0]) if rest else None
    if byline is not None:
        rest = rest[1:]
    body: list[str] = []
    images: list[Image] = []
    background: list[str] = []
    in_background = False
    index = 0
    while index < len(rest):
        line = rest[index]
        following = rest[index + 1] if index + 1 < len(rest) else ""
        credited = _CREDITED.match(following)
        if credited is not None and credited["caption"] == line:
            images.append(Image(caption=line, credit=credited["credit"].strip()))
            index += 2
            continue
        note = _BACKGROUND.match(line)
        if in_background:
            background.append(line)
        elif note is not None and note["rest"]:
            background.append(note["rest"])
        elif note is not None:
            in_background = True  # a "Some background:" heading: the rest of the post is background
        else:
            body.append(line)
        index += 1
    return Post(
        id=ids.by_time(block.published_at),
        source_id=source_id,
        published_at=block.published_at,
        title=title,
        byline=byline.text if byline else None,
        authors=byline.authors if byline else (),
        location=byline.location if byline else None,
        body=tuple(body),
        images=tuple(images),
        background="\n\n".join(background) or None,
    )
