"""One entry per chat platform: everything the app, the CLI, the settings and the logs need to know.

An entry names the platform's settings section, its adapter (loaded lazily: a broken platform module
must not take the others down), how an operator's target is parsed and shown masked, whether the
platform needs a token before it can deliver (and which setting to set), which settings are secrets to
redact from logs, and whether a sent message can be edited. Adding a platform is one adapter module (with
its renderer), one entry here and one settings section in `bot.config`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bot.adapters.base import Adapter
from bot.config import DiscordSettings, Settings, SlackSettings, TelegramSettings
from bot.models import EditPolicy, Subscription, Target
from bot.redact import clean
from bot.targets import (
    discord_target,
    mask_url,
    public_options,
    slack_target,
    telegram_target,
    terminal_target,
)

TargetParser = Callable[[str, str | None, Mapping[str, str]], Target]


def _as_is(target: Target) -> str:
    return target.address


def _masked_url(target: Target) -> str:
    return mask_url(target.address)


@dataclass(frozen=True, slots=True)
class Platform:
    """What Livedesk knows about one chat platform."""

    name: str  # as stored in subscriptions and typed in `livedesk subscribe NAME`
    label: str  # for the operator: "Telegram chats"
    adapter: str  # "module:Class", imported only when the platform starts
    parse_target: TargetParser
    mask: Callable[[Target], str]  # the target's address as safe to print
    can_edit: bool  # an edited post can edit the sent message (else: a follow-up message)
    section: str | None = None  # the Settings attribute of its section; None: started by the demo
    settings_class: type[BaseModel] | None = None
    needs_token: bool = True  # False: it delivers with an empty section (incoming webhooks)
    token_setting: str | None = None  # what to set when it needs a token and has none
    target_options: frozenset[str] = frozenset()  # operator options its targets take (`--flavor`)

    @property
    def default_edit_policy(self) -> EditPolicy:
        return EditPolicy.EDIT if self.can_edit else EditPolicy.FOLLOW_UP

    def edit_policy(self, requested: str | EditPolicy | None) -> EditPolicy:
        """The policy asked for, or this platform's default; ValueError for one it cannot keep."""
        if requested is None:
            return self.default_edit_policy
        policy = EditPolicy(requested)
        if policy is EditPolicy.EDIT and not self.can_edit:
            raise ValueError(
                f"{self.label} cannot edit sent messages: use --edit-policy follow-up or ignore"
            )
        return policy

    def settings_of(self, settings: Settings) -> BaseModel | None:
        """Its section as configured (None when unset, or when it has none)."""
        if self.section is None:
            return None
        value = getattr(settings, self.section)
        return value if isinstance(value, BaseModel) else None

    def adapter_class(self) -> Callable[..., Adapter]:
        """The adapter class; ImportError/AttributeError when its module cannot be loaded."""
        module_name, _, class_name = self.adapter.partition(":")
        factory: Callable[..., Adapter] = getattr(importlib.import_module(module_name), class_name)
        return factory

    def waiting_line(self, count: int) -> str | None:
        """One line for subscriptions that cannot be delivered until the platform is configured."""
        if not count or not self.needs_token or self.token_setting is None:
            return None
        noun = "subscription waits" if count == 1 else "subscriptions wait"
        return f"{count} {self.name} {noun}: set {self.token_setting}"


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        name="telegram",
        label="Telegram chats",
        adapter="bot.adapters.telegram:TelegramAdapter",
        parse_target=telegram_target,
        mask=_as_is,
        can_edit=True,
        section="telegram",
        settings_class=TelegramSettings,
        token_setting="LIVEDESK_TELEGRAM__TOKEN",
    ),
    Platform(
        name="discord",
        label="Discord channels",
        adapter="bot.adapters.discord:DiscordAdapter",
        parse_target=discord_target,
        mask=_as_is,
        can_edit=True,
        section="discord",
        settings_class=DiscordSettings,
        token_setting="LIVEDESK_DISCORD__TOKEN",
        target_options=frozenset({"webhook"}),
    ),
    Platform(
        name="slack",
        label="Slack-style webhooks",
        adapter="bot.adapters.slack:SlackAdapter",
        parse_target=slack_target,
        mask=_masked_url,
        can_edit=False,
        section="slack",
        settings_class=SlackSettings,
        needs_token=False,
        target_options=frozenset({"flavor"}),
    ),
    Platform(
        name="terminal",
        label="the terminal",
        adapter="bot.adapters.terminal:TerminalAdapter",
        parse_target=terminal_target,
        mask=_as_is,
        can_edit=True,
        needs_token=False,
    ),
)
BY_NAME: dict[str, Platform] = {p.name: p for p in PLATFORMS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
# Started from their settings (the terminal is the demo's).
CONFIGURABLE: tuple[Platform, ...] = tuple(p for p in PLATFORMS if p.section is not None)


def platform(name: str) -> Platform:
    """The entry named `name`; ValueError (one line) for an unknown one."""
    found = BY_NAME.get(name.strip().lower())
    if found is None:
        raise ValueError(f"unknown platform {name!r}; use one of: {', '.join(NAMES)}")
    return found


def operator_target(
    platform_name: str,
    address: str,
    *,
    thread: str | None = None,
    flavor: str | None = None,
    webhook: str | None = None,
) -> Target:
    """A delivery target from what an operator typed; ValueError (one line) when it cannot be one.

    `flavor` is a Slack-style webhook's dialect; `webhook` (Discord) a channel webhook URL to post
    through instead of the bot."""
    entry = platform(platform_name)
    given = {k: v for k, v in (("flavor", flavor), ("webhook", webhook)) if v is not None}
    for option in given:
        if option not in entry.target_options:
            takers = [p.label for p in PLATFORMS if option in p.target_options]
            raise ValueError(f"--{option} applies to {' and '.join(takers)} only")
    return entry.parse_target(address.strip(), thread.strip() if thread else None, given)


def mask_address(target: Target) -> str:
    """The target's address as safe to print, masked by its platform's rule; a URL always masked."""
    entry = BY_NAME.get(target.platform)
    shown = entry.mask(target) if entry is not None else target.address
    if shown == target.address and (target.kind == "webhook" or "://" in shown):
        return mask_url(shown)  # a webhook URL is a secret, whatever platform holds it
    return shown


def masked_webhook(target: Target) -> str | None:
    """A Discord channel's webhook, masked like every webhook URL: `https://discord.com/…/XXXX`."""
    hook_id, token = target.options.get("webhook_id"), target.options.get("webhook_token")
    if not hook_id or not token:
        return None
    return mask_url(f"https://discord.com/api/webhooks/{hook_id}/{token}")


def options_json(target: Target) -> dict[str, str]:
    """The target's options, secrets masked the one way webhook URLs are."""
    options = public_options(target)
    webhook = masked_webhook(target)
    if webhook is not None:
        options.pop("webhook_token", None)
        options["webhook"] = webhook
    return options


def subscription_json(sub: Subscription) -> dict[str, Any]:
    """A subscription as `livedesk --json subscriptions` and the API show it: addresses masked."""
    return {
        "id": sub.id,
        "platform": sub.target.platform,
        "target": mask_address(sub.target),
        "thread": sub.target.thread,
        "kind": sub.target.kind,
        "options": options_json(sub.target),
        "source_id": sub.source_id,
        "keywords": sub.query,
        "edit_policy": sub.edit_policy.value,
        "state": sub.state.value,
        "reason": clean(sub.reason) if sub.reason else None,
        "created_by": sub.created_by,
        "created_at": sub.created_at.isoformat(),
    }


def waiting_lines(settings: Settings, active: Mapping[str, int]) -> list[str]:
    """One line per platform whose subscriptions wait for a setting (`active`: counts by platform)."""
    lines = []
    for entry in CONFIGURABLE:
        if entry.settings_of(settings) is None:
            line = entry.waiting_line(active.get(entry.name, 0))
            if line is not None:
                lines.append(line)
    return lines


__all__ = [
    "BY_NAME",
    "CONFIGURABLE",
    "NAMES",
    "PLATFORMS",
    "Platform",
    "mask_address",
    "operator_target",
    "platform",
    "public_options",
    "waiting_lines",
]
