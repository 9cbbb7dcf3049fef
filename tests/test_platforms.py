"""The platform registry: one entry per platform, and everything platform-specific read through it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from bot.adapters.base import Adapter
from bot.config import PlatformSettings, Settings, configured_secrets, load_settings
from bot.models import EditPolicy, Target
from bot.platforms import (
    BY_NAME,
    CONFIGURABLE,
    NAMES,
    PLATFORMS,
    mask_address,
    operator_target,
    platform,
    waiting_lines,
)

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "bot" / "adapters"
TOKEN = "123456:" + "A" * 35
SECTION_VALUES: dict[str, dict[str, object]] = {
    "telegram": {"token": TOKEN},
    "discord": {"token": "D" * 24 + "." + "x" * 6 + "." + "y" * 27},
    "slack": {},
}


def adapter_platforms() -> dict[str, str]:
    """platform name → module, for every adapter class defined under bot/adapters/."""
    found: dict[str, str] = {}
    for path in sorted(ADAPTERS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and [getattr(t, "id", None) for t in item.targets] == ["platform"]
                    and isinstance(item.value, ast.Constant)
                ):
                    found[str(item.value.value)] = f"bot.adapters.{path.stem}:{node.name}"
    return found


def test_every_adapter_has_exactly_one_entry_and_the_entry_names_it() -> None:
    adapters = adapter_platforms()
    assert set(adapters) == set(NAMES) and len(NAMES) == len(PLATFORMS)
    for name, where in adapters.items():
        entry = BY_NAME[name]
        assert entry.adapter == where
        factory = entry.adapter_class()
        assert inspect.isclass(factory) and issubclass(factory, Adapter)
        assert factory.platform == name


def test_every_settings_section_has_an_entry_and_the_other_way_round() -> None:
    sections = {
        name
        for name, field in Settings.model_fields.items()
        if any(
            inspect.isclass(arg) and issubclass(arg, PlatformSettings)
            for arg in getattr(field.annotation, "__args__", (field.annotation,))
        )
    }
    assert sections == {entry.section for entry in CONFIGURABLE}
    for entry in CONFIGURABLE:
        assert entry.settings_class is not None
        assert issubclass(entry.settings_class, PlatformSettings)
        assert entry.needs_token == (entry.token_setting is not None)


@pytest.mark.parametrize("name", [entry.name for entry in CONFIGURABLE])
def test_the_entry_says_what_its_adapter_can_do(name: str) -> None:
    """can_edit (and with it the default edit policy) is the adapter's own capability."""
    entry = BY_NAME[name]
    assert entry.settings_class is not None
    section: BaseModel = entry.settings_class(**SECTION_VALUES[name])
    adapter = entry.adapter_class()(section)
    assert adapter.capabilities.can_edit == entry.can_edit
    expected = EditPolicy.EDIT if entry.can_edit else EditPolicy.FOLLOW_UP
    assert entry.default_edit_policy is expected


@pytest.mark.parametrize(
    ("name", "typed", "options", "address", "kind", "shown"),
    [
        ("telegram", "@newsdesk", {}, "@newsdesk", "channel", "@newsdesk"),
        ("telegram", "-1001234567890", {}, "-1001234567890", "channel", "-1001234567890"),
        ("telegram", "-42", {}, "-42", "group", "-42"),
        ("telegram", "  42 ", {}, "42", "private", "42"),
        (
            "discord",
            "123456789012345678",
            {},
            "123456789012345678",
            "channel",
            "123456789012345678",
        ),
        (
            "slack",
            "https://hooks.slack.com/services/T000/B000/XXXXabcd",
            {"flavor": "mattermost"},
            "https://hooks.slack.com/services/T000/B000/XXXXabcd",
            "webhook",
            "https://hooks.slack.com/…/abcd",
        ),
        ("terminal", "", {}, "console", "terminal", "console"),
        ("Telegram", "@newsdesk", {}, "@newsdesk", "channel", "@newsdesk"),
    ],
)
def test_targets_parse_and_mask_through_the_registry(
    name: str, typed: str, options: dict[str, str], address: str, kind: str, shown: str
) -> None:
    target = operator_target(name, typed, **options)
    assert (target.platform, target.address, target.kind) == (name.lower(), address, kind)
    assert mask_address(target) == shown
    if "flavor" in options:
        assert target.options["flavor"] == options["flavor"]


