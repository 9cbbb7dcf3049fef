"""Wrong settings as the operator meets them: the real `livedesk` in a clean directory, one line naming
the setting and exit code 2; a misspelled name is a warning with the right one; every line of
`.env.example` can be uncommented on its own."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.cli_process import Finished, livedesk
from tests.conftest import ROOT

ENV_EXAMPLE = ROOT / ".env.example"


def bad_setting(done: Finished, name: str) -> str:
    assert "Traceback" not in done.err, done.err
    assert done.code == 2, (done.code, done.err)
    assert len(done.err_lines) == 1, done.err
    line = done.err_lines[0]
    assert line.startswith(f"bad setting {name}:"), line
    return line


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LIVEDESK_SOURCES", "x", "not JSON"),
        ("LIVEDESK_SOURCES", "blogs/a.txt", "not JSON"),
        ("LIVEDESK_SLACK__WEBHOOKS", "garbage", "not JSON"),
        ("LIVEDESK_SLACK", "{webhooks: []}", "not JSON"),
        ("LIVEDESK_DISPATCH", "fast", "not JSON"),
        ("LIVEDESK_TELEGRAM", "token=abc", "not JSON"),
        ("LIVEDESK_LOG_LEVEL", "LOUD", "'LOUD' is not a log level"),
        ("LIVEDESK_TELEGRAM__TOKEN", "   ", "empty"),
        ("LIVEDESK_DISCORD__TOKEN", "\t", "empty"),
        ("LIVEDESK_DISPATCH__POLL_INTERVAL", "inf", "finite"),
        ("LIVEDESK_DISPATCH__CONCURRENCY", "1e99", "integer"),
        ("LIVEDESK_HTTP_PORT", "99999999999999999999", "less than or equal to 65535"),
        ("LIVEDESK_BACKFILL", "²", "integer"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    for args in (("subscriptions",), ("run", "--once")):
        line = bad_setting(livedesk(*args, cwd=tmp_path, env={name: value}), name)
        assert says in line


@pytest.mark.parametrize(
    ("env", "name", "says"),
    [
        ({"LIVEDESK_TELEGRAM": '{"token": ""}'}, "LIVEDESK_TELEGRAM__TOKEN", "empty"),
        (
            {"LIVEDESK_TELEGRAM__WEBHOOK_URL": "https://bot.example.org/hook"},
            "LIVEDESK_TELEGRAM__TOKEN",
            "missing; other Telegram settings are set",
        ),
        (
            {"LIVEDESK_DISCORD__TOKEN": "", "LIVEDESK_DISCORD__GUILD_ID": "123"},
            "LIVEDESK_DISCORD__TOKEN",
            "missing",
        ),
        (
            {"LIVEDESK_SOURCES": '[{"url": "a.txt", "interval": 0}]'},
            "LIVEDESK_SOURCES",
            "item 1, interval",
        ),
        (
            {"LIVEDESK_SLACK__WEBHOOKS": '[{"url": "https://hooks.example.org/a"}, {"ur": "b"}]'},
            "LIVEDESK_SLACK__WEBHOOKS",
            "item 2: unknown key 'ur'",
        ),
        (
            {"LIVEDESK_TELEGRAM__TOKN": "123:abc"},
            "LIVEDESK_TELEGRAM__TOKN",
            "did you mean LIVEDESK_TELEGRAM__TOKEN?",
        ),
    ],
)
def test_a_bad_section_names_the_setting_to_fix(
    tmp_path: Path, env: dict[str, str], name: str, says: str
) -> None:
    line = bad_setting(livedesk("subscriptions", cwd=tmp_path, env=env), name)
    assert says in line


def test_a_bad_token_is_never_echoed(tmp_path: Path) -> None:
    env = {"LIVEDESK_DISCORD": '{"token": "discord-SECRET9", "guild_id": "nope"}'}
    done = livedesk("subscriptions", cwd=tmp_path, env=env)
    bad_setting(done, "LIVEDESK_DISCORD__GUILD_ID")
    assert "SECRET9" not in done.err + done.out


def test_a_bad_setting_in_dotenv_is_named_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LIVEDESK_SLACK__WEBHOOKS=garbage\n")
    bad_setting(livedesk("subscriptions", cwd=tmp_path), "LIVEDESK_SLACK__WEBHOOKS")


@pytest.mark.parametrize(
    ("given", "right"),
    [
        ("LIVEDESK_TELEGRAM_TOKEN", "LIVEDESK_TELEGRAM__TOKEN"),
        ("LIVEDESK_TIMEZON", "LIVEDESK_TIMEZONE"),
        ("LIVEDESK_DISPATCH_CONCURRENCY", "LIVEDESK_DISPATCH__CONCURRENCY"),
        ("livedesk_db_pth", "LIVEDESK_DB_PATH"),
    ],
)
def test_a_misspelled_name_is_a_warning_with_the_right_one(
    tmp_path: Path, given: str, right: str
) -> None:
    done = livedesk("subscriptions", cwd=tmp_path, env={given: "123:abc"})
    assert done.code == 0, done.err
    assert "No subscriptions" in done.out  # the command still ran
    [warning] = done.err_lines
    assert given.upper() in warning and f"did you mean {right}?" in warning
    assert "123:abc" not in done.err


def test_a_misspelled_name_in_dotenv_is_a_warning_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LIVEDESK_TELEGRAM_TOKEN=123:abc\n")
    done = livedesk("subscriptions", cwd=tmp_path)
    assert done.code == 0
    [warning] = done.err_lines
    assert "did you mean LIVEDESK_TELEGRAM__TOKEN?" in warning


def test_an_empty_token_line_leaves_the_platform_off_and_says_so(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LIVEDESK_TELEGRAM__TOKEN=\n")
    done = livedesk("run", "--once", cwd=tmp_path)
    assert done.code == 0, done.err
    assert done.err_lines == ["LIVEDESK_TELEGRAM__TOKEN is empty: Telegram stays off"]


# --- .env.example -------------------------------------------------------------------------------------

SETTING_LINE = re.compile(r"^# (LIVEDESK_[A-Z_]+=.*)$")
EXAMPLE_LINES = [
    match.group(1)
    for line in ENV_EXAMPLE.read_text("utf-8").splitlines()
    if (match := SETTING_LINE.match(line))
]


def test_the_example_shows_every_setting() -> None:
    shown = {line.split("=", 1)[0] for line in EXAMPLE_LINES}
    assert len(shown) >= 30
    assert {"LIVEDESK_DEMO", "LIVEDESK_TELEGRAM__TOKEN", "LIVEDESK_DISCORD__GUILD_ID"} <= shown


@pytest.mark.parametrize("line", EXAMPLE_LINES)
def test_any_one_line_of_the_example_can_be_uncommented(tmp_path: Path, line: str) -> None:
    (tmp_path / ".env").write_text(line + "\n", "utf-8")
    done = livedesk("run", "--once", cwd=tmp_path)
    assert done.code == 0, done.err
    assert "bad setting" not in done.err and "Traceback" not in done.err, done.err


# --- a Discord API answering something odd --------------------------------------------------------------

OddAnswer = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _html(request: web.Request) -> web.StreamResponse:
    return web.Response(
        text="<html><body>Welcome to nginx!</body></html>", content_type="text/html"
    )


async def _a_list(request: web.Request) -> web.StreamResponse:
    return web.json_response([1, 2, 3])


async def _an_empty_object(request: web.Request) -> web.StreamResponse:
    return web.json_response({})


@pytest.fixture
async def odd_api() -> AsyncIterator[Callable[[OddAnswer], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def serve(answer: OddAnswer) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("answer", [_html, _a_list, _an_empty_object])
async def test_a_discord_api_answering_something_odd_is_one_line(
    tmp_path: Path, odd_api: Callable[[OddAnswer], Awaitable[str]], answer: OddAnswer
) -> None:
    api_base = await odd_api(answer)
    env = {"LIVEDESK_DISCORD__TOKEN": "odd-SECRET7", "LIVEDESK_DISCORD__API_BASE": api_base}
    # In a thread, so that this loop goes on serving the odd answers.
    done = await asyncio.to_thread(livedesk, "run", "--once", cwd=tmp_path, env=env)
    assert done.code == 1, done.err
    assert "Traceback" not in done.err and "SECRET7" not in done.err
    [failure] = [line for line in done.err_lines if "Discord's API" in line]
    assert failure.startswith(f"Discord's API at {api_base} answered the log-in with something")
    assert failure.endswith("; check LIVEDESK_DISCORD__API_BASE")
