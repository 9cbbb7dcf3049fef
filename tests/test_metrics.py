"""`GET /metrics` after real deliveries: the counters move, the outbox depth is read at each scrape,
and no label carries a webhook URL or a chat's id. `/healthz` and `/readyz`, and the Slack slash
command on the same server."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.adapters.base import Rate, RateLimits
from bot.adapters.slack_commands import PATH, signature
from bot.metrics import OUTCOMES, Metrics
from bot.models import ChatKind, ImportResult, Request, Target
from bot.ratelimit import RateLimiter, platform_key, target_checks
from bot.web.server import build_app
from handlers import Deps, handle
from tests.blog import BLOG, POSTS
from tests.control_room import TOKEN, Api, backend_settings, eventually, running_app, url_of
from tests.fakes.webhooks import WebhookReceiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return backend_settings(request, tmp_path)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[str, Samples]:
    async with session.get(f"{base}/metrics") as answer:
        assert answer.status == 200 and answer.content_type == "text/plain"
        text = await answer.text()
    return text, parse(text)


async def test_a_scrape_after_deliveries_shows_what_happened(
    store_settings: dict[str, Any],
) -> None:
    async with (
        WebhookReceiver() as hooks,
        running_app(admin_token=TOKEN, slack={}, **store_settings) as app,
        aiohttp.ClientSession() as session,
    ):
        base = url_of(app)
        api = Api(session, base)
        await app.store.ingest(ImportResult(source=BLOG, posts=tuple(POSTS)))
        desk, busy, broken = hooks.url("desk"), hooks.url("busy"), hooks.url("broken")
        hooks.respond(busy, 429, "rate_limited", headers={"Retry-After": "0.2"})
        hooks.respond(broken, 400, "invalid_payload", times=None)
        for url, backfill in ((desk, 3), (busy, 1), (broken, 1)):
            await api.ok(
                "POST", "/subscriptions", {"platform": "slack", "target": url, "backfill": backfill}
            )
        await hooks.wait_for(desk, 3, within=30)
        await hooks.wait_for(busy, 1, within=30)
        await api.ok("GET", "/search", q="sanctions")
        await api.ok("GET", "/search", q="troops")

        def settled(found: tuple[str, Samples]) -> bool:
            samples = found[1]
            return (
                value(samples, "livedesk_deliveries_total", platform="slack", outcome="sent") == 4
                and value(samples, "livedesk_outbox_depth", state="dead") == 1
                and value(samples, "livedesk_outbox_depth", state="pending") == 0
            )

        text, samples = await eventually(lambda: scrape(session, base), settled)

    assert value(samples, "livedesk_deliveries_total", platform="slack", outcome="retry") == 1
    assert value(samples, "livedesk_deliveries_total", platform="slack", outcome="dead") == 1
    assert value(samples, "livedesk_rate_limited_responses_total", platform="slack") == 1
    assert value(samples, "livedesk_delivery_retries_total", platform="slack") == 1
    assert value(samples, "livedesk_dead_deliveries_total", platform="slack") == 1
    assert value(samples, "livedesk_delivery_latency_seconds_count", platform="slack") == 4
    assert value(samples, "livedesk_search_seconds_count") == 2
    assert ("livedesk_rate_limit_use_ratio", (("platform", "slack"),)) in samples

    # No label carries an address: platforms, outcomes, states and feed numbers only.
    allowed = {"slack", *OUTCOMES, "pending", "dead"}
    for _, labels in samples:
        for key, label in labels:
            if key == "le":
                float(label)  # a histogram bucket's bound
            elif key == "source":
                assert label.isdigit()  # a feed's number, never its URL
            else:
                assert label in allowed, (key, label)
    for secret in (desk, busy, broken, "T0000000", "B0000000", str(hooks.port)):
        assert secret not in text


async def test_a_chat_search_is_timed_too(tmp_path: Path) -> None:
    async with running_app(db_path=tmp_path / "livedesk.db") as app:
        metrics = Metrics()
        await app.store.ingest(ImportResult(source=BLOG, posts=tuple(POSTS)))
        deps = Deps(store=app.store, on_search=metrics.searched)
        request = Request(
            platform="terminal",
            command="search",
            args=("sanctions",),
            user_id="me",
            target=Target(platform="terminal", address="console", kind="terminal"),
            chat_kind=ChatKind.TERMINAL,
        )
        reply = await handle(request, deps)
    assert "sanctions" in reply.text
    samples = parse(metrics.exposition().decode())
    assert value(samples, "livedesk_search_seconds_count") == 1


def test_labels_are_names_never_addresses() -> None:
    metrics = Metrics()
    metrics.delivered("telegram", "sent", latency=0.5)
    metrics.fetched(7, "failed")
    metrics.set_rate_limit_use("telegram", 3.0)  # clamped to the ratio's range
    metrics.set_depth({"pending": 5, "dead": 2, "sent": 100})
    samples = parse(metrics.exposition().decode())
    assert value(samples, "livedesk_source_fetch_errors_total", source="7") == 1
    assert value(samples, "livedesk_rate_limit_use_ratio", platform="telegram") == 1.0
    assert value(samples, "livedesk_outbox_depth", state="pending") == 5
    assert ("livedesk_outbox_depth", (("state", "sent"),)) not in samples
    assert json.dumps(sorted({k for _, labels in samples for k, _ in labels})) == json.dumps(
        ["le", "outcome", "platform", "source", "state"]
    )


# --- rate-limit use ---------------------------------------------------------------------------------


def test_rate_limit_use_is_the_share_of_the_budget_taken() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    bot_wide = RateLimits(overall=Rate(30, 1.0))
    permits = [limiter.acquire([(platform_key("telegram"), Rate(30, 1.0))])[1] for _ in range(15)]
    assert limiter.use("telegram", bot_wide) == 0.5  # in flight counts as taken
    for permit in permits:
        assert permit is not None
        limiter.release(permit)
    now[0] += 0.5
    assert limiter.use("telegram", bot_wide) == 0.5  # still within its window
    now[0] += 1.0
    assert limiter.use("telegram", bot_wide) == 0.0
    per_hook = RateLimits(per_target=Rate(1, 1.0))  # Slack: no bot-wide limit, one per hook
    checks = target_checks("slack", per_hook, "https://hooks.example/a", "webhook")
    assert limiter.acquire(checks)[1] is not None
    assert limiter.use("slack", per_hook) == 1.0  # its busiest hook is at its limit
    assert limiter.use("discord", per_hook) == 0.0


# --- health -----------------------------------------------------------------------------------------


async def test_health_and_readiness_of_a_running_app(tmp_path: Path) -> None:
    async with (
        running_app(db_path=tmp_path / "livedesk.db") as app,
        aiohttp.ClientSession() as session,
    ):
        assert app.control_room is not None
        base = url_of(app)
        async with session.get(f"{base}/healthz") as alive:
            assert alive.status == 200 and (await alive.json())["alive"] is True
        async with session.get(f"{base}/readyz") as ready:
            assert ready.status == 200
            assert await ready.json() == {
                "ready": True,
                "checks": {"store": True, "adapters": True, "dispatcher": True},
            }

        async def store_away() -> dict[str, bool]:
            return {"store": False, "adapters": True}

        failing = dataclasses.replace(app.control_room.context, readiness=store_away)
        runner = web.AppRunner(build_app(failing), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            port = runner.addresses[0][1]
            async with session.get(f"http://127.0.0.1:{port}/readyz") as unready:
                assert unready.status == 503
                assert (await unready.json())["failing"] == ["store"]
            async with session.get(f"http://127.0.0.1:{port}/healthz") as alive:
                assert alive.status == 200  # alive, though not ready
        finally:
            await runner.cleanup()


async def test_slack_slash_commands_share_the_control_rooms_port(tmp_path: Path) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    slack = {"signing_secret": secret}
    async with (
        running_app(db_path=tmp_path / "livedesk.db", slack=slack, admin_token=TOKEN) as app,
        aiohttp.ClientSession() as session,
    ):
        base = url_of(app)
        body = urlencode(
            {"channel_id": "C1", "user_id": "U1", "command": "/livedesk", "text": "help"}
        ).encode()
        stamp = str(int(time.time()))
        headers = {
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature(secret, stamp, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with session.post(f"{base}{PATH}", data=body, headers=headers) as answer:
            assert answer.status == 200 and "blocks" in await answer.json()
        async with session.post(f"{base}{PATH}", data=body) as unsigned:
            assert unsigned.status == 401  # Slack's signature, not the admin token, guards it
        assert (await Api(session, base).ok("GET", "/posts")) == {"posts": []}
