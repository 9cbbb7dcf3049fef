"""Discord rendering: every Discord limit holds whatever the post, text is escaped, matches are bold."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.discord_render import (
    MAX_CONTENT,
    MAX_EMBEDS,
    MAX_TOTAL,
    embeds_size,
    fit,
    highlighted,
    render_card,
    render_reply,
    size,
)
from bot.models import Button, Card, Highlighted, Image, Reply
from tests.fakes.discord import InvalidForm, validate_message

KYIV = ZoneInfo("Europe/Kyiv")
T0 = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
URL = "https://news.example/live/p1"


def card(**extra: object) -> Card:
    values: dict[str, object] = {
        "post_id": "p1",
        "title": "Talks in Geneva",
        "url": URL,
        "published_at": T0,
        "body": ("Blinken meets Lavrov.",),
        "source_title": "Kyiv live",
        **extra,
    }
    return Card.model_validate(values)


def accepted(*embeds: object, content: str = "") -> bool:
    """Whether the fake Discord (checking every documented limit) takes these embeds."""
    body = {"content": content, "embeds": [e.to_dict() for e in embeds]}  # type: ignore[attr-defined]
    try:
        validate_message(body)
    except InvalidForm:
        return False
    return True


MONSTER = {
    "title": "A very long headline " * 30,
    "byline": "Reporter " * 50,
    "location": "Kyiv " * 50,
    "body": tuple(("sanctions " * 100).strip() for _ in range(10)),  # ~10,000 characters
    "background": "Context " * 400,
    "images": tuple(
        Image(caption=f"Photo {n} " * 40, credit="AP", url=f"https://img.example/{n}.jpg")
        for n in range(40)
    ),
    "source_title": "Blog " * 500,
    "matched_terms": tuple(f"term{n}" for n in range(300)),
    "updated_at": T0,
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        MONSTER,
        {"body": ("🙂" * 5000,), "title": "🙂" * 300},  # outside the BMP: two UTF-16 units each
        {"body": ("x" * 10_000,)},  # no word to cut on
        {"body": ("*" * 5000,)},  # every character escaped doubles
        {"url": None, "body": ("word " * 3000,)},
    ],
    ids=["plain", "monster", "emoji", "one-long-word", "all-markdown", "no-link"],
)
def test_a_card_fits_every_discord_limit(extra: dict[str, object]) -> None:
    embed = render_card(card(**extra), zone=KYIV)
    assert accepted(embed)
    assert len(embed) <= MAX_TOTAL
    limits = [
        (embed.title, 256),
        (embed.description, 4096),
        (embed.footer.text, 2048),
        (embed.author.name, 256),
        *((f.value, 1024) for f in embed.fields),
    ]
    for part, limit in limits:  # in UTF-16 units too, however Discord counts
        assert size(part or "") <= limit


def test_a_long_post_is_cut_on_a_word_with_a_link_to_the_whole_post() -> None:
    embed = render_card(card(**MONSTER), zone=KYIV)
    assert embed.description is not None
    assert embed.description.endswith(f"sanctions…\n[Read the whole post]({URL})")
    assert embed.title is not None and embed.title.endswith("…")
    assert set(embed.title[:-1].split()) == {"A", "very", "long", "headline"}  # whole words
    assert embed.image.url == "https://img.example/0.jpg"
    photos = next(f for f in embed.fields if f.name and f.name.startswith("Photos"))
    assert photos.name == "Photos (40)"


def test_a_short_post_shows_everything() -> None:
    embed = render_card(
        card(
            byline="Jane Doe",
            location="Kyiv",
            background="Talks began in December.",
            images=(
                Image(caption="The two ministers", credit="Reuters", url="https://i.ex/1.jpg"),
            ),
            updated_at=datetime(2022, 1, 21, 13, 5, tzinfo=UTC),
            is_update=True,
        ),
        zone=KYIV,
    )
    assert embed.title == "Updated: Talks in Geneva"
    assert embed.url == URL
    assert embed.description == "Blinken meets Lavrov."
    assert embed.author.name == "Jane Doe · Kyiv"
    assert embed.footer.text == "Kyiv live · /post p1 · edited 21 Jan 15:05 EET"
    assert embed.timestamp == T0
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Some background"] == "Talks began in December."
    assert fields["Photo"] == "The two ministers — (Reuters)"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("**bold** claim", "\\*\\*bold\\*\\* claim"),
        ("[click](https://evil.example)", "\\[click\\]\\(https://evil.example\\)"),
        ("# Heading", "\\# Heading"),
        ("> quote", "\\> quote"),
        ("snake_case_name", "snake\\_case\\_name"),
        ("@everyone <@&123>", "@\u200beveryone \\<@&123\\>"),  # and the adapter disables mentions
    ],
)
def test_post_text_cannot_inject_formatting(text: str, shown: str) -> None:
    embed = render_card(card(title=text, body=(text,)), zone=KYIV)
    assert embed.title == shown
    assert embed.description == shown


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "ftp://x.example/a", "not a url", "", "https://"]
)
def test_only_http_links_become_links(url: str) -> None:
    embed = render_card(card(url=url, images=(Image(url=url),), body=("word " * 2000,)), zone=KYIV)
    assert embed.url is None and embed.image.url is None
    assert embed.description is not None and "](" not in embed.description
    assert accepted(embed)


def test_a_link_cannot_break_out_of_its_parentheses() -> None:
    embed = render_card(card(url="https://x.example/a_(b) c", body=("w " * 3000,)), zone=KYIV)
    assert embed.description is not None
    assert embed.description.endswith("(https://x.example/a_%28b%29%20c)")


def test_search_matches_are_bold_and_the_cut_keeps_markers_balanced() -> None:
    snippet = Highlighted(
        segments=(("…talks on ", False), ("sanctions", True), (" and *troops*", False))
    )
    embed = render_card(card(snippet=snippet), zone=KYIV)
    assert embed.description == "…talks on **sanctions** and \\*troops\\*"

    long = Highlighted(segments=tuple(("word " * 10, n % 2 == 1) for n in range(100)))
    text = highlighted(long, 300)
    assert size(text) <= 300 and text.count("**") % 2 == 0


@pytest.mark.parametrize(
    ("text", "limit"),
    [("one two three four", 10), ("a\\*b c\\*d e\\*f", 9), ("🙂 🙂 🙂 🙂", 5), ("x" * 50, 7)],
)
def test_fit_cuts_within_the_limit_without_a_dangling_escape(text: str, limit: int) -> None:
    result = fit(text, limit)
    assert size(result) <= limit and result.endswith("…")
    assert not result[:-1].endswith("\\") or result[:-1].endswith("\\\\")


def test_a_reply_with_many_cards_becomes_messages_within_the_limits() -> None:
    cards = tuple(card(post_id=f"p{n}", **{k: v for k, v in MONSTER.items()}) for n in range(23))
    reply = Reply(
        text="The latest posts: " + "word " * 1000,
        cards=cards,
        buttons=tuple(Button(label="More " * 30, command=f"latest {n}") for n in range(30)),
    )
    messages = render_reply(reply, zone=KYIV)
    assert [len(m.embeds) for m in messages] == [10, 10, 3]
    assert size(messages[0].content) <= MAX_CONTENT and messages[0].content.endswith("…")
    assert [m.content for m in messages[1:]] == ["", ""]
    for message in messages:
        assert len(message.embeds) <= MAX_EMBEDS
        assert embeds_size(message.embeds) <= MAX_TOTAL
        assert accepted(*message.embeds, content=message.content)
    assert not messages[0].buttons and len(messages[-1].buttons) == 25  # on the last message
    assert all(len(b.label) <= 80 for b in messages[-1].buttons)


def test_an_empty_reply_still_says_something() -> None:
    [message] = render_reply(Reply(), zone=KYIV)
    assert message.content == "Done."
    [failed] = render_reply(Reply(error=True), zone=KYIV)
    assert failed.content
