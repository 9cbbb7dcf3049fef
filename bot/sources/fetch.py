"""Load a blog from a file path or an http(s) URL, with conditional GET so unchanged pages cost nothing.

Redirects: a source the operator configured may redirect (up to 10 hops), but a redirect may not lead
to an internal address unless the source itself is on one. "The source itself" is the address its own
host resolves to (or its IP literal), and the rule (`redirect_allowed`) is by class of address: a
public source's redirects must stay on public addresses; a source on a loopback address may also
redirect to loopback addresses, one on a private address (RFC 1918, unique-local IPv6, shared
100.64/10) to private ones, one on a link-local address to link-local ones, and never across: a
loopback source cannot be turned into a way to reach 10.x or 169.254.169.254. Unspecified, multicast
and reserved addresses are never followed. Every hop is checked before connecting: an IP literal from
its `Location`, a name through the resolver the connection uses (so the checked address is the one
connected to, with no DNS cache between them).

The HTTP half (the client, the guarded resolver, the spooling of a big body) is bot.sources.download,
imported only when a URL is fetched: reading a file loads no aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from bot.models import ImportResult
from bot.sources import plain_rss
from bot.sources.common import SourceError, settle_dates
from bot.sources.detect import parse_document
from bot.sources.text import is_http_url

MAX_BYTES = 50 * 1024 * 1024
"""The largest document read whole (any format, through the general readers)."""
MAX_STREAM_BYTES = 1024 * 1024 * 1024
"""The largest plain RSS 2.0 feed, read as a stream (bot.sources.plain_rss): a document above
MAX_BYTES is kept on disk (a fetched one in a temporary file) and read a megabyte at a time, so
memory holds the posts, never the document."""
# Small documents parse faster than a thread hop; big ones must not stall the event loop.
THREAD_THRESHOLD = 256 * 1024
USER_AGENT = "Livedesk/0.1 (+live blog notifications)"
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class AddressClass(StrEnum):
    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    RESERVED = "reserved"


def address_class(address: str) -> AddressClass:
    """The class of an IP address (IPv4-mapped IPv6 addresses count as their IPv4 address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return AddressClass.LOOPBACK
    if ip.is_link_local:
        return AddressClass.LINK_LOCAL
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return AddressClass.RESERVED
    if ip.is_global:
        return AddressClass.PUBLIC
    return AddressClass.PRIVATE


def redirect_allowed(source: frozenset[AddressClass], target: str) -> bool:
    """Whether a redirect may connect to `target` (an IP address) for a source whose own addresses
    are of the classes `source` (see the module doc)."""
    kind = address_class(target)
    return kind is AddressClass.PUBLIC or (kind is not AddressClass.RESERVED and kind in source)


@dataclass(frozen=True)
class OnDisk:
    """A document too big to read whole: its file (`temporary`: ours, removed once read)."""

    path: Path
    size: int
    temporary: bool = False


@dataclass(frozen=True)
class FetchResult:
    result: ImportResult
    etag: str | None = None
    last_modified: str | None = None


async def load(
    location: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - the public contract; it becomes aiohttp's total timeout
    deferred: bool = False,
) -> FetchResult | None:
    """Read and import `location`; None when the server answers 304 Not Modified.

    Pass back the `etag` and `last_modified` of the previous result to make the request conditional.
    Raises `SourceError` (one line) for missing files, HTTP errors, timeouts, oversized or bad content.
    `deferred`: for a caller that hands the result straight to the store, a plain RSS 2.0 document
    read whole may come back as a `storage.models.DeferredImport` (see parse_document).
    """
    if is_http_url(location):
        from bot.sources.download import get  # aiohttp: only for a URL

        fetched = await get(location, etag, last_modified, timeout)
        if fetched is None:
            return None
        data, content_type, new_etag, new_last_modified = fetched
    else:
        data, content_type = await asyncio.to_thread(_read_file, location), None
        new_etag = new_last_modified = None
    result = await _parse(data, location, content_type, deferred=deferred)
    return FetchResult(result=result, etag=new_etag, last_modified=new_last_modified)


async def _parse(
    data: bytes | OnDisk, location: str, content_type: str | None, *, deferred: bool
) -> ImportResult:
    if isinstance(data, OnDisk):
        try:
            return await asyncio.to_thread(_parse_on_disk, data, location, content_type)
        finally:
            if data.temporary:
                with contextlib.suppress(OSError):
                    data.path.unlink()
    if len(data) < THREAD_THRESHOLD:
        return parse_document(data, location=location, content_type=content_type, deferred=deferred)
    return await asyncio.to_thread(
        parse_document, data, location=location, content_type=content_type, deferred=deferred
    )


def _parse_on_disk(document: OnDisk, location: str, content_type: str | None) -> ImportResult:
    """A document above MAX_BYTES: read as a stream when it is plain RSS 2.0, else refused."""
    seen_at = datetime.now(UTC)
    try:
        with document.path.open("rb") as handle:
            if not plain_rss.is_rss_start(handle.read(4096)):
                raise SourceError(
                    location,
                    _too_large(document.size, "not an RSS 2.0 feed", downloaded=document.temporary),
                )
            handle.seek(0)
            result = plain_rss.parse_stream(
                _chunks(handle, location), location=location, content_type=content_type
            )
    except plain_rss.NotPlain as reason:
        raise SourceError(
            location,
            _too_large(
                document.size, f"not plain RSS 2.0: {reason}", downloaded=document.temporary
            ),
        ) from None
    except OSError as error:
        raise SourceError(location, f"cannot read file ({error.strerror or error})") from None
    return settle_dates(result, location=location, seen_at=seen_at)


def _chunks(handle: IO[bytes], location: str) -> Iterator[bytes]:
    read = 0
    while chunk := handle.read(plain_rss.CHUNK):
        read += len(chunk)
        if read > MAX_STREAM_BYTES:  # a file that grew since it was measured
            raise SourceError(location, f"too large (limit {megabytes(MAX_STREAM_BYTES)})")
        yield chunk


def _too_large(size: int, why: str, *, downloaded: bool) -> str:
    return (
        f"{'response ' if downloaded else ''}too large to read whole ({megabytes(size)}; limit {megabytes(MAX_BYTES)}); only a "
        f"plain RSS 2.0 feed is read beyond that, as a stream up to "
        f"{megabytes(MAX_STREAM_BYTES)}, and this is {why}"
    )


def _read_file(location: str) -> bytes | OnDisk:
    path = Path(unquote(urlsplit(location).path) if location.startswith("file://") else location)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SourceError(location, "is a directory, not a file")
        if size > MAX_STREAM_BYTES:
            raise SourceError(
                location, f"too large ({megabytes(size)}; limit {megabytes(MAX_STREAM_BYTES)})"
            )
        if size > MAX_BYTES:
            return OnDisk(path, size)
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(location, "file not found") from None
    except PermissionError:
        raise SourceError(location, "permission denied") from None
    except OSError as error:
        raise SourceError(location, f"cannot read file ({error.strerror or error})") from None


def megabytes(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.3g} GB"
    return f"{size / (1024 * 1024):.3g} MB"
