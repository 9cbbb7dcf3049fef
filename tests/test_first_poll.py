"""A blog's first poll stores its whole history but greets each subscription with its newest posts."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.config import SourceSetting
from bot.models import Target
from bot.poller import Outcome, Poller
from storage.db import Database
from storage.posts import PostStore
from storage.store import SqliteStore
from storage.subscriptions import SubscriptionStore
from tests.conftest import FIXTURES


async def queued_titles(db: Database, subscription_id: int) -> list[str]:
    async with db.reader.execute(
        "SELECT p.title FROM deliveries d JOIN posts p ON p.rowid = d.post_rowid "
        "WHERE d.subscription_id = ? ORDER BY d.id",
        (subscription_id,),
    ) as cur:
        return [r[0] for r in await cur.fetchall()]


async def test_each_subscription_gets_its_own_newest_matching_posts(
    db: Database, tmp_path: Path
) -> None:
    blog = tmp_path / "tram.txt"
    shutil.copy(FIXTURES / "cli_blog.txt", blog)
    subscriptions = SubscriptionStore(db)
    everything, _ = await subscriptions.add(
        Target(platform="slack", address="https://example.org/hooks/all", kind="webhook"),
        created_by="test",
    )
    keyword, _ = await subscriptions.add(
        Target(platform="slack", address="https://example.org/hooks/kw", kind="webhook"),
        created_by="test",
        query="cyclists OR shop",
    )
    posts = PostStore(db)
    poller = Poller(SqliteStore(posts.db), [SourceSetting(url=str(blog))], new_source_backfill=1)

    assert await poller.poll_all() == [Outcome.IMPORTED]

    assert await posts.count() == 4  # the whole blog is stored
    assert await queued_titles(db, everything.id) == [
        "Council approves the tram line by nine votes to four"
    ]
    # Its newest *matching* post, though newer posts exist that it does not want.
    assert await queued_titles(db, keyword.id) == ["Shop owners worry about two years of roadworks"]

    # Known now: a new post goes to everyone it matches, whatever the cap.
    text = blog.read_text(encoding="utf-8").replace(
        "4 Posts\nSort byDropdown arrow\n",
        "5 Posts\nSort byDropdown arrow\n7:30 p.m. ET, March 3, 2023\n\n"
        "Shop owners and cyclists meet the mayor\n\nThe mayor met both groups after the vote.\n\n",
    )
    blog.write_text(text, encoding="utf-8")
    assert await poller.poll_all() == [Outcome.IMPORTED]
    newest = "Shop owners and cyclists meet the mayor"
    assert (await queued_titles(db, everything.id))[-1] == newest
    assert (await queued_titles(db, keyword.id))[-1] == newest


async def test_without_a_cap_the_poller_queues_every_post(db: Database, tmp_path: Path) -> None:
    blog = tmp_path / "tram.txt"
    shutil.copy(FIXTURES / "cli_blog.txt", blog)
    sub, _ = await SubscriptionStore(db).add(
        Target(platform="slack", address="https://example.org/hooks/all", kind="webhook"),
        created_by="test",
    )
    await Poller(SqliteStore(db), [SourceSetting(url=str(blog))]).poll_all()
    assert len(await queued_titles(db, sub.id)) == 4
