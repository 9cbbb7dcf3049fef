"""A fake Discord REST API on 127.0.0.1 that speaks the real wire format, so real discord.py code runs end
to end against it (point `discord.http.Route.BASE` at `fake.api_base`).

It serves what Livedesk calls: login (`/users/@me`, `/oauth2/applications/@me`, `/gateway/bot`), channel
messages (send, edit), webhooks (execute, edit), application command sync (global and guild), interaction
callbacks and follow-ups. It
- keeps every message (`fake.messages`, `fake.in_channel(id)`), every interaction answer
  (`fake.answers`), autocomplete choices and the synced commands;
- answers JSON with `Content-Type` exactly `application/json` and sends `X-RateLimit-*` headers on every
  answer, errors included;
- enforces per-route buckets (5 messages / 5 s per channel, 5 / 2 s per webhook: fixed windows, as the
  headers announce them) and the global 50 requests/s (a sliding window; interactions do not count),
  answering 429 with `Retry-After`, JSON `retry_after`/`global` and a `Via` header;
- rejects what Discord rejects with 400 code 50035 "Invalid Form Body": content over 2000, over 10 embeds,
  embed title 256, description 4096, 25 fields (name 256, value 1024, both non-empty), footer 2048,
  author 256, 6000 across all embeds, non-http(s) embed URLs, over-long button labels and custom ids;
- can be told a channel is unknown (404 code 10003) or off limits (403 code 50001).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

TOKEN = "fake-bot-token"
APPLICATION_ID = 900000000000000001
BOT_USER_ID = 900000000000000002
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
VIEW_AND_SEND = (1 << 10) | (1 << 11)  # view channel, send messages

EMBED_LIMITS = {"title": 256, "description": 4096, "footer": 2048, "author": 256}
MAX_FIELDS = 25
FIELD_NAME = 256
FIELD_VALUE = 1024
EMBEDS_TOTAL = 6000
MAX_EMBEDS = 10
MAX_CONTENT = 2000


@dataclass(frozen=True, slots=True)
class Bucket:
    limit: int
    per: float


@dataclass(slots=True)
class Limits:
    global_per_second: int = 50
    channel_messages: Bucket = field(default_factory=lambda: Bucket(5, 5.0))
    webhook: Bucket = field(default_factory=lambda: Bucket(5, 2.0))
    other: Bucket = field(default_factory=lambda: Bucket(50, 1.0))


@dataclass(slots=True)
class Message:
    """A message as the fake keeps it: where, what, and how it was sent."""

    id: int
    channel_id: int
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    allowed_mentions: dict[str, Any] | None
    flags: int = 0
    via: str = "bot"  # "bot", "webhook:<id>", "interaction"
    edits: int = 0

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components for c in row.get("components", [])]

    @property
    def text(self) -> str:
        """Everything a reader sees, as one string (content, then each embed's parts)."""
        parts = [self.content]
        for embed in self.embeds:
            parts.append(embed.get("author", {}).get("name", ""))
            parts.append(embed.get("title", ""))
            parts.append(embed.get("description", ""))
            for f in embed.get("fields", []):
                parts.extend((f["name"], f["value"]))
            parts.append(embed.get("footer", {}).get("text", ""))
        return "\n".join(p for p in parts if p)


class InvalidForm(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Window:
    """A fixed rate-limit window per bucket key, as Discord announces it in X-RateLimit-* headers."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.started = 0.0
        self.used = 0

    def take(self, now: float) -> tuple[bool, float]:
        if now >= self.started + self.bucket.per:
            self.started, self.used = now, 0
        if self.used >= self.bucket.limit:
            return False, self.started + self.bucket.per - now
        self.used += 1
        return True, self.started + self.bucket.per - now

    def headers(self, now: float, name: str) -> dict[str, str]:
        reset_after = max(0.0, self.started + self.bucket.per - now)
        return {
            "X-RateLimit-Limit": str(self.bucket.limit),
            "X-RateLimit-Remaining": str(max(0, self.bucket.limit - self.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": name,
        }


class FakeDiscord:
    """The fake REST API; `async with FakeDiscord() as fake:` serves it on a free port."""

    def __init__(self, *, limits: Limits | None = None, token: str = TOKEN) -> None:
        self.token = token
        self.limits = limits or Limits()
        self.messages: list[Message] = []
        self.answers: list[dict[str, Any]] = []  # interaction callbacks, as posted
        self.choices: list[list[dict[str, Any]]] = []  # autocomplete answers
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global)
        self.unknown_channels: set[int] = set()
        self.forbidden_channels: set[int] = set()
        self.webhooks: dict[int, tuple[str, int]] = {}  # id → (token, channel id)
        # channel id → answers to give instead of the next sends: (status, JSON body, extra headers)
        self.fail_next: dict[int, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self.rate_limited = 0  # 429 answers given
        self.invalid = 0  # 400 answers given
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self._windows: dict[str, _Window] = {}
        self._global: deque[float] = deque()
        self._interaction_channels: dict[str, int] = {}  # interaction token → channel id
        self._changed = asyncio.Event()
        self.sessions: list[web.WebSocketResponse] = []  # identified gateway connections
        self.identified: list[dict[str, Any]] = []  # IDENTIFY payloads received
        self._sequence = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/v10/users/@me", self._me)
        r.add_get("/api/v10/oauth2/applications/@me", self._application)
        r.add_get("/api/v10/gateway/bot", self._gateway)
        r.add_get("/gateway", self._websocket)
        r.add_post("/api/v10/channels/{channel}/messages", self._send)
        r.add_patch("/api/v10/channels/{channel}/messages/{message}", self._edit)
        r.add_put("/api/v10/applications/{app}/commands", self._sync)
        r.add_put("/api/v10/applications/{app}/guilds/{guild}/commands", self._sync)
        r.add_post("/api/v10/interactions/{id}/{token}/callback", self._callback)
        r.add_post("/api/v10/webhooks/{id}/{token}", self._execute)
        r.add_patch("/api/v10/webhooks/{id}/{token}/messages/{message}", self._webhook_edit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event (e.g. INTERACTION_CREATE) to every identified connection."""
        for ws in list(self.sessions):
            await ws.send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})

    # --- what tests use -----------------------------------------------------------------------------

    def in_channel(self, channel_id: int) -> list[Message]:
        return [m for m in self.messages if m.channel_id == channel_id]

    def add_webhook(self, webhook_id: int, token: str, channel_id: int) -> None:
        self.webhooks[webhook_id] = (token, channel_id)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds (re-checked whenever the bot calls the fake)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def interaction(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        channel_id: int,
        guild_id: int | None,
        user_id: int = 4242,
        permissions: int = 0,
        message: Message | None = None,
    ) -> dict[str, Any]:
        """A real INTERACTION_CREATE payload (2: slash command, 3: button, 4: autocomplete)."""
        interaction_id = next(self._ids)
        token = f"itoken-{interaction_id}"
        self._interaction_channels[token] = channel_id
        user = {
            "id": str(user_id),
            "username": f"user{user_id}",
            "discriminator": "0",
            "global_name": f"User {user_id}",
            "avatar": None,
        }
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APPLICATION_ID),
            "type": kind,
            "data": data,
            "channel_id": str(channel_id),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(VIEW_AND_SEND),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id or user_id)},
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["context"] = 0
            payload["channel"] = {
                "id": str(channel_id),
                "type": 0,
                "guild_id": str(guild_id),
                "name": "news",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "permissions": str(permissions),
            }
            payload["member"] = {
                "user": user,
                "roles": [],
                "joined_at": "2022-01-01T00:00:00.000000+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(permissions),
            }
        else:
            payload["context"] = 1
            payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
            payload["user"] = user
        if message is not None:
            payload["message"] = self._message_json(message)
        return payload

    # --- serving ------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            if request.headers.get("Authorization") != f"Bot {self.token}" and not (
                request.path.startswith(
                    ("/api/v10/webhooks/", "/api/v10/interactions/", "/gateway")
                )
            ):
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self._changed.set()

    def _limit(
        self, request: web.Request, key: str, bucket: Bucket
    ) -> tuple[dict[str, str], float]:
        """Rate-limit headers for this request, and how long it must wait (0: it may pass)."""
        now = time.monotonic()
        window = self._windows.setdefault(key, _Window(bucket))
        counts_globally = not request.path.startswith("/api/v10/interactions/")
        if counts_globally:
            while self._global and self._global[0] <= now - 1.0:
                self._global.popleft()
            if len(self._global) >= self.limits.global_per_second:
                wait = self._global[0] + 1.0 - now
                headers = window.headers(now, key)
                headers.update({"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"})
                return headers, max(wait, 0.001)
        allowed, reset_after = window.take(now)
        headers = window.headers(now, key)
        if not allowed:
            headers["X-RateLimit-Scope"] = "user"
            return headers, max(reset_after, 0.001)
        if counts_globally:
            self._global.append(now)
        return headers, 0.0

    def _too_many(self, headers: dict[str, str], wait: float) -> web.Response:
        self.rate_limited += 1
        is_global = headers.get("X-RateLimit-Global") == "true"
        headers = {**headers, "Retry-After": str(math.ceil(wait)), "Via": "1.1 google"}
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": is_global,
        }
        return _json(body, status=429, headers=headers)

    async def _me(self, request: web.Request) -> web.Response:
        return _json(_user(BOT_USER_ID, "livedesk", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APPLICATION_ID),
                "name": "Livedesk",
                "description": "Live news blogs",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": _user(4242, "owner"),
                "flags": 0,
                "interactions_endpoint_url": None,
            }
        )

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Just enough of the gateway: HELLO, IDENTIFY → READY, heartbeats (JSON text frames)."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 45000}})
        try:
            async for frame in ws:
                message = json.loads(frame.data)
                if message["op"] == 1:
                    await ws.send_json({"op": 11, "d": None})
                elif message["op"] == 2:
                    identify = message["d"]
                    if identify.get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    self.identified.append(identify)
                    ready = {
                        "v": 10,
                        "user": _user(BOT_USER_ID, "livedesk", bot=True),
                        "guilds": [],
                        "session_id": f"session-{len(self.identified)}",
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": str(APPLICATION_ID), "flags": 0},
                    }
                    if "shard" in identify:
                        ready["shard"] = identify["shard"]
                    await ws.send_json(
                        {"op": 0, "t": "READY", "s": next(self._sequence), "d": ready}
                    )
                    self.sessions.append(ws)
                    self._changed.set()
        finally:
            if ws in self.sessions:
                self.sessions.remove(ws)
        return ws

    async def _gateway(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _sync(self, request: web.Request) -> web.Response:
        headers, wait = self._limit(request, "commands", self.limits.other)
        if wait:
            return self._too_many(headers, wait)
        body = await request.json()
        guild = request.match_info.get("guild")
        stored = [
            {**c, "id": str(next(self._ids)), "application_id": str(APPLICATION_ID), "version": "1"}
            | ({"guild_id": guild} if guild else {})
            for c in body
        ]
        self.commands[int(guild) if guild else None] = stored
        return _json(stored, headers=headers)

    def _channel_error(self, channel_id: int, headers: dict[str, str]) -> web.Response | None:
        if self.fail_next.get(channel_id):
            status, body, extra = self.fail_next[channel_id].pop(0)
            return _json(body, status, {**headers, **extra})
        if channel_id in self.unknown_channels:
            return _json({"message": "Unknown Channel", "code": 10003}, 404, headers)
        if channel_id in self.forbidden_channels:
            return _json({"message": "Missing Access", "code": 50001}, 403, headers)
        return None

    async def _send(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        headers, wait = self._limit(request, f"messages:{channel_id}", self.limits.channel_messages)
        if wait:
            return self._too_many(headers, wait)
        if (error := self._channel_error(channel_id, headers)) is not None:
            return error
        return await self._create(request, channel_id, "bot", headers)

    async def _create(
        self, request: web.Request, channel_id: int, via: str, headers: dict[str, str]
    ) -> web.Response:
        body = await request.json()
        try:
            validate_message(body)
        except InvalidForm as invalid:
            return self._invalid(invalid, headers)
        message = Message(
            id=next(self._ids),
            channel_id=channel_id,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            allowed_mentions=body.get("allowed_mentions"),
            flags=int(body.get("flags") or 0),
            via=via,
        )
        self.messages.append(message)
        return _json(self._message_json(message), headers=headers)

    def _invalid(self, invalid: InvalidForm, headers: dict[str, str]) -> web.Response:
        self.invalid += 1
        body = {"code": 50035, "message": "Invalid Form Body", "errors": invalid.errors}
        return _json(body, 400, headers)

    async def _edit(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        headers, wait = self._limit(request, f"edit:{channel_id}", self.limits.channel_messages)
        if wait:
            return self._too_many(headers, wait)
        if (error := self._channel_error(channel_id, headers)) is not None:
            return error
        return await self._update(request, int(request.match_info["message"]), "bot", headers)

    async def _update(
        self, request: web.Request, message_id: int, via: str, headers: dict[str, str]
    ) -> web.Response:
        message = next((m for m in self.messages if m.id == message_id and m.via == via), None)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404, headers)
        body = await request.json()
        try:
            validate_message(body, creating=False)
        except InvalidForm as invalid:
            return self._invalid(invalid, headers)
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = body["embeds"] or []
        if "components" in body:
            message.components = body["components"] or []
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        message.edits += 1
        return _json(self._message_json(message), headers=headers)

    async def _callback(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body = await request.json()
        self.answers.append(body)
        kind = body["type"]
        interaction = {
            "id": request.match_info["id"],
            "type": 2,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool((body.get("data") or {}).get("flags", 0) & 64),
        }
        if kind == 8:
            self.choices.append(body["data"]["choices"])
            return (
                _json({"interaction": interaction}) if request.query else web.Response(status=204)
            )
        if kind == 4:
            data = body.get("data") or {}
            try:
                validate_message(data)
            except InvalidForm as invalid:
                return self._invalid(invalid, {})
            message = Message(
                id=next(self._ids),
                channel_id=self._interaction_channels.get(token, 0),
                content=data.get("content") or "",
                embeds=data.get("embeds") or [],
                components=data.get("components") or [],
                allowed_mentions=data.get("allowed_mentions"),
                flags=int(data.get("flags") or 0),
                via=f"interaction:{token}",
            )
            self.messages.append(message)
            interaction["response_message_id"] = str(message.id)
            resource = {"type": 4, "message": self._message_json(message)}
            return _json({"interaction": interaction, "resource": resource})
        return _json({"interaction": interaction})

    async def _execute(self, request: web.Request) -> web.Response:
        webhook_id, token = int(request.match_info["id"]), request.match_info["token"]
        if webhook_id == APPLICATION_ID:  # an interaction follow-up
            channel_id = self._interaction_channels.get(token, 0)
            return await self._create(request, channel_id, f"interaction:{token}", {})
        headers, wait = self._limit(request, f"webhook:{webhook_id}", self.limits.webhook)
        if wait:
            return self._too_many(headers, wait)
        known = self.webhooks.get(webhook_id)
        if known is None or known[0] != token:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404, headers)
        if (error := self._channel_error(known[1], headers)) is not None:
            return error
        response = await self._create(request, known[1], f"webhook:{webhook_id}", headers)
        if request.query.get("wait") not in ("true", "1", "True"):
            return web.Response(status=204, headers=headers)
        return response

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        webhook_id, token = int(request.match_info["id"]), request.match_info["token"]
        headers, wait = self._limit(request, f"webhook:{webhook_id}", self.limits.webhook)
        if wait:
            return self._too_many(headers, wait)
        known = self.webhooks.get(webhook_id)
        if known is None or known[0] != token:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404, headers)
        message_id = int(request.match_info["message"])
        return await self._update(request, message_id, f"webhook:{webhook_id}", headers)

    def _message_json(self, message: Message) -> dict[str, Any]:
        author = _user(BOT_USER_ID, "livedesk", bot=True)
        if message.via.startswith("webhook:"):
            author = _user(int(message.via.split(":")[1]), "Livedesk hook", bot=True)
        payload: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": 0,
            "content": message.content,
            "embeds": message.embeds,
            "components": message.components,
            "author": author,
            "timestamp": "2022-01-21T12:00:00.000000+00:00",
            "edited_timestamp": "2022-01-21T12:01:00.000000+00:00" if message.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "pinned": False,
            "flags": message.flags,
        }
        if message.via.startswith("webhook:"):
            payload["webhook_id"] = message.via.split(":")[1]
        return payload


