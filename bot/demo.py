"""The demo: the bundled sample blog replayed as if it were live, into a terminal channel.

Its posts arrive in publication order, a few seconds apart, and once an earlier post is edited, so every
flow shows: new post → delivery, edit → update. The store decides what is new, so replaying into a
database that already holds the sample delivers nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from importlib import resources

from bot.models import ImportResult, Post, PostEvent, Target
from bot.sources import parse_document
from storage.interface import Store, Subscriptions
from storage.values import SAMPLE_SCHEME

log = logging.getLogger(__name__)

SAMPLE_LOCATION = f"{SAMPLE_SCHEME}sample_blog.txt"
TERMINAL_TARGET = Target(platform="terminal", address="console", kind="terminal")
# What the prompt suggests typing: each of these finds posts in the sample blog.
SUGGESTED_SEARCHES = ("flood", '"power outage"')
PROMPT_HINT = (
    f"Type a command — help, latest 3, search {SUGGESTED_SEARCHES[0]}, "
    f"search {SUGGESTED_SEARCHES[1]}, post N (the number on a post), subscribe shelter — or quit."
)
EDIT_NOTE = (
    "Update: this post was revised after publication with the latest figures from officials; "
    "the earlier version is kept in its edit history."
)


def sample_document() -> ImportResult:
    """The bundled sample blog, parsed."""
    data = resources.files("bot").joinpath("data", "sample_blog.txt").read_bytes()
    return parse_document(data, location=SAMPLE_LOCATION)


def edited(post: Post, at: Post) -> Post:
    """`post` as its newsroom might revise it: a correction note, marked updated at `at`'s time."""
    return post.model_copy(
        update={
            "body": (*post.body, EDIT_NOTE),
            "updated_at": max(at.published_at, post.published_at + timedelta(minutes=1)),
        }
    )


def replay_steps(document: ImportResult) -> list[ImportResult]:
    """Documents to import one after another: growing prefixes in time order, and one edit.

    The edit lands two thirds of the way through and touches the first post, so a reader has
    already seen it when it changes.
    """
    posts = sorted(document.posts, key=lambda p: (p.published_at, p.id))
    if not posts:
        return []
    edit_after = max(1, (2 * len(posts)) // 3)
    steps: list[tuple[Post, ...]] = []
    revised: Post | None = None
    for count in range(1, len(posts) + 1):
        prefix = list(posts[:count])
        if revised is not None:
            prefix[0] = revised
        steps.append(tuple(prefix))
        if count == edit_after and len(posts) > 1:
            revised = edited(posts[0], posts[count - 1])
            steps.append((revised, *prefix[1:]))
    return [document.model_copy(update={"posts": step, "warnings": ()}) for step in steps]


class DemoReplay:
    """Subscribes the terminal to everything and imports the sample blog step by step."""

    def __init__(
        self,
        store: Store,
        *,
        step_seconds: float = 5.0,
        on_import: Callable[[list[PostEvent]], None] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.posts = store.posts
        self.subscriptions = store.subscriptions
        self.step_seconds = step_seconds
        self.on_import = on_import
        self.settle = settle  # until the imported posts are delivered (so "done" comes last)
        self.say = say
        self.document = sample_document()
        self.steps = replay_steps(self.document)
        self.done = asyncio.Event()
        self.events: list[PostEvent] = []

    async def prepare(self) -> None:
        """Subscribe the terminal; if an earlier run already replayed the sample, show its latest."""
        known = [p for p in self.document.posts if await self.posts.get(p.id) is not None]
        if known and self.steps:
            # Start from the text already stored, so replaying again reverts no edit.
            final = {p.id: p for p in self.steps[-1].posts}
            stored = {p.id: await self.posts.get(p.id) for p in final.values()}
            self.steps = [
                step.model_copy(
                    update={"posts": tuple(_settled(p, final, stored) for p in step.posts)}
                )
                for step in self.steps
            ]
        if known:
            # A backfill greets only a new subscription: start the terminal's afresh to show the
            # latest posts again (its chat-made /subscribe filters are left alone).
            for sub in await self.subscriptions.list(platform=TERMINAL_TARGET.platform):
                if sub.created_by == "demo" and sub.query is None and sub.source_id is None:
                    await self.subscriptions.remove(sub.id)
        _, created = await self.subscriptions.add(
            TERMINAL_TARGET,
            created_by="demo",
            backfill=3 if known else 0,
        )
        title = self.document.source.title
        if known:
            self.say(
                f"The sample blog “{title}” is already in this database: showing its latest posts. "
                "Delete the database file to replay it from the start."
            )
        else:
            seconds = round(self.step_seconds * (len(self.steps) - 1))
            pace = f"over about {seconds} seconds" if seconds else "at once"
            self.say(
                f"Replaying the sample blog “{title}”: {len(self.document.posts)} posts "
                f"{pace}, with one edit."
            )
        log.debug("terminal subscription %s", "created" if created else "already there")

    async def run(
        self,
        *,
        instant: bool = False,
        after_step: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Import each step in turn, `step_seconds` apart (or at once); `after_step` runs after each
        import (`run --once` delivers there, so the edit still arrives after the post it edits)."""
        try:
            for index, step in enumerate(self.steps):
                if index and not instant:
                    await asyncio.sleep(self.step_seconds)
                events = await self.store.ingest(step, location=SAMPLE_LOCATION)
                self.events.extend(events)
                if events and self.on_import is not None:
                    self.on_import(events)
                if after_step is not None:
                    await after_step()
            if not instant and self.settle is not None:
                await self.settle()
        finally:
            self.done.set()
        if not instant:
            self.say("The sample blog replay is done.")

    async def forget_terminal(self) -> int:
        """Remove the terminal's subscriptions (the demo's, and any /subscribe made at its prompt):
        the terminal channel does not outlive the demo. Returns how many were removed."""
        return await forget_terminal(self.subscriptions)


async def forget_terminal(subscriptions: Subscriptions) -> int:
    """Remove every terminal subscription with its deliveries; how many there were. Also run at a
    start without the demo: a demo that was killed could not remove its own."""
    removed = 0
    for sub in await subscriptions.list(platform=TERMINAL_TARGET.platform):
        removed += await subscriptions.remove(sub.id)
    return removed


def _settled(post: Post, final: dict[str, Post], stored: dict[str, Post | None]) -> Post:
    """The final text of a post that the store already holds in that final form."""
    latest = final.get(post.id)
    current = stored.get(post.id)
    if latest is not None and current is not None and current.content_hash == latest.content_hash:
        return latest
    return post
