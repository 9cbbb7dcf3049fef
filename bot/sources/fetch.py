"""Load a blog from a file path or an http(s) URL, with conditional GET so unchanged pages cost nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from bot.models import ImportResult
from bot.sources.common import SourceError
from bot.sources.detect import parse_document
from bot.sources.text import is_http_url

MAX_BYTES = 50 * 1024 * 1024
# Small documents parse faster than a thread hop; big ones must not stall the event loop.
THREAD_THRESHOLD = 256 * 1024
USER_AGENT = "Livedesk/0.1 (+live blog notifications)"


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
) -> FetchResult | None:
    """Read and import `location`; None when the server answers 304 Not Modified.

    Pass back the `etag` and `last_modified` of the previous result to make the request conditional.
    Raises `SourceError` (one line) for missing files, HTTP errors, timeouts, oversized or bad content.
    """
    if is_http_url(location):
        fetched = await _get(location, etag, last_modified, aiohttp.ClientTimeout(total=timeout))
        if fetched is None:
            return None
        data, content_type, new_etag, new_last_modified = fetched
    else:
        data, content_type = await asyncio.to_thread(_read_file, location), None
        new_etag = new_last_modified = None
    result = await _parse(data, location, content_type)
    return FetchResult(result=result, etag=new_etag, last_modified=new_last_modified)


async def _parse(data: bytes, location: str, content_type: str | None) -> ImportResult:
    if len(data) < THREAD_THRESHOLD:
        return parse_document(data, location=location, content_type=content_type)
    return await asyncio.to_thread(
        parse_document, data, location=location, content_type=content_type
    )


def _read_file(location: str) -> bytes:
    path = Path(unquote(urlsplit(location).path) if location.startswith("file://") else location)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SourceError(location, "is a directory, not a file")
        if size > MAX_BYTES:
            raise SourceError(
                location, f"too large ({_megabytes(size)}; limit {_megabytes(MAX_BYTES)})"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(location, "file not found") from None
    except PermissionError:
        raise SourceError(location, "permission denied") from None
    except OSError as error:
        raise SourceError(location, f"cannot read file ({error.strerror or error})") from None


async def _get(
    url: str, etag: str | None, last_modified: str | None, limit: aiohttp.ClientTimeout
) -> tuple[bytes, str | None, str | None, str | None] | None:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with (
            aiohttp.ClientSession(timeout=limit) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status == 304:
                return None
            if response.status >= 400:
                raise SourceError(url, f"HTTP {response.status} {response.reason or ''}".strip())
            if (response.content_length or 0) > MAX_BYTES:
                raise SourceError(url, f"response too large (limit {_megabytes(MAX_BYTES)})")
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                received += len(chunk)
                if received > MAX_BYTES:
                    raise SourceError(url, f"response too large (limit {_megabytes(MAX_BYTES)})")
                chunks.append(chunk)
            return (
                b"".join(chunks),
                response.headers.get("Content-Type"),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except TimeoutError:
        raise SourceError(url, f"timed out after {limit.total or 0:g} s") from None
    except aiohttp.ClientError as error:
        reason = str(error) or type(error).__name__
        raise SourceError(url, f"cannot fetch ({reason})") from None


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.3g} MB"
