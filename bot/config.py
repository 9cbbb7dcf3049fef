"""Settings from the environment and `.env`: prefix `LIVEDESK_`, `__` for nesting.

An adapter is on when its section is set (e.g. `LIVEDESK_TELEGRAM__TOKEN`; `bot.platforms` names the
sections, each a `PlatformSettings`). Tokens and webhook URLs are `SecretStr`: they never appear in a
repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SourceSetting(BaseModel):
    """A blog to poll: a file path or an http(s) URL, with its poll interval in seconds."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(alias="url")
    interval: float = Field(default=60.0, gt=0)

    @classmethod
    def parse(cls, value: Any) -> SourceSetting:
        if isinstance(value, str):
            return cls(url=value)
        return cls.model_validate(value)


class DispatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=32, ge=1, le=1024)
    max_attempts: int = Field(default=8, ge=1)
    backoff_base: float = Field(default=2.0, gt=0)  # seconds before the first retry
    backoff_max: float = Field(default=600.0, gt=0)
    # how often imports made by other processes are noticed
    poll_interval: float = Field(default=0.25, gt=0)


class PlatformSettings(BaseModel):
    """A chat platform's settings section (`bot.platforms` names which attribute holds which)."""


class TelegramSettings(PlatformSettings):
    model_config = ConfigDict(extra="forbid")

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


class DiscordSettings(PlatformSettings):
    model_config = ConfigDict(extra="forbid")

    token: SecretStr
    guild_id: int | None = None  # sync slash commands to one guild (fast) instead of globally
    api_base: str | None = None  # e.g. http://127.0.0.1:9000/api/v10
    gateway_url: str | None = None
    sharded: bool = False


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVEDESK_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    db_path: Path = Path("livedesk.db")
    sources: list[SourceSetting] = Field(default_factory=list)
    timezone: str = "UTC"  # how times are shown in chats
    backfill: int = Field(default=3, ge=0, le=50)  # latest posts greeting a new subscription
    # newest posts of a blog's first import sent to existing subscriptions (unset: `backfill`)
    first_poll_backfill: int | None = Field(default=None, ge=0, le=50)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    # replay the bundled sample blog; default: on when no adapter is configured
    demo: bool | None = None

    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    telegram: TelegramSettings | None = None
    discord: DiscordSettings | None = None
    slack: SlackSettings | None = None

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [SourceSetting.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

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


class ConfigError(Exception):
    """A bad or missing setting, as one line for the operator."""


def load_settings(**overrides: Any) -> Settings:
    """Read settings; raise ConfigError with one readable line (no secret values) when they are wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "LIVEDESK_" + "__".join(str(p).upper() for p in first["loc"])
        raise ConfigError(f"bad setting {where}: {first['msg']}") from None
