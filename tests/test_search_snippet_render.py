"""A search hit that matched only a caption or the background says so, on every platform."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from bot.adapters import discord_render, slack_render, telegram_render
from bot.adapters.terminal import TerminalAdapter
from bot.models import Card, Highlighted, Reply
from tests.fakes.telegram import visible_text

ZONE = ZoneInfo("UTC")
CAPTION = Highlighted(
    segments=(("A ", False), ("Eurofighter", True), (" Typhoon taxis (Alex Brandon/AP)", False)),
    where="caption",
)
BACKGROUND = Highlighted(
    segments=(("Greywater County ordered a mandatory ", False), ("evacuation", True)),
    where="background",
)
TEXT = Highlighted(segments=(("The ", False), ("evacuation", True), (" began.", False)))


def hit(snippet: Highlighted) -> Card:
    return Card(
        post_id="p1",
        title="Jets land at an air base",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        body=("Two fighter jets landed.",),
        snippet=snippet,
    )


@pytest.mark.parametrize(("snippet", "label"), [(CAPTION, "📷"), (BACKGROUND, "Background:")])
def test_telegram_labels_the_snippet(snippet: Highlighted, label: str) -> None:
    [message] = telegram_render.render_reply(Reply(text="1 result", cards=(hit(snippet),)), ZONE)
    assert f"<i>{label}</i> " in message
    shown = visible_text(message, "HTML")
    assert f"{label} {snippet.plain}" in shown


@pytest.mark.parametrize(("snippet", "label"), [(CAPTION, "📷"), (BACKGROUND, "Background:")])
def test_discord_labels_the_snippet(snippet: Highlighted, label: str) -> None:
    embed = discord_render.render_card(hit(snippet), zone=ZONE)
    assert embed.description is not None and embed.description.startswith(f"*{label}* ")


@pytest.mark.parametrize("flavor", ["slack", "mattermost", "teams"])
@pytest.mark.parametrize(("snippet", "label"), [(CAPTION, "📷"), (BACKGROUND, "Background:")])
def test_webhook_flavors_label_the_snippet(flavor: str, snippet: Highlighted, label: str) -> None:
    payload = json.dumps(slack_render.render_card(flavor, hit(snippet), ZONE), ensure_ascii=False)
    assert f"{label} " in payload
    assert snippet.segments[1][0] in payload


def test_slack_search_reply_labels_the_snippet() -> None:
    payload = slack_render.slack_reply(Reply(text="1 result", cards=(hit(CAPTION),)), ZONE)
    assert "📷 A *Eurofighter* Typhoon" in json.dumps(payload, ensure_ascii=False)


def test_terminal_labels_the_snippet() -> None:
    out = Console(record=True, width=100, force_terminal=True, file=io.StringIO())
    adapter = TerminalAdapter(console=out)
    adapter.print_reply(Reply(text="2 results", cards=(hit(BACKGROUND), hit(TEXT))))
    plain = out.export_text()
    assert "Background: Greywater County ordered a mandatory evacuation" in plain
    assert plain.count("Background:") == 1  # a snippet from the text has no label


def test_a_snippet_from_the_text_has_no_label() -> None:
    assert TEXT.label is None and TEXT.where == "text"
    [message] = telegram_render.render_reply(Reply(text="1 result", cards=(hit(TEXT),)), ZONE)
    assert message.splitlines()[-1] == "The <b>evacuation</b> began."
    embed = discord_render.render_card(hit(TEXT), zone=ZONE)
    assert embed.description == "The **evacuation** began."