@pytest.mark.parametrize(
    ("name", "typed", "options", "says"),
    [
        ("telegram", "newsdesk", {}, "integer chat id or an @username"),
        ("telegram", "0", {}, "cannot be 0"),
        ("discord", "12", {}, "numeric channel id"),
        ("slack", "hooks.slack.com/services/T/B/SECRET", {}, "http(s) webhook URL"),
        ("slack", "https://chat.example.org/hooks/SECRET", {"flavor": "irc"}, "unknown webhook"),
        ("telegram", "@newsdesk", {"flavor": "slack"}, "--flavor applies to Slack-style webhooks"),
        ("slack", "https://x.example/h/SECRET", {"webhook": "https://x"}, "Discord channels only"),
        ("terminal", "elsewhere", {}, "the terminal target is"),
        ("irc", "#news", {}, "unknown platform 'irc'; use one of: telegram, discord, slack"),
    ],
)
def test_a_bad_target_is_one_line_that_never_echoes_a_secret(
    name: str, typed: str, options: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError) as caught:
        operator_target(name, typed, **options)
    message = str(caught.value)
    assert says in message and "\n" not in message and "SECRET" not in message


def test_a_webhook_address_is_masked_on_any_platform() -> None:
    for name in (*NAMES, "someday"):
        target = Target(
            platform=name, address="https://example.org/hook/abcdSECRETwxyz", kind="webhook"
        )
        assert mask_address(target) == "https://example.org/…/wxyz"


def test_edit_policies_come_from_what_the_platform_can_do() -> None:
    assert platform("slack").edit_policy(None) is EditPolicy.FOLLOW_UP
    assert platform("telegram").edit_policy(None) is EditPolicy.EDIT
    assert platform("slack").edit_policy("ignore") is EditPolicy.IGNORE
    with pytest.raises(ValueError, match="cannot edit sent messages"):
        platform("slack").edit_policy("edit")


def test_every_configured_secret_is_known_for_redaction() -> None:
    settings = load_settings(
        telegram={"token": TOKEN, "webhook_secret": "tg-webhook-secret"},
        discord=SECTION_VALUES["discord"],
        slack={
            "signing_secret": "slack-signing-secret",
            "webhooks": [{"url": "https://chat.example.org/hooks/abcdefgh"}],
        },
    )
    secrets = set(configured_secrets(settings))
    assert {
        TOKEN,
        "tg-webhook-secret",
        str(SECTION_VALUES["discord"]["token"]),
        "slack-signing-secret",
        "https://chat.example.org/hooks/abcdefgh",
    } <= secrets
    assert all(isinstance(s, str) and s for s in secrets)
    assert not any(isinstance(s, SecretStr) for s in secrets)


def test_the_admin_token_and_the_database_password_are_secrets_too() -> None:
    url = "postgresql://livedesk:db-pass-3141@127.0.0.1:5432/livedesk"
    settings = load_settings(admin_token="control-room-token", database_url=url)
    assert {"control-room-token", url, "db-pass-3141"} <= set(configured_secrets(settings))
    assert configured_secrets(load_settings()) == []


def test_only_platforms_that_need_a_token_wait_for_one() -> None:
    settings = load_settings(slack={})
    counts = {"telegram": 1, "discord": 2, "slack": 5, "terminal": 1}
    assert waiting_lines(settings, counts) == [
        "1 telegram subscription waits: set LIVEDESK_TELEGRAM__TOKEN",
        "2 discord subscriptions wait: set LIVEDESK_DISCORD__TOKEN",
    ]
    configured = load_settings(telegram={"token": TOKEN}, discord=SECTION_VALUES["discord"])
    assert waiting_lines(configured, counts) == []
