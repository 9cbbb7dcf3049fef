"""Slack-style incoming webhooks (Slack, Mattermost, Rocket.Chat, Microsoft Teams) and Slack's slash command.

Delivery goes through one pooled aiohttp `ClientSession`, not slack_sdk's `AsyncWebhookClient`: the
dispatcher owns retries and honours `Retry-After` itself, so every 429 and 5xx must reach it unhidden (the
SDK's `AsyncRateLimitErrorRetryHandler` would sleep inside `send`, holding a worker); the SDK logs the
whole URL at debug level, and the URL is a secret; Mattermost and Teams hooks are not Slack anyway; and one
pooled session keeps fan-out fast: in `bench/webhooks.py` (1,000 hooks) the SDK sharing a session reaches
0.7-0.9x raw aiohttp, and with its default session per call 0.3-0.5x.

A webhook URL is a secret: it only ever appears masked (`https://hooks.slack.com/…/AbCd`) in logs and errors.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import aiohttp

from bot.adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    RateLimits,
    TransientError,
)
from bot.adapters.slack_commands import ANSWER_WITHIN, SlashCommands
from bot.adapters.slack_render import FLAVORS, render_card
from bot.config import SlackSettings
from bot.models import Card, Target
from bot.targets import mask_url

log = logging.getLogger(__name__)

UTC_ZONE = ZoneInfo("UTC")
WEBHOOK_RATE = Rate(1, 1.0)  # Slack: about one message per second per webhook
SENT_REF = "webhook"  # incoming webhooks return no message id (and cannot edit)
# invalid_token / action_prohibited / channel_not_found / channel_is_archived: stop sending there
_GONE = frozenset({401, 403, 404, 410})
_REASON_MAX = 200
_RENDER_CACHE = 256  # rendered payloads kept (cards are frozen, so equal cards render the same)
_JSON = {"Content-Type": "application/json"}


class SlackAdapter(Adapter):
    """Posts cards to incoming webhooks in their flavor; serves `/livedesk` when a signing secret is set."""

    platform = "slack"

    def __init__(
        self,
        settings: SlackSettings,
        *,
        per_hook_rate: Rate = WEBHOOK_RATE,
        timeout: float = 10.0,
        connections: int = 100,
        allow_loopback_responses: bool = False,
        answer_within: float = ANSWER_WITHIN,
    ) -> None:
        self.settings = settings
        self.zone = UTC_ZONE  # the operator's, from the context at start
        self.capabilities = Capabilities(
            max_text=4000,
            markup="mrkdwn",
            can_edit=False,
            rate_limits=RateLimits(per_target=per_hook_rate),
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._connections = connections
        self._allow_loopback = allow_loopback_responses
        self._answer_within = answer_within
        self._session: aiohttp.ClientSession | None = None
        self._commands: SlashCommands | None = None
        self._rendered: dict[tuple[str, Card], bytes] = {}

    @property
    def http_port(self) -> int | None:
        """The port the slash-command endpoint is bound to (useful with port 0), None when it is off."""
        return self._commands.port if self._commands is not None else None

    async def start(self, context: AdapterContext) -> None:
        self.zone = context.timezone
        session = self._client()
        secret = self.settings.signing_secret
        if secret is not None and secret.get_secret_value():  # no secret: webhooks only
            self._commands = SlashCommands(
                secret.get_secret_value(),
                context.handle,
                session,
                zone=self.zone,
                host=context.http_host,
                port=context.http_port,
                allow_loopback_responses=self._allow_loopback,
                answer_within=self._answer_within,
                first_seen=context.first_seen,
            )
            if context.mount is not None:
                self._commands.attach(context.mount)
            else:
                await self._commands.start()
        log.info("Slack-style webhooks ready")

    async def stop(self) -> None:
        if self._commands is not None:
            await self._commands.stop()
            self._commands = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, target: Target, card: Card) -> str:
        url = target.address
        # The masked URL is made only for a refusal or a failure: a tenth of a send's cost.
        if target.kind != "webhook" or not _is_http(url):
            raise PermanentError(
                f"Slack delivers to incoming webhooks only; {mask_url(url)} is not a webhook URL"
            )
        flavor = target.options.get("flavor", "slack")
        if flavor not in FLAVORS:
            raise PermanentError(f"unknown webhook flavor {flavor!r} for {mask_url(url)}")
        try:
            async with self._client().post(
                url, data=self._payload(flavor, card), headers=_JSON
            ) as response:
                status = response.status
                answer = await response.read()  # decoded only when it says why it refused
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise TransientError(f"{mask_url(url)} timed out") from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"network error posting to {mask_url(url)}: {type(exc).__name__}"
            ) from None
        if 200 <= status < 300:
            return SENT_REF
        masked = mask_url(url)
        reason = _reason(answer.decode("utf-8", errors="replace").strip(), url)
        log.warning("webhook %s (%s) answered %d %s", masked, flavor, status, reason)
        if status == 429:
            raise RateLimited(_retry_after(retry_after), message=f"{masked} rate limited: {reason}")
        if status in _GONE:
            raise PermanentError(f"{masked}: {status} {reason}")
        if status == 408 or status >= 500:
            raise TransientError(f"{masked}: {status} {reason}")
        raise InvalidPayload(f"{masked}: {status} {reason}")

    def _payload(self, flavor: str, card: Card) -> bytes:
        """The encoded payload; one post fanned out to many hooks is rendered once per flavor."""
        key = (flavor, card)
        data = self._rendered.get(key)
        if data is None:
            rendered = render_card(flavor, card, self.zone)
            data = json.dumps(rendered, ensure_ascii=False).encode("utf-8")
            self._rendered[key] = data
            if len(self._rendered) > _RENDER_CACHE:
                del self._rendered[next(iter(self._rendered))]
        return data

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
        return self._session


def _is_http(url: str) -> bool:
    """Whether the URL's scheme is http or https; the usual spelling without parsing the URL (a
    parse was a tenth of a send)."""
    if url.startswith(("https://", "http://")):
        return True
    return urlsplit(url).scheme in ("http", "https")


def _reason(body: str, url: str) -> str:
    """The platform's one-word error (`channel_not_found`), short, with the URL never repeated whole."""
    text = " ".join(body.split()) or "no reason given"
    text = text.replace(url, mask_url(url))
    path = urlsplit(url).path
    if len(path) > 8:
        text = text.replace(path, "/…")
    return text[:_REASON_MAX]


def _retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


__all__ = ["SlackAdapter"]
