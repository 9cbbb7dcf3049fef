"""The API's locks: every route refuses a missing or wrong token, failed authentication is rate
limited per client, the token is never logged, and every error is JSON with its status."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot.web import api
from bot.web.auth import FailedLogins
from bot.web.context import WebContext
from bot.web.server import API_PREFIX, build_app
from storage.interface import Store
from tests.control_room import TOKEN, Api, running_app, url_of

WRONG_TOKENS = ["", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def api_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the server answers under /api/v1, read from its router."""
    found: list[tuple[str, str]] = []
    for resource in app.router.resources():
        info = resource.get_info()
        if "app" in info and info.get("prefix") == API_PREFIX:
            for route in info["app"].router.routes():
                canonical = route.resource.canonical if route.resource else ""
                found.append((route.method, canonical))  # the prefix is part of it
        else:
            assert not resource.canonical.startswith("/api"), (
                f"{resource.canonical} is served outside the API's sub-application (no token check)"
            )
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[WebContext]:
    async with running_app(admin_token=TOKEN, db_path=tmp_path / "livedesk.db") as app:
        assert app.control_room is not None
        yield app.control_room.context


async def test_every_route_refuses_a_missing_or_wrong_token(
    context: WebContext, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(context, failures=FailedLogins(max_failures=1_000_000))
    routes = api_routes(app)
    listed = {(method, API_PREFIX + path) for method, path, _ in api.ROUTES}
    assert listed <= set(routes) and len(routes) >= len(api.ROUTES) >= 14
    caplog.set_level(logging.DEBUG)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        for method, path in routes:
            for header in WRONG_TOKENS:
                headers = {"Authorization": header} if header else {}
                async with session.request(
                    method, base + concrete(path), headers=headers, json={}
                ) as answer:
                    assert answer.status == 401, (method, path, header)
                    assert answer.content_type == "application/json"
                    assert "admin token" in (await answer.json())["error"]
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


async def test_failed_authentication_is_rate_limited_per_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_app(admin_token=TOKEN, db_path=tmp_path / "livedesk.db") as app,
        aiohttp.ClientSession() as session,
    ):
        right = Api(session, url_of(app))
        wrong = Api(session, url_of(app), token="guess-0001")
        statuses = [(await wrong.call("GET", "/posts"))[0] for _ in range(10)]
        assert statuses == [401] * 10
        async with session.get(
            f"{url_of(app)}/api/v1/posts", headers={"Authorization": "Bearer guess-0002"}
        ) as answer:
            assert answer.status == 429 and answer.content_type == "application/json"
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
        status, answer_body = await right.call("GET", "/posts")  # locked out, right token or not
        assert status == 429 and "too many failed" in answer_body["error"]
        async with session.get(f"{url_of(app)}/healthz") as health:
            assert health.status == 200  # health and metrics stay open
    assert "guess-0001" not in caplog.text and TOKEN not in caplog.text


