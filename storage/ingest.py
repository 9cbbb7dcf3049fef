"""Ingest: one imported document in one transaction, its posts and their deliveries together.

This is the store's one write path for posts: `upsert_document` (storage.posts) stores the blog and
its posts and reports what was created or edited, then `enqueue_for_changes` (storage.outbox) writes a
delivery for every matching subscription, before the transaction commits. A crash therefore leaves
either both or neither: no post without its notifications, no notification without its post.
"""

from __future__ import annotations

from storage.db import Database
from storage.models import ImportResult, PostEvent
from storage.outbox import enqueue_for_changes
from storage.posts import upsert_document
from storage.values import FetchState, ProgressCallback


async def ingest(
    db: Database,
    result: ImportResult,
    *,
    location: str | None = None,
    fetch_state: FetchState | None = None,
    on_progress: ProgressCallback | None = None,
    new_source_deliveries: int | None = None,
) -> list[PostEvent]:
    """Store one imported document and its deliveries in one transaction; return only what was
    created or edited, in publication order.

    `location`: where the document came from (a blog read from a URL is bound to it, see
    storage.posts). `new_source_deliveries`: when the blog is new to the store, each subscription
    gets only its newest that many matching posts (all are stored), so a first import sends no whole
    history."""
    async with db.write() as conn:
        upserted = await upsert_document(
            conn, result, location=location, fetch_state=fetch_state, on_progress=on_progress
        )
        if upserted.changes:
            limit = new_source_deliveries if upserted.new_source else None
            await enqueue_for_changes(conn, upserted.changes, newest_per_subscription=limit)
    return [change.event for change in upserted.changes]
