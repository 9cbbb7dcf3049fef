"""The real `livedesk` command on PostgreSQL (`--db postgresql://…` and LIVEDESK_DATABASE_URL), as an
operator uses it: import, read, search, subscribe and deliver to a fake webhook, copy an SQLite
store over with `livedesk migrate`; the same answers as on SQLite; one-line errors that never show
the password. Every test runs against a real PostgreSQL server (tests/pgserver.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cli_process import Finished, livedesk, spawn
from tests.conftest import FIXTURES
from tests.fakes.webhooks import WebhookReceiver

BLOG = str(FIXTURES / "cli_blog.txt")  # 4 posts about a tram line
READER = str(FIXTURES / "search-reader.txt")


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    """`livedesk ARGS` in a child process, while this loop keeps serving the fake webhooks."""
    return await asyncio.to_thread(livedesk, *args, cwd=cwd, env=env, timeout=120)


DIFFERS = ("imported_at", "recorded_at", "snippet")
"""What differs by when it ran (import times), and a snippet's framing: FTS5's snippet() and
PostgreSQL's ts_headline() cut the text around a match differently (both mark the match, and both
say where the snippet comes from: `snippet_from` is compared). What each marks differs too:
PostgreSQL's parser keeps `U.S` whole where FTS5 marks `U.S.-Russia`; that some text is marked is
compared."""


def _without_times(value: Any) -> Any:
    """A JSON answer without what may differ between runs and backends (DIFFERS)."""
    if isinstance(value, dict):
        return {
            k: bool(v) if k == "highlights" else _without_times(v)
            for k, v in value.items()
            if k not in DIFFERS
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def test_reading_commands_answer_as_on_sqlite(tmp_path: Path, postgres_url: str) -> None:
    sqlite_db = str(tmp_path / "livedesk.db")
    for db in (sqlite_db, postgres_url):
        for blog in (BLOG, READER):
            done = livedesk("--db", db, "import", blog, cwd=tmp_path, timeout=120)
            assert done.code == 0, done.err
    for command in (
        ("latest", "-n", "20"),
        ("search", "US-Russia"),
        ("search", "tram", "--limit", "10"),
        ("search", '"fighter jets"'),
        ("search", "Kiev", "-Kyiv"),
        ("post", "3"),
        ("sources",),
    ):
        answers = []
        for db in (sqlite_db, postgres_url):
            done = livedesk("--json", "--db", db, *command, cwd=tmp_path, timeout=120)
            assert done.code == 0, f"{command}: {done.err}"
            answers.append(_without_times(json.loads(done.out)))
        assert answers[0] == answers[1], command


def test_the_database_url_setting_selects_postgresql(tmp_path: Path, postgres_url: str) -> None:
    env = {"LIVEDESK_DATABASE_URL": postgres_url}
    assert livedesk("import", BLOG, cwd=tmp_path, env=env, timeout=120).code == 0
    latest = livedesk("--json", "latest", cwd=tmp_path, env=env, timeout=120)
    assert latest.code == 0 and len(json.loads(latest.out)) == 4
    assert not (tmp_path / "livedesk.db").exists()  # no SQLite file was made beside it


def test_a_wrong_database_url_is_one_line_without_the_password(
    tmp_path: Path, postgres_url: str
) -> None:
    secret = "s3cret-pass"
    missing = _with_password(postgres_url.rsplit("/", 1)[0] + "/no_such_database", secret)
    for args in (("latest",), ("run", "--once")):
        done = livedesk("--db", missing, *args, cwd=tmp_path, timeout=120)
        assert done.code == 1, done.err
        assert "no_such_database" in done.err and "does not exist" in done.err
        assert secret not in done.out + done.err
        assert len(done.err.strip().splitlines()) == 1 and "Traceback" not in done.err
    bad = livedesk("latest", cwd=tmp_path, env={"LIVEDESK_DATABASE_URL": "mysql://x@127.0.0.1/db"})
    assert bad.code == 2 and "LIVEDESK_DATABASE_URL" in bad.err and "postgresql://" in bad.err


async def test_subscribe_and_run_deliver_from_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("--db", postgres_url, "import", BLOG, cwd=tmp_path)).code == 0
        subscribed = await run("--db", postgres_url, "subscribe", "slack", url, cwd=tmp_path)
        assert subscribed.code == 0, subscribed.err

        done = await run("--db", postgres_url, "run", "--once", cwd=tmp_path)

        assert done.code == 0, done.err
        assert len(hooks.payloads(url)) == 3  # the subscription's greeting: the newest three posts
        assert url not in done.out + done.err
        listing = await run("--json", "--db", postgres_url, "deliveries", cwd=tmp_path)
        assert listing.code == 0, listing.err
        again = await run("--db", postgres_url, "run", "--once", cwd=tmp_path)
        assert again.code == 0 and len(hooks.payloads(url)) == 3  # nothing is sent twice


async def test_two_runs_on_one_postgresql_database_form_a_fleet(
    tmp_path: Path, postgres_url: str
) -> None:
    """No single-instance lock on PostgreSQL: a second `livedesk run` joins the first; the blogs
    are polled by one of them (the `sources` leader); `livedesk workers` lists both."""
    async with WebhookReceiver() as hooks:
        assert (
            await run("--db", postgres_url, "subscribe", "slack", hooks.url("a"), cwd=tmp_path)
        ).code == 0
        env = {"LIVEDESK_SOURCES": json.dumps([BLOG])}
        first = spawn("--db", postgres_url, "run", cwd=tmp_path, env=env)
        second = spawn("--db", postgres_url, "run", cwd=tmp_path, env=env)
        try:
            listed: list[dict[str, Any]] = []
            for _ in range(300):  # until both beat and one leads the blogs
                done = await run("--json", "--db", postgres_url, "workers", cwd=tmp_path)
                assert done.code == 0, done.err
                listed = json.loads(done.out)
                leaders = [w for w in listed if "sources" in w["roles"]]
                if len([w for w in listed if w["live"]]) == 2 and len(leaders) == 1:
                    break
                await asyncio.sleep(0.2)
            assert {w["pid"] for w in listed} == {first.pid, second.pid}
            assert len([w for w in listed if "sources" in w["roles"]]) == 1
            for _ in range(300):  # the leader imports the blog; one of them sends its posts
                if len(hooks.payloads(hooks.url("a"))) >= 3:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # time for a second sender to show up, if there were one
        finally:
            for process in (first, second):
                process.terminate()
            outputs = [process.communicate(timeout=60) for process in (first, second)]
        assert all(process.returncode == 0 for process in (first, second)), outputs
        # the new blog's newest post reaches the old subscription once (first-poll backfill 3:
        # the subscription had no posts to greet it with)
        assert len(hooks.payloads(hooks.url("a"))) == 3
        done = await run("--json", "--db", postgres_url, "workers", cwd=tmp_path)
        assert json.loads(done.out) == []  # both left the fleet when they stopped


def test_migrate_copies_an_sqlite_store_once(tmp_path: Path, postgres_url: str) -> None:
    sqlite_db = str(tmp_path / "livedesk.db")
    assert livedesk("--db", sqlite_db, "import", BLOG, READER, cwd=tmp_path, timeout=120).code == 0
    hook = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
    assert livedesk("--db", sqlite_db, "subscribe", "slack", hook, cwd=tmp_path).code == 0

    first = livedesk(
        "--json", "--db", sqlite_db, "migrate", postgres_url, cwd=tmp_path, timeout=120
    )
    assert first.code == 0, first.err
    copied = json.loads(first.out)["tables"]
    assert copied["posts"]["copied"] == 11 and copied["subscriptions"]["copied"] == 1
    assert copied["deliveries"]["copied"] == 3  # the subscription's greeting, still pending

    second = livedesk(
        "--json", "--db", sqlite_db, "migrate", postgres_url, cwd=tmp_path, timeout=120
    )
    assert second.code == 0, second.err
    assert all(t["copied"] == 0 for t in json.loads(second.out)["tables"].values())

    for command in (("latest", "-n", "20"), ("search", "de-escalate"), ("subscriptions",)):
        answers = [
            _without_times(
                json.loads(livedesk("--json", "--db", db, *command, cwd=tmp_path, timeout=120).out)
            )
            for db in (sqlite_db, postgres_url)
        ]
        assert answers[0] == answers[1], command
    assert hook not in first.out + first.err + second.out + second.err


def test_migrate_needs_a_postgresql_url(tmp_path: Path) -> None:
    assert livedesk("import", BLOG, cwd=tmp_path).code == 0
    done = livedesk("migrate", str(tmp_path / "other.db"), cwd=tmp_path)
    assert done.code == 2 and "is not a postgresql:// URL" in done.err


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_both_url_schemes_name_postgresql(tmp_path: Path, postgres_url: str, scheme: str) -> None:
    url = scheme + postgres_url.removeprefix("postgresql")
    done = livedesk("--db", url, "latest", cwd=tmp_path, timeout=120)
    assert done.code == 0, done.err
    assert not (tmp_path / url).exists()


async def test_a_run_outlives_a_database_outage_and_says_so_once(
    tmp_path: Path, postgres_url: str, postgres_server: Any
) -> None:
    """The server goes away for a while (here: the database refuses connections and its sessions
    are ended): `livedesk run` says so in one line per part, keeps running, and delivers what was
    imported after the server came back."""
    import psycopg
    from psycopg import sql

    name = urlsplit(postgres_url).path.lstrip("/")

    def allow(on: bool) -> None:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if on else "false")
                )
            )
            if not on:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    async with WebhookReceiver() as hooks:
        url = hooks.url("desk")
        assert (await run("--db", postgres_url, "subscribe", "slack", url, cwd=tmp_path)).code == 0
        worker = spawn("--db", postgres_url, "run", cwd=tmp_path)
        try:
            for _ in range(300):  # until it has joined the fleet
                listed = await run("--json", "--db", postgres_url, "workers", cwd=tmp_path)
                if listed.code == 0 and json.loads(listed.out):
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(allow, False)
            await asyncio.sleep(4)  # a few heartbeats and outbox probes fail
            await asyncio.to_thread(allow, True)
            assert (await run("--db", postgres_url, "import", BLOG, cwd=tmp_path)).code == 0
            for _ in range(300):
                if len(hooks.payloads(url)) >= 3:
                    break
                await asyncio.sleep(0.1)
            assert worker.poll() is None  # still running
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert len(hooks.payloads(url)) == 3  # the new blog's newest posts, once
        assert "Traceback" not in err
        dispatcher_lines = [line for line in err.splitlines() if "bot.dispatcher" in line]
        assert len([line for line in dispatcher_lines if "could not" in line]) == 1, err
        assert any("the store answers again" in line for line in dispatcher_lines), err
