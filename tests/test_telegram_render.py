"""Telegram HTML rendering: escaping, links, times, cutting by visible length, search hits, replies.

Every rendered message is checked with the fake Bot API's own HTML rules (known tags only, balanced,
escaped), so "Telegram would accept it" is tested, not assumed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.telegram_render import (
    MAX_TEXT,
    READ_MORE,
    UPDATED_PREFIX,
    render_card,
    render_reply,
    visible_length,
)
from bot.models import Card, Highlighted, Image, Reply
from tests.fakes.telegram import EntityError, visible_text

KYIV = ZoneInfo("Europe/Kyiv")
T0 = datetime(2022, 1, 21, 12, 5, tzinfo=UTC)


def card(**fields: object) -> Card:
    values: dict[str, object] = {
        "post_id": "kyiv-001",
        "title": "Blinken meets Lavrov",
        "url": "https://news.example/live/kyiv-001",
        "published_at": T0,
        "body": ("Talks in Geneva.",),
        **fields,
    }
    return Card.model_validate(values)


def shown(html_text: str) -> str:
    """What a Telegram user sees; fails the test where Telegram would answer 400."""
    text = visible_text(html_text, "HTML")
    assert 0 < visible_length(text) <= MAX_TEXT
    return text


@pytest.mark.parametrize(
    ("title", "body", "expected_html"),
    [
        ("A <b>bold</b> claim", "x", "A &lt;b&gt;bold&lt;/b&gt; claim"),
        ("Tom & Jerry", "x", "Tom &amp; Jerry"),
        ("t", "<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("t", "Ping @everyone and @here", "Ping @everyone and @here"),
        ("t", 'He said "no" & left', 'He said "no" &amp; left'),
        ("t", "&amp; already escaped", "&amp;amp; already escaped"),
        (
            "t",
            "<a href='javascript:alert(1)'>x</a>",
            "&lt;a href='javascript:alert(1)'&gt;x&lt;/a&gt;",
        ),
    ],
)
def test_post_text_is_escaped_and_shown_literally(
    title: str, body: str, expected_html: str
) -> None:
    rendered = render_card(card(title=title, body=(body,)), KYIV)
    assert expected_html in rendered
    text = shown(rendered)
    assert title in text and body in text


@pytest.mark.parametrize(
    ("url", "linked"),
    [
        ("https://news.example/p?a=1&b=2", True),
        ("http://news.example/p", True),
        ("javascript:alert(1)", False),
        ("ftp://news.example/p", False),
        ("tg://resolve?domain=x", False),
        ("not a url", False),
        (None, False),
    ],
)
def test_only_http_links_become_links(url: str | None, linked: bool) -> None:
    rendered = render_card(card(url=url), KYIV)
    shown(rendered)
    assert ("<a href=" in rendered) is linked
    if url and linked:
        assert 'href="https://news.example/p?a=1&amp;b=2"' in rendered or url in rendered


def test_an_attribute_value_cannot_break_out_of_its_quotes() -> None:
    rendered = render_card(card(url='https://news.example/"><b>x</b>'), KYIV)
    shown(rendered)
    assert 'href="https://news.example/&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in rendered


def test_a_card_shows_title_time_byline_body_and_image_credit() -> None:
    rendered = render_card(
        card(
            byline="Jane Doe",
            location="Kyiv",
            source_title="Kyiv live",
            body=("First paragraph.", "Second paragraph."),
            images=(Image(caption="Troops at the border", credit="AP Photo"),),
        ),
        KYIV,
    )
    assert rendered.startswith(
        '<b><a href="https://news.example/live/kyiv-001">Blinken meets Lavrov</a></b>'
    )
    text = shown(rendered)
    assert "21 Jan 2022, 14:05 EET · Jane Doe · Kyiv · Kyiv live" in text
    assert "First paragraph.\n\nSecond paragraph." in text
    assert "Troops at the border (AP Photo)" in text


def test_time_follows_the_configured_zone() -> None:
    assert "12:05 UTC" in shown(render_card(card(), ZoneInfo("UTC")))
    assert "07:05 EST" in shown(render_card(card(), ZoneInfo("America/New_York")))


def test_an_update_is_marked_and_keyword_alerts_list_their_terms() -> None:
    text = shown(render_card(card(is_update=True, matched_terms=("sanctions", "oil")), KYIV))
    assert text.startswith(UPDATED_PREFIX + "Blinken meets Lavrov")
    assert "Matches: sanctions, oil" in text


@pytest.mark.parametrize(
    "body",
    [
        "word " * 2000,  # plain words
        "Tom & Jerry <b> " * 700,  # escaping makes the markup longer than the visible text
        "x" * 9000,  # no word boundary at all
        "emoji 😀 " * 1200,  # astral characters count twice in UTF-16
        "\n\n".join(f"Paragraph {n} " + "text " * 40 for n in range(60)),
    ],
    ids=["words", "entities", "one-long-word", "emoji", "paragraphs"],
)
def test_a_long_post_is_cut_on_a_word_with_a_link_to_the_rest(body: str) -> None:
    rendered = render_card(card(body=(body,), images=(Image(caption="A map", credit="BBC"),)), KYIV)
    text = shown(rendered)  # balanced, known tags, within 4096 visible
    assert visible_length(text) > MAX_TEXT - 100  # uses the room it has
    assert "…" in text
    assert rendered.endswith(f'<a href="https://news.example/live/kyiv-001">{READ_MORE}</a>')
    assert text.startswith("Blinken meets Lavrov")
    assert "A map (BBC)" in text  # the body was cut, not the caption


def test_a_long_post_without_a_url_is_cut_without_a_link() -> None:
    text = shown(render_card(card(url=None, body=("word " * 2000,)), KYIV))
    assert READ_MORE not in text and "…" in text


def test_a_short_post_is_not_cut() -> None:
    text = shown(render_card(card(body=("word " * 500,)), KYIV))
    assert READ_MORE not in text and "…" not in text


def test_a_search_reply_lists_hits_with_their_matches_in_bold() -> None:
    snippet = Highlighted(
        segments=(("New ", False), ("sanctions", True), (" on <banks> & co", False))
    )
    reply = Reply(
        text='2 results for "sanctions":',
        cards=(card(snippet=snippet), card(post_id="kyiv-002", title="Oil", snippet=snippet)),
    )
    [message] = render_reply(reply, KYIV)
    assert "New <b>sanctions</b> on &lt;banks&gt; &amp; co" in message
    text = shown(message)
    assert text.startswith('2 results for "sanctions":')
    assert "Talks in Geneva." not in text  # hits show the snippet, not the whole post


def test_a_long_reply_is_split_into_messages_that_each_fit() -> None:
    cards = tuple(card(post_id=f"p{n}", body=("word " * 700,)) for n in range(12))
    messages = render_reply(Reply(text="Latest posts:", cards=cards), KYIV)
    assert len(messages) > 1
    texts = [shown(m) for m in messages]
    assert sum(t.count("Blinken meets Lavrov") for t in texts) == 12


def test_a_very_long_reply_text_is_split_on_lines() -> None:
    lines = [f"{n}. Kyiv live <{n}> & more" for n in range(600)]
    messages = render_reply(Reply(text="\n".join(lines)), KYIV)
    texts = [shown(m) for m in messages]
    assert "\n".join(texts) == "\n".join(lines)


def test_the_fake_rejects_what_telegram_rejects() -> None:
    for bad in ("<script>x</script>", "<b>open", "a & b", "<b><i>x</b></i>", "<span>x</span>"):
        with pytest.raises(EntityError):
            visible_text(bad, "HTML")
    assert visible_text('<b>a</b> &amp; <a href="https://x.example">b</a>', "HTML") == "a & b"
