"""Logging set-up: one format, and no secret in any line, even at debug level."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from bot import redact as redaction

# Loggers that print request URLs or SQL parameters (webhook URLs are stored as subscription targets).
_CHATTY = ("aiosqlite", "httpx", "httpcore", "hpack", "discord.http", "slack_sdk")


class RedactSecrets(logging.Filter):
    """Replaces every configured secret, and anything shaped like a token (a URL's `user:password@`,
    a `?token=` value), with `[secret]`; strips terminal control sequences a remote answer carried."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redactor = redaction.Redactor(secrets)
        self.secrets = self._redactor.secrets

    def redact(self, text: str) -> str:
        return redaction.printable(self._redactor(text))

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
    secrets = list(secrets)
    redaction.configure(secrets)  # stored failure reasons get the same redaction as log lines
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
    # The pool says so at every reconnection attempt; the dispatcher and the fleet say it once per
    # outage, and again when the server answers.
    pool = logging.getLogger("psycopg.pool")
    if pool.level == logging.NOTSET or pool.level < logging.ERROR:
        pool.setLevel(logging.ERROR)
