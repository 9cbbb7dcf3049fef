"""Fan-out benchmarks: the dispatcher beside the raw send rate measured in the same run.

    python -m bench fanout            (or python -m bench.fanout)
    python -m bench fanout --quick    10k only, 30k subscriptions for the memory figure
    python -m bench fanout --smoke    tiny sizes (the smoke test)

(1) One post to 10,000 (and 100,000) subscriptions, one in ten of them with a keyword filter the
    post matches: dispatcher deliveries/s ÷ the same sends made directly with raw aiohttp (the same
    HTTP adapter, same concurrency, card built once) to a fake platform in another process that
    answers at once. Median of the runs, alternating ours and raw, with each run's load.
    Goal ≥ 0.8 (issue 13).
(2) Import commit → first delivery, over several imports: with wake() (an import in the dispatcher's
    process) and by polling alone (an import by another process), one post to 100 subscriptions;
    and with wake(), one post to 10,000 (every delivery made before the next import). Goal p50
    ≤ 5 ms with wake().
(3) Telegram's limits scaled ×100 in real time (30/s overall → 3,000/s, 1/s per chat → 100/s): achieved
    rate ÷ the limit, with a fake that enforces its own copy of the limits and counts 429s.
    Goal ≥ 95 % with zero 429s.
(4) Peak RSS of a process that subscribes 100k targets and delivers one post to all. Goal ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench._common import (
    Figure,
    Line,
    Runs,
    at_least_raw,
    at_most,
    console,
    drop_database,
    from_line,
    hot_path_table,
    load,
    new_database,
    postgres,
    postgres_available,
    record,
)
from bench._process import high_water_mb
from bot.adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    Rate,
    RateLimited,
    RateLimits,
)
from bot.cards import card_from_post
from bot.config import DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import Card, ImportResult, Post, Source, SourceKind, Target
from storage.db import Database, run_in_thread
from storage.ingest import ingest
from storage.interface import Subscriptions
from storage.outbox import Outbox as SqliteOutbox
from storage.pg_store import open_postgres
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription
from tests.pgserver import PostgresServer

CONCURRENCY = 32
ROOT = Path(__file__).resolve().parent.parent
SOURCE = Source(id="bench", title="Bench live", kind=SourceKind.PAGE_TEXT)


# --- fakes ------------------------------------------------------------------------------------------


class InstantAdapter(Adapter):
    """Answers at once, in process; optionally enforces limits like a platform would."""

    platform = "fake"

    def __init__(self, limits: RateLimits | None = None, enforce: bool = False) -> None:
        self.capabilities = Capabilities(
            max_text=4096, markup="plain", can_edit=True, rate_limits=limits or RateLimits()
        )
        self.enforce = enforce
        self.sent = 0
        self.rate_limited = 0
        self.first_at: dict[str, float] = {}
        self.times: list[float] = []
        self._windows: dict[object, deque[float]] = {}

    async def start(self, context: AdapterContext) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, target: Target, card: Card) -> str:
        now = time.time()
        if self.enforce:
            self._check(target, now)
        self.sent += 1
        self.first_at.setdefault(card.post_id, now)
        if self.enforce:
            self.times.append(now)
        return "ref"

    def _check(self, target: Target, now: float) -> None:
        limits = self.capabilities.rate_limits
        checks: list[tuple[object, Rate]] = []
        if limits.overall:
            checks.append(("*", limits.overall))
        rate = limits.for_target(target)
        if rate:
            checks.append((target.address, rate))
        for key, rate in checks:
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - rate.per:
                window.popleft()
            if len(window) >= rate.count:
                self.rate_limited += 1
                raise RateLimited(window[0] + rate.per - now)
        for key, _ in checks:
            self._windows[key].append(now)


class HttpAdapter(Adapter):
    """POSTs a small JSON message to a fake server and reads its JSON answer, like a webhook adapter."""

    platform = "fake"
    capabilities = Capabilities(max_text=4096, markup="plain", can_edit=True)

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self.sent = 0

    async def start(self, context: AdapterContext) -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
        self.session = aiohttp.ClientSession(connector=connector)

    async def stop(self) -> None:
        if self.session:
            await self.session.close()

    async def send(self, target: Target, card: Card) -> str:
        assert self.session is not None
        payload = {"chat_id": target.address, "text": card.title}
        async with self.session.post(self.url, json=payload) as response:
            answer = await response.json()
        self.sent += 1
        return str(answer["result"]["message_id"])


async def _noop(request: Any) -> Any:
    raise AssertionError("the benchmark sends no commands")


def serve(port: int) -> None:
    """The fake platform: answers every POST at once (runs in its own process)."""
    counter = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal counter
        await request.read()
        counter += 1
        return web.json_response({"ok": True, "result": {"message_id": counter}})

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/send", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(run())


@contextlib.contextmanager
def fake_server() -> Iterator[str]:
    """Start the fake platform in another process; yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fanout", "--serve", str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/send"
    finally:
        server.terminate()
        server.wait()


