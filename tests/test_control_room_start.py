"""How `livedesk run` starts its control room when the address is taken: deliveries go on without
it (one line saying so), unless a platform needs the server (Slack's slash command)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import EXIT_FAILED, App
from bot.config import load_settings
from tests.control_room import TOKEN, running_app


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


async def test_a_taken_port_leaves_the_control_room_off_and_the_rest_running(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_app(
        db_path=tmp_path / "livedesk.db", http_port=taken_port, admin_token=TOKEN
    ) as app:
        assert app.control_room is None
        assert app.dispatcher is not None
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(
        f"the control room is off: cannot listen on 127.0.0.1:{taken_port}"
    )
    assert TOKEN not in err[0]


async def test_a_taken_port_stops_a_run_that_serves_slack_commands(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        db_path=tmp_path / "livedesk.db",
        demo=False,
        http_port=taken_port,
        slack={"signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"},
    )
    assert await App(settings, prompt=False).run() == EXIT_FAILED
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        f"cannot serve Slack slash commands on 127.0.0.1:{taken_port}: address already in use"
    ]
