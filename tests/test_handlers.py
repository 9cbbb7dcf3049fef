"""Every command through `handlers.handle`, against a real SQLite store with posts imported by hand."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.models import ChatKind, ImportResult, Post, Reply, Request, Source, SourceKind, Target
from handlers import COMMANDS, Deps, handle, split_command_line
from storage.db import Database
from storage.ingest import ingest
from storage.interface import Store
from storage.posts import PostStore
from storage.store import SqliteStore

T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
KYIV = Source(id="kyiv-live", title="Kyiv live", kind=SourceKind.PAGE_TEXT)
MARKETS = Source(id="markets-live", title="Markets live", kind=SourceKind.RSS)

GROUP = Target(platform="telegram", address="-100200", kind="group")
PRIVATE = Target(platform="telegram", address="42", kind="private")


def make_post(n: int, source: Source, title: str, *body: str) -> Post:
    return Post(
        id=f"{source.id}-{n:03d}",
        source_id=source.id,
        published_at=T0 + timedelta(minutes=n),
        title=title,
        body=body or (f"Paragraph of post {n}.",),
    )


KYIV_POSTS = [
    make_post(1, KYIV, "Blinken meets Lavrov in Geneva", "Talks on sanctions and troops."),
    make_post(2, KYIV, "Sanctions package outlined", "The EU outlines new sanctions."),
    make_post(3, KYIV, "Troops near the border", "Satellite images show troops."),
    *[make_post(n, KYIV, f"Update {n}", f"Routine update number {n}.") for n in range(4, 12)],
]
MARKET_POSTS = [
    make_post(20, MARKETS, "Oil prices jump", "Brent rises on sanctions fears."),
    make_post(21, MARKETS, "Rouble falls", "The rouble fell sharply."),
]


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(posts.db, ImportResult(source=KYIV, posts=tuple(KYIV_POSTS)))
    await ingest(posts.db, ImportResult(source=MARKETS, posts=tuple(MARKET_POSTS)))
    return Deps(
        store=SqliteStore(db),
        backfill=3,
        timezone=ZoneInfo("Europe/Kyiv"),
    )


def request(
    line: str,
    *,
    target: Target = PRIVATE,
    chat_kind: ChatKind = ChatKind.PRIVATE,
    is_admin: bool = False,
) -> Request:
    command, args = split_command_line(line)
    return Request(
        platform=target.platform,
        command=command,
        args=args,
        user_id="u1",
        target=target,
        chat_kind=chat_kind,
        is_admin=is_admin,
    )


async def ask(deps: Deps, line: str, **kwargs: object) -> Reply:
    return await handle(request(line, **kwargs), deps)  # type: ignore[arg-type]


async def delivery_count(store: Store) -> int:
    return sum((await store.outbox.counts()).values())


# --- help, start, unknown ---------------------------------------------------------------------------


async def test_help_lists_every_command_with_usage(deps: Deps) -> None:
    reply = await ask(deps, "/help")
    assert not reply.error
    for info in COMMANDS:
        assert f"/{info.usage}" in reply.text
    assert "subscribe" in reply.text


async def test_start_welcomes_and_explains_subscribing(deps: Deps) -> None:
    reply = await ask(deps, "/start")
    assert "live news blogs" in reply.text
    assert "/subscribe" in reply.text
    assert "/latest 3" in reply.text


async def test_unknown_command_is_answered_politely(deps: Deps) -> None:
    reply = await ask(deps, "/frobnicate now")
    assert reply.error
    assert reply.text == "I don't know /frobnicate. Try /help."


async def test_command_names_are_forgiving(deps: Deps) -> None:
    reply = await handle(request("x").model_copy(update={"command": "/Latest@livedesk_bot"}), deps)
    assert not reply.error
    assert len(reply.cards) == 5


def test_command_table_matches_the_routes() -> None:
    from handlers import ROUTES

    assert {c.name for c in COMMANDS} <= set(ROUTES)
    assert all(len(c.summary) <= 100 for c in COMMANDS)  # Discord's limit for descriptions


def test_split_command_line_keeps_quoted_phrases_with_their_quotes() -> None:
    assert split_command_line('/search "oil prices" -gas 2') == (
        "search",
        ('"oil prices"', "-gas", "2"),
    )
    assert split_command_line("  latest   3  ") == ("latest", ("3",))
    assert split_command_line("") == ("", ())


# --- latest and post --------------------------------------------------------------------------------


async def test_latest_defaults_to_five_newest_first(deps: Deps) -> None:
    reply = await ask(deps, "/latest")
    assert [c.title for c in reply.cards] == [
        "Rouble falls",
        "Oil prices jump",
        "Update 11",
        "Update 10",
        "Update 9",
    ]
    assert reply.cards[0].source_title == "Markets live"
    assert reply.ephemeral


async def test_latest_n(deps: Deps) -> None:
    reply = await ask(deps, "/latest 2")
    assert [c.title for c in reply.cards] == ["Rouble falls", "Oil prices jump"]


async def test_latest_is_capped_at_twenty(deps: Deps) -> None:
    reply = await ask(deps, "/latest 500")
    assert len(reply.cards) == 13  # every post there is
    assert "at most 20" in reply.text


async def test_latest_from_one_source_by_name_or_id(deps: Deps) -> None:
    by_name = await ask(deps, "/latest 3 Kyiv live")
    assert [c.title for c in by_name.cards] == ["Update 11", "Update 10", "Update 9"]
    assert "Kyiv live" in by_name.text
    by_id = await ask(deps, "/latest markets-live")
    assert [c.title for c in by_id.cards] == ["Rouble falls", "Oil prices jump"]


async def test_latest_with_an_unknown_source_says_so(deps: Deps) -> None:
    reply = await ask(deps, "/latest 3 nowhere")
    assert reply.error
    assert "nowhere" in reply.text and "/sources" in reply.text


async def test_latest_zero_is_a_helpful_error(deps: Deps) -> None:
    reply = await ask(deps, "/latest 0")
    assert reply.error and "1 to 20" in reply.text


async def test_post_shows_the_whole_post(deps: Deps) -> None:
    reply = await ask(deps, "/post kyiv-live-002")
    assert not reply.error
    (card,) = reply.cards
    assert card.title == "Sanctions package outlined"
    assert card.body == ("The EU outlines new sanctions.",)
    assert "not edited" in reply.text
    # Published 12:02 UTC is 14:02 in Kyiv in January.
    assert "21 Jan 2022, 14:02 EET" in reply.text


async def test_post_by_unique_prefix(deps: Deps) -> None:
    reply = await ask(deps, "/post markets-live-021")
    assert reply.cards[0].title == "Rouble falls"


async def test_post_after_an_edit_shows_its_history(deps: Deps) -> None:
    edited = KYIV_POSTS[1].model_copy(
        update={"title": "Sanctions package agreed", "body": ("The EU agrees new sanctions.",)}
    )
    await deps.store.ingest(ImportResult(source=KYIV, posts=(edited,)))
    reply = await ask(deps, "/post kyiv-live-002")
    (card,) = reply.cards
    assert card.title == "Sanctions package agreed"
    assert card.version == 2
    assert "edited 1 time" in reply.text
    assert "v1 first seen" in reply.text
    assert "v2" in reply.text and "title, text changed" in reply.text


async def test_post_unknown_or_missing_id(deps: Deps) -> None:
    missing = await ask(deps, "/post nope")
    assert missing.error and "nope" in missing.text
    bare = await ask(deps, "/post")
    assert bare.error and "/post <number>" in bare.text


# --- search ----------------------------------------------------------------------------------------


async def test_search_cards_carry_highlighted_snippets(deps: Deps) -> None:
    reply = await ask(deps, "/search troops")
    assert not reply.error
    assert {c.title for c in reply.cards} == {
        "Blinken meets Lavrov in Geneva",
        "Troops near the border",
    }
    for card in reply.cards:
        assert card.snippet is not None
        highlighted = [text for text, marked in card.snippet.segments if marked]
        assert highlighted and all(t.casefold() == "troops" for t in highlighted)
    assert "2 results" in reply.text
    assert reply.buttons == ()


async def test_search_pages_with_a_more_button(deps: Deps) -> None:
    first = await ask(deps, "/search update")
    assert len(first.cards) == 5
    assert "8 results" in first.text and "1–5" in first.text
    (more,) = first.buttons
    assert more.label == "More ›"
    assert more.command == "search update 2"

    second = await ask(deps, more.command)
    assert len(second.cards) == 3
    assert "6–8" in second.text
    assert second.buttons == ()
    assert not {c.post_id for c in first.cards} & {c.post_id for c in second.cards}


async def test_search_a_quoted_phrase_survives_the_more_button(deps: Deps) -> None:
    reply = await ask(deps, '/search "routine update" 1')
    assert len(reply.cards) == 5
    assert 'results for "routine update"' in reply.text  # echoed as typed
    assert reply.buttons[0].command == 'search "routine update" 2'
    second = await ask(deps, reply.buttons[0].command)
    assert len(second.cards) == 3


async def test_search_past_the_last_page(deps: Deps) -> None:
    reply = await ask(deps, "/search troops 9")
    assert not reply.error and not reply.cards
    assert "only 2 results" in reply.text


async def test_search_with_no_results_suggests_fewer_words(deps: Deps) -> None:
    reply = await ask(deps, "/search zeppelin armada")
    assert not reply.error and not reply.cards
    assert "fewer" in reply.text


@pytest.mark.parametrize("query", ["-", "*", '""', "-troops", "()"])
async def test_broken_query_is_a_helpful_error(deps: Deps, query: str) -> None:
    reply = await ask(deps, f"/search {query}")
    assert reply.error
    assert "Sorry" not in reply.text  # a hint on how to search, not a crash
    assert reply.text


async def test_search_without_words_explains(deps: Deps) -> None:
    reply = await ask(deps, "/search")
    assert reply.error and "/search sanctions" in reply.text


async def test_search_tells_when_it_reinterpreted_the_query(deps: Deps) -> None:
    reply = await ask(deps, "/search OR troops")
    assert not reply.error
    assert reply.text.splitlines()[0] == 'Read "OR" as a plain word.'


# --- subscriptions ---------------------------------------------------------------------------------


async def test_non_admin_cannot_subscribe_a_group(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe", target=GROUP, chat_kind=ChatKind.GROUP)
    assert reply.error
    assert reply.text == "Only an admin of this chat can subscribe it."
    assert await deps.subscriptions.list() == []


async def test_admin_subscribes_a_group_and_gets_the_latest_posts(deps: Deps) -> None:
    reply = await ask(
        deps, "/subscribe Kyiv live", target=GROUP, chat_kind=ChatKind.GROUP, is_admin=True
    )
    assert not reply.error
    assert not reply.ephemeral
    assert reply.text == "Subscribed this chat to Kyiv live. You'll get the latest 3 posts now."
    (sub,) = await deps.subscriptions.list()
    assert sub.target == GROUP and sub.source_id == "kyiv-live" and sub.query is None
    assert await delivery_count(deps.store) == 3


async def test_subscribe_with_keywords_only(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe sanctions")
    assert reply.text.startswith("Subscribed this chat to all blogs matching “sanctions”.")
    (sub,) = await deps.subscriptions.list()
    assert sub.source_id is None and sub.query == "sanctions"
    assert await delivery_count(deps.store) == 3  # three posts mention sanctions


async def test_subscribe_to_a_source_with_keywords(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe markets-live rouble")
    assert "Markets live matching “rouble”" in reply.text
    assert "latest 1 post now" in reply.text


async def test_subscribe_to_a_multi_word_source_name_then_keywords(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe Kyiv live sanctions")
    assert reply.text.startswith("Subscribed this chat to Kyiv live matching “sanctions”.")
    (sub,) = await deps.subscriptions.list()
    assert (sub.source_id, sub.query) == ("kyiv-live", "sanctions")


async def test_private_chat_may_always_subscribe(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe", is_admin=False)
    assert not reply.error
    assert reply.text.startswith("Subscribed this chat to all blogs.")


async def test_subscribing_twice_says_already_subscribed(deps: Deps) -> None:
    await ask(deps, "/subscribe Kyiv live")
    again = await ask(deps, "/subscribe kyiv-live")
    assert not again.error
    assert again.text.startswith("Already subscribed to Kyiv live")
    assert len(await deps.subscriptions.list()) == 1
    assert await delivery_count(deps.store) == 3  # no second backfill


async def test_subscribe_with_a_broken_query_explains(deps: Deps) -> None:
    reply = await ask(deps, "/subscribe -")
    assert reply.error and "Sorry" not in reply.text
    assert await deps.subscriptions.list() == []


async def test_subscriptions_lists_this_chat_only(deps: Deps) -> None:
    await ask(deps, "/subscribe Kyiv live")
    await ask(deps, "/subscribe sanctions")
    await ask(deps, "/subscribe", target=GROUP, chat_kind=ChatKind.GROUP, is_admin=True)
    reply = await ask(deps, "/subscriptions")
    lines = reply.text.splitlines()
    assert lines[0] == "This chat has 2 subscriptions:"
    assert lines[1].endswith("· Kyiv live · active")
    assert "all blogs · matching “sanctions” · active" in lines[2]
    assert "all blogs · active" not in reply.text  # the group's subscription


async def test_subscriptions_shows_why_one_is_paused(deps: Deps) -> None:
    await ask(deps, "/subscribe")
    (sub,) = await deps.subscriptions.list()
    from bot.models import SubscriptionState

    await deps.subscriptions.set_state(sub.id, SubscriptionState.DISABLED, "bot was blocked")
    reply = await ask(deps, "/subscriptions")
    assert f"#{sub.id} · all blogs · disabled (bot was blocked)" in reply.text
    resumed = await ask(deps, "/subscribe")
    assert resumed.text.startswith("Resumed")


async def test_empty_subscriptions(deps: Deps) -> None:
    reply = await ask(deps, "/subscriptions")
    assert "no subscriptions" in reply.text and "/subscribe" in reply.text


async def test_unsubscribe_by_id(deps: Deps) -> None:
    await ask(deps, "/subscribe Kyiv live")
    await ask(deps, "/subscribe sanctions")
    first, second = await deps.subscriptions.list()
    reply = await ask(deps, f"/unsubscribe {first.id}")
    assert not reply.error and not reply.ephemeral
    assert reply.text == "Unsubscribed this chat from Kyiv live."
    assert [s.id for s in await deps.subscriptions.list()] == [second.id]


async def test_unsubscribe_by_source_and_by_keywords(deps: Deps) -> None:
    await ask(deps, "/subscribe Markets live")
    await ask(deps, "/subscribe sanctions")
    by_source = await ask(deps, "/unsubscribe markets-live")
    assert by_source.text == "Unsubscribed this chat from Markets live."
    by_words = await ask(deps, "/unsubscribe Sanctions")
    assert by_words.text == "Unsubscribed this chat from all blogs matching “sanctions”."
    assert await deps.subscriptions.list() == []


async def test_unsubscribe_everything(deps: Deps) -> None:
    await ask(deps, "/subscribe Kyiv live")
    await ask(deps, "/subscribe sanctions")
    await ask(deps, "/subscribe", target=GROUP, chat_kind=ChatKind.GROUP, is_admin=True)
    reply = await ask(deps, "/unsubscribe")
    assert reply.text == "Unsubscribed this chat from everything (2 subscriptions)."
    (left,) = await deps.subscriptions.list()
    assert left.target == GROUP


async def test_unsubscribe_cannot_touch_another_chat(deps: Deps) -> None:
    await ask(deps, "/subscribe", target=GROUP, chat_kind=ChatKind.GROUP, is_admin=True)
    (theirs,) = await deps.subscriptions.list()
    await ask(deps, "/subscribe sanctions")
    reply = await ask(deps, f"/unsubscribe {theirs.id}")
    assert reply.error and f"#{theirs.id}" in reply.text
    assert len(await deps.subscriptions.list()) == 2


async def test_non_admin_cannot_unsubscribe_a_group(deps: Deps) -> None:
    await ask(deps, "/subscribe", target=GROUP, chat_kind=ChatKind.GROUP, is_admin=True)
    reply = await ask(deps, "/unsubscribe", target=GROUP, chat_kind=ChatKind.GROUP)
    assert reply.error and "Only an admin" in reply.text
    assert len(await deps.subscriptions.list()) == 1


# --- sources ---------------------------------------------------------------------------------------


async def test_sources_lists_blogs_with_counts_and_newest_time(deps: Deps) -> None:
    reply = await ask(deps, "/sources")
    assert "Following 2 blogs:" in reply.text
    assert "• Kyiv live (kyiv-live) — 11 posts, newest 21 Jan 2022, 14:11 EET" in reply.text
    assert "• Markets live (markets-live) — 2 posts, newest 21 Jan 2022, 14:21 EET" in reply.text


async def test_sources_when_empty(db: Database) -> None:
    empty = Deps(store=SqliteStore(db))
    reply = await handle(request("/sources"), empty)
    assert "No blogs yet" in reply.text
    latest = await handle(request("/latest"), empty)
    assert "No posts" in latest.text and not latest.error


# --- failures --------------------------------------------------------------------------------------


async def test_a_crashing_handler_gives_a_polite_error_and_logs_the_detail(
    deps: Deps, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(deps.posts, "latest", broken)
    with caplog.at_level(logging.ERROR, logger="handlers"):
        reply = await ask(deps, "/latest 3")
    assert reply.error
    assert reply.text == (
        "Sorry, something went wrong while fetching the latest posts. Please try again."
    )
    assert "disk on fire" not in reply.text and "Traceback" not in reply.text
    (record,) = caplog.records
    assert "latest" in record.getMessage()
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])


async def test_a_crashing_subscribe_is_polite_too(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(deps.subscriptions, "add", broken)
    reply = await ask(deps, "/subscribe")
    assert reply.error
    assert reply.text.startswith("Sorry, something went wrong while subscribing this chat.")
