"""Fetching a source over HTTP: conditional GET, redirects under the rule of `bot.sources.fetch`
(its module doc), a body too big to hold spooled to a temporary file.

Its own module, so that importing a file never loads aiohttp (a tenth of a second of start-up).
The size limits are read from bot.sources.fetch when used, where they are set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.sources import fetch
from bot.sources.common import SourceError
from bot.sources.fetch import (
    MAX_REDIRECTS,
    REDIRECTS,
    USER_AGENT,
    AddressClass,
    OnDisk,
    address_class,
    megabytes,
    redirect_allowed,
)
from bot.sources.text import is_http_url


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class _RedirectRefused(OSError):
    """Raised inside the connector when a hop's name resolves only to refused addresses."""


class _GuardedResolver(AbstractResolver):
    """The connector's resolver: learns the source's own address classes on the first hop and refuses
    a later hop's addresses that `redirect_allowed` refuses, before anything connects to them."""

    def __init__(self, base: AbstractResolver) -> None:
        self.base = base
        self.source: set[AddressClass] = set()
        self.following = False  # False on the first hop: the operator chose that address
        self.refusal: str | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.base.resolve(host, port, family)
        if not self.following:
            self.source.update(address_class(r["host"]) for r in results)
            return results
        allowed = [r for r in results if redirect_allowed(frozenset(self.source), r["host"])]
        if not allowed and results:
            self.refusal = _refusal(host, results[0]["host"], self.source)
            raise _RedirectRefused(self.refusal)
        return allowed

    async def close(self) -> None:
        await self.base.close()


def _refusal(host: str, address: str, source: set[AddressClass]) -> str:
    where = host if host == address else f"{host} ({address})"
    kinds = sorted(k.value for k in source if k not in (AddressClass.PUBLIC, AddressClass.RESERVED))
    allowed = " or ".join([*kinds, "public"])
    return (
        f"redirect to {where} refused: a {address_class(address).value} address; "
        f"this source may only redirect to {allowed} addresses"
    )


async def get(
    url: str,
    etag: str | None,
    last_modified: str | None,
    timeout: float,  # noqa: ASYNC109 - load()'s contract; it becomes aiohttp's total timeout
) -> tuple[bytes | OnDisk, str | None, str | None, str | None] | None:
    """(body, content type, etag, last modified) of `url`, following redirects by the rule of
    bot.sources.fetch; None for 304 Not Modified; `SourceError` (one line) for any failure."""
    limit = aiohttp.ClientTimeout(total=timeout)
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    guard = _GuardedResolver(aiohttp.ThreadedResolver())
    try:
        async with (
            asyncio.timeout(limit.total),
            aiohttp.ClientSession(
                timeout=limit,
                connector=aiohttp.TCPConnector(resolver=guard, use_dns_cache=False),
            ) as session,
        ):
            current = url
            for hop in range(MAX_REDIRECTS + 1):
                guard.following = hop > 0
                _check_literal(url, current, guard)
                async with session.get(current, headers=headers, allow_redirects=False) as response:
                    target = response.headers.get("Location")
                    if response.status in REDIRECTS and target:
                        current = urljoin(current, target.strip())
                        if not is_http_url(current):
                            raise SourceError(url, f"redirect to a non-HTTP address ({current})")
                        continue
                    return await _body(url, response)
            raise SourceError(url, f"too many redirects (more than {MAX_REDIRECTS})")
    except TimeoutError:
        raise SourceError(url, f"timed out after {limit.total or 0:g} s") from None
    except aiohttp.ClientError as error:
        if guard.refusal is not None:
            raise SourceError(url, guard.refusal) from None
        reason = str(error) or type(error).__name__
        raise SourceError(url, f"cannot fetch ({reason})") from None


def _check_literal(url: str, current: str, guard: _GuardedResolver) -> None:
    """A hop to an IP literal never reaches the resolver: check it here, before connecting."""
    host = urlsplit(current).hostname or ""
    literal = _ip_literal(host)
    if literal is None:
        return
    if not guard.following:
        guard.source.add(address_class(literal))
    elif not redirect_allowed(frozenset(guard.source), literal):
        raise SourceError(url, _refusal(literal, literal, guard.source))


async def _body(
    url: str, response: aiohttp.ClientResponse
) -> tuple[bytes | OnDisk, str | None, str | None, str | None] | None:
    if response.status == 304:
        return None
    if response.status >= 400:
        raise SourceError(url, f"HTTP {response.status} {response.reason or ''}".strip())
    if (response.content_length or 0) > fetch.MAX_STREAM_BYTES:
        raise SourceError(url, f"response too large (limit {megabytes(fetch.MAX_STREAM_BYTES)})")
    chunks: list[bytes] = []
    received = 0
    spool: IO[bytes] | None = None
    try:
        async for chunk in response.content.iter_chunked(64 * 1024):
            received += len(chunk)
            if received > fetch.MAX_STREAM_BYTES:
                raise SourceError(
                    url, f"response too large (limit {megabytes(fetch.MAX_STREAM_BYTES)})"
                )
            if spool is None and received > fetch.MAX_BYTES:
                # Too big to hold: the rest goes to disk, to be read as a stream (_parse_on_disk).
                spool = await asyncio.to_thread(_temporary_file)
                await asyncio.to_thread(spool.writelines, chunks)
                chunks.clear()
            if spool is not None:
                await asyncio.to_thread(spool.write, chunk)
            else:
                chunks.append(chunk)
        body: bytes | OnDisk = b"".join(chunks)
        if spool is not None:
            await asyncio.to_thread(spool.close)
            body = OnDisk(Path(spool.name), received, temporary=True)
    except BaseException:
        if spool is not None:
            spool.close()
            with contextlib.suppress(OSError):
                os.unlink(spool.name)
        raise
    return (
        body,
        response.headers.get("Content-Type"),
        response.headers.get("ETag"),
        response.headers.get("Last-Modified"),
    )


def _temporary_file() -> IO[bytes]:
    return tempfile.NamedTemporaryFile(prefix="livedesk-feed-", suffix=".xml", delete=False)