# --- helpers ------------------------------------------------------------------------------------------


def _post(n: int, title: str = "Sanctions announced") -> Post:
    from datetime import UTC, datetime, timedelta

    return Post(
        id=f"bench-{n}",
        source_id=SOURCE.id,
        published_at=datetime(2022, 1, 21, tzinfo=UTC) + timedelta(seconds=n),
        title=f"{title} {n}",
        body=("A paragraph of a live blog post, long enough to look like one. " * 8,),
    )


def _new_subscriptions(
    count: int, prefix: str = "chat", *, keyword_every: int = 0
) -> list[NewSubscription]:
    """`count` group chats subscribed to every blog; every `keyword_every`-th one only to posts
    matching `sanctions` (the benchmark's posts do)."""
    return [
        NewSubscription(
            Target(platform="fake", address=f"{prefix}{n}", kind="group"),
            created_by="bench",
            query="sanctions" if keyword_every and n % keyword_every == 0 else None,
        )
        for n in range(count)
    ]


async def _add_all(store: Subscriptions, items: Sequence[NewSubscription]) -> list[Target]:
    for start in range(0, len(items), 10_000):
        await store.add_many(items[start : start + 10_000])
    return [item.target for item in items]


async def _subscribe(
    db: Database, count: int, prefix: str = "chat", *, keyword_every: int = 0
) -> list[Target]:
    """SQLite: see `_new_subscriptions`."""
    items = _new_subscriptions(count, prefix, keyword_every=keyword_every)
    return await _add_all(SubscriptionStore(db), items)


async def _import(db: Database, n: int) -> float:
    await ingest(db, ImportResult(source=SOURCE, posts=(_post(n),)))
    return time.time()


async def _raw(adapter: Adapter, targets: Sequence[Target], card: Card) -> float:
    """The same sends without the dispatcher: CONCURRENCY workers over a shared iterator."""
    work = iter(targets)

    async def worker() -> None:
        for target in work:
            await adapter.send(target, card)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(targets) / (time.perf_counter() - started)


async def _dispatched(db: Database, adapter: Adapter, n: int) -> float:
    await _import(db, n)
    dispatcher = Dispatcher(
        SqliteOutbox(db),
        {"fake": adapter},
        DispatchSettings(concurrency=CONCURRENCY, max_attempts=3),
    )
    started = time.perf_counter()
    await dispatcher.run_until_idle(timeout=600)
    elapsed = time.perf_counter() - started
    return dispatcher.sent / elapsed


# --- (1) throughput -----------------------------------------------------------------------------------

KEYWORD_SHARE = 10
"""One subscription in this many has a keyword filter that the post matches (`sanctions`)."""


async def throughput(url: str, rounds: int, subscriptions: int) -> Line:
    """Dispatcher deliveries/s ÷ the same sends made directly, alternating, median of `rounds`."""
    http = HttpAdapter(url)
    await http.start(AdapterContext(handle=_noop))
    ours, raw = Runs(), Runs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with await Database.open(Path(tmp) / "fanout.db") as db:
                targets = await _subscribe(db, subscriptions, keyword_every=KEYWORD_SHARE)
                card = card_from_post(_post(0), source_title=SOURCE.title)
                for n in range(1, rounds + 1):
                    raw.add(await _raw(http, targets, card))
                    ours.add(await _dispatched(db, http, n))
    finally:
        await http.stop()
    return _fanout_line(subscriptions, ours, raw)


def _fanout_line(subscriptions: int, ours: Runs, raw: Runs) -> Line:
    return Line(
        f"one post → {subscriptions:,} subscriptions (1 in {KEYWORD_SHARE} with keywords)",
        "/s",
        ours,
        raw,
        goal=0.8,
    )


