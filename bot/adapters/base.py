"""The adapter contract: what every chat platform implements, and the errors it reports.

An adapter renders neutral `Card`s and `Reply`s in its own markup, sends them, and turns its platform's
inbound events into neutral `Request`s answered by the shared `handlers/` code. Its limits are data
(`Capabilities`) so the dispatcher can pace deliveries without knowing the platform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from bot.models import Card, Reply, Request, Target

Markup = Literal["html", "markdown", "mrkdwn", "plain", "rich"]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` messages per `per` seconds."""

    count: int
    per: float

    @property
    def per_second(self) -> float:
        return self.count / self.per


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A platform's sending limits. `per_kind` adds a limit for one kind of target: a Telegram group
    gets both 1/s (per chat) and 20/min (per group); `rates_for` gives every limit that applies."""

    overall: Rate | None = None
    per_target: Rate | None = None
    per_kind: dict[str, Rate] = field(default_factory=dict)

    def for_target(self, target: Target) -> Rate | None:
        """The kind's own limit, else the per-target one (the first of `rates_for` to bind)."""
        return self.per_kind.get(target.kind, self.per_target)

    def rates_for(self, kind: str) -> tuple[Rate, ...]:
        """Every limit a target of this kind is under, all at once."""
        extra = self.per_kind.get(kind)
        return tuple(r for r in (self.per_target, extra) if r is not None)


@dataclass(frozen=True, slots=True)
class Capabilities:
    max_text: int
    markup: Markup
    can_edit: bool
    rate_limits: RateLimits = field(default_factory=RateLimits)


# --- what sending can go wrong with -----------------------------------------------------------------


class DeliveryError(Exception):
    """Base of every error an adapter reports from send/edit. The message is safe to store and show."""


class TransientError(DeliveryError):
    """Timeout, network error, 5xx: try again later with backoff."""


class RateLimited(DeliveryError):
    """The platform said 429: wait `retry_after` seconds for this target, or for the whole platform."""

    def __init__(self, retry_after: float, *, global_: bool = False, message: str = "") -> None:
        super().__init__(message or f"rate limited, retry after {retry_after:g}s")
        self.retry_after = retry_after
        self.global_ = global_


class PermanentError(DeliveryError):
    """Blocked, kicked, channel not found, forbidden, archived: the subscription is disabled."""


class InvalidPayload(DeliveryError):
    """The platform refused what we sent (e.g. Slack's invalid_payload): the delivery is dead."""


class TargetMoved(DeliveryError):
    """The chat now lives at another address (Telegram's migrate_to_chat_id): move and retry."""

    def __init__(self, new_address: str) -> None:
        super().__init__(f"chat moved to {new_address}")
        self.new_address = new_address


class StartupError(Exception):
    """An adapter cannot start (wrong token, unreachable platform). One clear line for the operator."""


CommandHandler = Callable[[Request], Awaitable[Reply]]
SourceNames = Callable[[], Awaitable[list[str]]]


UTC = ZoneInfo("UTC")


async def _no_source_names() -> list[str]:
    return []


HttpMount = Callable[[str, Callable[[Any], Awaitable[Any]], str], None]
"""(path, aiohttp handler, what it is): serve POST `path` on the app's HTTP server (the control
room, `bot.web.server`) instead of a server of the adapter's own."""

FirstSeen = Callable[[str, float], Awaitable[bool]]  # (signature, now) → not seen in the window yet


Sent = TypeVar("Sent")


class Pacer(Protocol):
    """The bot's sending budget, shared by the dispatcher's pushes and the adapters' command replies
    (`bot.ratelimit.SendBudget`): a reply takes the next free slot ahead of queued pushes, and one
    that meets a 429 (`send` raises RateLimited) is sent again after its retry-after."""

    async def reply(
        self, adapter: Adapter, target: Target, send: Callable[[], Awaitable[Sent]]
    ) -> Sent: ...


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What the composition root gives an adapter at start (with its settings, all it gets)."""

    handle: CommandHandler  # runs a neutral request through handlers/ and answers a neutral reply
    timezone: ZoneInfo = UTC  # how times are shown in chats
    http_host: str = "127.0.0.1"  # where adapters that serve HTTP (Slack's slash command) listen
    http_port: int = 8080
    source_names: SourceNames = _no_source_names  # blog titles, offered as choices
    first_seen: FirstSeen | None = None  # signed requests seen, kept in the store (replays refused)
    pacer: Pacer | None = None  # the budget replies share with pushes (None: the adapter's own)
    mount: HttpMount | None = None  # the app's HTTP server (None: an adapter serves HTTP itself)


class Adapter(ABC):
    """One chat platform."""

    platform: str
    capabilities: Capabilities

    @abstractmethod
    async def start(self, context: AdapterContext) -> None:
        """Connect, check credentials (raise StartupError with one clear line), begin receiving commands."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving; finish or drop nothing silently."""

    @abstractmethod
    async def send(self, target: Target, card: Card) -> str:
        """Send a post; return the platform's message reference (for later edits)."""

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        """Edit a sent post in place; return the (possibly new) reference. Only when `can_edit`."""
        raise PermanentError(f"{self.platform} cannot edit sent messages")
