"""Subscribing many at once (`subscriptions.put`, what `subscribe --from-file` calls) on both backends:
the batch gives what subscribing one by one gives, in the batch's order, in one transaction.

New subscriptions are inserted together; one already there, in the store or earlier in the same
batch, is re-activated and says what changed, exactly as a second `subscribe` would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.interface import Store
from storage.models import EditPolicy, SubscriptionState, Target
from storage.pg_store import open_postgres
from storage.query import QueryError
from storage.store import open_sqlite
from storage.values import NewSubscription
from tests.fakes.flaky import make_post
from tests.test_pg_search import CTYPE, _recreated
from tests.test_store_contract import chat, deliveries, import_posts


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = await open_sqlite(tmp_path / "livedesk.db")
    else:
        url: str = request.getfixturevalue("postgres_url")
        opened = await open_postgres(_recreated(url, CTYPE))
    try:
        yield opened
    finally:
        await opened.close()


def new(
    target: Target,
    *,
    query: str | None = None,
    policy: EditPolicy = EditPolicy.EDIT,
    source_id: str | None = None,
) -> NewSubscription:
    return NewSubscription(
        target, created_by="ops", source_id=source_id, query=query, edit_policy=policy
    )


async def test_a_batch_does_what_one_by_one_does(store: Store) -> None:
    subs = store.subscriptions
    paused, _ = await subs.add(chat("a"), created_by="ops")
    await subs.set_state(paused.id, SubscriptionState.PAUSED, "paused by alice")

    results = await subs.put(
        [
            new(chat("b")),
            new(chat("a"), policy=EditPolicy.FOLLOW_UP),  # in the store, paused
            new(chat("c")),
            new(chat("b"), policy=EditPolicy.IGNORE),  # earlier in this batch
            new(chat("c"), query="sanctions"),  # the same chat with keywords: another one
            new(chat("b")),  # again, as it is now
        ]
    )

    assert [(r.subscription.target.address, r.created) for r in results] == [
        ("b", True),
        ("a", False),
        ("c", True),
        ("b", False),
        ("c", True),
        ("b", False),
    ]
    b, a, c, b_again, c_keywords, b_third = (r.subscription for r in results)
    assert a.id == paused.id and b_again.id == b.id == b_third.id
    assert paused.id < b.id < c.id < c_keywords.id  # new ones numbered in the batch's order
    assert results[1].changed == (
        "edits follow-up (was edit)",
        "resumed (was paused: paused by alice)",
    )
    assert results[3].changed == ("edits ignore (was edit)",)
    assert results[5].changed == ("edits edit (was ignore)",)
    assert c_keywords.query == "sanctions" and c.query is None
    stored = {s.id: s for s in await subs.list()}
    assert set(stored) == {a.id, b.id, c.id, c_keywords.id}
    assert all(s.state == SubscriptionState.ACTIVE for s in stored.values())
    assert stored[b.id].edit_policy == EditPolicy.EDIT
    # What the batch returned for a new subscription is what the store now holds.
    assert stored[c.id] == c and stored[c_keywords.id] == c_keywords


async def test_every_new_subscription_of_a_batch_is_greeted(store: Store) -> None:
    await import_posts(
        store,
        [
            make_post(1, title="Sanctions widen"),
            make_post(2, title="Talks resume"),
            make_post(3, title="Markets steady"),
        ],
    )
    subs = store.subscriptions
    old, _ = await subs.add(chat("old"), created_by="ops", backfill=2)  # not greeted twice
    results = await subs.put(
        [new(chat(str(n))) for n in range(3)]
        + [new(chat("old")), new(chat("sanctions"), query="sanctions")],
        backfill=2,
    )
    assert [r.created for r in results] == [True, True, True, False, True]
    got: dict[str, list[str]] = {}
    for row in await deliveries(store):
        got.setdefault(row.address, []).append(row.post_id)
    assert got == {
        "old": ["blog-2", "blog-3"],  # its own greeting when it was added first
        "0": ["blog-2", "blog-3"],  # the latest two, oldest first
        "1": ["blog-2", "blog-3"],
        "2": ["blog-2", "blog-3"],
        "sanctions": ["blog-1"],
    }
    assert old.id == results[3].subscription.id


async def test_a_thousand_in_one_batch_keep_their_order(store: Store) -> None:
    subs = store.subscriptions
    await subs.add(chat("500"), created_by="ops")
    results = await subs.put([new(chat(str(n))) for n in range(1000)])
    assert [r.subscription.target.address for r in results] == [str(n) for n in range(1000)]
    assert [r.created for r in results].count(False) == 1 and not results[500].created
    created = [r.subscription.id for r in results if r.created]
    assert created == sorted(created) and len(set(created)) == 999
    assert len(await subs.list(platform="fake")) == 1000


async def test_a_bad_query_anywhere_writes_nothing(store: Store) -> None:
    subs = store.subscriptions
    with pytest.raises(QueryError):
        await subs.put([new(chat(str(n))) for n in range(100)] + [new(chat("x"), query="*")])
    assert await subs.list() == []


async def test_counts_by_platform_leave_out_what_is_not_active(store: Store) -> None:
    subs = store.subscriptions
    assert await subs.count_by_platform() == {}
    added = await subs.put(
        [new(chat(str(n))) for n in range(5)]
        + [new(Target(platform="other", address=str(n), kind="group")) for n in range(2)]
    )
    ids = [a.subscription.id for a in added]
    await subs.set_state(ids[0], SubscriptionState.PAUSED)
    await subs.set_state(ids[1], SubscriptionState.DISABLED, "blocked")
    await subs.set_state(ids[5], SubscriptionState.PAUSED)
    await subs.set_state(ids[6], SubscriptionState.PAUSED)
    assert await subs.count_by_platform() == {"fake": 5, "other": 2}
    assert await subs.count_by_platform(active_only=True) == {"fake": 3}
