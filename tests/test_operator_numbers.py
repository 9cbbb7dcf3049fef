"""Huge or odd numbers (`99999999999999999999`, `²`, `1e99`) get the usual one-line answer, in the
CLI (exit 2) and in a chat, never "something went wrong" and a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.models import ChatKind, ImportResult, Post, Reply, Request, Source, SourceKind, Target
from handlers import Deps, handle, split_command_line
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from storage.store import SqliteStore
from storage.subscriptions import SubscriptionStore
from tests.cli_process import livedesk
from tests.conftest import FIXTURES

HUGE = "99999999999999999999"  # past SQLite's largest integer (2**63 - 1)
ODD = [HUGE, "9" * 5000, "1e99", "²", "١٢", "0x10", "-1", "0", "1.5"]


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("numbers")
    assert livedesk("import", str(FIXTURES / "cli_blog.txt"), cwd=folder).code == 0
    assert livedesk("subscribe", "telegram", "5", cwd=folder).code == 0
    return folder


def one_line_bad_input(desk: Path, *args: str) -> str:
    done = livedesk(*args, cwd=desk)
    assert "Traceback" not in done.err and "unexpected error" not in done.err, done.err
    assert done.code == 2, (args, done.code, done.err)
    assert len(done.err_lines) == 1, (args, done.err)
    return done.err_lines[0]


@pytest.mark.parametrize("number", ODD)
@pytest.mark.parametrize("command", ["pause", "resume", "unsubscribe"])
def test_an_odd_subscription_id_is_one_line(desk: Path, command: str, number: str) -> None:
    line = one_line_bad_input(desk, command, number)
    assert f"livedesk {command}: argument ID:" in line or f"no subscription #{number}" in line


@pytest.mark.parametrize("number", ODD)
def test_an_odd_delivery_id_is_one_line(desk: Path, number: str) -> None:
    line = one_line_bad_input(desk, "deliveries", "retry", number)
    assert "argument ID:" in line


@pytest.mark.parametrize("number", [HUGE, "²", "1e99", "9" * 5000])
def test_an_odd_post_number_is_no_such_post(desk: Path, number: str) -> None:
    line = one_line_bad_input(desk, "post", number)
    assert line.startswith("no post with id")


@pytest.mark.parametrize(
    "args",
    [
        ("latest", "-n", HUGE),
        ("latest", "-n", "1e99"),
        ("latest", "-n", "²"),
        ("search", "tram", "--page", HUGE),
        ("search", "tram", "--page", "1e99"),
        ("search", "tram", "--per-page", "²"),
        ("subscribe", "telegram", "6", "--backfill", HUGE),
    ],
)
def test_an_odd_count_is_one_line(desk: Path, args: tuple[str, ...]) -> None:
    line = one_line_bad_input(desk, *args)
    assert f"livedesk {args[0]}: argument" in line and "--help" in line


def test_an_id_written_as_shown_still_works(desk: Path) -> None:
    done = livedesk("pause", "#1", cwd=desk)
    assert done.code == 0, done.err
    assert done.out.strip() == "Paused subscription #1."
    assert livedesk("resume", "1", cwd=desk).code == 0


def test_a_large_page_is_past_the_end_not_a_crash(desk: Path) -> None:
    done = livedesk("search", "tram", "--page", "9223372036854775807", cwd=desk)
    assert done.code == 2, done.err
    [line] = done.err_lines
    assert "past the end" in line


# --- in a chat ---------------------------------------------------------------------------------------

T0 = datetime(2023, 3, 3, 12, 0, tzinfo=UTC)
BLOG = Source(id="harbour-live", title="Harbour live", kind=SourceKind.PAGE_TEXT)
CHAT = Target(platform="telegram", address="42", kind="private")
SORRY = "something went wrong"


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(
        posts.db,
        ImportResult(
            source=BLOG,
            posts=tuple(
                Post(
                    id=f"harbour-{n}",
                    source_id=BLOG.id,
                    published_at=T0 + timedelta(minutes=n),
                    title=f"Ferry update {n}",
                    body=(f"The ferry is late again ({n}).",),
                )
                for n in range(1, 4)
            ),
        ),
    )
    subscriptions = SubscriptionStore(db)
    await subscriptions.add(CHAT, created_by="u1", backfill=0)
    return Deps(store=SqliteStore(db))


async def ask(deps: Deps, line: str) -> Reply:
    command, args = split_command_line(line)
    request = Request(
        platform=CHAT.platform,
        command=command,
        args=args,
        user_id="u1",
        target=CHAT,
        chat_kind=ChatKind.PRIVATE,
    )
    return await handle(request, deps)


@pytest.mark.parametrize("number", ODD)
async def test_post_with_an_odd_number_is_not_found(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/post {number}")
    assert reply.error and SORRY not in reply.text
    assert reply.text.startswith("I can't find a post with id")


@pytest.mark.parametrize("number", ["²", "١٢", "1e99", "0x10"])
async def test_latest_with_an_odd_number_reads_it_as_a_blog_name(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/latest {number}")
    assert reply.error and SORRY not in reply.text
    assert reply.text.startswith("I don't know a blog called")


@pytest.mark.parametrize("number", [HUGE, "9" * 5000])
async def test_latest_with_a_huge_number_shows_the_most_it_can(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/latest {number}")
    assert not reply.error
    assert "I show at most 20 posts at once." in reply.text
    assert [card.title for card in reply.cards] == [f"Ferry update {n}" for n in (3, 2, 1)]


@pytest.mark.parametrize("number", ["0", "-1"])
async def test_latest_with_nothing_to_show_asks_for_a_real_count(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/latest {number}")
    assert reply.error and "from 1 to 20" in reply.text


async def test_search_with_a_huge_page_answers_there_are_fewer(deps: Deps) -> None:
    reply = await ask(deps, f"/search ferry {HUGE}")
    assert not reply.error
    assert reply.text.startswith("There are only 3 results for “ferry”")


@pytest.mark.parametrize("number", ["²", "1e99"])
async def test_search_with_an_odd_page_searches_for_it(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/search ferry {number}")
    assert SORRY not in reply.text
    assert not reply.cards  # no post has "²" or "1e99" in it


@pytest.mark.parametrize("number", [HUGE, f"#{HUGE}", "²", "#²", "9" * 5000])
async def test_unsubscribe_with_an_odd_number_changes_nothing(deps: Deps, number: str) -> None:
    reply = await ask(deps, f"/unsubscribe {number}")
    assert reply.error and SORRY not in reply.text
    assert "See /subscriptions" in reply.text or "Send /subscriptions" in reply.text
    assert len(await deps.subscriptions.list()) == 1
