"""Logging set-up: one format, and no secret in any line, even at debug level."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# Telegram bot tokens (in Bot API URLs), Discord bot tokens, Slack webhook paths and signatures.
_SECRET_PATTERNS = (
    re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"[A-Za-z0-9_-]{24,}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
    re.compile(r"(hooks\.slack\.com/services/)[^\s'\"]+"),
    re.compile(r"(/hooks/)[A-Za-z0-9]{8,}"),
    re.compile(r"(/webhooks/[0-9]+/)[A-Za-z0-9_-]{20,}"),
    re.compile(r"(v0=)[0-9a-f]{64}"),
)
# Loggers that print request URLs or SQL parameters (webhook URLs are stored as subscription targets).
_CHATTY = ("aiosqlite", "httpx", "httpcore", "hpack", "discord.http", "slack_sdk")


class RedactSecrets(logging.Filter):
    """Replaces every configured secret, and anything shaped like a token, with `[secret]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[secret]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def configure_logging(level: str | int, secrets: Iterable[str] = ()) -> None:
    """Log to stderr at `level`; libraries that echo URLs or SQL parameters stay at INFO or above."""
    root = logging.getLogger()
    redact = RedactSecrets(secrets)
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(old)
        handler.addFilter(redact)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in _CHATTY:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO if name != "httpx" else logging.WARNING)
