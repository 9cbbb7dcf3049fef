"""Settings from the environment and `.env`: prefix `LIVEDESK_`, `__` for nesting.

The variables are read here (`_given`, `_settings_data`) and validated by one pydantic model, not
through pydantic-settings, whose import cost every command ~15-20 ms of start-up (issue 13; `latest`
0.271 → 0.255 s of CPU, pinned to one core), and what Livedesk needs of it is a prefix, one
delimiter and `.env`.

Telegram and Discord are on when their token is set (`LIVEDESK_TELEGRAM__TOKEN`), Slack when its
section is (`bot.platforms` names the sections, each a `PlatformSettings`). `NAME=` counts as unset. A
wrong value is a ConfigError of one line naming the variable; a name Livedesk does not know is a warning
naming the closest one it does. Tokens and webhook URLs are `SecretStr`: they never appear in a repr, a
log line or an error message.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from storage import variants

PREFIX = "LIVEDESK_"
NESTING = "__"
ENV_FILE = Path(".env")  # in the working directory, as the operator starts the command
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _from_json(value: Any, example: str) -> Any:
    """A setting given as text is JSON; anything else says so, with an example of the shape."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"not JSON ({error.msg} at character {error.pos + 1}); write it like {example}"
        ) from None


def _token(value: Any) -> Any:
    """Copied tokens often carry spaces or a newline; an empty one is an error, not a login."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str):
        text = text.strip()
        if not text:
            raise ValueError("empty")
    return text


class SourceSetting(BaseModel):
    """A blog to poll: a file path or an http(s) URL, with its poll interval in seconds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    location: str = Field(alias="url")
    interval: float = Field(default=60.0, gt=0)

    @classmethod
    def parse(cls, value: Any) -> SourceSetting:
        if isinstance(value, str):
            return cls(url=value)
        return cls.model_validate(value)


class DispatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    concurrency: int = Field(default=32, ge=1, le=1024)
    max_attempts: int = Field(default=8, ge=1)
    backoff_base: float = Field(default=2.0, gt=0)  # seconds before the first retry
    backoff_max: float = Field(default=600.0, gt=0)
    # how often imports made by other processes are noticed
    poll_interval: float = Field(default=0.25, gt=0)
    # PostgreSQL fleet: a claimed delivery is the claiming worker's for this long; when a worker
    # dies, its claims go to another worker after at most this many seconds
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a file of name variants (Kyiv = Kiev, one group a line) added to the bundled table
    variants_file: Path | None = None

    _variants: variants.Variants | None = PrivateAttr(default=None)

    @field_validator("variants_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                variants.read(value)
            except variants.VariantsError as error:
                raise ValueError(str(error)) from None
        return value

    @property
    def variants(self) -> variants.Variants:
        """The bundled variants table with the operator's file added (read once)."""
        if self._variants is None:
            self._variants = variants.load(self.variants_file)
        return self._variants


class PlatformSettings(BaseModel):
    """A chat platform's settings section (`bot.platforms` names which attribute holds which)."""


class TelegramSettings(PlatformSettings):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    token: SecretStr
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str | None = None
    webhook_url: str | None = None  # public URL: use webhook mode instead of long polling
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    link_previews: bool = False
    admin_cache_seconds: float = 60.0
    # > 1 speeds the limits up (for tests against a scaled fake server)
    rate_scale: float = Field(default=1.0, gt=0)

    strip_token = field_validator("token", mode="before")(_token)


class DiscordSettings(PlatformSettings):
    model_config = ConfigDict(extra="forbid")

    token: SecretStr
    guild_id: int | None = None  # sync slash commands to one guild (fast) instead of globally
    api_base: str | None = None  # e.g. http://127.0.0.1:9000/api/v10
    gateway_url: str | None = None
    sharded: bool = False

    strip_token = field_validator("token", mode="before")(_token)


class WebhookSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: SecretStr
    keywords: str | None = None
    source: str | None = None
    flavor: Literal["slack", "mattermost", "teams"] = "slack"


class SlackSettings(PlatformSettings):
    model_config = ConfigDict(extra="forbid")

    signing_secret: SecretStr | None = None  # turns on POST /slack/commands
    webhooks: list[WebhookSetting] = Field(default_factory=list)

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks(cls, value: Any) -> Any:
        return _from_json(value, '[{"url": "https://hooks.slack.com/services/…"}]')


class Settings(BaseModel):
    # Unknown names are warned about by `_check_given`; defaults are validated like given values.
    model_config = ConfigDict(extra="ignore", validate_default=True)

    db_path: Path = Path("livedesk.db")
    # a PostgreSQL server instead of the SQLite file: postgresql://user:password@host/dbname
    database_url: SecretStr | None = None
    sources: list[SourceSetting] = Field(default_factory=list)
    timezone: str = "UTC"  # how times are shown in chats
    backfill: int = Field(default=3, ge=0, le=50)  # latest posts greeting a new subscription
    # newest posts of a blog's first import sent to existing subscriptions (unset: `backfill`)
    first_poll_backfill: int | None = Field(default=None, ge=0, le=50)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # the control room (dashboard and /api/v1) is on when this is set; a secret like a token
    admin_token: SecretStr | None = None
    log_level: str = "INFO"
    # replay the bundled sample blog; default: on when no adapter is configured
    demo: bool | None = None

    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    telegram: TelegramSettings | None = None
    discord: DiscordSettings | None = None
    slack: SlackSettings | None = None

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        value = _from_json(value, '["blogs/ukraine.txt", "https://example.org/live/feed.xml"]')
        if isinstance(value, list):
            return [SourceSetting.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("dispatch", "search", "slack", mode="before")
    @classmethod
    def _section(cls, value: Any, info: ValidationInfo) -> Any:
        example = {
            "dispatch": '{"concurrency": 8}',
            "search": '{"variants_file": "variants.txt"}',
        }.get(str(info.field_name), '{"webhooks": […]}')
        return _from_json(value, example)

    @field_validator("telegram", "discord", mode="before")
    @classmethod
    def _chat_section(cls, value: Any, info: ValidationInfo) -> Any:
        """On when the token is given. Settings at their defaults without a token (a line of
        .env.example uncommented) leave the platform off; other settings need the token."""
        value = _from_json(value, '{"token": "…"}')
        if not isinstance(value, dict) or "token" in value:
            return value
        model = TelegramSettings if info.field_name == "telegram" else DiscordSettings
        rest = {key: item for key, item in value.items() if key != "token"}
        try:
            given = model.model_validate({**rest, "token": "-"})
        except ValidationError:
            return value  # the errors of those settings come first
        if all(getattr(given, key) == model.model_fields[key].default for key in rest):
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text.lower().startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "must be a postgresql:// URL (for an SQLite file, set LIVEDESK_DB_PATH instead)"
            )
        return SecretStr(text)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level == "WARN":
            level = "WARNING"
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level ({', '.join(LOG_LEVELS[:-1])})")
        return level

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def demo_mode(self) -> bool:
        if self.demo is not None:
            return self.demo
        return not any(isinstance(value, PlatformSettings) for value in dict(self).values())

    @property
    def new_source_backfill(self) -> int:
        """How many of a new blog's newest posts its first poll sends to existing subscriptions."""
        return self.backfill if self.first_poll_backfill is None else self.first_poll_backfill

    @property
    def warnings(self) -> list[str]:
        """Settings that are ignored (an unknown name, an empty token), one line each."""
        return list(self._warnings)


class ConfigError(Exception):
    """A bad or missing setting, as one line for the operator."""


def known_names() -> list[str]:
    """Every setting's variable name, sections (given as JSON) and the settings inside them."""
    names: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            names.append(prefix + name.upper())
            section = _model_of(field.annotation)
            if section is not None:
                walk(section, prefix + name.upper() + NESTING)

    walk(Settings, PREFIX)
    return names


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _given(env_file: Path) -> dict[str, str]:
    """LIVEDESK_* variables as given: .env first, the environment over it (upper-cased names)."""
    given: dict[str, str] = {}
    if env_file.is_file():
        for name, value in dotenv_values(env_file).items():
            if name.upper().startswith(PREFIX):
                given[name.upper()] = value or ""
    for name, value in os.environ.items():
        if name.upper().startswith(PREFIX):
            given[name.upper()] = value
    return given


def _check_given(given: Mapping[str, str]) -> Iterator[str]:
    """Warnings for names that are ignored; ConfigError for a JSON setting that is not JSON."""
    known = known_names()
    for name, value in sorted(given.items()):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield f"unknown setting {name} is ignored{hint}"
        elif name.endswith(NESTING + "TOKEN") and value == "":  # `NAME=`: unset
            platform = name.removeprefix(PREFIX).split(NESTING)[0].title()
            yield f"{name} is empty: {platform} stays off"


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold, so that no log line can carry one: each `SecretStr` of every
    section, also inside lists of sub-models (platform tokens, signing secrets, webhook URLs, the
    control room's admin token, the database URL), and the database URL's password."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            for item in dict(value).values():
                yield from walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from walk(item)

    found = [secret for secret in walk(settings) if secret]
    if settings.database_url is not None:
        password = urlsplit(settings.database_url.get_secret_value()).password
        if password:
            found.append(password)
    return found


def _is_section(annotation: Any) -> bool:
    """A setting given as JSON as a whole, or key by key as `NAME__KEY` (a sub-model, a list)."""
    return any(
        (isinstance(c, type) and issubclass(c, BaseModel))
        or getattr(c, "__origin__", None) in (list, dict)
        for c in (annotation, *getattr(annotation, "__args__", ()))
    )


def _settings_data(given: Mapping[str, str]) -> dict[str, Any]:
    """The variables as the model's input: `LIVEDESK_NAME` is the field `name`; for a section,
    `LIVEDESK_NAME__KEY__…` is a key inside it, unless the section is given whole (as JSON, which
    its validator decodes). Names are case-insensitive and `NAME=` is unset."""
    sections = {name for name, f in Settings.model_fields.items() if _is_section(f.annotation)}
    data: dict[str, Any] = {}
    keyed: dict[str, dict[str, Any]] = {}
    for name, value in sorted(given.items()):
        if not value:
            continue
        field, *keys = name.removeprefix(PREFIX).lower().split(NESTING)
        if not keys:
            data[field] = value
            continue
        if field not in sections:
            continue  # e.g. LIVEDESK_DB_PATH__X: not a setting (warned about as unknown)
        place: Any = keyed.setdefault(field, {})
        for key in keys[:-1]:
            place = place.setdefault(key, {}) if isinstance(place, dict) else None
        if isinstance(place, dict):
            place[keys[-1]] = value
    for section, values in keyed.items():
        data.setdefault(section, values)
    return data


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, sections key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def load_settings(**overrides: Any) -> Settings:
    """Read settings; raise ConfigError with one readable line (no secret values) when they are wrong.

    `overrides` (the tests give some) win over the variables, section by section. Ignored
    settings (a misspelled name, an empty token) are in `settings.warnings`.
    """
    try:
        given = _given(ENV_FILE)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {ENV_FILE}: {error}") from None
    warnings = list(_check_given(given))
    try:
        settings = Settings.model_validate(_merged(_settings_data(given), overrides))
    except ValidationError as exc:
        raise ConfigError(_one_error(exc)) from None
    settings._warnings = warnings
    return settings


def _one_error(exc: ValidationError) -> str:
    """The most telling error, with the variable to fix: LIVEDESK_SLACK__WEBHOOKS, not a path."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] != "missing"), errors[0])
    names: list[str] = []
    detail: list[str] = []
    for part in first["loc"]:
        if isinstance(part, int) or detail:  # inside a JSON list: the rest is where in it
            detail.append(f"item {part + 1}" if isinstance(part, int) else str(part))
        else:
            names.append(str(part).upper())
    where = PREFIX + NESTING.join(names)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing" and names[-1:] == ["TOKEN"]:
        platform = names[0].title()
        message = f"missing; other {platform} settings are set, and {platform} needs its token"
    elif first["type"] == "missing":
        message = "missing"
    elif first["type"] == "extra_forbidden" and detail:
        message = f"unknown key {detail.pop()!r}"
    elif first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(where, known_names(), n=1, cutoff=0.8)
        message = "unknown setting" + (f"; did you mean {close[0]}?" if close else "")
    if detail:
        message = f"{', '.join(detail)}: {message}"
    return f"bad setting {where}: {message}"
