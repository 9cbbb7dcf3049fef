"""Webhook fan-out: one post to 1,000 Slack-style webhook subscriptions, beside the raw ceiling and Apprise.

    python -m bench webhooks                 (or python -m bench.webhooks)
    python -m bench webhooks --quick         (300 hooks, five rounds)
    python -m bench webhooks --smoke         (30 hooks, one round: the smoke test)

The receiver (tests/fakes/webhooks.py, no rate limit, payloads validated, nothing recorded) runs in a
separate process (multiprocessing, spawn), so client and server do not share a core. Every figure below
sends the same Mattermost-flavored alert to the same number of hooks:

- livedesk: storage.ingest.ingest commits a post that 1,000 subscriptions match; the clock runs from the
  end of that commit to the receiver's timestamp of the last delivery, through the real Dispatcher and
  SlackAdapter (aiohttp, one pooled session) — rendering, outbox claims, group commits included.
- raw aiohttp: the pre-rendered payload, encoded to bytes once (as Livedesk encodes a card once for
  all hooks), POSTed to each hook from one pooled session kept across rounds (as Livedesk's adapter
  keeps its own), same concurrency: the ceiling of this client on this machine in this run.
- slack_sdk: AsyncWebhookClient(url, session=shared).send_dict(payload), same concurrency; and with its
  default of a new session per call (what a naive one-client-per-hook adapter does).
- apprise: apprise.Apprise() with 1,000 `mmost://127.0.0.1:PORT/TOKEN` URLs and one notify() call (sync).

Livedesk's rounds alternate with raw's, back to back. Each round has hooks of its own (round n's
hooks are subscribed to blog n, and round n imports a post of blog n), so no round waits for
Slack's 1/s per-hook window of the one before: waiting would start the round on a machine idle
for a second, which here is slower for any client (raw aiohttp on one kept session: 29–69 ms
after a 1.1 s rest, 26 ms back to back, at 300 hooks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import apprise
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bench._common import Figure, at_least_raw, load, record
from bot.adapters.base import AdapterContext
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack_render import render_card
from bot.cards import card_from_post
from bot.config import DispatchSettings, SlackSettings
from bot.dispatcher import Dispatcher
from bot.models import EditPolicy, ImportResult, Post, Reply, Request, Source, SourceKind, Target
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription

CONCURRENCY = 64


def _source(n: int) -> Source:
    """Round n's blog: its hooks are subscribed to it alone."""
    return Source(id=f"bench-{n}", title=f"Bench live {n}", kind=SourceKind.PAGE_TEXT)


def _hooks(base: str, hooks: int, rounds: int) -> list[list[str]]:
    """Each round's own webhook URLs."""
    return [[f"{base}/hooks/r{n}-bench{i:05d}SECRET" for i in range(hooks)] for n in range(rounds)]


BODY = (
    "EU foreign ministers agreed a new package of sanctions on Monday, officials said. "
    "The measures target banks, energy exports and several named individuals. " * 3,
    "NATO said it would hold further talks later this week.",
)


# --- the receiver, in its own process -------------------------------------------------------------


def _serve(port: int, ready: Any) -> None:
    from tests.fakes.webhooks import WebhookReceiver

    async def run() -> None:
        receiver = WebhookReceiver(port=port, record=False, validate=True)
        await receiver.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/stats") as response:
        stats: dict[str, Any] = await response.json()
        return stats


# --- the contestants --------------------------------------------------------------------------------


def _post(n: int) -> Post:
    return Post(
        id=f"alert-{n}",
        source_id=_source(n).id,
        published_at=datetime(2022, 1, 21, 12, 0, tzinfo=UTC) + timedelta(minutes=n),
        title=f"EU agrees sanctions package #{n}",
        byline="Bench desk",
        body=BODY,
        permalink=f"https://news.example/live#alert-{n}",
    )


async def _unused(request: Request) -> Reply:
    raise RuntimeError("no commands in the benchmark")


@contextlib.asynccontextmanager
async def _livedesk(
    base: str, hooks: Sequence[Sequence[str]]
) -> AsyncIterator[Callable[[int], Awaitable[float]]]:
    """A store with a subscription per hook (round n's hooks to blog n) and a running Dispatcher
    with its SlackAdapter (one pooled session, kept across rounds as a running Livedesk keeps
    it); yields a timed round: import post `n` of blog n, and the seconds from its commit to the
    last of its deliveries (the receiver's clock)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "bench.db")
        adapter = SlackAdapter(SlackSettings(), connections=CONCURRENCY)
        await adapter.start(AdapterContext(handle=_unused))
        try:
            subs = [
                NewSubscription(
                    target=Target(
                        platform="slack",
                        address=u,
                        kind="webhook",
                        options={"flavor": "mattermost"},
                    ),
                    created_by="bench",
                    source_id=_source(n).id,
                    edit_policy=EditPolicy.FOLLOW_UP,
                )
                for n, urls in enumerate(hooks)
                for u in urls
            ]
            await SubscriptionStore(db).add_many(subs)
            posts = PostStore(db)
            dispatcher = Dispatcher(
                SqliteOutbox(db), {"slack": adapter}, DispatchSettings(concurrency=CONCURRENCY)
            )
            running = asyncio.create_task(dispatcher.run())
            async with aiohttp.ClientSession() as probe:

                async def one_round(n: int) -> float:
                    before = (await _stats(probe, base))["delivered"]
                    goal = dispatcher.sent + len(hooks[n])
                    await ingest(posts.db, ImportResult(source=_source(n), posts=(_post(n),)))
                    committed = time.time()
                    dispatcher.wake()
                    while dispatcher.sent < goal:  # noqa: ASYNC110 (a counter, polled)
                        await asyncio.sleep(0.002)
                    stats = await _stats(probe, base)
                    assert stats["delivered"] - before == len(hooks[n]), stats
                    return float(stats["last"]) - committed

                yield one_round
            await dispatcher.stop()
            await running
        finally:
            await adapter.stop()
            await db.close()


async def _bounded(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


@contextlib.asynccontextmanager
async def _raw_aiohttp(
    hooks: Sequence[Sequence[str]], payload: dict[str, Any]
) -> AsyncIterator[Callable[[int], Awaitable[float]]]:
    """The ceiling: the payload encoded once, as Livedesk encodes a card once for every hook, from
    one pooled session kept across rounds, as Livedesk's adapter keeps its own; yields a timed
    round: round n's hooks, seconds."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        def job(url: str) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.text()
                    assert response.status == 200

            return send

        async def one_round(n: int) -> float:
            started = time.perf_counter()
            await _bounded([job(u) for u in hooks[n]])
            return time.perf_counter() - started

        yield one_round


