"""What every command handler shares: its dependencies, the command table, and small helpers.

A handler is a plain `async def handle(request, deps) -> Reply`; it takes neutral types and answers
neutral types, so the same code serves every platform. Nothing here imports a platform SDK.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from bot.models import Reply, Request
from storage.interface import Posts, Store, Subscriptions
from storage.values import SearchPage

UTC_ZONE = ZoneInfo("UTC")

# Quotes that phones and word processors put around a phrase, besides the plain one.
QUOTES = frozenset('"“”„')


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything a handler may use, passed as one typed object."""

    store: Store
    """The store, on whichever backend (storage.interface): handlers see only its contract."""
    backfill: int = 3  # posts a new subscription gets at once
    timezone: ZoneInfo = UTC_ZONE  # times in replies are shown in this zone
    on_search: Callable[[float], None] | None = None  # told each search's duration (the metrics)

    async def search(self, text: str, *, page: int = 1, per_page: int = 5) -> SearchPage:
        """The store's search, timed for `on_search`; raises QueryError only."""
        started = time.perf_counter()
        try:
            return await self.store.search(text, page=page, per_page=per_page)
        finally:
            if self.on_search is not None:
                self.on_search(time.perf_counter() - started)

    @property
    def posts(self) -> Posts:
        return self.store.posts

    @property
    def subscriptions(self) -> Subscriptions:
        return self.store.subscriptions


Handler = Callable[[Request, Deps], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class ArgInfo:
    """One argument of a command, for menus that want typed options (Discord slash commands)."""

    name: str
    description: str
    required: bool = False
    kind: Literal["text", "integer"] = "text"


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command as adapters list it: Telegram's command menu, Discord slash commands, help text.

    An adapter with typed options joins the given values in order with spaces and splits the line
    with `split_command_line`, so `"quoted phrases"` stay one argument.
    """

    name: str
    summary: str  # one short line (Telegram allows 256 characters, Discord 100)
    usage: str  # e.g. "latest [n] [blog]"
    args: tuple[ArgInfo, ...] = ()


COMMANDS: tuple[CommandInfo, ...] = (
    CommandInfo("help", "What this bot does and how to use it", "help"),
    CommandInfo(
        "latest",
        "Show the newest posts",
        "latest [n] [blog]",
        (
            ArgInfo("n", "How many posts (1-20, default 5)", kind="integer"),
            ArgInfo("blog", "Only this blog (name or id)"),
        ),
    ),
    CommandInfo(
        "search",
        "Search all posts",
        'search <words or "a phrase"> [page]',
        (
            ArgInfo("query", 'Words, "a phrase", -excluded', required=True),
            ArgInfo("page", "Result page (default 1)", kind="integer"),
        ),
    ),
    CommandInfo(
        "post",
        "Show one whole post and its edit history",
        "post <number>",
        (ArgInfo("id", "The number shown with each post (or its full id)", required=True),),
    ),
    CommandInfo(
        "subscribe",
        "Send new posts to this chat",
        "subscribe [blog] [keywords…]",
        (
            ArgInfo("blog", "Only this blog (name or id); leave out for every blog"),
            ArgInfo("keywords", "Only posts matching these words"),
        ),
    ),
    CommandInfo(
        "unsubscribe",
        "Stop sending posts to this chat",
        "unsubscribe [id | blog | keywords]",
        (ArgInfo("which", "A subscription id, a blog or keywords; leave out for all"),),
    ),
    CommandInfo("subscriptions", "List this chat's subscriptions", "subscriptions"),
    CommandInfo("sources", "List the blogs, with post counts", "sources"),
)


class UserError(Exception):
    """A request the user can fix; its message is shown to them as is."""


def error_reply(text: str) -> Reply:
    return Reply(text=text, error=True)


def normalize_command(command: str) -> str:
    """'/Latest@livedesk_bot' → 'latest'."""
    return command.strip().lstrip("/").split("@", 1)[0].casefold()


def split_command_line(line: str) -> tuple[str, tuple[str, ...]]:
    """Split 'search "oil prices" -gas 2' into ('search', ('"oil prices"', '-gas', '2')).

    Words split on whitespace, except inside quotes; a quoted phrase stays one argument *with* its
    quotes, so search still sees a phrase. A leading '/' on the command is dropped.
    """
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line.strip():
        if char in QUOTES:
            quoted = not quoted
            current.append(char)
        elif char.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    if not words:
        return "", ()
    return normalize_command(words[0]), tuple(words[1:])


def as_number(text: str) -> int | None:
    """A number as typed in a chat (`12`, `-3`), else None: '²', '1e99' and '١٢' are words here."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > 30:  # more than any count or id; int() refuses past 4,300 digits anyway
        digits = "1" + "0" * 30
    return -int(digits) if text.startswith("-") else int(digits)


def format_time(value: datetime, zone: ZoneInfo) -> str:
    """'21 Jan 2022, 14:05 CET': a time as people read it, in the configured zone."""
    local = value.astimezone(zone)
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname() or zone.key}"


def plural(count: int, word: str, plural_word: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural_word or word + 's')}"


def quote(text: str) -> str:
    """“text”, or the text as typed when it has quotes of its own (a search phrase)."""
    return text if any(q in text for q in QUOTES) else f"“{text}”"
