"""The terminal adapter: literal rendering of post text, numbered messages and edits, the prompt."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta
from typing import TextIO, cast
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from bot.adapters.base import AdapterContext
from bot.adapters.terminal import CONSOLE_TARGET, TerminalAdapter
from bot.models import (
    Card,
    ChatKind,
    Highlighted,
    ImportResult,
    Post,
    Reply,
    Request,
    Source,
    SourceKind,
)
from handlers import Deps, handle
from storage.db import Database
from storage.ingest import ingest
from storage.posts import PostStore
from storage.store import SqliteStore

T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
SOURCE = Source(id="kyiv-live", title="Kyiv live", kind=SourceKind.PAGE_TEXT)


def console() -> Console:
    return Console(record=True, width=100, color_system=None)


def card(**overrides: object) -> Card:
    fields: dict[str, object] = {
        "post_id": "kyiv-live-001",
        "title": "Talks in [bold]Geneva[/bold]",
        "published_at": T0,
        "byline": "By [i]Staff[/i]",
        "body": ("Both sides said [red]nothing[/red] new.", "Second paragraph."),
        "source_title": "Kyiv live",
    }
    fields.update(overrides)
    return Card.model_validate(fields)


async def test_post_text_that_looks_like_markup_prints_literally() -> None:
    out = console()
    adapter = TerminalAdapter(console=out, timezone=ZoneInfo("Europe/Kyiv"))
    ref = await adapter.send(CONSOLE_TARGET, card(number=7))
    text = out.export_text()
    assert ref == "term-7"
    assert "Talks in [bold]Geneva[/bold]" in text
    assert "Both sides said [red]nothing[/red] new." in text
    assert "By [i]Staff[/i]" in text
    assert "21 Jan 2022, 14:00 EET" in text  # shown in the adapter's time zone
    assert "Kyiv live · #7" in text  # the post's own number
    assert "/post 7" in text  # how to open it again


async def test_panels_carry_the_post_number_and_an_edit_names_it() -> None:
    out = console()
    adapter = TerminalAdapter(console=out)
    first = await adapter.send(CONSOLE_TARGET, card(number=12))
    second = await adapter.send(
        CONSOLE_TARGET, card(post_id="kyiv-live-002", title="Second", number=3)
    )
    assert (first, second) == ("term-12", "term-3")  # what `/post N` opens, not a print count
    edited = await adapter.edit(
        CONSOLE_TARGET, first, card(title="Talks end", version=2, number=12)
    )
    assert edited == first
    text = out.export_text()
    assert "✎ Updated #12 Talks end" in text
    assert "v2" in text
    assert adapter.capabilities.can_edit
    assert adapter.capabilities.rate_limits.overall is None


async def test_search_snippet_is_shown_with_its_highlight() -> None:
    out = Console(
        record=True, width=100, force_terminal=True, color_system="standard", file=io.StringIO()
    )
    adapter = TerminalAdapter(console=out)
    snippet = Highlighted(segments=(("…new ", False), ("[sanctions]", True), (" agreed…", False)))
    adapter.print_reply(Reply(text="1 result", cards=(card(snippet=snippet),)))
    styled = out.export_text(styles=True, clear=False)
    plain = out.export_text(styles=False)
    assert "…new [sanctions] agreed…" in plain
    assert "Second paragraph." not in plain  # a hit shows its snippet, not the whole post
    # the matched run, and only it, carries a style of its own
    assert "…new \x1b[1;30;43m[sanctions]\x1b[0m agreed…" in styled


async def test_an_error_reply_and_buttons_are_printed() -> None:
    out = console()
    adapter = TerminalAdapter(console=out)
    adapter.print_reply(Reply(text="I don't know /x. [Try] /help.", error=True))
    assert "I don't know /x. [Try] /help." in out.export_text()


# --- the prompt, with the real handlers ------------------------------------------------------------


@pytest.fixture
async def deps(db: Database) -> Deps:
    posts = PostStore(db)
    await ingest(
        posts.db,
        ImportResult(
            source=SOURCE,
            posts=tuple(
                Post(
                    id=f"kyiv-live-{n:03d}",
                    source_id=SOURCE.id,
                    published_at=T0 + timedelta(minutes=n),
                    title=f"Update {n}",
                    body=(f"Sanctions talk number {n}.",),
                )
                for n in range(1, 8)
            ),
        ),
    )
    return Deps(store=SqliteStore(db))


async def run_prompt(deps: Deps, script: str) -> tuple[str, list[Request], list[str]]:
    seen: list[Request] = []
    quits: list[str] = []

    async def handle_request(request: Request) -> Reply:
        seen.append(request)
        return await handle(request, deps)

    out = console()
    adapter = TerminalAdapter(
        console=out,
        prompt=True,
        input_stream=io.StringIO(script),
        on_quit=lambda: quits.append("q"),
    )
    await adapter.start(AdapterContext(handle=handle_request))
    await adapter.wait_closed()
    await adapter.stop()
    return out.export_text(), seen, quits


async def test_prompt_answers_latest_and_search(deps: Deps) -> None:
    text, seen, quits = await run_prompt(deps, "/latest 2\n\nsearch sanctions\nmore\n")
    assert [(r.command, r.args) for r in seen] == [
        ("latest", ("2",)),
        ("search", ("sanctions",)),
        ("search", ("sanctions", "2")),
    ]
    first = seen[0]
    assert first.chat_kind is ChatKind.TERMINAL and first.is_admin
    assert first.target == CONSOLE_TARGET and first.user_id == "operator"

    latest, rest = text.split("› search sanctions", 1)
    assert "Update 7" in latest and "Update 6" in latest and "Update 5" not in latest
    page1, page2 = rest.split("› more", 1)
    assert "7 results" in page1 and "[More ›]" in page1
    assert "6–7" in page2
    assert quits == []  # end of input ends the prompt quietly, not the app


async def test_prompt_keeps_quoted_phrases_and_quits(deps: Deps) -> None:
    text, seen, quits = await run_prompt(
        deps, '/search "talk number" 2\n/subscribe sanctions\nquit\nlatest\n'
    )
    assert seen[0].args == ('"talk number"', "2")
    assert "Subscribed this chat to all blogs matching “sanctions”." in text
    assert quits == ["q"]
    assert len(seen) == 2  # nothing after quit runs
    (sub,) = await deps.subscriptions.list()
    assert sub.target == CONSOLE_TARGET


async def test_prompt_survives_a_crashing_handler(deps: Deps) -> None:
    async def broken(request: Request) -> Reply:
        raise RuntimeError("boom")

    out = console()
    adapter = TerminalAdapter(console=out, prompt=True, input_stream=io.StringIO("latest\nhelp\n"))
    await adapter.start(AdapterContext(handle=broken))
    await adapter.wait_closed()
    await adapter.stop()
    text = out.export_text()
    assert text.count("Sorry, something went wrong") == 2
    assert "boom" not in text


async def test_stop_ends_a_waiting_prompt() -> None:
    class EndsLater:
        """Input that keeps the reader thread busy (blank lines, slowly) until the test is done."""

        done = False

        def readline(self) -> str:
            time.sleep(0.02)
            return "" if self.done else "\n"

        def isatty(self) -> bool:
            return True

    async def answer(request: Request) -> Reply:
        return Reply(text="ok")

    stream = EndsLater()
    adapter = TerminalAdapter(console=console(), prompt=True, input_stream=cast(TextIO, stream))
    await adapter.start(AdapterContext(handle=answer))
    await asyncio.sleep(0.05)
    await adapter.stop()  # returns although the input has not ended
    stream.done = True
