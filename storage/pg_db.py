"""The PostgreSQL engine: a psycopg 3 async connection pool, its migrations, one-line errors.

psycopg 3 (not asyncpg): one library for async and sync code, server-side parameters, `COPY` for the
bulk copy `livedesk migrate` makes, `LISTEN/NOTIFY` through `conn.notifies()`, and a pool
(psycopg_pool) that checks connections and reconnects after the server restarts.

Rows come as dicts (`dict_row`), so the row codecs (storage.codecs) read them as they read SQLite's
rows. Times stay fixed-width ISO 8601 text in UTC, as in SQLite, so both backends sort and compare
them alike. The URL holds the password: only `shown_as` (password masked) is ever logged or shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from storage.db import MigrationProgress
from storage.pg_schema import PostgresUnusable, apply

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[dict[str, Any]]
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the server at start before saying it cannot be reached."""
POOL_SIZE = 8
OUTBOX_CHANNEL = "livedesk_outbox"
"""NOTIFY'd when an ingest commits new deliveries: the workers look at the outbox at once."""
LISTEN_RETRY = 2.0


def masked(url: str) -> str:
    """The URL with its password replaced by `***` (and nothing else changed)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _one_line(shown: str, error: BaseException) -> PostgresUnusable:
    """A connection failure as one line for the operator, naming the masked URL."""
    reason = " ".join(str(error).split()) or type(error).__name__
    reason = reason.replace(":" + (urlsplit(shown).password or "\0"), ":***")
    return PostgresUnusable(f"cannot use the PostgreSQL database {shown}: {reason}")


class PgDatabase:
    """A pool of connections to one PostgreSQL database, migrated to the newest schema."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection]) -> None:
        self._url = url
        self.shown_as = masked(url)
        self.pool = pool

    @classmethod
    async def open(
        cls, url: str, *, progress: MigrationProgress | None = None, size: int = POOL_SIZE
    ) -> PgDatabase:
        """Connect, migrate, and return the open database; PostgresUnusable with one line when
        the server cannot be reached, refuses the login, or holds another program's tables."""
        shown = masked(url)
        try:
            first = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as error:
            raise _one_line(shown, error) from None
        try:
            await apply(first, progress)
            cur = await first.execute("SELECT current_setting('lc_ctype')")
            row = await cur.fetchone()
            ctype = str(row[0]) if row else ""
        finally:
            await first.close()
        if ctype.upper() in ("C", "POSIX"):
            log.warning(
                "%s has LC_CTYPE %s: search reads letters outside ASCII as parts of words "
                "(a curly-quoted word is not found); create it with a UTF-8 LC_CTYPE such as "
                "C.UTF-8 or en_US.UTF-8",
                shown,
                ctype,
            )
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=psycopg.AsyncConnection[dict[str, Any]],
            open=False,
            name="livedesk",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except Exception as error:  # psycopg_pool.PoolTimeout, psycopg.Error
            await pool.close()
            raise _one_line(shown, error) from None
        return cls(url, pool)

    @property
    def url(self) -> str:
        """The URL with its password: for connecting only (e.g. a LISTEN connection)."""
        return self._url

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        when it raises."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit: each statement sees the latest commits."""
        async with self.pool.connection() as conn:
            yield conn

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Call `wake()` for every NOTIFY on `channel`, until cancelled. On a connection of its own;
        when the server goes away it says so once and connects again (polling covers the gap)."""
        down = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
                )
                try:
                    await conn.execute(f"LISTEN {channel}")
                    if down:
                        log.info("listening to %s again", self.shown_as)
                        down = False
                    wake()  # whatever was committed while not listening
                    async for _ in conn.notifies():
                        wake()
                finally:
                    await conn.close()
            except psycopg.Error as error:
                if not down:
                    reason = " ".join(str(error).split())
                    log.warning("lost the notifications of %s: %s", self.shown_as, reason)
                    down = True
            await asyncio.sleep(LISTEN_RETRY)

    async def close(self) -> None:
        await self.pool.close()
