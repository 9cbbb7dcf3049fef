"""Hostile text on its way out: post text that tries to become markup, permalinks that try to leave
their link, titles that try to outgrow a Telegram message, secrets in URLs and error texts, and terminal
escape sequences in what a remote server answers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from rich.console import Console

from bot import redact as redaction
from bot.adapters.base import Adapter, AdapterContext, Capabilities, StartupError
from bot.adapters.discord_render import escape as discord_escape
from bot.adapters.discord_render import render_card as discord_card
from bot.adapters.discord_render import render_reply as discord_reply
from bot.adapters.slack_render import mattermost_payload, teams_payload
from bot.adapters.telegram import TelegramAdapter
from bot.adapters.telegram_render import MAX_TEXT, UPDATED_PREFIX
from bot.adapters.terminal import TerminalAdapter
from bot.app import App
from bot.config import load_settings
from bot.logs import RedactSecrets, configure_logging
from bot.models import Card, Image, Reply, Target
from bot.platforms import mask_address
from bot.redact import clean_outcomes, mask_url, printable, redact
from storage.values import OutboxResults
from tests.cli_process import Finished, livedesk
from tests.conftest import FIXTURES
from tests.fakes.telegram import FakeTelegram, Limits
from tests.test_telegram import SCALE, chat_target, running

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)


def card(**extra: Any) -> Card:
    values: dict[str, Any] = {
        "post_id": "p1",
        "title": "Talks in Geneva",
        "url": "https://news.example/live/p1",
        "published_at": T0,
        "body": ("Blinken meets Lavrov.",),
        "source_title": "Kyiv live",
        **extra,
    }
    return Card.model_validate(values)


# --- Discord: every character its markdown reads is escaped ---------------------------------------------

_DISCORD_ESCAPE = re.compile(r"\\([^0-9A-Za-z\s])")  # Discord shows any escaped punctuation as is
_URL_TOKEN = re.compile(r"<https?://[^\s<>]+>|https?://[^\s<]+[^<.,:;\"')\]\s]")
_LINE_MARKER = re.compile(r"^[^\S\n]*(?:#|-|\+|\*|>|\d+[.)])", re.MULTILINE)


def raw_markup(shown: str) -> list[str]:
    """What Discord would read as markup in `shown`: unescaped specials outside URLs, line markers."""
    unescaped = _DISCORD_ESCAPE.sub("\0", shown)  # an escaped character can no longer do anything
    outside = _URL_TOKEN.sub(" ", unescaped)
    found = re.findall(r"[\[\]()*_~|`<>\\]", outside)
    found += [m.group().strip() for m in _LINE_MARKER.finditer(unescaped)]
    return found


def as_discord_shows(shown: str) -> str:
    return _DISCORD_ESCAPE.sub(r"\1", shown).replace("\u200b", "")


HOSTILE_DISCORD = [
    # (post text, exactly what Discord gets, or None where only the properties are checked)
    ("[click](https://evil.example)", "\\[click\\]\\(https://evil.example\\)"),
    (
        "Hi [a](https://a.example) [click](https://evil.example)",  # the second one, too
        "Hi \\[a\\]\\(https://a.example\\) \\[click\\]\\(https://evil.example\\)",
    ),
    ("[[nested](https://evil.example)](https://evil.example)", None),
    ("[see https://a.example/](https://evil.example)", None),  # a URL ending in "](" …
    ("[x]( https://evil.example 'title')", None),
    ("@everyone and @here", "@\u200beveryone and @\u200bhere"),
    ("<@123456789012345678> <@&123456789012345678> <#123456789012345678> <t:0:R>", None),
    ("**bold** __under__ ~~strike~~ ||spoiler|| `code` ```block```", None),
    (
        "# Heading\n## Two\n-# small\n- item\n  - nested\n* star\n+ plus\n1. first\n> q\n>>> rest",
        None,
    ),
    ("a back\\slash and \\*an escape\\*", None),
]


@pytest.mark.parametrize(("text", "expected"), HOSTILE_DISCORD)
def test_discord_post_text_can_format_nothing_and_reads_as_written(
    text: str, expected: str | None
) -> None:
    shown = discord_escape(text)
    if expected is not None:
        assert shown == expected
    assert raw_markup(shown) == []
    assert "](" not in shown.replace("\\](", "")  # no masked link can close
    if not _URL_TOKEN.search(text):
        assert as_discord_shows(shown) == text


@pytest.mark.parametrize(
    ("text", "link"),
    [
        (
            "see https://en.wikipedia.org/wiki/Kyiv_(city) now",
            "https://en.wikipedia.org/wiki/Kyiv_%28city",
        ),
        ("<https://a.example/x|y>", "<https://a.example/x%7Cy>"),
        ("go to https://a.example/a_b_c.", "https://a.example/a_b_c"),
    ],
)
def test_discord_bare_urls_stay_links_with_nothing_in_them_that_formats(
    text: str, link: str
) -> None:
    shown = discord_escape(text)
    assert link in shown
    assert raw_markup(shown) == []


@pytest.mark.parametrize(("text", "_expected"), HOSTILE_DISCORD)
def test_every_discord_embed_part_with_post_text_is_escaped(
    text: str, _expected: str | None
) -> None:
    embed = discord_card(
        card(
            title=text,
            body=(text,),
            background=text,
            images=(Image(caption=text, credit=text, url="https://img.example/1.jpg"),),
        ),
        zone=UTC_ZONE,
    )
    assert raw_markup(embed.title or "") == []
    description = (embed.description or "").removesuffix(
        "\n[Read the whole post](https://news.example/live/p1)"
    )
    assert raw_markup(description) == []
    for field in embed.fields:
        value = field.value or ""
        value = value.removesuffix("\n[More](https://news.example/live/p1)")
        value = value.replace(f" — ({discord_escape(text)})", " ")  # our own "(credit)"
        assert raw_markup(value) == [], field.name
    [message] = discord_reply(Reply(text=text), zone=UTC_ZONE)
    assert raw_markup(message.content) == []


# --- Mattermost and Teams: our own links keep their permalink inside -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://news.example/live/a_(b)](https://evil.example)",
        "https://news.example/live/x)[click](https://evil.example",
        "https://news.example/live/back\\)slash",
    ],
)
def test_a_permalink_cannot_leave_its_markdown_link(url: str) -> None:
    hostile = card(url=url, body=("word " * 2000,))  # long enough that "Read the full post ›" shows
    mattermost = mattermost_payload(hostile, UTC_ZONE)["attachments"][0]["text"]
    teams = " ".join(
        block["text"]
        for block in teams_payload(hostile, UTC_ZONE)["attachments"][0]["content"]["body"]
    )
    links = re.findall(r"\]\(([^)]*)\)", mattermost)
    assert len(links) == 2  # "Read the full post ›" and "Open live blog"
    for target in links:
        assert not set(target) & set("()[]\\ <>"), target
        assert target.startswith("https://news.example/live/")
    assert "](https://evil.example" not in mattermost
    assert "](https://evil.example" not in teams


def test_a_permalink_with_spaces_or_angle_brackets_becomes_no_link() -> None:
    for url in ("https://news.example/a b", "https://news.example/<script>"):
        text = mattermost_payload(card(url=url), UTC_ZONE)["attachments"][0]["text"]
        assert "Open live blog" not in text and "](" not in text


# --- Telegram: "✎ Updated:" counts against 4,096 --------------------------------------------------------


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(limits=Limits(scale=SCALE)) as server:
        yield server


async def nobody(request: object) -> Reply:
    return Reply(text="")


@pytest.mark.parametrize("url", ["https://news.example/live/p1", None])
async def test_a_follow_up_or_edit_with_a_5000_character_title_fits_telegram(
    fake_telegram: FakeTelegram, url: str | None
) -> None:
    """The fake Bot API refuses more than 4,096 visible characters, as Telegram does."""
    bot: TelegramAdapter = await running(fake_telegram, nobody)
    try:
        target = chat_target(5001)
        title = ("Headline " * 600)[:5000]
        reference = await bot.send(target, card(title=title, url=url))
        update = card(title=title + " (corrected)", url=url, is_update=True, body=("New text.",))
        await bot.send(target, update)  # a follow-up: "✎ Updated: <title>"
        assert await bot.edit(target, reference, update) == reference
    finally:
        await bot.stop()
    first, follow_up = fake_telegram.messages_in(5001)
    for message in (first, follow_up):
        assert len(message.text.encode("utf-16-le")) // 2 <= MAX_TEXT
    assert follow_up.text.startswith(UPDATED_PREFIX + "Headline")
    assert first.edits and first.text.startswith(UPDATED_PREFIX)


# --- secrets in URLs and error texts --------------------------------------------------------------------

HOOK = "https://hookuser:hookpass@hooks.example.org/x/AbCdEfGh12345678?token=tok123&sig=sig456"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (HOOK, "https://hooks.example.org/…/5678"),
        ("https://user:pass@hooks.example.org/x?token=abc&sig=def", "https://hooks.example.org/…"),
        ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…/CRET"),
        ("https://chat.example.org/hooks/abcdefgh", "https://chat.example.org/…/efgh"),
        ("http://[::1]:8065/hooks/abcdefghijkl#frag", "http://[::1]:8065/…/ijkl"),
        ("https://h.example:99999/x", "…"),  # not even a valid port: nothing of it shown
    ],
)
def test_a_webhook_url_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    target = Target(platform="slack", address=url, kind="webhook")
    assert mask_address(target) == masked
    for secret in ("hookuser", "hookpass", "user:pass", "tok123", "sig456", "abc", "def", "SECRET"):
        assert secret not in mask_url(url)


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        (f"POST {HOOK} failed", ["hookuser", "hookpass", "tok123", "sig456"]),
        ("no hook at /x?sig=s1g&token=t0k&api-version=1", ["s1g", "t0k"]),
        ("https://prod.logic.azure.com/workflows/1/invoke?sv=1.0&sig=AzUrEsIg", ["AzUrEsIg"]),
        (
            "chat.googleapis.com/v1/spaces/A/messages?key=GoOgLeKeY&token=GoOgLeToK",
            ["GoOgLeKeY", "GoOgLeToK"],
        ),
        ("X-Amz-Signature=deadbeef&X-Amz-Credential=AKIAX", ["deadbeef", "AKIAX"]),
        ("password=hunter22 apikey=k3y access_token=acc3ss", ["hunter22", "k3y", "acc3ss"]),
        ("ftp://anon:s3cret@files.example/", ["s3cret"]),
    ],
)
def test_secrets_in_error_texts_are_redacted(text: str, secrets: list[str]) -> None:
    for clean in (redact(text), RedactSecrets().redact(text)):
        for secret in secrets:
            assert secret not in clean
        assert "[secret]" in clean


def test_stored_failure_reasons_are_redacted_and_printable() -> None:
    results = OutboxResults()
    results.retry.append((1, 1, 0.0, f"ClientResponseError: 503, url={HOOK}"))
    results.dead.append((2, 5, f"answered 400 \x1b]0;pwned\x07 for {HOOK}"))
    results.disable.append(("slack", HOOK, f"410 gone: {HOOK}"))
    clean_outcomes(results)
    stored = json.dumps([results.retry, results.dead, [r for _p, _a, r in results.disable]])
    for secret in ("hookuser", "hookpass", "tok123", "sig456", "\\u001b", "\\u0007"):
        assert secret not in stored
    assert results.disable[0][1] == HOOK  # the address itself is the subscription's key, kept


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    filters = {h: list(h.filters) for h in handlers}
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler, kept in filters.items():
        handler.filters[:] = kept
    redaction.configure(())  # no configured secret left behind for the tests after this one


@pytest.mark.usefixtures("restore_logging")
def test_a_log_line_with_a_webhook_url_carries_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("DEBUG", ["configured-secret-value"])
    caplog.handler.filters.extend(logging.getLogger().handlers[0].filters)
    logging.getLogger("livedesk.test").warning(
        "posting to %s failed: %s", HOOK, "Busy\x1b[2J\x1b]0;pwned\x07 configured-secret-value"
    )
    for secret in (
        "hookuser",
        "hookpass",
        "tok123",
        "sig456",
        "\x1b",
        "\x07",
        "configured-secret-value",
    ):
        assert secret not in caplog.text
    assert redact("configured-secret-value") == "[secret]"  # stored reasons: the same secrets


# --- terminal: no control or escape sequence from a remote answer ----------------------------------------

HOSTILE_REASON = "Busy\x1b[2J\x1b]0;pwned\x07 now"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (HOSTILE_REASON, "Busy now"),
        ("a\x1b[31mred\x1b[0m b", "ared b"),
        ("osc\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "osclink"),
        ("c1\x9b2J csi\x9d0;t\x9c end", "c1 csi end"),
        ("nul\x00 bel\x07 bs\x08 cr\r del\x7f", "nul bel bs cr del"),
        ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
        ("unterminated \x1b]0;title", "unterminated "),
    ],
)
def test_printable_strips_controls_and_escape_sequences(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_the_terminal_channel_prints_no_escape_sequence() -> None:
    console = Console(record=True, width=120, color_system=None, force_terminal=False)
    terminal = TerminalAdapter(console=console)
    hostile = card(
        title=HOSTILE_REASON,
        body=(HOSTILE_REASON,),
        byline=HOSTILE_REASON,
        background=HOSTILE_REASON,
        source_title=HOSTILE_REASON,
        matched_terms=(HOSTILE_REASON,),
        images=(Image(caption=HOSTILE_REASON, credit=HOSTILE_REASON),),
    )
    console.print(terminal.render_card(hostile, numbered=True))
    terminal.print_reply(Reply(text=HOSTILE_REASON, cards=(hostile,), error=True))
    shown = console.export_text()
    assert "Busy" in shown and "now" in shown
    assert "\x1b" not in shown and "\x07" not in shown


class HostileServer:
    """A raw HTTP server on 127.0.0.1 whose status line carries terminal escape sequences."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> HostileServer:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/live/feed.xml"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 503 " + HOSTILE_REASON.encode() + b"\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\x1b"
            )
            await writer.drain()
        finally:
            writer.close()


