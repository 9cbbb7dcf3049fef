"""The store's one contract: what every backend (SQLite, PostgreSQL) offers the rest of Livedesk.

`bot/` and `handlers/` see only these protocols and the values they carry (storage.values,
storage.models); which engine holds the rows is decided once, by `storage.store.open_store`. The
SQLite stores (storage.posts, storage.subscriptions, storage.outbox, storage.replays) and the
PostgreSQL ones satisfy them structurally, and mypy checks that they do (storage.store).

The contract tests (tests/test_store_contract.py) run every behaviour here against both backends.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Literal, Protocol

from storage.models import (
    EditPolicy,
    ImportResult,
    Post,
    PostEvent,
    PostVersion,
    Source,
    Subscription,
    SubscriptionState,
    Target,
)
from storage.values import (
    Added,
    DeadDelivery,
    DeliveryJob,
    Feed,
    FetchFailure,
    FetchState,
    NewSubscription,
    NumberedSource,
    OutboxResults,
    PendingDelivery,
    PostForCard,
    ProgressCallback,
    SearchPage,
    SentRef,
    SourceInfo,
)

Backend = Literal["sqlite", "postgresql"]


class Posts(Protocol):
    """Blogs and their posts, read; and a location's fetch state."""

    async def record_fetch_error(self, location: str, error: str) -> None: ...
    async def latest(self, n: int = 5, source_id: str | None = None) -> list[Post]: ...
    async def get(self, post_id: str) -> Post | None: ...
    async def get_by_rowid(self, rowid: int) -> Post | None: ...
    async def history(self, post_id: str) -> list[PostVersion]: ...
    async def source(self, source_id: str) -> Source | None: ...
    async def find_source(self, text: str) -> Source | None: ...
    async def source_at(self, location: str) -> Source | None: ...
    async def find_sources(self, text: str) -> list[NumberedSource]: ...
    async def all_sources(self) -> list[Source]: ...
    async def sources(self) -> list[SourceInfo]: ...
    async def failing_locations(self) -> list[FetchFailure]: ...
    async def fetch_state(self, location: str) -> FetchState | None: ...
    async def count(self) -> int: ...


class Subscriptions(Protocol):
    """Who gets which blog's posts (see storage.subscriptions for the rules)."""

    async def add(
        self,
        target: Target,
        *,
        created_by: str,
        source_id: str | None = None,
        query: str | None = None,
        edit_policy: EditPolicy = EditPolicy.EDIT,
        backfill: int = 0,
    ) -> tuple[Subscription, bool]: ...
    async def add_many(
        self, items: Sequence[NewSubscription], *, backfill: int = 0
    ) -> builtins.list[Subscription]: ...
    async def put(
        self, items: Sequence[NewSubscription], *, backfill: int = 0
    ) -> builtins.list[Added]: ...
    async def get(self, subscription_id: int) -> Subscription | None: ...
    async def list(
        self, *, platform: str | None = None, address: str | None = None
    ) -> builtins.list[Subscription]: ...
    async def count_by_platform(self, *, active_only: bool = False) -> dict[str, int]: ...
    async def backfill_count(self, subscription_id: int) -> int: ...
    async def remove(self, subscription_id: int) -> bool: ...
    async def remove_for_target(self, target: Target, source_id: str | None = None) -> int: ...
    async def set_state(
        self, subscription_id: int, state: SubscriptionState, reason: str | None = None
    ) -> bool: ...
    async def set_query(self, subscription_id: int, query: str | None) -> Subscription | None: ...
    async def disable_target(self, platform: str, address: str, reason: str) -> int: ...
    async def move_target(self, platform: str, old_address: str, new_address: str) -> int: ...


class Outbox(Protocol):
    """The deliveries, as the dispatcher reads, claims and settles them."""

    async def pending_after(self, after_id: int, limit: int = 5000) -> list[PendingDelivery]: ...
    async def data_version(self) -> int: ...
    async def pending_ids(self) -> set[int]: ...
    async def pending_by_ids(self, ids: Iterable[int]) -> list[PendingDelivery]: ...
    async def claim(self, ids: Sequence[int]) -> list[DeliveryJob]: ...
    async def let_go(self, ids: Sequence[int] | None = None) -> None:
        """Give back what this process claimed and will not send (these, or all): it stays
        pending, and another process may claim it at once."""
        ...

    async def posts(self, rowids: Iterable[int]) -> dict[int, PostForCard]: ...
    async def last_sent(self, subscription_id: int, post_rowid: int) -> SentRef | None: ...
    async def record(self, results: OutboxResults | Callable[[], OutboxResults]) -> None: ...
    async def dead(self, limit: int = 100) -> list[DeadDelivery]: ...
    async def retry_dead(self, ids: Sequence[int] | None = None) -> int: ...
    async def counts(self) -> dict[str, int]: ...


class Feeds(Protocol):
    """The blogs to follow, managed at run time (CLI, API, dashboard; LIVEDESK_SOURCES synced in).

    Every process sees the same rows; a poller re-reads them (`version()` tells it cheaply whether
    anything changed) and records each fetch's outcome here.
    """

    async def list(self) -> builtins.list[Feed]: ...
    async def get(self, feed_id: int) -> Feed | None: ...
    async def add(
        self, location: str, interval: float, *, origin: str, title: str | None = None
    ) -> Feed:
        """Raises storage.values.FeedExists when the location is already followed."""
        ...

    async def update(
        self, feed_id: int, *, interval: float | None = None, enabled: bool | None = None
    ) -> Feed | None: ...
    async def remove(self, feed_id: int) -> bool: ...
    async def record_fetch(
        self,
        feed_id: int,
        *,
        at: datetime,
        error: str | None,
        next_attempt_at: datetime,
        source_id: str | None = None,
    ) -> None: ...
    async def version(self) -> int:
        """A number that changes whenever a feed is added, changed or removed."""
        ...


class Replays(Protocol):
    """Slack slash-command signatures seen within the replay window, shared by every process."""

    async def first_seen(self, signature: str, now: float) -> bool: ...
    async def count(self) -> int: ...


class Store(Protocol):
    """One open store: its parts, its one write path for posts, and search."""

    backend: Backend
    shown_as: str
    """Where it is, for messages: a file path, or a server URL with its password masked."""
    posts: Posts
    subscriptions: Subscriptions
    outbox: Outbox
    replays: Replays
    feeds: Feeds

    async def ingest(
        self,
        result: ImportResult,
        *,
        location: str | None = None,
        fetch_state: FetchState | None = None,
        on_progress: ProgressCallback | None = None,
        new_source_deliveries: int | None = None,
    ) -> list[PostEvent]:
        """One document's posts and their deliveries in one transaction (storage.ingest)."""
        ...

    async def search(
        self, text: str, *, page: int = 1, per_page: int = 5, source_id: str | None = None
    ) -> SearchPage:
        """One page of posts matching a /search query, best first; raises QueryError only."""
        ...

    async def close(self) -> None: ...
