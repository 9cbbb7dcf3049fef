"""Ingest on PostgreSQL: one document's posts and their deliveries in one transaction.

The same write path as storage.ingest: `upsert_document` (storage.pg_posts) stores the blog and its
posts under the ingest lock and reports what changed, then `enqueue_for_changes` (storage.pg_outbox)
writes a delivery for every matching subscription, before the transaction commits; the commit then
wakes every worker of the fleet (`NOTIFY livedesk_outbox`, see PgDatabase.listen).
"""

from __future__ import annotations

from storage.models import ImportResult, PostEvent
from storage.pg_db import OUTBOX_CHANNEL, PgDatabase
from storage.pg_outbox import enqueue_for_changes
from storage.pg_posts import upsert_document
from storage.values import FetchState, ProgressCallback


async def ingest(
    db: PgDatabase,
    result: ImportResult,
    *,
    location: str | None = None,
    fetch_state: FetchState | None = None,
    on_progress: ProgressCallback | None = None,
    new_source_deliveries: int | None = None,
) -> list[PostEvent]:
    """Store one imported document and its deliveries in one transaction; return only what was
    created or edited, in publication order (see storage.ingest.ingest)."""
    async with db.write() as conn:
        upserted = await upsert_document(
            conn, result, location=location, fetch_state=fetch_state, on_progress=on_progress
        )
        if upserted.changes:
            limit = new_source_deliveries if upserted.new_source else None
            queued = await enqueue_for_changes(
                conn, upserted.changes, newest_per_subscription=limit
            )
            if queued:
                # Delivered to every listening worker when this transaction commits (not before).
                await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    return [change.event for change in upserted.changes]