def no_controls(result: Finished) -> None:
    for stream in (result.out, result.err):
        assert "\x1b" not in stream and "\x07" not in stream, stream


async def test_a_hostile_reason_phrase_never_reaches_the_operators_terminal(tmp_path: Path) -> None:
    env = {"LIVEDESK_DB_PATH": str(tmp_path / "livedesk.db"), "LIVEDESK_DEMO": "false"}
    async with HostileServer() as server:
        imported = await asyncio.to_thread(livedesk, "import", server.url, cwd=tmp_path, env=env)
        polled = await asyncio.to_thread(
            livedesk,
            "run",
            "--once",
            cwd=tmp_path,
            env={**env, "LIVEDESK_SOURCES": json.dumps([server.url]), "LIVEDESK_LOG_LEVEL": "INFO"},
        )
    listed = await asyncio.to_thread(livedesk, "sources", cwd=tmp_path, env=env)
    as_json = await asyncio.to_thread(livedesk, "--json", "sources", cwd=tmp_path, env=env)
    assert imported.code != 0 and "503 Busy" in imported.err and "now" in imported.err
    assert "503" in listed.out
    for result in (imported, polled, listed, as_json):
        no_controls(result)
    assert "\\u001b" not in as_json.out and "\\u0007" not in as_json.out


