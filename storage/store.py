"""Open the store a setting names: a file path is SQLite (the embedded default), a
`postgresql://` URL is PostgreSQL (storage.pg_store). The rest of Livedesk sees only
`storage.interface.Store`.

The PostgreSQL backend lives in its own module, which the composition roots (bot/app.py,
bot/cli.py) import only for a postgresql:// URL: an SQLite run, and every command on an SQLite
store, never loads psycopg (~0.1 s and ~10 MB; tests/test_layering.py keeps it so).
"""

from __future__ import annotations

from pathlib import Path

from storage.db import Database, MigrationProgress
from storage.feeds import FeedStore
from storage.ingest import ingest
from storage.interface import Backend, Feeds, Outbox, Posts, Replays, Store, Subscriptions
from storage.models import ImportResult, PostEvent
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.replays import ReplayStore
from storage.search import search
from storage.subscriptions import SubscriptionStore
from storage.values import FetchState, ProgressCallback, SearchPage

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    """Whether a database setting names a PostgreSQL server rather than an SQLite file."""
    return isinstance(location, str) and location.strip().lower().startswith(POSTGRES_SCHEMES)


class SqliteStore:
    """The SQLite backend: one file, one process (storage.db)."""

    backend: Backend = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.shown_as = str(db.path)
        self.posts: Posts = PostStore(db)
        self.subscriptions: Subscriptions = SubscriptionStore(db)
        self.outbox: Outbox = SqliteOutbox(db)
        self.replays: Replays = ReplayStore(db)
        self.feeds: Feeds = FeedStore(db)

    async def ingest(
        self,
        result: ImportResult,
        *,
        location: str | None = None,
        fetch_state: FetchState | None = None,
        on_progress: ProgressCallback | None = None,
        new_source_deliveries: int | None = None,
    ) -> list[PostEvent]:
        return await ingest(
            self.db,
            result,
            location=location,
            fetch_state=fetch_state,
            on_progress=on_progress,
            new_source_deliveries=new_source_deliveries,
        )

    async def search(
        self, text: str, *, page: int = 1, per_page: int = 5, source_id: str | None = None
    ) -> SearchPage:
        return await search(self.db, text, page=page, per_page=per_page, source_id=source_id)

    async def close(self) -> None:
        await self.db.close()


async def open_sqlite(
    path: Path, *, create: bool = True, progress: MigrationProgress | None = None
) -> SqliteStore:
    return SqliteStore(await Database.open(path, create=create, progress=progress))


def sqlite_store(db: Database) -> Store:
    """The contract over an open SQLite database (mypy checks that SqliteStore keeps it)."""
    return SqliteStore(db)
