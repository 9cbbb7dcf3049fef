"""The PostgreSQL backend behind the store contract: one database any number of Livedesk processes
may share. Imported only for a postgresql:// URL (storage.store says why).
"""

from __future__ import annotations

from storage import pg_ingest, pg_search
from storage.db import MigrationProgress
from storage.interface import Backend, Feeds, Outbox, Posts, Replays, Store, Subscriptions
from storage.models import ImportResult, PostEvent
from storage.pg_db import PgDatabase
from storage.pg_feeds import PgFeedStore
from storage.pg_outbox import LEASE_SECONDS, PgOutbox
from storage.pg_posts import PgPostStore
from storage.pg_replays import PgReplayStore
from storage.pg_subscriptions import PgSubscriptionStore
from storage.values import FetchState, ProgressCallback, SearchPage


class PgStore:
    """The PostgreSQL backend: one database any number of Livedesk processes may share."""

    backend: Backend = "postgresql"

    def __init__(
        self, db: PgDatabase, *, lease_seconds: float = LEASE_SECONDS, owner: str | None = None
    ) -> None:
        self.db = db
        self.shown_as = db.shown_as
        self.posts: Posts = PgPostStore(db)
        self.subscriptions: Subscriptions = PgSubscriptionStore(db, tsquery=pg_search.tsquery)
        self.outbox: Outbox = PgOutbox(db, owner=owner, lease_seconds=lease_seconds)
        self.replays: Replays = PgReplayStore(db)
        self.feeds: Feeds = PgFeedStore(db)

    async def ingest(
        self,
        result: ImportResult,
        *,
        location: str | None = None,
        fetch_state: FetchState | None = None,
        on_progress: ProgressCallback | None = None,
        new_source_deliveries: int | None = None,
    ) -> list[PostEvent]:
        return await pg_ingest.ingest(
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
        return await pg_search.search(
            self.db, text, page=page, per_page=per_page, source_id=source_id
        )

    async def close(self) -> None:
        await self.db.close()


async def open_postgres(
    url: str,
    *,
    progress: MigrationProgress | None = None,
    lease_seconds: float = LEASE_SECONDS,
    owner: str | None = None,
) -> PgStore:
    """Connect to and migrate the PostgreSQL database at `url`; PostgresUnusable with one line
    (password masked) when it cannot serve. `lease_seconds`: how long a claimed delivery stays
    the claiming worker's (storage.pg_outbox), leased to `owner` (this worker's fleet id)."""
    db = await PgDatabase.open(url, progress=progress)
    return PgStore(db, lease_seconds=lease_seconds, owner=owner)


def pg_store(db: PgDatabase) -> Store:
    """The contract over an open PostgreSQL database (mypy checks that PgStore keeps it)."""
    return PgStore(db)