# --- a receiver whose error text repeats the webhook URL: nothing secret is stored or shown ----------------


@pytest.fixture
async def echoing_receiver() -> AsyncIterator[str]:
    """Answers every post with 404 and an error page that repeats the URL it was called with."""

    async def refuse(request: web.Request) -> web.Response:
        user, _sep, password = (
            base64.b64decode(request.headers["Authorization"].removeprefix("Basic "))
            .decode()
            .partition(":")
        )
        called = f"http://{user}:{password}@{request.host}{request.path_qs}"
        return web.Response(status=404, text=f"no_service: nothing at {called} \x1b[2J\x07")

    app = web.Application()
    app.router.add_post("/{path:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    try:
        yield f"http://hookuser:hookpass@127.0.0.1:{port}/hooks/T000/B000/PaThSeCrEt99?token=tok123&sig=sig456"
    finally:
        await runner.cleanup()


async def test_a_failure_reason_with_the_webhook_url_is_stored_and_shown_redacted(
    tmp_path: Path, echoing_receiver: str
) -> None:
    env = {
        "LIVEDESK_DB_PATH": str(tmp_path / "livedesk.db"),
        "LIVEDESK_SLACK": "{}",
        "LIVEDESK_LOG_LEVEL": "INFO",
    }

    def cli(*args: str) -> Finished:
        return livedesk(*args, cwd=tmp_path, env=env)

    assert (await asyncio.to_thread(cli, "import", str(FIXTURES / "cli_blog.txt"))).code == 0
    subscribed = await asyncio.to_thread(
        cli, "subscribe", "slack", echoing_receiver, "--backfill", "1"
    )
    assert subscribed.code == 0, subscribed.err
    ran = await asyncio.to_thread(cli, "run", "--once")
    dead = await asyncio.to_thread(cli, "deliveries", "--dead")
    dead_json = await asyncio.to_thread(cli, "--json", "deliveries", "--dead")
    listed = await asyncio.to_thread(cli, "subscriptions")
    [item] = json.loads(dead_json.out)["dead"]
    assert "404" in item["reason"] and "no_service" in item["reason"]
    for result in (subscribed, ran, dead, dead_json, listed):
        shown = result.out + result.err
        for secret in ("hookuser", "hookpass", "tok123", "sig456", "PaThSeCrEt"):
            assert secret not in shown, (secret, shown)
        no_controls(result)
    assert "\\u001b" not in dead_json.out


class RefusedAtStart(Adapter):
    """A platform whose error answer at start carries escape sequences (a proxy's, say)."""

    platform = "refusing"
    capabilities = Capabilities(max_text=100, markup="plain", can_edit=False)

    async def start(self, context: AdapterContext) -> None:
        raise StartupError(f"refusing: the API said {HOSTILE_REASON}")

    async def stop(self) -> None:
        pass

    async def send(self, target: Target, card: Card) -> str:
        raise AssertionError("never started")


async def test_a_startup_error_from_a_platform_is_printed_without_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(db_path=tmp_path / "app.db", demo=False)
    app = App(settings, once=True, extra_adapters=[RefusedAtStart()])
    assert await app.run() != 0
    shown = capsys.readouterr().err
    assert "refusing: the API said" in shown
    assert "\x1b" not in shown and "\x07" not in shown
