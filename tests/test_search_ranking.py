"""Search ranking and counting: title matches first however many newer body matches there are,
counts exact or labelled as estimates, ties to the newest, pages without gaps or repeats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.models import ChatKind, Image, ImportResult, Post, Request, Source, SourceKind, Target
from handlers import Deps, handle, split_command_line
from storage import search as search_module
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from storage.search import COUNT_WINDOW, search
from storage.store import SqliteStore
from storage.values import SearchPage
from tests.cli_process import livedesk

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
BLOG = Source(id="blog", title="Blog", kind=SourceKind.PAGE_TEXT)


def _post(
    n: int,
    title: str,
    body: str = "Nothing new.",
    *,
    minutes: int | None = None,
    byline: str | None = None,
    location: str | None = None,
    caption: str | None = None,
    background: str | None = None,
) -> Post:
    return Post(
        id=f"blog-{n}",
        source_id=BLOG.id,
        published_at=START + timedelta(minutes=n if minutes is None else minutes),
        title=title,
        byline=byline,
        location=location,
        body=(body,),
        images=(Image(caption=caption, credit="Getty Images"),) if caption else (),
        background=background,
    )


async def _import(db: Database, posts: list[Post]) -> None:
    store = PostStore(db)
    for start in range(0, len(posts), 500):
        await ingest(store.db, ImportResult(source=BLOG, posts=tuple(posts[start : start + 500])))


def _ids(page: SearchPage) -> list[str]:
    return [hit.post.id for hit in page.hits]


def _body_matches(count: int, first: int = 2) -> list[Post]:
    return [
        _post(n, f"Update {n}", "Talks on a ceasefire went on late.")
        for n in range(first, first + count)
    ]


async def test_a_title_match_is_not_lost_behind_a_thousand_newer_body_matches(
    db: Database,
) -> None:
    oldest = _post(1, "Ceasefire agreed", "Both sides signed.")
    await _import(db, [oldest, *_body_matches(COUNT_WINDOW + 100)])
    page = await search(db, "ceasefire", per_page=5)
    assert _ids(page)[0] == "blog-1"
    assert _ids(page)[1:] == [f"blog-{n}" for n in range(COUNT_WINDOW + 101, COUNT_WINDOW + 97, -1)]
    assert page.has_more
    assert page.total_is_estimate and page.total_label.startswith("about ")
    assert page.total > COUNT_WINDOW


async def test_a_title_match_ranks_first_in_a_phrase_and_a_prefix_too(db: Database) -> None:
    await _import(db, [_post(1, "Ceasefire talks resume"), *_body_matches(COUNT_WINDOW + 10)])
    assert _ids(await search(db, '"ceasefire talks"', per_page=1)) == ["blog-1"]
    assert _ids(await search(db, "ceasef*", per_page=1)) == ["blog-1"]
    assert _ids(await search(db, "ceas*", per_page=1)) == ["blog-1"]


async def test_an_exclusion_still_applies_to_the_whole_post_of_a_title_match(
    db: Database,
) -> None:
    await _import(
        db,
        [
            _post(1, "Lavrov speaks", "He met Blinken."),
            _post(2, "Lavrov travels", "He flew to Geneva."),
            _post(3, "Markets", "Lavrov was quoted."),
        ],
    )
    assert _ids(await search(db, "Lavrov -Blinken")) == ["blog-2", "blog-3"]


async def test_tiers_title_then_byline_or_location_then_body_then_captions(db: Database) -> None:
    posts = [
        _post(1, "Typhoon jets arrive"),
        _post(2, "Air show", byline="By Typhoon Reporter"),
        _post(3, "Air show", location="Typhoon Bay"),
        _post(4, "Air show", "A Typhoon flew past."),
        _post(5, "Air show", caption="A Eurofighter Typhoon over the base"),
        _post(6, "Air show", background="The Typhoon entered service in 2003."),
    ]
    await _import(db, posts)
    page = await search(db, "typhoon", per_page=10)
    assert _ids(page) == ["blog-1", "blog-3", "blog-2", "blog-4", "blog-6", "blog-5"]
    assert [hit.rank for hit in page.hits] == [0.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    assert page.total == 6 and not page.total_is_estimate and page.total_label == "6"


async def test_ties_go_to_the_newest_post_not_the_last_imported(db: Database) -> None:
    # Imported newest first (as a blog page lists them): recency is the publication time.
    await _import(db, [_post(n, "Sirens in Kyiv") for n in (5, 4, 3)])
    await _import(db, [_post(n, "Sirens in Kyiv", minutes=n) for n in (9, 1)])
    assert _ids(await search(db, "sirens")) == ["blog-9", "blog-5", "blog-4", "blog-3", "blog-1"]


async def test_pages_across_tiers_have_no_gaps_or_repeats(db: Database) -> None:
    posts = [
        _post(n, "Grain deal" if n % 3 == 0 else "Update", "The grain deal held." * (n % 2))
        for n in range(1, 30)
    ]
    posts += [_post(n, "Ports", caption="Grain ships") for n in range(30, 35)]
    await _import(db, posts)
    whole = await search(db, "grain", per_page=50)
    pages: list[str] = []
    for number in range(1, 20):
        page = await search(db, "grain", page=number, per_page=4)
        pages += _ids(page)
        assert page.total == whole.total
        if not page.has_more:
            break
    assert pages == _ids(whole)
    expected = {n for n in range(1, 30) if n % 3 == 0 or n % 2} | set(range(30, 35))
    assert set(pages) == {f"blog-{n}" for n in expected}
    assert len(pages) == whole.total == len(expected)


async def test_counts_are_exact_up_to_the_window(db: Database) -> None:
    await _import(db, _body_matches(COUNT_WINDOW, first=1))
    page = await search(db, "ceasefire")
    assert page.total == COUNT_WINDOW and not page.total_is_estimate
    assert page.total_label == f"{COUNT_WINDOW:,}"


async def test_counts_above_the_window_are_labelled_estimates(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "COUNT_WINDOW", 10)
    # Every other post matches: the newest ten matches span twenty posts of the forty.
    await _import(db, [_post(n, "Update", "ceasefire" if n % 2 else "quiet") for n in range(1, 41)])
    page = await search(db, "ceasefire", per_page=5)
    assert page.total_is_estimate and page.total == 20 and page.total_label == "about 20"
    assert page.has_more
    exact = await search(db, "quiet", source_id="elsewhere")
    assert exact.total == 0 and not exact.total_is_estimate


async def test_counts_in_a_table_larger_than_the_span_are_labelled_estimates(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "COUNT_SPAN", 10)
    # One post in four matches: three among the newest ten, of forty.
    await _import(
        db, [_post(n, "Update", "ceasefire" if n % 4 == 0 else "quiet") for n in range(1, 41)]
    )
    page = await search(db, "ceasefire", per_page=1)
    assert _ids(page) == ["blog-40"] and page.has_more
    assert page.total_is_estimate and page.total_label == "about 12"
    whole = await search(db, "ceasefire", per_page=20)  # the walk saw every match: exact
    assert whole.total == 10 and not whole.total_is_estimate


async def test_the_chat_reply_says_about_for_an_estimate(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "COUNT_WINDOW", 10)
    await _import(db, [_post(n, "Ceasefire update") for n in range(1, 31)])
    deps = Deps(
        store=SqliteStore(db),
        backfill=3,
        timezone=ZoneInfo("UTC"),
    )
    command, args = split_command_line("/search ceasefire")
    reply = await handle(
        Request(
            platform="telegram",
            command=command,
            args=args,
            user_id="u1",
            target=Target(platform="telegram", address="42", kind="private"),
            chat_kind=ChatKind.PRIVATE,
            is_admin=False,
        ),
        deps,
    )
    assert reply.text.startswith("about 30 results for “ceasefire”")


async def test_the_cli_shows_an_exact_count_and_json_says_whether_it_is_estimated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "livedesk.db"
    async with await Database.open(path) as db:
        await _import(db, [_post(1, "Ceasefire agreed"), *_body_matches(COUNT_WINDOW + 5)])
    done = livedesk("--db", str(path), "search", "ceasefire", cwd=tmp_path)
    assert done.code == 0, done.err
    assert "about 1," in done.out.splitlines()[0]
    assert "1. Ceasefire agreed" in done.out
    done = livedesk("--db", str(path), "--json", "search", "agreed", cwd=tmp_path)
    result = json.loads(done.out)
    assert result["total"] == 1 and result["total_is_estimate"] is False