async def _slack_sdk(urls: Sequence[str], payload: dict[str, Any], *, shared: bool) -> float:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [AsyncWebhookClient(u, session=session if shared else None) for u in urls]

        def job(client: AsyncWebhookClient) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                response = await client.send_dict(payload)
                assert response.status_code == 200

            return send

        started = time.perf_counter()
        await _bounded([job(c) for c in clients])
        return time.perf_counter() - started


def _apprise(port: int, tokens: Sequence[str]) -> float:
    notifier = apprise.Apprise()
    for token in tokens:
        notifier.add(f"mmost://127.0.0.1:{port}/{token}")
    started = time.perf_counter()
    ok = notifier.notify(body="\n\n".join(BODY), title="EU agrees sanctions package")
    elapsed = time.perf_counter() - started
    assert ok, "apprise reported a failed delivery"
    return elapsed


# --- main -------------------------------------------------------------------------------------------


def _row(name: str, seconds: list[float], hooks: int, ceiling: float | None) -> str:
    best = statistics.median(seconds)
    ratio = f"{ceiling / best:5.2f}× raw" if ceiling else ""
    return f"{name:<34} {best * 1000:9.1f} ms  {hooks / best:9.0f} deliveries/s  {ratio}"


async def _run(hooks: int, rounds: int, apprise_rounds: int) -> list[Figure]:
    before = load()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the webhook receiver did not start")
        tokens = [f"bench{i:05d}SECRET" for i in range(hooks)]
        urls = [f"{base}/hooks/{t}" for t in tokens]
        by_round = _hooks(base, hooks, rounds)
        payload = render_card("mattermost", card_from_post(_post(0)), ZoneInfo("UTC"))

        ours: list[float] = []
        raw: list[float] = []
        async with (
            _livedesk(base, by_round) as ours_round,
            _raw_aiohttp(by_round, payload) as raw_round,
        ):
            for n in range(rounds):  # alternating
                ours.append(await ours_round(n))
                raw.append(await raw_round(n))
        sdk_shared = [await _slack_sdk(urls, payload, shared=True) for _ in range(rounds)]
        sdk_fresh = [await _slack_sdk(urls, payload, shared=False) for _ in range(1)]
        theirs = [await asyncio.to_thread(_apprise, port, tokens) for _ in range(apprise_rounds)]
    finally:
        server.terminate()
        server.join()

    ceiling = statistics.median(raw)
    print(
        f"one post → {hooks} Mattermost-style webhooks; receiver in another process; "
        f"concurrency {CONCURRENCY}; median of {rounds} (apprise: {apprise_rounds}); "
        f"load {before} before, {load()} after"
    )
    print(_row("livedesk: commit → last delivery", ours, hooks, ceiling))
    print(_row("raw aiohttp, pooled (ceiling)", raw, hooks, ceiling))
    print(_row("slack_sdk AsyncWebhookClient, shared", sdk_shared, hooks, ceiling))
    print(_row("slack_sdk, a session per call", sdk_fresh, hooks, ceiling))
    print(_row("apprise notify() (mmost://)", theirs, hooks, ceiling))
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"livedesk is {ratio:.1f}× faster than apprise for the same alert to the same hooks")
    return [
        Figure(
            "webhooks",
            f"one post → {hooks:,} Mattermost webhooks, commit → last delivery (raw: aiohttp)",
            "SQLite",
            hooks / statistics.median(ours),
            hooks / ceiling,
            "/s",
            at_least_raw(0.8),
            [before, load()],
            rounds,
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench webhooks", description=__doc__)
    parser.add_argument("--hooks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apprise-rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 hooks, five rounds")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="30 hooks, one round: the smoke test")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.smoke:
        args.hooks, args.rounds = 30, 1
    elif args.quick and not args.full:
        args.hooks, args.rounds = 300, 5  # each round has hooks of its own: no wait between
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    record("webhooks", asyncio.run(_run(args.hooks, args.rounds, args.apprise_rounds)))


if __name__ == "__main__":
    main()
