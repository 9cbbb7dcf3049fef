"""Targets named by the operator, parsed per platform (`bot.platforms` picks the parser); webhook URLs masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from bot.models import Target, TargetKind
from bot.redact import mask_url as mask_url  # its rule lives with the redaction

FLAVORS = ("slack", "mattermost", "teams")
TERMINAL_ADDRESS = "console"

_TELEGRAM_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
_TELEGRAM_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_DISCORD_SNOWFLAKE = re.compile(r"[0-9]{15,21}")

# Each parser takes what the operator typed: the address, a thread, and the platform's own options
# (only those its registry entry in `bot.platforms` accepts reach it).


def telegram_target(address: str, thread: str | None, options: Mapping[str, str]) -> Target:
    """An integer chat id (positive: private, negative: group, -100…: channel) or an @username."""
    return _telegram(address, thread)


def discord_target(address: str, thread: str | None, options: Mapping[str, str]) -> Target:
    """A numeric channel id; with `webhook`, the channel webhook URL to post through."""
    target = _discord(address, thread)
    webhook = options.get("webhook")
    if webhook is not None:
        webhook_id, token = _discord_webhook(webhook)
        target = target.model_copy(
            update={"options": {"webhook_id": webhook_id, "webhook_token": token}}
        )
    return target


def slack_target(address: str, thread: str | None, options: Mapping[str, str]) -> Target:
    """An http(s) incoming-webhook URL in one of the FLAVORS."""
    return _slack(address, thread, options.get("flavor"))


def terminal_target(address: str, thread: str | None, options: Mapping[str, str]) -> Target:
    """The demo's console."""
    if address not in ("", TERMINAL_ADDRESS):
        raise ValueError(f"the terminal target is {TERMINAL_ADDRESS!r}, not {address!r}")
    return Target(platform="terminal", address=TERMINAL_ADDRESS, kind="terminal")


def _telegram(address: str, thread: str | None) -> Target:
    if thread is not None and not thread.isdigit():
        raise ValueError(f"a Telegram topic is a number, not {thread!r}")
    kind: TargetKind
    if _TELEGRAM_USERNAME.fullmatch(address):
        kind = "channel"
    elif _TELEGRAM_CHAT_ID.fullmatch(address):
        number = int(address)
        if number == 0:
            raise ValueError("a Telegram chat id cannot be 0")
        if address.startswith("-100"):
            kind = "channel"
        elif number < 0:
            kind = "group"
        else:
            kind = "private"
        address = str(number)
    else:
        raise ValueError(f"a Telegram chat is an integer chat id or an @username, not {address!r}")
    return Target(platform="telegram", address=address, thread=thread, kind=kind)


def _discord(address: str, thread: str | None) -> Target:
    if not _DISCORD_SNOWFLAKE.fullmatch(address):
        raise ValueError(f"a Discord channel is a numeric channel id, not {address!r}")
    if thread is not None and not _DISCORD_SNOWFLAKE.fullmatch(thread):
        raise ValueError(f"a Discord thread is a numeric thread id, not {thread!r}")
    return Target(platform="discord", address=address, thread=thread, kind="channel")


_DISCORD_WEBHOOK = re.compile(
    r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks/"
    r"([0-9]{15,21})/([A-Za-z0-9_-]{20,100})/?"
)


def _discord_webhook(url: str) -> tuple[str, str]:
    found = _DISCORD_WEBHOOK.fullmatch(url.strip())
    if found is None:
        # Never echo it: the token is in the URL.
        raise ValueError("a Discord webhook is https://discord.com/api/webhooks/<id>/<token>")
    return found.group(1), found.group(2)


def public_options(target: Target) -> dict[str, str]:
    """The target's options without secrets (a Discord webhook token)."""
    return {k: ("…" if k.endswith("token") else v) for k, v in target.options.items()}


def _slack(address: str, thread: str | None, flavor: str | None) -> Target:
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in address:
        # Never echo the address: it may be a webhook URL with its secret in it.
        raise ValueError("a Slack-style target is an http(s) webhook URL")
    chosen = (flavor or "slack").lower()
    if chosen not in FLAVORS:
        raise ValueError(f"unknown webhook flavor {flavor!r}; use one of: {', '.join(FLAVORS)}")
    return Target(
        platform="slack", address=address, thread=thread, kind="webhook", options={"flavor": chosen}
    )
