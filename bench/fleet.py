"""The fleet on PostgreSQL: fan-out with 1, 2 and 3 `livedesk run` workers, import and search.

    python -m bench fleet                (or python -m bench.fleet)
    python -m bench fleet --quick        3,000 hooks, 10k posts: about five minutes
    python -m bench fleet --big          search at 1M posts as well (long: building the 1M
                                         databases takes well over half an hour on 2 cores)
    python -m bench fleet --fanout       the fan-out section (1) alone
    python -m bench fleet --smoke        100 hooks, one worker, 200 posts (the smoke test)

It starts its own throwaway PostgreSQL (tests/pgserver.py's running_server()). Each figure stands
beside the raw ceiling measured in the same run; each is the median of several runs, with the load
average at the start of each run printed.

(1) One post to 30,000 Slack webhook subscriptions (Mattermost flavor), against a receiver in its own
    process that answers 200 at once and counts. 1, 2 and 3 real `livedesk run` processes on one
    database; the clock runs from the ingest's commit (in this process) to the receiver's timestamp
    of the last delivery. Raw ceiling: this process POSTing the same pre-built payload to the same
    30,000 URLs from one pooled aiohttp session, at one worker's concurrency.
(2) Import of 100k posts into PostgreSQL through storage.store.open_postgres(...).ingest (documents
    of 1,000) beside raw COPY and raw executemany (psycopg) into the same, freshly migrated schema.
    Every input (rows, documents, joined words) is generated before any clock starts.
(3) Search p50/p99 at 100k posts, PostgreSQL (store.search) beside SQLite (storage.search.search),
    top 10, for the query kinds of bench/search.py (its code: same Corpus, same queries), on the
    database the import filled; `--big` adds 1M posts filled by raw COPY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import psycopg
from aiohttp import web
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench import search as search_bench
from bench._common import Figure, Goal, at_least_raw, postgres, record
from bot.adapters.slack_render import render_card
from bot.cards import card_from_post
from bot.models import EditPolicy, Target
from storage.codecs import post_joined_words
from storage.models import ImportResult, Post, Source, SourceKind
from storage.pg_store import PgStore, open_postgres
from storage.values import NewSubscription
from tests.cli_process import child_env, command
from tests.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 64
"""LIVEDESK_DISPATCH__CONCURRENCY of each worker, and the raw client's concurrency."""
HOOKS = 30_000
WORKERS = (1, 2, 3)
RUNS = 3
OWNER_SAMPLE = 0.25
"""Seconds between the samples of who holds leases (a read of the pending deliveries)."""
IMPORT_POSTS = 100_000
SEARCH_SAMPLES = 40
START_TIMEOUT = 120.0
SOURCE = Source(id="fleet", title="Fleet live", kind=SourceKind.PAGE_TEXT)
BODY = (
    "EU foreign ministers agreed a new package of sanctions on Monday, officials said. "
    "The measures target banks, energy exports and several named individuals. " * 3,
    "NATO said it would hold further talks later this week.",
)

console = Console(width=160)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the receiver, in its own process -------------------------------------------------------------


