"""The admin token: `Authorization: Bearer <LIVEDESK_ADMIN_TOKEN>` on every `/api/v1` request.

The token is compared in constant time (`hmac.compare_digest`, on its SHA-256 digest so that not even
its length shows in the timing) and never logged: a refusal's log line names the client address and the
path only. Failed attempts are counted per client address in a sliding window; past `max_failures` in
`window` seconds that address gets 429 with `Retry-After` (even with the right token) until its oldest
failure leaves the window, so the token cannot be guessed at network speed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

MAX_FAILURES = 10
WINDOW = 60.0  # seconds
MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten first
SCHEME = "bearer"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def bearer_of(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, None when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        return None
    return token.strip()


class FailedLogins:
    """Failed authentications per client address, in a sliding window, with an injectable clock."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
        return failures

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        now = self.clock()
        failures = self._recent(client, now)
        if len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[-self.max_failures] + self.window - now)

    def failed(self, client: str) -> None:
        now = self.clock()
        failures = self._recent(client, now)
        if not failures:
            if len(self._failures) >= MAX_CLIENTS:
                del self._failures[next(iter(self._failures))]
            self._failures[client] = failures
        failures.append(now)

    def forget(self, client: str) -> None:
        """A success clears the address's record."""
        self._failures.pop(client, None)


def json_error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **fields: object
) -> web.Response:
    """An error as the API answers every one: `{"error": …}` (and any `fields`), with its status."""
    return web.json_response({"error": message, **fields}, status=status, headers=headers)


def bearer_auth(token: str, failures: FailedLogins) -> Middleware:
    """An aiohttp middleware that lets through only requests carrying `token`."""
    expected = _digest(token)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = request.remote or "unknown"
        wait = failures.retry_after(client)
        if wait > 0:
            return json_error(
                429,
                "too many failed authentications; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        given = bearer_of(request)
        if given is None or not hmac.compare_digest(_digest(given), expected):
            failures.failed(client)
            log.warning(
                "refused an API request from %s to %s: %s",
                client,
                request.path,
                "no bearer token" if given is None else "wrong token",
            )
            return json_error(
                401,
                "missing or wrong admin token: send Authorization: Bearer <LIVEDESK_ADMIN_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="livedesk"'},
            )
        failures.forget(client)
        return await handler(request)

    return authenticate