async def throughput_postgres(
    server: PostgresServer, url: str, rounds: int, subscriptions: int
) -> Line:
    """`throughput` on PostgreSQL: the same subscriptions, posts, adapter and raw sends; the
    post's deliveries written by PostgreSQL's ingest, claimed (leased) and settled through
    `PgOutbox`, in a throwaway database of `server`."""
    http = HttpAdapter(url)
    await http.start(AdapterContext(handle=_noop))
    ours, raw = Runs(), Runs()
    database = new_database(server, "fanout")
    try:
        store = await open_postgres(database)
        try:
            targets = await _add_all(
                store.subscriptions,
                _new_subscriptions(subscriptions, keyword_every=KEYWORD_SHARE),
            )
            card = card_from_post(_post(0), source_title=SOURCE.title)
            for n in range(1, rounds + 1):
                raw.add(await _raw(http, targets, card))
                await store.ingest(ImportResult(source=SOURCE, posts=(_post(n),)))
                dispatcher = Dispatcher(
                    store.outbox,
                    {"fake": http},
                    DispatchSettings(concurrency=CONCURRENCY, max_attempts=3),
                )
                started = time.perf_counter()
                await dispatcher.run_until_idle(timeout=600)
                ours.add(dispatcher.sent / (time.perf_counter() - started))
        finally:
            await store.close()
    finally:
        await http.stop()
        drop_database(server, database)
    return _fanout_line(subscriptions, ours, raw)


# --- (2) latency -----------------------------------------------------------------------------------------


_IMPORT_COMMITS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "_IMPORT_COMMITS", default=None
)


def _stamp_commits(db: Database) -> None:
    """Make `_stamped_import` see when its commit returned, in SQLite's thread: the importer's own
    coroutine resumes later (the loop may be busy with the very dispatcher being timed), and
    timing from there had first deliveries before their commit. The dispatcher's own commits on
    this writer (its outcomes, when its quick writer is locked) run in its tasks: not stamped."""
    writer = db._writer  # bench only: the store has no hook for this
    commit = writer.commit

    async def stamped() -> None:
        stamps = _IMPORT_COMMITS.get()
        if stamps is None:
            return await commit()

        def work(raw: sqlite3.Connection) -> None:
            raw.execute("COMMIT")
            stamps.append(time.time())

        await run_in_thread(writer, work)

    writer.commit = stamped  # type: ignore[method-assign]


async def _stamped_import(db: Database, n: int) -> float:
    """Import post `n` (see `_import`); the wall-clock time its commit returned."""
    stamps: list[float] = []
    token = _IMPORT_COMMITS.set(stamps)
    try:
        await _import(db, n)
    finally:
        _IMPORT_COMMITS.reset(token)
    return stamps[-1]


async def latency(
    imports: int, subscriptions: int = 100, modes: Sequence[str] = ("wake", "poll")
) -> dict[str, list[float]]:
    """Milliseconds from each import's commit to its first delivery, by mode: `wake` (the import
    is in the dispatcher's process, which is woken) and `poll` (another connection imports, as
    another process would). Each import's post goes to every subscription, all of them delivered
    before the next import, so each one meets an idle dispatcher, as a live blog's posts do."""
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latency.db"
        async with await Database.open(path) as db, await Database.open(path) as other:
            await _subscribe(db, subscriptions)
            _stamp_commits(db)
            _stamp_commits(other)
            for mode in modes:
                adapter = InstantAdapter()
                dispatcher = Dispatcher(SqliteOutbox(db), {"fake": adapter}, DispatchSettings())
                task = asyncio.create_task(dispatcher.run())
                await asyncio.sleep(0.3)
                samples: list[float] = []
                for i in range(imports):
                    n = 1000 * (1 if mode == "wake" else 2) + i
                    if mode == "wake":
                        committed = await _stamped_import(db, n)
                        dispatcher.wake()
                    else:
                        committed = await _stamped_import(other, n)  # as another process would
                    post_id = f"bench-{n}"
                    deadline = time.time() + 5
                    while post_id not in adapter.first_at and time.time() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.001)
                    samples.append((adapter.first_at.get(post_id, deadline) - committed) * 1000)
                    deadline = time.time() + 120
                    while adapter.sent < (i + 1) * subscriptions and time.time() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
                    await asyncio.sleep(0.05 + (i % 7) * 0.013)  # land at varied poll phases
                await dispatcher.stop()
                await task
                results[mode] = samples
    return results


