"""Settings come from LIVEDESK_* variables (and .env), nested with "__"; secrets never print."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LIVEDESK_* variable or .env from the developer's machine leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("LIVEDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_any_setting_are_the_demo() -> None:
    settings = load_settings()
    assert settings.db_path == Path("livedesk.db")
    assert settings.timezone == "UTC"
    assert settings.sources == []
    assert settings.telegram is None and settings.discord is None and settings.slack is None
    assert settings.demo_mode


def test_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_DB_PATH", "data/desk.db")
    monkeypatch.setenv("LIVEDESK_TIMEZONE", "Europe/Kyiv")
    monkeypatch.setenv("LIVEDESK_DISPATCH__MAX_ATTEMPTS", "3")
    monkeypatch.setenv("LIVEDESK_TELEGRAM__TOKEN", "123:abc")
    monkeypatch.setenv("LIVEDESK_TELEGRAM__LINK_PREVIEWS", "true")
    monkeypatch.setenv("DB_PATH", "ignored-without-prefix.db")
    settings = load_settings()
    assert settings.db_path == Path("data/desk.db")
    assert settings.zone.key == "Europe/Kyiv"
    assert settings.dispatch.max_attempts == 3
    assert settings.telegram is not None
    assert settings.telegram.token.get_secret_value() == "123:abc"
    assert settings.telegram.link_previews is True
    assert not settings.demo_mode  # an adapter is configured


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LIVEDESK_BACKFILL=7\nLIVEDESK_DISCORD__TOKEN=discord-secret\n")
    settings = load_settings()
    assert settings.backfill == 7
    assert settings.discord is not None


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_TELEGRAM__TOKEN", "tg-token-SECRET1")
    monkeypatch.setenv("LIVEDESK_TELEGRAM__WEBHOOK_SECRET", "tg-hook-SECRET2")
    monkeypatch.setenv("LIVEDESK_DISCORD__TOKEN", "discord-SECRET3")
    monkeypatch.setenv(
        "LIVEDESK_SLACK",
        '{"signing_secret": "slack-SECRET4", '
        '"webhooks": [{"url": "https://hooks.slack.com/services/T0/B0/SECRET5"}]}',
    )
    settings = load_settings()
    shown = repr(settings) + str(settings) + repr(settings.slack) + str(settings.telegram)
    for secret in ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"):
        assert secret not in shown
    assert "**********" in shown


def test_sources_json_list_with_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LIVEDESK_SOURCES",
        '["blogs/ukraine.txt", {"url": "https://example.org/live.json", "interval": 30}]',
    )
    settings = load_settings()
    assert [(s.location, s.interval) for s in settings.sources] == [
        ("blogs/ukraine.txt", 60.0),
        ("https://example.org/live.json", 30.0),
    ]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("LIVEDESK_TIMEZONE", "Mars/Base", "LIVEDESK_TIMEZONE"),
        ("LIVEDESK_SOURCES", '[{"url": "a.txt", "interval": -1}]', "LIVEDESK_SOURCES"),
        ("LIVEDESK_BACKFILL", "many", "LIVEDESK_BACKFILL"),
        ("LIVEDESK_TELEGRAM__LINK_PREVIEWS", "yes please", "LIVEDESK_TELEGRAM"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_a_bad_secret_setting_does_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_DISCORD", '{"token": "discord-SECRET9", "guild_id": "nope"}')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "SECRET9" not in str(caught.value)


def test_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEDESK_TIMEZONE", "Mars/Base")
    assert main(["sources"]) == 2
    captured = capsys.readouterr()
    assert "LIVEDESK_TIMEZONE" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err


def test_names_are_case_insensitive_and_the_environment_wins_over_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("livedesk_backfill=7\nLIVEDESK_TIMEZONE=Europe/Paris\n")
    monkeypatch.setenv("Livedesk_Timezone", "Europe/Kyiv")
    settings = load_settings()
    assert settings.backfill == 7
    assert settings.timezone == "Europe/Kyiv"


def test_a_section_given_whole_as_json_wins_over_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_DISPATCH", '{"concurrency": 4}')
    monkeypatch.setenv("LIVEDESK_DISPATCH__MAX_ATTEMPTS", "3")
    settings = load_settings()
    assert settings.dispatch.concurrency == 4
    assert settings.dispatch.max_attempts == 8  # the default: the whole section was given


def test_an_empty_value_is_unset_at_every_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_BACKFILL", "")
    monkeypatch.setenv("LIVEDESK_DISPATCH__CONCURRENCY", "")
    monkeypatch.setenv("LIVEDESK_SLACK__WEBHOOKS", "")
    settings = load_settings()
    assert settings.backfill == 3
    assert settings.dispatch.concurrency == 32
    assert settings.slack is None


def test_a_key_under_a_plain_setting_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEDESK_DB_PATH__X", "y.db")
    settings = load_settings()
    assert settings.db_path == Path("livedesk.db")
    assert settings.warnings == [
        "unknown setting LIVEDESK_DB_PATH__X is ignored; did you mean LIVEDESK_DB_PATH?"
    ]


def test_overrides_win_over_the_variables_key_by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDESK_DISPATCH__MAX_ATTEMPTS", "3")
    monkeypatch.setenv("LIVEDESK_BACKFILL", "7")
    settings = load_settings(dispatch={"concurrency": 4}, backfill=1)
    assert (settings.dispatch.concurrency, settings.dispatch.max_attempts) == (4, 3)
    assert settings.backfill == 1


def test_a_wrong_value_of_a_section_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEDESK_DISPATCH__CONCURRENCY", "many")
    with pytest.raises(ConfigError, match=r"^bad setting LIVEDESK_DISPATCH__CONCURRENCY: "):
        load_settings()
