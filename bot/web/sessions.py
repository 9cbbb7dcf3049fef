"""The dashboard's sign-in: signed session cookies, a CSRF token per session, failed logins limited.

A session is a cookie `id.expires.signature`, HttpOnly, SameSite=Strict (Secure when the request
came over https), signed with HMAC-SHA256 under a key derived from the admin token. Nothing is kept
on the server but the sessions signed out here, so every worker of a fleet that shares the token
accepts the same session (behind a load balancer, no sticky sessions), a restart signs no one out,
and changing LIVEDESK_ADMIN_TOKEN ends every session at once. A session ends `SESSION_SECONDS`
after sign-in, used or not. Its CSRF token is derived from it the same way, so every form of every
worker carries one that a page of another site cannot know. The line a page shows after a form (a
"flash") travels in a cookie signed for that session.

Only the admin token opens a session, compared in constant time; failed attempts are counted per
client address as the API counts them (bot.web.auth.FailedLogins: past 10 in a minute, 429 with
Retry-After).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "livedesk_session"
FLASH_COOKIE = "livedesk_flash"
LOGIN_COOKIE = "livedesk_login"
"""Before a session exists, the login form's CSRF token is checked against this cookie."""
SESSION_SECONDS = 8 * 3600
"""A session ends this long after sign-in, used or not."""
MAX_FLASH = 600
"""Characters of one flash line kept (a cookie holds about 4 KB)."""

Clock = Callable[[], float]


def same(given: str | None, expected: str) -> bool:
    """Whether `given` equals the secret `expected`, in time that does not depend on where they differ."""
    return given is not None and hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Session:
    id: str
    expires_at: int
    csrf: str
    flash_in: list[tuple[str, str]] = field(default_factory=list)
    """Lines the previous answer left for this page."""
    flash_out: list[tuple[str, str]] = field(default_factory=list)
    """Lines this answer leaves for the next page."""
    flash_shown: bool = False

    def say(self, kind: str, text: str) -> None:
        """A line for the next page: kind is "ok" or "error"."""
        self.flash_out.append((kind, text[:MAX_FLASH]))

    def take_flash(self) -> list[tuple[str, str]]:
        """The lines to show on the page being rendered (they are then gone)."""
        lines = self.flash_in + self.flash_out
        self.flash_in, self.flash_out, self.flash_shown = [], [], True
        return lines


class Sessions:
    """Issues and reads the signed cookies; remembers the sessions signed out in this process."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._ended: dict[str, int] = {}

    @staticmethod
    def _key(admin_token: str) -> bytes:
        return hmac.new(b"livedesk dashboard session", admin_token.encode(), "sha256").digest()

    def _sign(self, admin_token: str, text: str) -> str:
        return _b64(hmac.new(self._key(admin_token), text.encode(), "sha256").digest())

    def open(self, admin_token: str) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session_id = _b64(secrets.token_bytes(18))
        expires = int(self._clock()) + SESSION_SECONDS
        body = f"{session_id}.{expires}"
        return self._session(admin_token, session_id, expires), (
            f"{body}.{self._sign(admin_token, body)}"
        )

    def _session(self, admin_token: str, session_id: str, expires: int) -> Session:
        return Session(session_id, expires, self._sign(admin_token, f"csrf.{session_id}"))

    def read(
        self, admin_token: str, cookie: str | None, flash: str | None = None
    ) -> Session | None:
        """The session a cookie carries, when it is signed with this token, current and not ended."""
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires_text, signature = cookie.split(".")
        if not same(signature, self._sign(admin_token, f"{session_id}.{expires_text}")):
            return None
        expires = int(expires_text) if expires_text.isascii() and expires_text.isdigit() else 0
        if expires <= self._clock() or session_id in self._ended:
            return None
        session = self._session(admin_token, session_id, expires)
        session.flash_in = self._read_flash(admin_token, session_id, flash)
        return session

    def end(self, session: Session) -> None:
        """Sign out: this process refuses the session from now on (the browser drops its cookie)."""
        now = self._clock()
        self._ended = {k: t for k, t in self._ended.items() if t > now}
        self._ended[session.id] = session.expires_at

    def flash_cookie(self, admin_token: str, session: Session) -> str:
        payload = _b64(json.dumps(session.flash_out, ensure_ascii=False).encode())
        return f"{payload}.{self._sign(admin_token, f'flash.{session.id}.{payload}')}"

    def _read_flash(
        self, admin_token: str, session_id: str, cookie: str | None
    ) -> list[tuple[str, str]]:
        if not cookie or cookie.count(".") != 1:
            return []
        payload, signature = cookie.split(".")
        if not same(signature, self._sign(admin_token, f"flash.{session_id}.{payload}")):
            return []
        try:
            lines = json.loads(_unb64(payload))
        except ValueError:
            return []
        return [
            (kind, text)
            for kind, text in (line for line in lines if isinstance(line, list) and len(line) == 2)
            if kind in ("ok", "error") and isinstance(text, str)
        ]
