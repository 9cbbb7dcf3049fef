"""`/sources` in a chat: a paused blog says so, followed blogs not read yet are counted, and no
file path or URL (the operator's business) is shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers import Deps, handle
from storage.db import Database
from storage.models import ImportResult, Source, SourceKind
from storage.store import SqliteStore
from tests.fakes.flaky import make_post
from tests.test_handlers import request

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_sources_in_chat_show_paused_and_waiting_feeds_without_their_locations(
    db: Database,
) -> None:
    store = SqliteStore(db)
    deps = Deps(store=store)
    waiting = await store.feeds.add("https://news.example/feed?token=abcdef123", 60, origin="cli")
    reply = await handle(request("/sources"), deps)
    assert reply.text == "No blogs yet: 1 followed blog not read so far."

    council = await store.feeds.add("/srv/blogs/council.txt", 60, origin="cli")
    source = Source(id="council", title="Council live", kind=SourceKind.PAGE_TEXT)
    await store.ingest(
        ImportResult(source=source, posts=(make_post(1, source_id="council"),)),
        location=council.location,
    )
    await store.feeds.record_fetch(
        council.id,
        at=AT,
        error=None,
        next_attempt_at=AT + timedelta(minutes=1),
        source_id="council",
    )
    await store.feeds.update(council.id, enabled=False)
    reply = await handle(request("/sources"), deps)
    lines = reply.text.splitlines()
    assert lines[0] == "Following 1 blog:"
    assert lines[1].startswith("• Council live (council) — 1 post") and lines[1].endswith(
        "· paused"
    )
    assert lines[2] == "• 1 more blog not read yet."
    assert "news.example" not in reply.text and "/srv" not in reply.text

    await store.feeds.update(waiting.id, enabled=False)  # a paused feed is not waited for
    reply = await handle(request("/sources"), deps)
    assert "not read yet" not in reply.text
