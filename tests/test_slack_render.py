"""Slack-style payloads: the documented shape per flavor, escaping of untrusted post text, and every limit."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.slack_render import (
    MORE_LABEL,
    OPEN_LABEL,
    TEAMS_MAX_BYTES,
    WORD_JOINER,
    escape_markdown,
    escape_mrkdwn,
    escape_plain,
    highlight,
    render_card,
    slack_reply,
)
from bot.models import Button, Card, Highlighted, Reply
from tests.fakes.webhooks import slack_problems

WJ = WORD_JOINER
BERLIN = ZoneInfo("Europe/Berlin")
PUBLISHED = datetime(2022, 1, 21, 13, 5, tzinfo=UTC)


def make_card(**changes: Any) -> Card:
    fields: dict[str, Any] = {
        "post_id": "p1",
        "title": "EU agrees new sanctions",
        "url": "https://news.example/live/ukraine#p1",
        "published_at": PUBLISHED,
        "byline": "Jane Doe",
        "location": "Brussels",
        "body": ("Ministers agreed sanctions on Monday.", "More talks follow."),
        "source_title": "Ukraine live",
    }
    fields.update(changes)
    return Card(**fields)


def long_body(unit: str = "Word & <more> *text* ", total: int = 10_000) -> tuple[str, ...]:
    """About `total` characters in paragraphs, full of characters that grow when escaped."""
    paragraph = (unit * (600 // len(unit) + 1))[:600]
    return tuple(paragraph for _ in range(total // 600 + 1))


def teams_content(payload: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = payload["attachments"][0]["content"]
    return content


# --- escaping: a table of hostile or unusual post text ------------------------------------------------

ESCAPES = [
    # (post text, Slack mrkdwn, markdown for Mattermost / Teams)
    ("<!channel>", "&lt;!channel&gt;", r"\<\!channel\>"),
    ("<!here|here>", "&lt;!here|here&gt;", r"\<\!here\|here\>"),
    ("<@U123>", f"&lt;@{WJ}U123&gt;", rf"\<@{WJ}U123\>"),
    ("<https://evil|click>", "&lt;https://evil|click&gt;", r"\<https://evil\|click\>"),
    ("[click](https://evil)", "[click](https://evil)", r"\[click\]\(https://evil\)"),
    ("&amp;", "&amp;amp;", r"\&amp;"),
    ("AT&T", "AT&amp;T", "AT&T"),
    ("*bold*", "＊bold＊", r"\*bold\*"),
    ("**bold**", "＊＊bold＊＊", r"\*\*bold\*\*"),
    ("_it_ ~st~ `code`", "＿it＿ ～st～ ｀code｀", r"\_it\_ \~st\~ \`code\`"),
    ("@channel @here @all", f"@{WJ}channel @{WJ}here @{WJ}all", f"@{WJ}channel @{WJ}here @{WJ}all"),
    ("mail desk@news.example", "mail desk@news.example", "mail desk@news.example"),
    ("> quoted", "＞ quoted", r"\> quoted"),
    (
        "# heading\n- item\n1. first",
        "# heading\n- item\n1. first",
        "\\# heading\n\\- item\n1\\. first",
    ),
    ("Kyiv 🇺🇦 🚀 :fire:", "Kyiv 🇺🇦 🚀 :fire:", "Kyiv 🇺🇦 🚀 :fire:"),
    ("שלום עולם", "שלום עולם", "שלום עולם"),
    ("مرحبا بالعالم", "مرحبا بالعالم", "مرحبا بالعالم"),
]


@pytest.mark.parametrize(("text", "slack", "markdown"), ESCAPES)
def test_post_text_is_escaped_per_platform(text: str, slack: str, markdown: str) -> None:
    assert escape_mrkdwn(text) == slack
    assert escape_markdown(text) == markdown


def rendered_strings(value: Any, key: str = "") -> list[str]:
    """Every string a chat would read as markup (not the plain `fallback` notification text)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in rendered_strings(v, k)]
    if isinstance(value, list):
        return [s for v in value for s in rendered_strings(v, key)]
    return [value] if isinstance(value, str) and key != "fallback" else []


