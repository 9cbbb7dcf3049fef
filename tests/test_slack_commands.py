"""`/livedesk` slash commands: real signed form posts to the adapter's HTTP port on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from pydantic import SecretStr

from bot.adapters.base import AdapterContext
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack_commands import PATH, response_url_allowed, signature
from bot.config import SlackSettings
from bot.models import ChatKind, ImportResult, Post, Reply, Request, Source, SourceKind
from handlers import Deps, handle
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from storage.store import SqliteStore
from tests.fakes.webhooks import WebhookReceiver

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
Handler = Callable[[Request], Awaitable[Reply]]


class Recorder:
    """A stand-in for handlers/: records requests and answers a fixed reply, optionally slowly."""

    def __init__(self, reply: Reply | None = None, delay: float = 0.0) -> None:
        self.requests: list[Request] = []
        self.reply = reply or Reply(text="ok")
        self.delay = delay

    async def __call__(self, request: Request) -> Reply:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        return self.reply


def form(text: str, **extra: str) -> bytes:
    fields = {
        "token": "legacy",
        "team_id": "T0001",
        "channel_id": "C2147483705",
        "user_id": "U2147483697",
        "user_name": "anna",
        "command": "/livedesk",
        "text": text,
        "response_url": "https://hooks.slack.com/commands/1234/5678",
    }
    fields.update(extra)
    return urlencode(fields).encode()


def signed(body: bytes, *, age: float = 0.0, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time() - age))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def start_adapter(handler: Handler, **options: Any) -> SlackAdapter:
    adapter = SlackAdapter(
        SlackSettings(signing_secret=SecretStr(SECRET)),
        allow_loopback_responses=True,
        **options,
    )
    await adapter.start(AdapterContext(handle=handler, http_host="127.0.0.1", http_port=0))
    return adapter


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    client: aiohttp.ClientSession, adapter: SlackAdapter, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{adapter.http_port}{PATH}"
    async with client.post(url, data=body, headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_a_signed_command_reaches_the_handler_as_a_neutral_request(
    client: aiohttp.ClientSession,
) -> None:
    recorder = Recorder(Reply(text="2 posts match sanctions"))
    adapter = await start_adapter(recorder)
    try:
        body = form('search "new sanctions" 2')
        status, answer = await post(client, adapter, body, signed(body))
    finally:
        await adapter.stop()
    assert status == 200
    assert answer["response_type"] == "ephemeral"
    assert answer["blocks"][0]["text"]["text"] == "2 posts match sanctions"
    [request] = recorder.requests
    assert request.platform == "slack"
    assert (request.command, request.args) == ("search", ('"new sanctions"', "2"))
    assert (request.target.address, request.target.kind) == ("C2147483705", "channel")
    assert (request.user_id, request.chat_kind, request.is_admin) == (
        "U2147483697",
        ChatKind.GROUP,
        False,
    )


def tampered(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])


REFUSED = [
    ("wrong secret", lambda b: (b, signed(b, secret="not-the-secret"))),
    ("no signature", lambda b: (b, {"X-Slack-Request-Timestamp": str(int(time.time()))})),
    ("no timestamp", lambda b: (b, {"X-Slack-Signature": signed(b)["X-Slack-Signature"]})),
    ("six minutes old", lambda b: (b, signed(b, age=360))),
    ("six minutes ahead", lambda b: (b, signed(b, age=-360))),
    ("body changed after signing", lambda b: (tampered(b), signed(b))),
    ("garbage timestamp", lambda b: (b, {**signed(b), "X-Slack-Request-Timestamp": "soon"})),
]


@pytest.mark.parametrize(("case", "make"), REFUSED, ids=[c for c, _ in REFUSED])
async def test_unverified_requests_get_401_and_run_nothing(
    client: aiohttp.ClientSession,
    case: str,
    make: Callable[[bytes], tuple[bytes, dict[str, str]]],
) -> None:
    recorder = Recorder()
    adapter = await start_adapter(recorder)
    try:
        body, headers = make(form("latest"))
        status, _ = await post(client, adapter, body, headers)
    finally:
        await adapter.stop()
    assert status == 401
    assert recorder.requests == []


async def test_a_replayed_request_is_refused(client: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    adapter = await start_adapter(recorder)
    try:
        body = form("latest")
        headers = signed(body)
        first, _ = await post(client, adapter, body, headers)
        second, _ = await post(client, adapter, body, headers)
    finally:
        await adapter.stop()
    assert (first, second) == (200, 401)
    assert len(recorder.requests) == 1


async def test_search_and_latest_answer_from_the_shared_handlers(
    client: aiohttp.ClientSession, db: Database
) -> None:
    source = Source(id="ukraine", title="Ukraine live", kind=SourceKind.RSS)
    published = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
    posts = (
        Post(
            id="p1",
            source_id="ukraine",
            published_at=published,
            title="EU widens sanctions",
            body=("Ministers agreed new sanctions on Monday.",),
            permalink="https://news.example/live#p1",
        ),
        Post(
            id="p2",
            source_id="ukraine",
            published_at=published.replace(minute=30),
            title="Snow in Kyiv",
            body=("Snow is expected overnight.",),
        ),
    )
    store = PostStore(db)
    await ingest(store.db, ImportResult(source=source, posts=posts))
    deps = Deps(store=SqliteStore(db))

    async def shared(request: Request) -> Reply:
        return await handle(request, deps)

    adapter = await start_adapter(shared)
    try:
        body = form("search sanctions")
        status, found = await post(client, adapter, body, signed(body))
        assert status == 200
        body = form("latest")
        status, latest = await post(client, adapter, body, signed(body))
        assert status == 200
        body = form("")
        _, helped = await post(client, adapter, body, signed(body))
    finally:
        await adapter.stop()
    shown = " ".join(b["text"]["text"] for b in found["blocks"] if b["type"] == "section")
    assert "EU widens sanctions" in shown and "*sanctions*" in shown
    assert "Snow in Kyiv" not in shown
    latest_text = " ".join(b["text"]["text"] for b in latest["blocks"] if b["type"] == "section")
    assert latest_text.index("Snow in Kyiv") < latest_text.index("EU widens sanctions")
    assert "search" in helped["blocks"][0]["text"]["text"]  # an empty /livedesk is help


async def test_subscribe_explains_how_to_ask_the_operator(client: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    adapter = await start_adapter(recorder)
    try:
        body = form("subscribe sanctions")
        status, answer = await post(client, adapter, body, signed(body))
    finally:
        await adapter.stop()
    assert status == 200
    assert "operator" in answer["text"] and "livedesk subscribe slack" in answer["text"]
    assert recorder.requests == []


async def test_a_slow_answer_is_acknowledged_then_posted_to_the_response_url(
    client: aiohttp.ClientSession,
) -> None:
    recorder = Recorder(Reply(text="Here are the results"), delay=0.3)
    adapter = await start_adapter(recorder, answer_within=0.05)
    async with WebhookReceiver() as receiver:
        response_url = receiver.url("commands-response")
        try:
            body = form("search sanctions", response_url=response_url)
            status, ack = await post(client, adapter, body, signed(body))
            assert status == 200
            assert ack == {"response_type": "ephemeral", "text": "Working on it…"}
            [late] = await receiver.wait_for(response_url, 1, within=5)
        finally:
            await adapter.stop()
    assert late["response_type"] == "ephemeral"
    assert late["blocks"][0]["text"]["text"] == "Here are the results"


async def test_a_slow_answer_never_goes_to_a_foreign_response_url(
    client: aiohttp.ClientSession,
) -> None:
    recorder = Recorder(Reply(text="secret results"), delay=0.1)
    adapter = SlackAdapter(SlackSettings(signing_secret=SecretStr(SECRET)), answer_within=0.01)
    await adapter.start(AdapterContext(handle=recorder, http_port=0))
    async with WebhookReceiver() as receiver:
        try:
            body = form("latest", response_url=receiver.url("not-slack"))
            status, _ = await post(client, adapter, body, signed(body))
            await asyncio.sleep(0.3)
        finally:
            await adapter.stop()
        assert status == 200 and len(recorder.requests) == 1
        assert receiver.payloads(receiver.url("not-slack")) == []  # loopback is not Slack


@pytest.mark.parametrize(
    ("url", "loopback", "allowed"),
    [
        ("https://hooks.slack.com/commands/T1/2/x", False, True),
        ("http://hooks.slack.com/commands/T1/2/x", False, False),
        ("https://hooks.slack.com.evil.example/commands", False, False),
        ("https://evil.example/?hooks.slack.com", False, False),
        ("http://127.0.0.1:9000/x", False, False),
        ("http://127.0.0.1:9000/x", True, True),
        ("http://[::1]:9000/x", True, True),
        ("http://10.0.0.1/x", True, False),
        ("", True, False),
    ],
)
def test_response_urls_are_slacks_own_or_loopback_in_tests(
    url: str, loopback: bool, allowed: bool
) -> None:
    assert response_url_allowed(url, allow_loopback=loopback) is allowed


async def test_without_a_signing_secret_there_is_no_endpoint() -> None:
    adapter = SlackAdapter(SlackSettings())
    await adapter.start(AdapterContext(handle=Recorder(), http_port=0))
    try:
        assert adapter.http_port is None
    finally:
        await adapter.stop()
