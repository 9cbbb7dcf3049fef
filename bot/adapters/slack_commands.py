"""`POST /slack/commands`: Slack slash commands, verified, answered through the shared handlers.

Every request must carry Slack's signature: `X-Slack-Signature = "v0=" + HMAC-SHA256(signing secret,
"v0:{X-Slack-Request-Timestamp}:{body}")`, compared in constant time, with a timestamp (ASCII digits, Unix
seconds) at most five minutes off; an exact replay inside that window is refused too, after a restart as
well (the composition root keeps the signatures seen in the store). Anything else — a timestamp in other
digits, huge, negative or a float, a signature that is not ASCII — is a 401 and runs nothing.

Slack waits 3 seconds for an answer. A handler that finishes within `answer_within` (2.5 s) is answered
directly; a slower one gets an acknowledgement, and its reply is POSTed to the request's `response_url`
later — only when that URL is Slack's own (`https://hooks.slack.com/…`), or loopback in tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from ipaddress import ip_address
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from bot.adapters.base import CommandHandler, FirstSeen, HttpMount
from bot.adapters.slack_render import Payload, slack_reply
from bot.models import ChatKind, Reply, Request, Target
from bot.targets import mask_url
from handlers.base import split_command_line

log = logging.getLogger(__name__)

PATH = "/slack/commands"
MAX_AGE = 300.0  # seconds a signed request stays valid
ANSWER_WITHIN = 2.5  # Slack gives up after 3 s
MAX_BODY = 64 * 1024
SLACK_RESPONSE_HOST = "hooks.slack.com"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() takes "١٢٣" and "²" too
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")

SUBSCRIBE_HELP = (
    "Slack channels get new posts through an incoming webhook that the operator of this Livedesk "
    "sets up: ask them to add this channel's webhook with "
    "`livedesk subscribe slack <webhook-url>` (optionally with a blog or keywords). "
    "Here you can use `{command} latest`, `{command} search <words>` and `{command} help`."
)
SORRY = "Sorry, something went wrong while answering. Please try again in a moment."


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature of `body` sent at `timestamp`."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str | None, given: str | None, body: bytes, *, now: float
) -> bool:
    """True when `given` is Slack's signature of `body` and the timestamp is within five minutes."""
    if timestamp is None or given is None:
        return False
    if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(given):
        return False
    if abs(now - int(timestamp)) > MAX_AGE:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode())


class RecentSignatures:
    """Signatures seen within the window, in memory: the fallback when no store keeps them."""

    def __init__(self, window: float = 2 * MAX_AGE) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    async def first_seen(self, given: str, now: float) -> bool:
        for old in [s for s, t in self._seen.items() if now - t > self.window]:
            del self._seen[old]
        if given in self._seen:
            return False
        self._seen[given] = now
        return True


def response_url_allowed(url: str, *, allow_loopback: bool) -> bool:
    """Only Slack's own response URLs (or loopback, for tests) ever receive a delayed answer."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host == SLACK_RESPONSE_HOST:
        return True
    if not allow_loopback or parts.scheme not in ("http", "https"):
        return False
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


class SlashCommands:
    """The aiohttp server behind Slack's slash command; `port` is the bound port (0 picks one)."""

    def __init__(
        self,
        signing_secret: str,
        handle: CommandHandler,
        session: aiohttp.ClientSession,
        *,
        zone: ZoneInfo,
        host: str,
        port: int,
        allow_loopback_responses: bool = False,
        answer_within: float = ANSWER_WITHIN,
        clock: Callable[[], float] = time.time,
        first_seen: FirstSeen | None = None,
    ) -> None:
        self._secret = signing_secret
        self._handle = handle
        self._session = session
        self._zone = zone
        self._host = host
        self._port = port
        self._allow_loopback = allow_loopback_responses
        self._answer_within = answer_within
        self._clock = clock
        self._first_seen = first_seen or RecentSignatures().first_seen  # refuses replays
        self._later: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    def attach(self, mount: HttpMount) -> None:
        """Serve `PATH` on the app's HTTP server (the control room) rather than one of its own."""
        mount(PATH, self._on_command, "Slack slash commands")

    async def start(self) -> None:
        """Serve `PATH` on a server of its own (an adapter used without the control room)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._on_command)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("Slack slash commands on http://%s:%d%s", self._host, self.port, PATH)

    async def stop(self) -> None:
        if self._later:  # answers still on their way to Slack: give them a moment, then drop
            _, pending = await asyncio.wait(self._later, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_command(self, http: web.Request) -> web.StreamResponse:
        body = await http.read()
        if len(body) > MAX_BODY:  # the shared server takes larger bodies for its other routes
            return web.Response(status=413, text="request body too large")
        stamp = http.headers.get("X-Slack-Request-Timestamp")
        given = http.headers.get("X-Slack-Signature")
        now = self._clock()
        if (
            not verify(self._secret, stamp, given, body, now=now)
            or given is None
            or not await self._first_seen(given, now)
        ):
            log.warning(
                "refused a slash command with a missing, wrong, stale or replayed signature"
            )
            return web.Response(status=401, text="invalid signature")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
        channel, user = form.get("channel_id"), form.get("user_id")
        if not channel or not user:
            return web.Response(status=400, text="channel_id and user_id are required")
        slash = form.get("command") or "/livedesk"
        words = split_command_line(form.get("text", ""))
        request = Request(
            platform="slack",
            command=(words[0] or "help").casefold(),
            args=words[1],
            user_id=user,
            user_name=form.get("user_name"),
            target=Target(platform="slack", address=channel, kind="channel"),
            chat_kind=ChatKind.GROUP,
            is_admin=False,
        )
        task = asyncio.create_task(self._answer(request, slash))
        done, _ = await asyncio.wait({task}, timeout=self._answer_within)
        if done:
            return web.json_response(task.result())
        later = asyncio.create_task(self._answer_later(task, form.get("response_url", "")))
        self._later.add(later)
        later.add_done_callback(self._later.discard)
        return web.json_response({"response_type": "ephemeral", "text": "Working on it…"})

    async def _answer(self, request: Request, slash: str) -> Payload:
        if request.command in ("subscribe", "unsubscribe"):
            reply = Reply(text=SUBSCRIBE_HELP.format(command=slash))
        else:
            try:
                reply = await self._handle(request)
            except Exception:
                log.exception("the %r command failed", request.command)
                reply = Reply(text=SORRY, error=True)
        return slack_reply(reply, self._zone, command=slash)

    async def _answer_later(self, task: asyncio.Task[Payload], response_url: str) -> None:
        payload = await task
        if not response_url_allowed(response_url, allow_loopback=self._allow_loopback):
            log.warning(
                "a slow answer was dropped: response_url %s is not Slack's", mask_url(response_url)
            )
            return
        try:
            async with self._session.post(
                response_url, json={**payload, "replace_original": True}
            ) as response:
                if response.status >= 400:
                    log.warning("response_url answered %d", response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "could not post a slow answer to %s: %s", mask_url(response_url), type(exc).__name__
            )
