"""Subscriptions named in the settings, written into the store at start (adapters never touch it).

Today that is `LIVEDESK_SLACK__WEBHOOKS`: each listed incoming webhook becomes a subscription once.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from bot.config import ConfigError, Settings, SlackSettings
from bot.models import Target
from bot.platforms import BY_NAME
from bot.targets import mask_url
from storage.interface import Subscriptions
from storage.values import NewSubscription, normalize_query

log = logging.getLogger(__name__)


async def provision(subscriptions: Subscriptions, settings: Settings) -> int:
    """Write the subscriptions the settings name and the store lacks; return how many were added."""
    if settings.slack is None:
        return 0
    return await sync_configured_webhooks(subscriptions, settings.slack)


async def sync_configured_webhooks(subscriptions: Subscriptions, settings: SlackSettings) -> int:
    """Subscribe every webhook named in the settings that has no subscription yet; return how many.

    Idempotent: one already there (in any state: one disabled because its channel was archived stays
    disabled) is left alone. Bad keywords raise ConfigError naming the hook masked.
    """
    entry = BY_NAME["slack"]
    # Only the configured addresses are looked up (by the unique index): a store may hold a
    # million webhook subscriptions, and loading them all to find a handful cost ~3 KB each.
    seen: set[tuple[str, str | None, str | None]] = set()
    looked_up: set[str] = set()
    wanted: list[NewSubscription] = []
    for hook in settings.webhooks:
        url = hook.url.get_secret_value()
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"Slack webhook {mask_url(url)} is not an http(s) URL")
        if url not in looked_up:
            looked_up.add(url)
            seen.update(
                (s.target.address, s.source_id, s.query)
                for s in await subscriptions.list(platform=entry.name, address=url)
            )
        query = normalize_query(hook.keywords)
        source = (hook.source or "").strip() or None
        if (url, source, query) in seen:
            continue
        seen.add((url, source, query))
        target = Target(
            platform=entry.name, address=url, kind="webhook", options={"flavor": hook.flavor}
        )
        wanted.append(
            NewSubscription(
                target=target,
                created_by="settings",
                source_id=source,
                query=query,
                edit_policy=entry.default_edit_policy,
            )
        )
    if not wanted:
        return 0
    try:
        await subscriptions.add_many(wanted)
    except ValueError as exc:  # QueryError / SubscriptionError: one polite line, no URL in it
        raise ConfigError(f"Slack webhook settings: {exc}") from None
    log.info("subscribed %d Slack-style webhook(s) from the settings", len(wanted))
    return len(wanted)
