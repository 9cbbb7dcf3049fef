"""`GET /metrics` after real deliveries: the counters move, the outbox depth is read at each scrape,
and no label carries a webhook URL or a chat's id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import OUTCOMES, Metrics
from bot.models import ChatKind, ImportResult, Request, Target
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
