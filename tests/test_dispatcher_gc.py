"""The dispatcher's use of the cyclic garbage collector: a big load is frozen out of its sight while
it is sent, and everything is handed back once the schedule is empty. What it must never do:
leave the collector off, turn it on when someone else turned it off, or keep a load frozen."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import bot.dispatcher
from storage.db import Database
from storage.subscriptions import SubscriptionStore
from tests.fakes.flaky import FlakyAdapter, import_posts, make_post
from tests.test_dispatcher import chat, dispatcher

SUBSCRIPTIONS = 40


@pytest.fixture
def thaws(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A "big" load of a few deliveries, so the test stays small; yields the thaws seen (the
    collector's hand-back when a frozen load's schedule is empty)."""
    monkeypatch.setattr(bot.dispatcher, "FREEZE_LOAD", 10)
    monkeypatch.setattr(bot.dispatcher, "LOAD_PAGE", 10)
    seen: list[int] = []
    thaw = bot.dispatcher._thaw

    def counted() -> None:
        seen.append(gc.get_freeze_count())
        thaw()

    monkeypatch.setattr(bot.dispatcher, "_thaw", counted)
    was_enabled = gc.isenabled()
    yield seen
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


async def subscribed(db: Database) -> None:
    store = SubscriptionStore(db)
    for n in range(SUBSCRIPTIONS):
        await store.add(chat(f"chat{n}"), created_by="u")


async def test_a_big_first_load_is_sent_whole_and_leaves_nothing_frozen(
    db: Database, thaws: list[int]
) -> None:
    await subscribed(db)
    await import_posts(db, [make_post(1)])
    adapter = FlakyAdapter()
    sending = dispatcher(db, adapter)
    await sending.run_until_idle()

    assert sorted(c.target.address for c in adapter.calls) == sorted(
        f"chat{n}" for n in range(SUBSCRIPTIONS)
    )
    assert gc.isenabled()
    assert len(thaws) == 1 and thaws[0] > 0  # frozen while sent, handed back once empty
    assert not sending._frozen_load


async def test_a_big_load_of_new_deliveries_page_by_page_thaws_too(
    db: Database, thaws: list[int]
) -> None:
    await subscribed(db)
    adapter = FlakyAdapter()
    sending = dispatcher(db, adapter)
    await sending.run_until_idle()  # nothing pending yet: the first load is empty
    await import_posts(db, [make_post(1)])
    sending.wake()  # the path an import in this process takes: pages after the watermark
    await sending.run_until_idle()

    assert len(adapter.calls) == SUBSCRIPTIONS
    assert gc.isenabled()
    assert len(thaws) == 1
    assert not sending._frozen_load


async def test_a_collector_turned_off_by_someone_else_stays_off(
    db: Database, thaws: list[int]
) -> None:
    await subscribed(db)
    await import_posts(db, [make_post(1)])
    adapter = FlakyAdapter()
    gc.disable()
    await dispatcher(db, adapter).run_until_idle()

    assert len(adapter.calls) == SUBSCRIPTIONS
    assert not gc.isenabled()
    assert thaws == []  # nothing frozen either: the load was not ours to manage


async def test_a_dispatcher_stopped_mid_load_hands_it_back(db: Database, thaws: list[int]) -> None:
    await subscribed(db)
    await import_posts(db, [make_post(1)])
    adapter = FlakyAdapter(delay=0.05)  # slow enough to stop it with most still pending
    sending = dispatcher(db, adapter, concurrency=1)
    task = asyncio.create_task(sending.run())
    while not adapter.calls:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await sending.stop()
    await task

    assert 0 < len(adapter.calls) < SUBSCRIPTIONS
    assert gc.isenabled()
    assert len(thaws) == 1
    assert not sending._frozen_load
