"""OPML, as every feed reader imports and exports its subscriptions (`livedesk sources import|export`).

Import reads OPML 1.0 and 2.0: every `outline` with an `xmlUrl` is a feed, at any depth (folders are
outlines holding outlines). The document is parsed with defusedxml: no entity expansion (a "billion
laughs" bomb), no external entity or DTD fetch, so a hostile file can neither exhaust memory nor make
Livedesk read a local file or call a server. An outline that cannot be followed (an `xmlUrl` that is
no http(s) or file URL, a feed outline without one) is skipped with one line saying why; the rest go
on.

Export writes OPML 2.0 with one outline per feed (`type="rss"`, `text`, `title`, `xmlUrl`), a file
feed as a `file://` URL, plus two attributes of Livedesk's own that import reads back:
`livedeskInterval` (seconds) and `livedeskPaused="true"`. OPML allows an outline any attribute; other
readers ignore them.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import defusedxml
import defusedxml.ElementTree as SafeElementTree

from bot.redact import printable, redact
from storage.values import Feed

MAX_BYTES = 16 * 1024 * 1024
"""The largest OPML file read: a reader's export of ten thousand feeds is a few megabytes."""
INTERVAL_ATTRIBUTE = "livedeskInterval"
PAUSED_ATTRIBUTE = "livedeskPaused"
FEED_TYPES = frozenset({"", "rss", "atom", "feed", "json", "jsonfeed"})


class OpmlError(ValueError):
    """The file is not an OPML document Livedesk can read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Outline:
    """One feed of an OPML document."""

    location: str
    """An http(s) URL, or an absolute file path (from a `file://` URL)."""
    title: str | None
    folder: tuple[str, ...] = ()
    """The outlines it sits in, outermost first."""
    interval: float | None = None
    """Livedesk's own `livedeskInterval`, when the document came from Livedesk."""
    paused: bool = False


@dataclass(frozen=True, slots=True)
class Document:
    outlines: tuple[Outline, ...]
    skipped: tuple[str, ...]
    """One line per outline that was not taken, saying which and why."""


def read(path: Path) -> Document:
    """The OPML document in the file at `path`; OpmlError (one line) when it cannot be read."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise OpmlError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_BYTES:
        raise OpmlError(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MB; not an OPML file")
    return parse(data, name=str(path))


def parse(data: bytes | str, *, name: str = "the OPML document") -> Document:
    """Every feed outline of an OPML 1.0/2.0 document, and a line for each one skipped."""
    try:
        root = SafeElementTree.fromstring(data)
    except defusedxml.DefusedXmlException as error:
        raise OpmlError(f"{name} is refused: {_reason(error)} (not allowed in OPML)") from None
    except ElementTree.ParseError as error:
        raise OpmlError(f"{name} is not well-formed XML: {error}") from None
    if _local(root.tag) != "opml":
        raise OpmlError(f"{name} is not OPML (its root element is <{_local(root.tag)}>)")
    body = next((child for child in root if _local(child.tag) == "body"), None)
    if body is None:
        raise OpmlError(f"{name} is not OPML: it has no <body>")
    outlines: list[Outline] = []
    skipped: list[str] = []
    for element, folder in _outlines(body, ()):
        taken = _outline(element, folder)
        if isinstance(taken, Outline):
            outlines.append(taken)
        elif taken:
            skipped.append(taken)
    return Document(tuple(outlines), tuple(skipped))


def _reason(error: defusedxml.DefusedXmlException) -> str:
    if isinstance(error, defusedxml.DTDForbidden):
        return "it declares a DTD"
    if isinstance(error, defusedxml.EntitiesForbidden):
        return "it declares entities"
    if isinstance(error, defusedxml.ExternalReferenceForbidden):
        return "it refers to an external entity"
    return type(error).__name__


def _local(tag: object) -> str:
    """An element's name without a namespace (`{…}outline` → `outline`)."""
    return str(tag).rpartition("}")[2].lower()


def _attribute(element: ElementTree.Element, name: str) -> str | None:
    """An attribute by name, whatever its case (`xmlUrl`, `xmlurl`, `XMLURL` are all seen)."""
    wanted = name.lower()
    for key, value in element.attrib.items():
        if _local(key) == wanted:
            return value
    return None


def _outlines(
    parent: ElementTree.Element, folder: tuple[str, ...]
) -> Iterator[tuple[ElementTree.Element, tuple[str, ...]]]:
    for child in parent:
        if _local(child.tag) != "outline":
            continue
        yield child, folder
        name = _label(child)
        yield from _outlines(child, (*folder, name) if name else folder)


def _label(element: ElementTree.Element) -> str | None:
    for name in ("text", "title"):
        value = _attribute(element, name)
        if value is not None and value.strip():
            return " ".join(printable(value).split())
    return None


def _outline(element: ElementTree.Element, folder: tuple[str, ...]) -> Outline | str | None:
    """The feed an outline names; a line saying why it is skipped; None for a folder or a note."""
    label = _label(element)
    shown = f'"{label}"' if label else "without a title"
    url = _attribute(element, "xmlUrl")
    if url is None:
        has_children = any(_local(child.tag) == "outline" for child in element)
        kind = (_attribute(element, "type") or "").strip().lower()
        if has_children or kind not in FEED_TYPES:
            return None  # a folder, or an outline that is a link or a note rather than a feed
        return f"outline {shown}: skipped, it has no xmlUrl"
    location = _location(url)
    if location is None:
        return f"outline {shown}: skipped, {_shown_url(url)} is not an http(s) or file URL"
    return Outline(
        location=location,
        title=label,
        folder=folder,
        interval=_interval(_attribute(element, INTERVAL_ATTRIBUTE)),
        paused=(_attribute(element, PAUSED_ATTRIBUTE) or "").strip().lower() == "true",
    )


def _shown_url(url: str) -> str:
    text = " ".join(printable(redact(url)).split())
    return f'"{text[:80]}…"' if len(text) > 80 else f'"{text}"'


def _location(url: str) -> str | None:
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.hostname and not any(c.isspace() for c in text):
        return text
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return unquote(parts.path)
    return None


def _interval(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def export_url(location: str) -> str:
    """A feed's location as an OPML `xmlUrl`: a file path becomes a `file://` URL."""
    if urlsplit(location).scheme.lower() in ("http", "https"):
        return location
    path = Path(location)
    return path.as_uri() if path.is_absolute() else location


def render(
    feeds: Iterable[Feed], *, title: str = "Livedesk sources", now: datetime | None = None
) -> str:
    """An OPML 2.0 document of `feeds`, in their order."""
    opml = ElementTree.Element("opml", version="2.0")
    head = ElementTree.SubElement(opml, "head")
    ElementTree.SubElement(head, "title").text = title
    ElementTree.SubElement(head, "dateCreated").text = format_datetime(
        (now or datetime.now(UTC)).astimezone(UTC), usegmt=True
    )
    body = ElementTree.SubElement(opml, "body")
    for feed in feeds:
        name = feed.title or redact(feed.location)
        attributes = {
            "type": "rss",
            "text": name,
            "title": name,
            "xmlUrl": export_url(feed.location),
            INTERVAL_ATTRIBUTE: f"{feed.interval:g}",
        }
        if not feed.enabled:
            attributes[PAUSED_ATTRIBUTE] = "true"
        ElementTree.SubElement(body, "outline", attributes)
    ElementTree.indent(opml)
    text = ElementTree.tostring(opml, encoding="unicode", xml_declaration=False)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'
