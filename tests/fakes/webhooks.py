"""A fake Slack-style incoming-webhook receiver on 127.0.0.1 that speaks the real wire format.

`POST /hooks/<name>` (any path works) records the JSON payload per path and answers like Slack: `200 ok`, or a
plain-string error. It can
- enforce a per-hook rate (token bucket: `rate` messages per `per` seconds, `burst` tolerated) with
  `429` + `Retry-After`, as Slack does at about 1/s;
- play scripted answers per path (`404 channel_not_found`, `410 channel_is_archived`, `400 invalid_payload`,
  a burst of `503`s), once, a number of times, or for ever;
- validate Slack's Block Kit limits (≤ 50 blocks, section text ≤ 3000, header plain_text ≤ 150, text ≤
  40,000, context ≤ 10 elements, button text ≤ 75) with `400 invalid_blocks`, and Teams' 28 KB;
- count everything, for tests and for the benchmark (`GET /stats`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

SLACK_MAX_BLOCKS = 50
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 40_000
TEAMS_MAX_BYTES = 28 * 1024


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class Received:
    path: str
    payload: dict[str, Any]
    at: float


@dataclass
class _Script:
    status: int
    body: str
    times: int | None  # None: for ever
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hook that hangs)


def slack_problems(payload: dict[str, Any]) -> list[str]:
    """What real Slack would refuse in this payload (empty when it is fine)."""
    problems: list[str] = []
    text = payload.get("text")
    blocks = payload.get("blocks")
    if text is None and not blocks:
        problems.append("no_text")
    if isinstance(text, str) and len(text) > SLACK_TEXT_MAX:
        problems.append("text too long")
    if blocks is None:
        return problems
    if not isinstance(blocks, list) or len(blocks) > SLACK_MAX_BLOCKS:
        return [*problems, "more than 50 blocks"]
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            obj = block.get("text") or {}
            if (
                obj.get("type") != "plain_text"
                or not 0 < len(obj.get("text", "")) <= SLACK_HEADER_MAX
            ):
                problems.append("header must be plain_text of 1-150 characters")
        elif kind == "section":
            obj = block.get("text") or {}
            if obj.get("type") not in ("mrkdwn", "plain_text"):
                problems.append("section text must be a text object")
            elif not 0 < len(obj.get("text", "")) <= SLACK_SECTION_MAX:
                problems.append("section text must be 1-3000 characters")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 10:
                problems.append("context takes 1-10 elements")
        elif kind == "actions":
            for element in block.get("elements") or []:
                if len(element.get("text", {}).get("text", "")) > 75:
                    problems.append("button text over 75")
                if len(element.get("url", "")) > 3000:
                    problems.append("button url over 3000")
        elif kind not in ("divider", "image"):
            problems.append(f"unknown block type {kind!r}")
    return problems


class WebhookReceiver:
    """Run with `async with WebhookReceiver(...) as hooks:`; `hooks.url("a")` is a webhook URL."""

    def __init__(
        self,
        *,
        rate: int | None = None,
        per: float = 1.0,
        burst: int = 2,
        validate: bool = True,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.rate = rate
        self.per = per
        self.burst = burst
        self.validate = validate
        self.record = record
        self.host = host
        self.port = port
        self.received: dict[str, list[Received]] = defaultdict(list)
        self.rejected: dict[str, list[int]] = defaultdict(list)  # statuses answered other than 200
        self.delivered = 0
        self.last_delivery_at = 0.0
        self._buckets: dict[str, _Bucket] = {}
        self._scripts: dict[str, deque[_Script]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/{path:.*}", self._on_post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        """A webhook URL that looks like Slack's: /hooks/T000/B000/<name>."""
        return f"{self.base_url}/hooks/T0000000/B0000000/{name}"

    @staticmethod
    def path_of(url: str) -> str:
        return "/" + url.split("/", 3)[3]

    # --- scripting -----------------------------------------------------------------------------------

    def respond(
        self,
        url: str,
        status: int,
        body: str,
        *,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `times` posts to `url` (None: all of them) get this answer instead of `200 ok`."""
        script = _Script(status, body, times, headers or {}, delay)
        self._scripts[self.path_of(url)].append(script)

    def payloads(self, url: str) -> list[dict[str, Any]]:
        return [r.payload for r in self.received[self.path_of(url)]]

    async def wait_for(self, url: str, count: int, *, within: float = 10.0) -> list[dict[str, Any]]:
        """Wait (at most `within` seconds) until `count` payloads reached `url`; return them all."""
        path = self.path_of(url)
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received[path]) >= count)
        return self.payloads(url)

    # --- serving -------------------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        rejected = sum(len(v) for v in self.rejected.values())
        return web.json_response(
            {"delivered": self.delivered, "rejected": rejected, "last": self.last_delivery_at}
        )

    async def _on_post(self, request: web.Request) -> web.Response:
        path = request.path
        raw = await request.read()
        scripted = self._scripted(path)
        if scripted is not None:
            await asyncio.sleep(scripted.delay)
            return self._refuse(path, scripted.status, scripted.body, scripted.headers)
        wait = self._take_token(path)
        if wait > 0:
            return self._refuse(path, 429, "rate_limited", {"Retry-After": f"{wait:.3f}"})
        try:
            payload = json.loads(raw)
        except ValueError:
            return self._refuse(path, 400, "invalid_payload")
        if not isinstance(payload, dict):
            return self._refuse(path, 400, "invalid_payload")
        if self.validate:
            if payload.get("type") == "message":  # Teams
                if len(raw) > TEAMS_MAX_BYTES:
                    return self._refuse(path, 413, "RequestEntityTooLarge")
            elif slack_problems(payload):
                return self._refuse(path, 400, "invalid_blocks")
        self.delivered += 1
        self.last_delivery_at = time.time()
        if self.record:
            self.received[path].append(Received(path, payload, time.monotonic()))
            async with self._arrived:
                self._arrived.notify_all()
        return web.Response(text="ok")

    def _scripted(self, path: str) -> _Script | None:
        queue = self._scripts.get(path)
        if not queue:
            return None
        script = queue[0]
        if script.times is not None:
            script.times -= 1
            if script.times <= 0:
                queue.popleft()
        return script

    def _take_token(self, path: str) -> float:
        """0 when a post to `path` is allowed now, else the seconds until it will be."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        refill = self.rate / self.per
        bucket = self._buckets.setdefault(path, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * refill)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / refill

    def _refuse(
        self, path: str, status: int, body: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.rejected[path].append(status)
        return web.Response(status=status, text=body, headers=headers)