@pytest.mark.parametrize(("text", "slack", "markdown"), ESCAPES)
def test_no_flavor_lets_post_text_ping_or_link(text: str, slack: str, markdown: str) -> None:
    card = make_card(title=text, byline=text, body=(text,), source_title=text)
    for flavor in ("slack", "mattermost", "teams"):
        dangers = ["<!channel", "<!here", "<@U", "<https://evil", "@channel", "@here"]
        if flavor != "slack":  # Slack's mrkdwn has no [text](url) links
            dangers.append("](https://evil)")
        for shown in rendered_strings(render_card(flavor, card, BERLIN)):
            for danger in dangers:  # an unescaped occurrence: no backslash before it
                assert not re.search(r"(?<!\\)" + re.escape(danger), shown), (flavor, shown)


def test_slack_header_is_plain_text_shown_as_typed_but_cannot_mention() -> None:
    assert (
        escape_plain("Q&A: *what* <!channel> @here < 3")
        == f"Q&A: *what* <{WJ}!channel> @{WJ}here < 3"
    )


# --- shapes ---------------------------------------------------------------------------------------


def test_slack_block_kit_shape() -> None:
    payload = render_card("slack", make_card(), BERLIN)
    blocks = payload["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "context", "actions"]
    assert blocks[0]["text"] == {"type": "plain_text", "text": "EU agrees new sanctions"}
    assert blocks[1]["text"]["type"] == "mrkdwn"
    assert (
        blocks[1]["text"]["text"] == "Ministers agreed sanctions on Monday.\n\nMore talks follow."
    )
    context = blocks[2]["elements"][0]["text"]
    assert context == "Jane Doe · Brussels · 21 Jan 2022, 14:05 CET · Ukraine live"  # Berlin time
    button = blocks[3]["elements"][0]
    assert button["text"]["text"] == OPEN_LABEL
    assert button["url"] == "https://news.example/live/ukraine#p1"
    assert payload["text"] == "EU agrees new sanctions — Ukraine live"  # fallback for notifications
    assert slack_problems(payload) == []


def test_slack_post_without_link_has_no_button() -> None:
    payload = render_card("slack", make_card(url=None), BERLIN)
    assert "actions" not in [b["type"] for b in payload["blocks"]]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.example/a|b", "ftp://x/y"])
def test_unsafe_links_get_no_button(url: str) -> None:
    for flavor in ("slack", "mattermost", "teams"):
        assert url not in json.dumps(render_card(flavor, make_card(url=url), BERLIN))


def test_mattermost_shape_uses_text_and_attachments_not_blocks() -> None:
    payload = render_card("mattermost", make_card(), BERLIN)
    assert set(payload) == {"text", "attachments"}
    assert payload["text"] == "**EU agrees new sanctions**"
    attachment = payload["attachments"][0]
    assert attachment["fallback"] == "EU agrees new sanctions"
    assert attachment["text"].startswith(
        "Ministers agreed sanctions on Monday.\n\nMore talks follow."
    )
    assert "_Jane Doe · Brussels · 21 Jan 2022, 14:05 CET · Ukraine live_" in attachment["text"]
    assert f"[{OPEN_LABEL}](https://news.example/live/ukraine#p1)" in attachment["text"]


def test_teams_adaptive_card_shape() -> None:
    payload = render_card("teams", make_card(), BERLIN)
    assert payload["type"] == "message"
    attachment = payload["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    texts = [b["text"] for b in card["body"]]
    assert texts[0] == "EU agrees new sanctions"
    assert card["body"][0]["weight"] == "Bolder"
    assert "Ministers agreed sanctions on Monday." in texts[1]
    assert texts[2] == "Jane Doe · Brussels · 21 Jan 2022, 14:05 CET · Ukraine live"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": OPEN_LABEL,
            "url": "https://news.example/live/ukraine#p1",
        }
    ]


def test_an_update_says_so_and_shows_when_it_was_edited() -> None:
    card = make_card(
        is_update=True, updated_at=datetime(2022, 1, 21, 15, 30, tzinfo=UTC), version=2
    )
    payload = render_card("slack", card, BERLIN)
    assert payload["blocks"][0]["text"]["text"] == "Updated: EU agrees new sanctions"
    assert "(updated 21 Jan 2022, 16:30 CET)" in payload["blocks"][2]["elements"][0]["text"]


def test_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="flavor"):
        render_card("discord", make_card(), BERLIN)


# --- keyword alerts -------------------------------------------------------------------------------


