"""What may leave the process: secrets masked, and no terminal control sequence from a remote answer.

Pure functions shared by the log filter (`bot.logs`), the dispatcher (a failure reason is cleaned before
the store keeps it: `livedesk deliveries --dead` shows what was stored), the CLI and the terminal.

- `mask_url`: a webhook URL as safe to print, `https://hooks.slack.com/…/AbCd`: scheme, host and port,
  then the last four characters of a path longer than eight; never the `user:password@`, the query or
  the fragment.
- `redact`: configured secrets, anything shaped like a token, a URL's `user:password@` and the values of
  query parameters with secret names (`token`, `key`, `sig`, `password`, …) become `[secret]`.
- `printable`: C0/C1 controls and ANSI/OSC escape sequences removed (newlines and tabs stay), so an HTTP
  reason phrase such as "Busy\\x1b]0;pwned\\x07" cannot clear the screen or retitle the operator's window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

SECRET = "[secret]"
MIN_SECRET_LENGTH = 6
TAIL = 4  # characters of a webhook path shown to tell hooks apart

# Telegram bot tokens (in Bot API URLs), Discord bot tokens, Slack webhook paths and signatures.
_TOKEN_PATTERNS = (
    re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"[A-Za-z0-9_-]{24,}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
    re.compile(r"(hooks\.slack\.com/services/)[^\s'\"]+"),
    re.compile(r"(/hooks/)[A-Za-z0-9]{8,}"),
    re.compile(r"(/webhooks/[0-9]+/)[A-Za-z0-9_-]{20,}"),
    re.compile(r"(v0=)[0-9a-f]{64}"),
)
# `scheme://user:password@host`: everything between "//" and "@" of an authority.
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@")
# `?token=…`, `&sig=…`, `api_key=…`: a parameter whose name says it is a secret (Teams/Power Automate
# `sig`, Google Chat `key` and `token`, S3 `X-Amz-Signature`, OAuth `code`, `client_secret`, …).
_SECRET_NAME = (
    r"[\w.-]*(?:token|key|sig|signature|secret|password|passwd|pwd|pass|auth|code|session|credential)"
    r"[\w.-]*"
)
_SECRET_PARAMETER = re.compile(rf"(?i)((?<![\w.-]){_SECRET_NAME}=)[^\s&#;'\"<>]+")

# ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ESC \\`, DCS/SOS/PM/APC strings, the
# two-character ones), their 8-bit C1 forms, then every other C0/C1 control but newline and tab.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/…/XXXX`: scheme, host and port, then the path's last four characters."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "…"
    path = parts.path.rstrip("/")
    tail = path[-TAIL:] if len(path) > 2 * TAIL else ""
    tail = printable(tail)
    if parts.scheme and host:
        if ":" in host:
            host = f"[{host}]"
        where = f"{host}:{port}" if port is not None else host
        return f"{parts.scheme}://{where}/…/{tail}" if tail else f"{parts.scheme}://{where}/…"
    return f"…{tail}"


class Redactor:
    """Replaces every configured secret, and anything shaped like a token, with `[secret]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, SECRET)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(_keep_prefix, text)
        text = _USERINFO.sub(lambda m: m.group(1) + SECRET + "@", text)
        return _SECRET_PARAMETER.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    return (match.group(1) if match.groups() else "") + SECRET


_configured = Redactor()


def configure(secrets: Iterable[str]) -> Redactor:
    """Set the process's configured secrets (what the log filter and stored reasons redact)."""
    global _configured
    _configured = Redactor(secrets)
    return _configured


def redact(text: str) -> str:
    """`text` with the configured secrets and every secret-shaped part replaced by `[secret]`."""
    return _configured(text)


def printable(text: str) -> str:
    """`text` without control characters or terminal escape sequences (newlines and tabs stay)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def clean(text: str) -> str:
    """A remote answer made safe to store, log and print: redacted and printable."""
    return printable(redact(text))


class Outcomes(Protocol):
    """The failure reasons of a batch of delivery outcomes (`storage.subscriptions.OutboxResults`)."""

    retry: list[tuple[int, int, float, str]]
    dead: list[tuple[int, int, str]]
    disable: list[tuple[str, str, str]]


OutcomesT = TypeVar("OutcomesT", bound=Outcomes)


def clean_outcomes(results: OutcomesT) -> OutcomesT:
    """Every failure reason in `results` cleaned in place (`clean`), before the store keeps it."""
    seen: dict[str, str] = {}  # one dead hook fails many deliveries with the same reason

    def cleaned(reason: str) -> str:
        found = seen.get(reason)
        if found is None:
            found = seen[reason] = clean(reason)
        return found

    results.retry[:] = [(i, n, at, cleaned(r)) for i, n, at, r in results.retry]
    results.dead[:] = [(i, n, cleaned(r)) for i, n, r in results.dead]
    results.disable[:] = [(p, a, cleaned(r)) for p, a, r in results.disable]
    return results