# --- Discord's validation ------------------------------------------------------------------------------


def validate_message(body: dict[str, Any], *, creating: bool = True) -> None:
    """Raise InvalidForm with every limit this message body breaks, as Discord would (code 50035)."""
    errors: list[str] = []
    content = body.get("content") or ""
    if creating and not (content or body.get("embeds") or body.get("components")):
        raise InvalidForm(["Cannot send an empty message (code 50006)"])
    if len(content) > MAX_CONTENT:
        errors.append(f"content: Must be {MAX_CONTENT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors.append(f"embeds: Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for n, embed in enumerate(embeds):
        parts = {
            "title": embed.get("title") or "",
            "description": embed.get("description") or "",
            "footer": (embed.get("footer") or {}).get("text") or "",
            "author": (embed.get("author") or {}).get("name") or "",
        }
        for name, value in parts.items():
            if len(value) > EMBED_LIMITS[name]:
                errors.append(
                    f"embeds.{n}.{name}: Must be {EMBED_LIMITS[name]} or fewer in length."
                )
            total += len(value)
        fields = embed.get("fields") or []
        if len(fields) > MAX_FIELDS:
            errors.append(f"embeds.{n}.fields: Must be {MAX_FIELDS} or fewer in length.")
        for i, f in enumerate(fields):
            name, value = f.get("name") or "", f.get("value") or ""
            if not name.strip() or len(name) > FIELD_NAME:
                errors.append(f"embeds.{n}.fields.{i}.name: Must be 1-{FIELD_NAME} long.")
            if not value.strip() or len(value) > FIELD_VALUE:
                errors.append(f"embeds.{n}.fields.{i}.value: Must be 1-{FIELD_VALUE} long.")
            total += len(name) + len(value)
        urls = [
            embed.get("url"),
            (embed.get("image") or {}).get("url"),
            (embed.get("thumbnail") or {}).get("url"),
            (embed.get("author") or {}).get("url"),
        ]
        for url in urls:
            if url is not None and not str(url).startswith(("http://", "https://")):
                errors.append(f"embeds.{n}: Scheme {url!r} is not supported. Use http, https.")
    if total > EMBEDS_TOTAL:
        errors.append(f"embeds: Embed size exceeds maximum size of {EMBEDS_TOTAL}")
    rows = body.get("components") or []
    if len(rows) > 5:
        errors.append("components: Must be 5 or fewer in length.")
    for row in rows:
        for c in row.get("components", []):
            if len(c.get("label") or "") > 80:
                errors.append("components: label must be 80 or fewer in length.")
            if "custom_id" in c and not 1 <= len(c["custom_id"]) <= 100:
                errors.append("components: custom_id must be 1-100 in length.")
    if errors:
        raise InvalidForm(errors)


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": bot,
    }


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Content-Type exactly `application/json` (discord.py checks it literally)."""
    all_headers = {**(headers or {}), "Content-Type": "application/json"}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)
