"""The dashboard's sign-in: sessions behind a cookie, a CSRF token per session, failed logins limited.

A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure when the request came over
https); the server keeps, per id, the session's CSRF token, its expiry and one flash line. Sessions
live in this process's memory: a restart signs everyone out, which suits an admin token that may
have changed with it. Only the admin token opens a session, compared in constant time; failed
attempts are counted per client address and past `MAX_FAILURES` in `FAILURE_WINDOW` seconds the
login answers 429 with Retry-After until the window has passed.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "livedesk_session"
LOGIN_COOKIE = "livedesk_login"
"""Before a session exists, the login form's CSRF token is checked against this cookie."""
SESSION_SECONDS = 8 * 3600
"""A session ends this long after login, used or not."""
MAX_SESSIONS = 1000
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0

Clock = Callable[[], float]


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    flash: list[tuple[str, str]] = field(default_factory=list)
    """(kind, text) lines to show once on the next page: kind is "ok" or "error"."""

    def say(self, kind: str, text: str) -> None:
        self.flash.append((kind, text))

    def take_flash(self) -> list[tuple[str, str]]:
        lines, self.flash = self.flash, []
        return lines


def same(given: str | None, expected: str) -> bool:
    """Whether `given` equals the secret `expected`, in time that does not depend on where they differ."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def open(self) -> Session:
        now = self._clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
        while len(self._sessions) >= MAX_SESSIONS:  # the oldest go first
            del self._sessions[next(iter(self._sessions))]
        session = Session(
            id=self.new_token(),
            csrf=self.new_token(),
            expires_at=now + SESSION_SECONDS,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class LoginLimiter:
    """Failed logins per client address: `MAX_FAILURES` within `FAILURE_WINDOW` seconds, then wait."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        now = self._clock()
        stamps = self._failures.get(client, deque())
        while stamps and stamps[0] <= now - FAILURE_WINDOW:
            stamps.popleft()
        return stamps

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before trying again; 0: it may try now."""
        stamps = self._recent(client)
        if len(stamps) < MAX_FAILURES:
            return 0
        return max(1, int(stamps[0] + FAILURE_WINDOW - self._clock()) + 1)

    def failed(self, client: str) -> None:
        stamps = self._recent(client)
        stamps.append(self._clock())
        self._failures[client] = stamps
        if len(self._failures) > 10_000:  # forget clients that went quiet
            self._failures = {c: s for c, s in self._failures.items() if self._recent(c)}

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