def serve(port: int) -> None:
    """Answers every POST with 200 at once; GET /stats: {"delivered": n, "last": time.time()}."""
    state: dict[str, float] = {"delivered": 0, "last": 0.0}

    async def on_post(request: web.Request) -> web.Response:
        await request.read()
        state["delivered"] += 1
        state["last"] = time.time()
        return web.Response(text="ok")

    async def on_stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/stats", on_stats)
        app.router.add_post("/{tail:.*}", on_post)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(run())


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, int]]:
    """Start the receiver in another process; yield its base URL and its pid."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fleet", "--serve", str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait()


async def _stats(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/stats") as response:
        stats: dict[str, float] = await response.json()
        return stats


# --- CPU time: how busy the cores were for a fan-out ------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from its third field on (state, ppid, …); [] once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rpartition(")")[2].split()


def _cpu_seconds(pids: Sequence[int], server: PostgresServer) -> float:
    """User + system CPU seconds used so far by these processes and by the PostgreSQL server: the
    postmaster, its live backends, and the backends that ended (counted in its children's time)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        ticks += int(fields[11]) + int(fields[12]) if fields else 0
    postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if not fields:
            continue
        if int(entry.name) == postmaster:
            ticks += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICK


# --- the database -----------------------------------------------------------------------------------


def _new_database(server: PostgresServer) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return name


def _drop_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- (1) fan-out --------------------------------------------------------------------------------------


def _post(n: int) -> Post:
    return Post(
        id=f"alert-{n}",
        source_id=SOURCE.id,
        published_at=datetime(2022, 1, 21, 12, 0, tzinfo=UTC) + timedelta(minutes=n),
        title=f"EU agrees sanctions package #{n}",
        byline="Bench desk",
        body=BODY,
        permalink=f"https://news.example/live#alert-{n}",
    )


def _hook_urls(base: str, hooks: int) -> list[str]:
    return [f"{base}/hooks/fleet{i:05d}SECRET" for i in range(hooks)]


async def _subscribe(store: PgStore, urls: Sequence[str]) -> None:
    for start in range(0, len(urls), 10_000):
        await store.subscriptions.add_many(
            [
                NewSubscription(
                    target=Target(
                        platform="slack",
                        address=u,
                        kind="webhook",
                        options={"flavor": "mattermost"},
                    ),
                    created_by="bench",
                    edit_policy=EditPolicy.FOLLOW_UP,
                )
                for u in urls[start : start + 10_000]
            ]
        )


def _spawn_workers(url: str, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    env = child_env({"LIVEDESK_DISPATCH__CONCURRENCY": str(CONCURRENCY)})
    workers: list[subprocess.Popen[bytes]] = []
    for n in range(count):
        log = (logs / f"worker-{count}-{n}.log").open("wb")
        workers.append(
            subprocess.Popen(
                command("--db", url, "run"),
                cwd=logs,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return workers


def _live_workers(url: str, cwd: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        command("--json", "--db", url, "workers"),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"livedesk workers failed: {done.stderr.strip()}")
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return [w for w in listed if w["live"]]


async def _wait_for_fleet(url: str, workers: Sequence[subprocess.Popen[bytes]], cwd: Path) -> None:
    pids = {w.pid for w in workers}
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if any(w.poll() is not None for w in workers):
            raise RuntimeError(f"a worker exited at start (logs in {cwd})")
        live = await asyncio.to_thread(_live_workers, url, cwd)
        if pids <= {w["pid"] for w in live}:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the {len(workers)} workers did not all join the fleet")


def _stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@dataclass(frozen=True, slots=True)
class FanoutFigures:
    hooks: int
    fleet: dict[int, list[float]]
    """{workers: deliveries/s per run}"""
    senders: dict[int, int]
    """{workers: how many distinct workers were seen holding leases during the fan-out}"""
    raw: list[float]
    loads: list[str]
    cpu: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    """{workers: CPU seconds per run used by the workers, PostgreSQL and the receiver}"""


async def _raw_aiohttp(urls: Sequence[str], payload: bytes) -> float:
    """Deliveries/s: the pre-built payload POSTed to every URL, CONCURRENCY at a time, one session."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        work = iter(urls)

        async def worker() -> None:
            for url in work:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    assert response.status == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(urls) / (time.perf_counter() - started)


async def _lease_owners(store: PgStore) -> set[str]:
    """The workers holding a lease on a delivery right now (a sample, for the table)."""
    async with store.db.read() as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT lease_owner FROM deliveries "
            "WHERE state = 'pending' AND lease_owner IS NOT NULL"
        )
        return {str(row["lease_owner"]) for row in await cursor.fetchall()}


async def fanout(
    server: PostgresServer,
    hooks: int,
    runs: int,
    workdir: Path,
    workers_counts: Sequence[int] = WORKERS,
) -> FanoutFigures:
    name = _new_database(server)
    url = server.url(name)
    fleet: dict[int, list[float]] = {}
    senders: dict[int, int] = {}
    raw: list[float] = []
    loads: list[str] = []
    cpu: dict[int, list[float]] = {}
    try:
        with receiver() as (base, receiver_pid):
            urls = _hook_urls(base, hooks)
            payload = json.dumps(
                render_card("mattermost", card_from_post(_post(0)), ZoneInfo("UTC"))
            ).encode()
            store = await open_postgres(url)
            try:
                await _subscribe(store, urls)
                n = 0
                async with aiohttp.ClientSession() as probe:
                    for count in workers_counts:
                        workers = _spawn_workers(url, count, workdir)
                        try:
                            await _wait_for_fleet(url, workers, workdir)
                            rates: list[float] = []
                            used: list[float] = []
                            busy = [receiver_pid, *(w.pid for w in workers)]
                            owners: set[str] = set()
                            for _ in range(runs):
                                loads.append(_load())
                                await asyncio.sleep(1.1)  # Slack's 1/s per hook: let it pass
                                before = (await _stats(probe, base))["delivered"]
                                cpu_before = _cpu_seconds(busy, server)
                                n += 1
                                await store.ingest(ImportResult(source=SOURCE, posts=(_post(n),)))
                                committed = time.time()
                                stats = await _stats(probe, base)
                                limit = time.monotonic() + 600
                                sample = 0.0
                                while stats["delivered"] - before < hooks:
                                    if time.monotonic() > limit:
                                        raise RuntimeError(f"fan-out stalled: {stats}")
                                    await asyncio.sleep(0.05)
                                    if time.monotonic() >= sample:  # the sample costs the server
                                        owners |= await _lease_owners(store)
                                        sample = time.monotonic() + OWNER_SAMPLE
                                    stats = await _stats(probe, base)
                                used.append(_cpu_seconds(busy, server) - cpu_before)
                                await asyncio.sleep(0.5)  # a duplicate would show up here
                                stats = await _stats(probe, base)
                                delivered = stats["delivered"] - before
                                if delivered != hooks:
                                    raise RuntimeError(f"{delivered} deliveries for {hooks} hooks")
                                rates.append(hooks / (stats["last"] - committed))
                            fleet[count] = rates
                            cpu[count] = used
                            senders[count] = len(owners)
                        finally:
                            await asyncio.to_thread(_stop_workers, workers)
                for _ in range(runs):
                    raw.append(await _raw_aiohttp(urls, payload))
            finally:
                await store.close()
    finally:
        _drop_database(server, name)
    return FanoutFigures(hooks, fleet, senders, raw, loads, cpu)


def print_fanout(figures: FanoutFigures, runs: int) -> None:
    cores = os.cpu_count() or 1
    table = Table(
        title=f"One post → {figures.hooks:,} webhooks, `livedesk run` workers on one PostgreSQL"
    )
    columns = (
        "sender",
        "deliveries/s",
        "× 1 worker",
        "÷ raw",
        "per core",
        "efficiency",
        "busy cores",
        "per busy core",
        "seen",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "sender" else "right", no_wrap=True)
    one = statistics.median(figures.fleet[1])
    ceiling = statistics.median(figures.raw)
    for count, rates in figures.fleet.items():
        rate = statistics.median(rates)
        used = min(count, cores)
        spent = figures.cpu.get(count, [])
        busy = [c * r / figures.hooks for c, r in zip(spent, rates, strict=True)]
        table.add_row(
            f"{count} worker{'s' if count > 1 else ''} (concurrency {CONCURRENCY} each)",
            f"{rate:,.0f}",
            f"{rate / one:.2f}",
            f"{rate / ceiling:.2f}",
            f"{rate / used:,.0f}",
            f"{rate / one / used:.0%}",
            f"{statistics.median(busy):.2f}" if busy else "",
            f"{statistics.median(figures.hooks / c for c in spent):,.0f}" if spent else "",
            f"{figures.senders[count]} of {count}",
        )
    table.add_row(
        f"raw aiohttp, one process (concurrency {CONCURRENCY})",
        f"{ceiling:,.0f}",
        f"{ceiling / one:.2f}",
        "1.00",
        f"{ceiling:,.0f}",
        "",
        "",
        "",
        "",
    )
    console.print(table)
    console.print(
        f"{cores} cores, shared by the workers, PostgreSQL and the receiver; per core = deliveries/s "
        f"÷ min(workers, cores), efficiency = (× 1 worker) ÷ min(workers, cores); commit → last "
        "delivery (receiver's clock); busy cores = CPU seconds the workers, PostgreSQL and the "
        "receiver used ÷ the fan-out's seconds, per busy core = deliveries ÷ those CPU seconds "
        "(what the other work on the machine does not change); seen = workers sampled holding "
        f"leases during the fan-out; median of {runs} ({', '.join(figures.loads)})"
    )


# --- (2) import -------------------------------------------------------------------------------------

RAW_COLUMNS = (
    "id, source_id, published_at, title, byline, body, images, background, location, "
    "content_hash, recorded_at, joined_words"
)
RECORDED = "2022-01-01T00:00:00.000000Z"


@dataclass(frozen=True, slots=True)
class ImportFigures:
    posts: int
    ours: list[float]
    copy: list[float]
    executemany: list[float]
    loads: list[str]


def _raw_rows(rows: list[search_bench.Row], documents: list[ImportResult]) -> list[tuple[Any, ...]]:
    joined = [post_joined_words(p) for d in documents for p in d.posts]
    return [
        (r[0], "bench", r[1], r[2], "By Bench Writer", r[3], r[4], r[6], r[7], r[0], RECORDED, j)
        for r, j in zip(rows, joined, strict=True)
    ]


async def _empty_schema(url: str) -> None:
    store = await open_postgres(url)
    await store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sources (id, title, kind, added_at, number) "
            "VALUES ('bench', 'Bench blog', 'page-text', %s, 1)",
            (RECORDED,),
        )


def _raw_import(url: str, values: list[tuple[Any, ...]], how: str) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            if how == "copy":
                with cur.copy(f"COPY posts ({RAW_COLUMNS}) FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(row)
            else:
                marks = ", ".join(["%s"] * 12)
                cur.executemany(f"INSERT INTO posts ({RAW_COLUMNS}) VALUES ({marks})", values)
        conn.commit()
        return time.perf_counter() - started


async def _ours_import(url: str, documents: list[ImportResult]) -> float:
    store = await open_postgres(url)
    try:
        started = time.perf_counter()
        for document in documents:
            await store.ingest(document)
        return time.perf_counter() - started
    finally:
        await store.close()


async def bench_import(
    server: PostgresServer, corpus: search_bench.Corpus, count: int, runs: int
) -> tuple[ImportFigures, str]:
    """The figures, and the name of a database that our ingest filled (kept for the search)."""
    rows = corpus.rows(count)
    documents = corpus.documents(rows)
    values = _raw_rows(rows, documents)
    ours: list[float] = []
    copies: list[float] = []
    many: list[float] = []
    loads: list[str] = []
    kept = ""
    for run in range(runs):
        loads.append(_load())
        for how, into in (("ours", ours), ("copy", copies), ("executemany", many)):
            name = _new_database(server)
            url = server.url(name)
            if how == "ours":
                store = await open_postgres(url)
                await store.close()
                into.append(count / await _ours_import(url, documents))
                if run == runs - 1:
                    kept = name
                    continue
            else:
                await _empty_schema(url)
                into.append(count / await asyncio.to_thread(_raw_import, url, values, how))
            _drop_database(server, name)
    return ImportFigures(count, ours, copies, many, loads), kept


def print_import(figures: ImportFigures) -> None:
    table = Table(
        title=f"Import {figures.posts:,} posts into PostgreSQL (documents of 1,000), same schema"
    )
    for column in ("path", "posts/s", "÷ raw COPY", "÷ raw executemany"):
        table.add_column(column, justify="left" if column == "path" else "right")
    copy = statistics.median(figures.copy)
    many = statistics.median(figures.executemany)
    for name, rates in (
        ("open_postgres(...).ingest", figures.ours),
        ("raw COPY, one transaction", figures.copy),
        ("raw executemany, one transaction", figures.executemany),
    ):
        rate = statistics.median(rates)
        table.add_row(name, f"{rate:,.0f}", f"{rate / copy:.2f}", f"{rate / many:.2f}")
    console.print(table)
    console.print(
        f"median of {len(figures.loads)} runs ({', '.join(figures.loads)}); the tsvector is a "
        "generated column, so every path pays for the search index"
    )


# --- (3) search ------------------------------------------------------------------------------------
# bench/search.py's PostgreSQL-beside-SQLite figures (`python -m bench search --postgres-only`), here
# on the database the import above filled through the store.


async def _search(
    server: PostgresServer, corpus: search_bench.Corpus, name: str, size: int, args: Any
) -> None:
    kinds = search_bench.queries(corpus)
    sqlite_path = await asyncio.to_thread(search_bench.sqlite_database, corpus, size)
    url = server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:  # as autovacuum would have, in service
        conn.execute("VACUUM ANALYZE posts")
    figures, loads = await search_bench.bench_postgres(
        url, sqlite_path, kinds, args.runs, args.samples
    )
    search_bench.print_postgres(
        size, figures, loads, args.samples, "filled by open_postgres(...).ingest"
    )


# --- main ---------------------------------------------------------------------------------------------


def _summary(figures: FanoutFigures, runs: int) -> list[Figure]:
    one = statistics.median(figures.fleet[1])
    loads = [text.removeprefix("load ") for text in figures.loads]
    found = [
        Figure(
            "fleet",
            f"one post → {figures.hooks:,} webhooks, 1 `livedesk run` worker (raw: aiohttp)",
            "PostgreSQL",
            one,
            statistics.median(figures.raw),
            "/s",
            at_least_raw(0.8),
            loads,
            runs,
        )
    ]
    if 3 in figures.fleet:
        cores = os.cpu_count() or 1
        found.append(
            Figure(
                "fleet",
                f"one post → {figures.hooks:,} webhooks, 3 workers (÷ 1 worker, not raw)",
                "PostgreSQL",
                statistics.median(figures.fleet[3]),
                one,
                "/s",
                Goal(
                    "ratio>=", 2.5, "" if cores >= 3 else f"needs 3 cores; {cores} here", "1 worker"
                ),
                loads,
                runs,
            )
        )
    return found


async def _run(args: argparse.Namespace) -> list[Figure]:
    corpus = search_bench.Corpus()
    with postgres() as server, tempfile.TemporaryDirectory(prefix="livedesk-fleet-") as tmp:
        console.print(f"PostgreSQL on port {server.port}; {os.cpu_count()} cores; {_load()}")
        figures = await fanout(server, args.hooks, args.runs, Path(tmp), args.workers)
        print_fanout(figures, args.runs)
        summary = _summary(figures, args.runs)
        if args.fanout:
            return summary

        imported, kept = await bench_import(server, corpus, args.posts, args.runs)
        print_import(imported)

        await _search(server, corpus, kept, args.posts, args)
        _drop_database(server, kept)
        if args.big:  # 1M posts, filled by raw COPY (bench/search.py)
            await search_bench.postgres_beside_sqlite(
                server, corpus, search_bench.queries(corpus), 1_000_000, args.runs
            )
        return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3,000 hooks, 10k posts, 20 samples")
    parser.add_argument(
        "--full", action="store_true", help="the default sizes (as without --quick)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one worker: smoke test")
    parser.add_argument("--big", action="store_true", help="search at 1M posts too (long)")
    parser.add_argument("--fanout", action="store_true", help="the fan-out section alone")
    parser.add_argument("--hooks", type=int, default=HOOKS)
    parser.add_argument("--posts", type=int, default=IMPORT_POSTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--samples", type=int, default=SEARCH_SAMPLES)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    if args.serve:
        serve(args.serve)
        return 0
    args.workers = WORKERS
    if args.smoke:
        args.hooks, args.posts, args.samples, args.runs, args.workers = 100, 200, 3, 1, (1,)
    elif args.quick and not args.full:
        args.hooks, args.posts, args.samples = 3_000, 10_000, 20
    if args.big:
        console.print("--big: search at 1M posts as well; building those databases takes long")
    record("fleet", asyncio.run(_run(args)))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