# --- (3) rate limits -------------------------------------------------------------------------------------


async def rate_limited(
    scale: float, chats: int = 3000, posts: int = 200
) -> list[tuple[str, float, float, int]]:
    """Telegram limits scaled up; returns (case, achieved/s, limit/s, 429s)."""
    limits = RateLimits(
        overall=Rate(30, 1.0 / scale),
        per_target=Rate(1, 1.0 / scale),
        per_kind={"group": Rate(20, 60.0 / scale)},
    )
    out: list[tuple[str, float, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with await Database.open(Path(tmp) / "rates.db") as db:
            # Many private chats: the overall limit binds.
            store = SubscriptionStore(db)
            await store.add_many(
                [
                    NewSubscription(Target(platform="fake", address=f"u{n}", kind="private"), "b")
                    for n in range(chats)
                ]
            )
            adapter = InstantAdapter(limits, enforce=True)
            await _dispatch_all(db, adapter, [_post(1)])
            out.append(
                (f"overall, {chats:,} private chats", _achieved(adapter.times, 30), 30 * scale, 0)
            )
            out[-1] = (*out[-1][:3], adapter.rate_limited)
            await store.remove_for_target(Target(platform="fake", address="x"))
            async with db.write() as conn:
                await conn.execute("DELETE FROM subscriptions")
            # One chat, many posts: the per-chat limit binds.
            await store.add(Target(platform="fake", address="one", kind="private"), created_by="b")
            adapter = InstantAdapter(limits, enforce=True)
            await _dispatch_all(db, adapter, [_post(n) for n in range(10, 10 + posts)])
            out.append((f"one chat, {posts} posts", _achieved(adapter.times, 1), 1 * scale, 0))
            out[-1] = (*out[-1][:3], adapter.rate_limited)
    return out


async def _dispatch_all(db: Database, adapter: InstantAdapter, posts: list[Post]) -> None:
    await ingest(db, ImportResult(source=SOURCE, posts=tuple(posts)))
    dispatcher = Dispatcher(
        SqliteOutbox(db), {"fake": adapter}, DispatchSettings(concurrency=CONCURRENCY)
    )
    await dispatcher.run_until_idle(timeout=120)


def _achieved(times: list[float], burst: int) -> float:
    """Sends ÷ time, not counting the first window's burst: (n − burst) sends from first to last."""
    if len(times) <= burst + 1:
        return 0.0
    return (len(times) - burst) / (times[-1] - times[0])


# --- (4) memory -------------------------------------------------------------------------------------------


def rss_child(count: int) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with await Database.open(Path(tmp) / "rss.db") as db:
                await _subscribe(db, count)
                adapter = InstantAdapter()
                started = time.perf_counter()
                await _dispatched(db, adapter, 1)
                elapsed = time.perf_counter() - started
                print(json.dumps({"sent": adapter.sent, "seconds": elapsed}))

    asyncio.run(run())
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork and exec, so a child of
    # the bench (300 MB by then, after the in-process rounds) reported the parent's size.
    print(json.dumps({"peak_rss_mb": high_water_mb()}))


def rss(count: int) -> tuple[float, int, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.fanout", "--rss-child", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    first, last = json.loads(out[-2]), json.loads(out[-1])
    return last["peak_rss_mb"], first["sent"], first["seconds"]


# --- main -------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fanout")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the smoke test")
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL side")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    if args.serve:
        serve(args.serve)
        return 0
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    quick = args.quick and not args.full

    say: Callable[[str], None] = print
    figures: list[Figure] = []
    rounds = 1 if args.smoke else 3  # --quick too: a median, not one round
    sizes = (200,) if args.smoke else (10_000,) if quick else (10_000, 100_000)
    with fake_server() as url:
        lines = [asyncio.run(throughput(url, rounds, size)) for size in sizes]
    console.print(
        hot_path_table(
            f"(1) fan-out through the dispatcher ÷ the same adapter's sends made directly "
            f"(concurrency {CONCURRENCY}, fake platform in another process), median of {rounds}",
            lines,
        )
    )
    figures += [from_line("fanout", line, "SQLite") for line in lines]
    if args.sqlite_only or not postgres_available():
        say("(1) PostgreSQL: not measured" + ("" if args.sqlite_only else " (no initdb/pg_ctl)"))
    else:
        with postgres() as server, fake_server() as url:
            pg_lines = [
                asyncio.run(throughput_postgres(server, url, rounds, size)) for size in sizes
            ]
        console.print(
            hot_path_table(
                f"(1) the same on PostgreSQL (deliveries leased and settled through PgOutbox), "
                f"median of {rounds}",
                pg_lines,
            )
        )
        figures += [from_line("fanout", line, "PostgreSQL") for line in pg_lines]

    before = load()
    samples = asyncio.run(latency(3 if args.smoke else 10 if quick else 30))
    say(
        f"(2) import commit → first delivery (100 subscriptions, poll_interval 0.25 s), load {load()}"
    )
    for mode, values in samples.items():
        label = "wake() in process" if mode == "wake" else "polling (other process)"
        say(
            f"    {label:24} p50 {statistics.median(values):6.1f} ms   "
            f"p90 {_pct(values, 0.9):6.1f} ms   max {max(values):6.1f} ms"
            + ("  (goal p50 ≤ 5 ms)" if mode == "wake" else "  (bounded by the poll interval)")
        )
    figures.append(
        Figure(
            "fanout",
            f"import commit → first delivery p50, wake() in process ({len(samples['wake'])} imports)",
            "SQLite",
            statistics.median(samples["wake"]),
            None,
            "ms",
            at_most(5.0),
            [before, load()],
            len(samples["wake"]),
        )
    )
    big = 200 if args.smoke else 10_000
    before = load()
    wake = asyncio.run(latency(3 if args.smoke else 10, big, ("wake",)))["wake"]
    say(
        f"    one post to {big:,} subscriptions, wake(): p50 {statistics.median(wake):6.1f} ms   "
        f"p90 {_pct(wake, 0.9):6.1f} ms   max {max(wake):6.1f} ms  (goal p50 ≤ 5 ms), "
        f"load {load()}"
    )
    figures.append(
        Figure(
            "fanout",
            f"import commit → first delivery p50, one post to {big:,} subscriptions, wake() "
            f"({len(wake)} imports)",
            "SQLite",
            statistics.median(wake),
            None,
            "ms",
            at_most(5.0),
            [before, load()],
            len(wake),
        )
    )

    cases = ((100.0, 300, 20),) if args.smoke else ((100.0, 3000, 200), (10.0, 600, 40))
    for scale, chats, posts in cases:
        before = load()
        say(
            f"(3) Telegram limits ×{scale:g} in real time, fake enforcing its own copy, load {before}"
        )
        for case, achieved, limit, errors in asyncio.run(rate_limited(scale, chats, posts)):
            say(
                f"    {case:30} {achieved:8,.1f}/s of {limit:6,.0f}/s = {achieved / limit:6.1%}   "
                f"429s: {errors}  (goal ≥ 95 %, 0)"
            )
            loads = [before, load()]
            figures += [
                Figure(
                    "fanout",
                    f"Telegram limits ×{scale:g}: {case} (raw: the limit)",
                    "SQLite",
                    achieved,
                    limit,
                    "/s",
                    at_least_raw(0.95),
                    loads,
                ),
                Figure(
                    "fanout",
                    f"Telegram limits ×{scale:g}: {case}, 429s from the fake",
                    "SQLite",
                    errors,
                    None,
                    "429s",
                    at_most(0),
                    loads,
                ),
            ]

    count = 1_000 if args.smoke else 30_000 if quick else 100_000
    before = load()
    peak, sent, seconds = rss(count)
    say(
        f"(4) peak RSS, {count:,} subscriptions, one post to all: {peak:.0f} MB "
        f"({sent:,} delivered in {seconds:.1f} s, {sent / seconds:,.0f}/s)  (goal ≤ 200 MB), "
        f"load {before}"
    )
    figures.append(
        Figure(
            "fanout",
            f"peak RSS of one process delivering one post to {count:,} subscriptions",
            "SQLite",
            peak,
            None,
            "MB",
            at_most(200.0),
            [before],
        )
    )
    record("fanout", figures)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
