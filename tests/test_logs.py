"""No secret reaches a log line, whatever the level."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from bot.logs import RedactSecrets, configure_logging

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.mark.parametrize(
    ("line", "leak"),
    [
        (f"POST https://api.telegram.org/bot{TOKEN}/sendMessage", TOKEN),
        (
            "posting to https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "T000/B000/XXXXSECRET",
        ),
        ("bad signature v0=" + "a" * 64, "a" * 64),
        ("configured secret sekret-signing-key in a message", "sekret-signing-key"),
    ],
)
def test_secrets_are_redacted(line: str, leak: str) -> None:
    redact = RedactSecrets(["sekret-signing-key"])
    clean = redact.redact(line)
    assert leak not in clean
    assert "[secret]" in clean


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


@pytest.mark.usefixtures("restore_logging")
def test_debug_logging_of_a_library_carries_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("DEBUG", ["sekret-signing-key"])
    handler = logging.getLogger().handlers[0]
    caplog.handler.filters.extend(handler.filters)
    logging.getLogger("livedesk.test").debug("token %s and key %s", TOKEN, "sekret-signing-key")
    assert TOKEN not in caplog.text
    assert "sekret-signing-key" not in caplog.text
    # SQL parameters (webhook URLs are stored as targets) are never logged at debug level.
    assert logging.getLogger("aiosqlite").getEffectiveLevel() >= logging.INFO


def _logged(name: str, error: BaseException, level: str = "INFO") -> str:
    """What one `logger.exception` of `name`, in an `except` of `error`, prints."""
    configure_logging(level)
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord(
        name, logging.ERROR, __file__, 1, "Error while calling it", None, None
    )
    try:
        raise error
    except BaseException:
        record.exc_info = sys.exc_info()
    for kept in handler.filters:
        assert isinstance(kept, logging.Filter) and kept.filter(record)
    return logging.Formatter("%(name)s: %(message)s").format(record)


@pytest.mark.usefixtures("restore_logging")
def test_a_network_error_a_platform_library_logs_is_one_line() -> None:
    from telegram.error import TimedOut

    line = _logged("telegram.ext.Updater", TimedOut())
    assert line == "telegram.ext.Updater: Error while calling it (TimedOut: Timed out)"
    line = _logged("discord.client", ConnectionResetError("reset by peer"))
    assert line == "discord.client: Error while calling it (ConnectionResetError: reset by peer)"


@pytest.mark.usefixtures("restore_logging")
def test_other_errors_and_debug_level_keep_their_traceback() -> None:
    from telegram.error import TimedOut

    assert "Traceback" in _logged("discord.client", ValueError("a bug in a handler"))
    assert "Traceback" in _logged("bot.dispatcher", TimeoutError("ours"))
    assert "Traceback" in _logged("telegram.ext.Updater", TimedOut(), level="DEBUG")