def test_the_failure_window_slides_and_a_success_clears_it() -> None:
    now = [1000.0]
    failures = FailedLogins(max_failures=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert failures.retry_after("10.0.0.1") == 0
        failures.failed("10.0.0.1")
        now[0] += 10
    assert failures.retry_after("10.0.0.1") == pytest.approx(30.0)  # first failure at 1000
    assert failures.retry_after("10.0.0.2") == 0  # per client
    now[0] += 30
    assert failures.retry_after("10.0.0.1") == 0
    failures.failed("10.0.0.1")
    failures.forget("10.0.0.1")
    assert failures.retry_after("10.0.0.1") == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "status", "field"),
    [
        ("GET", "/nothing-here", None, {}, 404, None),
        ("GET", "/subscriptions/999", None, {}, 404, None),
        ("PATCH", "/subscriptions/abc", {}, {}, 404, None),
        ("DELETE", "/subscriptions/999", None, {}, 404, None),
        ("GET", "/posts/99999", None, {}, 404, None),
        ("PUT", "/posts", {}, {}, 405, None),
        ("GET", "/posts", None, {"limit": "lots"}, 400, "limit"),
        ("GET", "/posts", None, {"limit": "0"}, 400, "limit"),
        ("GET", "/posts", None, {"source": "no such blog"}, 400, "source"),
        ("GET", "/search", None, {}, 400, "q"),
        ("GET", "/search", None, {"q": "-only"}, 400, "q"),
        ("GET", "/search", None, {"q": "x", "page": "-1"}, 400, "page"),
        ("GET", "/deliveries", None, {"state": "sent"}, 400, "state"),
        ("POST", "/subscriptions", {"platform": "fax", "target": "1"}, {}, 400, "platform"),
        ("POST", "/subscriptions", {"platform": "slack"}, {}, 400, "target"),
        ("POST", "/subscriptions", {"platform": "slack", "target": "no url"}, {}, 400, "target"),
        (
            "POST",
            "/subscriptions",
            {"platform": "slack", "target": "https://h.example/x", "colour": "red"},
            {},
            400,
            "colour",
        ),
        (
            "POST",
            "/subscriptions",
            {"platform": "slack", "target": "https://h.example/x", "backfill": "many"},
            {},
            400,
            "backfill",
        ),
        (
            "POST",
            "/subscriptions",
            {"platform": "slack", "target": "https://h.example/x", "edit_policy": "edit"},
            {},
            400,
            "edit_policy",
        ),
        ("POST", "/subscriptions", [1, 2], {}, 400, "body"),
        ("POST", "/deliveries/retry", {"ids": [424242]}, {}, 404, None),
        (
            "POST",
            "/sources",
            {"url": "https://blog.example/feed", "interval": 1},
            {},
            400,
            "interval",
        ),
    ],
)
async def test_errors_are_json_with_their_status_and_the_field(
    context: WebContext,
    method: str,
    path: str,
    body: Any,
    params: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    async with serving(build_app(context)) as base, aiohttp.ClientSession() as session:
        got, answer = await Api(session, base).call(method, path, body, **params)
    assert got == status, answer
    assert isinstance(answer["error"], str) and answer["error"]
    if field is not None:
        assert answer["field"] == field
        assert "https://h.example/x" not in answer["error"]  # a target URL is never echoed


async def test_an_unknown_id_says_what_is_missing(context: WebContext) -> None:
    async with serving(build_app(context)) as base, aiohttp.ClientSession() as session:
        api_client = Api(session, base)
        for path, said in (
            ("/subscriptions/999", "no subscription #999"),
            ("/sources/77", "no followed blog #77"),
            ("/posts/12345", "no post '12345'"),
            ("/nowhere", "no such route"),
        ):
            assert await api_client.call("GET", path) == (404, {"error": said})


async def test_a_body_that_is_not_json_or_too_large_is_refused(context: WebContext) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with serving(build_app(context)) as base, aiohttp.ClientSession() as session:
        url = f"{base}/api/v1/subscriptions"
        async with session.post(url, data=b"{not json", headers=headers) as answer:
            assert answer.status == 400 and (await answer.json())["field"] == "body"
        async with session.post(
            url, data=io.BytesIO(b"x" * (2 * 1024 * 1024)), headers=headers
        ) as answer:
            assert answer.status == 413 and "larger than" in (await answer.json())["error"]
        async with session.put(f"{base}/api/v1/posts", headers=headers) as answer:
            assert answer.status == 405 and "GET" in answer.headers["Allow"]


class BrokenPosts:
    async def latest(self, n: int = 5, source_id: str | None = None) -> list[Any]:
        raise RuntimeError("disk on fire at /var/lib/secret-place")


async def test_a_failing_handler_answers_500_json_without_a_traceback(
    context: WebContext, caplog: pytest.LogCaptureFixture
) -> None:
    @dataclasses.dataclass
    class BrokenStore:
        posts: BrokenPosts

    broken = dataclasses.replace(context, store=cast(Store, BrokenStore(BrokenPosts())))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        serving(build_app(broken)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/posts", headers=headers) as answer,
    ):
        text = await answer.text()
        assert answer.status == 500 and answer.content_type == "application/json"
    assert "Traceback" not in text and "secret-place" not in text
    assert "disk on fire" in caplog.text  # the log has it, with its traceback


async def test_without_an_admin_token_the_api_is_off_and_health_and_metrics_stay_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        running_app(db_path=tmp_path / "livedesk.db") as app,
        aiohttp.ClientSession() as session,
    ):
        base = url_of(app)
        for token in (None, TOKEN):
            status, answer = await Api(session, base, token=token).call("GET", "/posts")
            assert status == 404 and "LIVEDESK_ADMIN_TOKEN" in answer["error"]
        async with session.get(f"{base}/healthz") as health:
            assert health.status == 200 and (await health.json())["alive"] is True
        async with session.get(f"{base}/readyz") as ready:
            assert ready.status == 200
        async with session.get(f"{base}/metrics") as metrics:
            assert metrics.status == 200 and "livedesk_outbox_depth" in await metrics.text()
    said = [line for line in capsys.readouterr().out.splitlines() if "Control room" in line]
    assert said == [
        f"Control room on {base}: health and metrics only; the API and the dashboard are off "
        "(set LIVEDESK_ADMIN_TOKEN to turn them on)"
    ]