def test_keyword_alert_bolds_the_terms_and_names_them() -> None:
    card = make_card(
        matched_terms=("sanction", "NATO"), body=("Sanctions and nato talks; NATO-led.",)
    )
    slack = render_card("slack", card, BERLIN)
    assert slack["blocks"][1]["text"]["text"] == "*Sanctions* and *nato* talks; *NATO*-led."
    assert slack["blocks"][3] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Matched: *sanction*, *NATO*", "verbatim": True}],
    }
    assert "Matched: sanction, NATO" in slack["text"]
    mattermost = render_card("mattermost", card, BERLIN)
    assert mattermost["text"].endswith("Matched: **sanction**, **NATO**")
    assert mattermost["attachments"][0]["text"].startswith("**Sanctions** and **nato** talks")
    teams = teams_content(render_card("teams", card, BERLIN))
    assert teams["body"][1]["text"].startswith("**Sanctions** and **nato** talks")
    assert teams["body"][3]["text"] == "Matched: **sanction**, **NATO**"


def test_highlight_marks_whole_words_starting_with_a_term() -> None:
    assert highlight("unsanctioned sanctions", ("sanction",)) == (
        ("unsanctioned ", False),
        ("sanctions", True),
    )
    assert highlight("plain", ()) == (("plain", False),)


# --- limits: a 10,000-character post --------------------------------------------------------------


@pytest.mark.parametrize("unit", ["Word & <more> *text* ", "Ukraine 🇺🇦 news ", "x" * 700])
def test_slack_payload_of_a_long_post_stays_within_every_limit(unit: str) -> None:
    card = make_card(title="T&<" * 100, body=long_body(unit), matched_terms=("word",))
    payload = render_card("slack", card, BERLIN)
    assert slack_problems(payload) == []
    assert len(payload["blocks"][0]["text"]["text"]) <= 150
    section = payload["blocks"][1]["text"]["text"]
    assert len(section) <= 3000
    assert section.endswith(f"<https://news.example/live/ukraine#p1|{MORE_LABEL} ›>")
    assert "&amp" not in section[-80:].split("<")[0][-3:]  # never cut inside an entity
    assert len(payload["text"]) <= 4000


@pytest.mark.parametrize("unit", ["Word & <more> *text* ", "Ukraine 🇺🇦 news "])
def test_mattermost_payload_of_a_long_post_is_cut_with_a_link(unit: str) -> None:
    payload = render_card("mattermost", make_card(body=long_body(unit)), BERLIN)
    text = payload["text"] + payload["attachments"][0]["text"]
    assert len(text) <= 4000
    assert f"[{MORE_LABEL} ›](https://news.example/live/ukraine#p1)" in text


def test_teams_card_of_a_long_post_fits_28_kb() -> None:
    payload = render_card("teams", make_card(body=long_body("🇺🇦🇺🇦 <&> ** ")), BERLIN)
    assert len(json.dumps(payload, ensure_ascii=False).encode("utf-8")) <= TEAMS_MAX_BYTES
    assert MORE_LABEL in teams_content(payload)["body"][1]["text"]


def test_short_posts_are_not_cut() -> None:
    payload = render_card("slack", make_card(), BERLIN)
    assert MORE_LABEL not in json.dumps(payload)


# --- slash-command replies ------------------------------------------------------------------------


def test_reply_with_search_hits_renders_compact_cards_and_next_command() -> None:
    hit = make_card(
        snippet=Highlighted(segments=(("… new ", False), ("sanctions", True), (" on", False)))
    )
    reply = Reply(
        text="2 posts match sanctions:",
        cards=(hit, hit),
        buttons=(Button(label="More ›", command="search sanctions 2"),),
    )
    payload = slack_reply(reply, BERLIN, command="/livedesk")
    assert payload["response_type"] == "ephemeral"
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds == ["section", "section", "context", "divider", "section", "context", "context"]
    link = "https://news.example/live/ukraine#p1"
    assert (
        payload["blocks"][1]["text"]["text"]
        == f"*<{link}|EU agrees new sanctions>*\n… new *sanctions* on"
    )
    assert payload["blocks"][2]["elements"][0]["text"].endswith("· `/livedesk post p1`")
    assert "`/livedesk search sanctions 2`" in payload["blocks"][-1]["elements"][0]["text"]
    assert slack_problems(payload) == []


def test_a_reply_with_many_cards_keeps_to_50_blocks() -> None:
    reply = Reply(text="lots", cards=tuple(make_card(post_id=str(i)) for i in range(40)))
    payload = slack_reply(reply, BERLIN)
    assert len(payload["blocks"]) <= 50
    assert slack_problems(payload) == []


def test_error_replies_are_marked() -> None:
    payload = slack_reply(Reply(text="Write a query <like this>", error=True), BERLIN)
    assert payload["blocks"][0]["text"]["text"] == ":warning: Write a query &lt;like this&gt;"
