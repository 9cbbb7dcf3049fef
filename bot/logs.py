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


# The platform libraries, whose own log lines may carry a network error they caught.
_LIBRARIES = frozenset({"telegram", "discord", "aiohttp", "httpx", "httpcore", "slack_sdk"})
# Errors of the network, by class name anywhere in their MRO (no library imported for this).
_NETWORK_ERRORS = frozenset(
    {"OSError", "TimeoutError", "NetworkError", "ClientError", "TransportError", "ConnectionClosed"}
)


class LibraryNetworkErrorsInOneLine(logging.Filter):
    """A platform library that logs a network error it caught (python-telegram-bot's last
    getUpdates at shutdown timing out, a dropped connection) gets one line: its own message, then
    the error's type and text. The traceback is kept at debug level, and for every other error
    (a bug of ours, called back by the library, keeps its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (
            error is None
            or record.name.split(".", 1)[0] not in _LIBRARIES
            or logging.getLogger().isEnabledFor(logging.DEBUG)
            or not any(cls.__name__ in _NETWORK_ERRORS for cls in type(error).__mro__)
        ):
            return True
        text = " ".join(str(error).split())[:300]
        record.msg = f"{record.getMessage()} ({type(error).__name__}{': ' + text if text else ''})"
        record.args = None
        record.exc_info = record.exc_text = None
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
    one_line = LibraryNetworkErrorsInOneLine()
    for handler in root.handlers:
        ours = (RedactSecrets, LibraryNetworkErrorsInOneLine)
        for old in [f for f in handler.filters if isinstance(f, ours)]:
            handler.removeFilter(old)
        handler.addFilter(one_line)  # first: what it leaves is redacted next
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
