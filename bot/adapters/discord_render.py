"""Discord embeds for neutral cards and replies, within every limit Discord enforces.

discord.py checks none of Discord's lengths itself, and Discord answers 400 "Invalid Form Body" past any of
them. So every part is cut here on a word with "…" (and a link to the whole post where there is one):
title 256, description 4096, ≤ 25 fields (name 256, value 1024), footer 2048, author 256, 6000 across all
embeds of a message, content 2000, ≤ 10 embeds. Lengths are checked in UTF-16 code units too, so that
characters outside the BMP (emoji) can never tip a part over, however Discord counts them.

Post text is escaped completely (`escape`): a post cannot inject formatting, masked links, headings,
lists, quotes or mentions. `discord.utils.escape_markdown` is not enough: it escapes only the first `[` of
`[click](https://evil.example)` on a line, and Discord still shows a live masked link for the second one.
So every character that Discord markdown reads (backslash, `*`, `_`, `~`, `|`, backtick, `[`, `]`, `(`,
`)`, `<`, `>`) gets a backslash (Discord shows any escaped punctuation as itself), a line-start `#`, `-`,
`+` or `1.` too; a bare URL stays clickable,
its `( ) [ ] < > |` and the like percent-encoded so nothing in it can open or close markup. `@everyone`,
`@here` and role/user ids get a zero-width space (`discord.utils.escape_mentions`), and the adapter
disables mentions anyway (`AllowedMentions.none()`), so nobody is pinged.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

with warnings.catch_warnings():
    # discord.py imports the stdlib's deprecated audioop (voice); we use no voice
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
from discord.utils import escape_mentions

from bot.adapters.text import ELLIPSIS, cut, link_url
from bot.models import Button, Card, Highlighted, Reply

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR = 256
MAX_TOTAL = 6000
MAX_BUTTONS = 25  # 5 rows of 5
MAX_LABEL = 80

URL_SAFE = ":/?#@!$&'*+,;=%~.-_"  # everything but parentheses, spaces and the like stays as is
UPDATED_PREFIX = "Updated: "
READ_MORE = "Read the whole post"
BACKGROUND = "Some background"
NEW_COLOUR = discord.Colour(0x2B6CB0)
UPDATED_COLOUR = discord.Colour(0xD97706)


@dataclass(frozen=True, slots=True)
class Message:
    """One Discord message of a reply: content, up to ten embeds, and (on the last) buttons."""

    content: str
    embeds: tuple[discord.Embed, ...] = ()
    buttons: tuple[Button, ...] = ()


def size(text: str) -> int:
    """A conservative length: the larger of code points and UTF-16 code units."""
    return max(len(text), len(text.encode("utf-16-le")) // 2)


def fit(text: str, limit: int, *, suffix: str = "") -> str:
    """`text` cut on a word with "…" so that, with `suffix` appended when cut, it fits in `limit`."""
    if size(text) <= limit:
        return text
    room = limit - size(suffix)
    while room > 0:
        head = cut(text, room)
        # never leave a lone escaping backslash in front of the ellipsis
        if head.endswith(ELLIPSIS) and head[:-1].endswith("\\") and not head[:-1].endswith("\\\\"):
            head = head[:-2] + ELLIPSIS
        result = head + suffix
        if size(result) <= limit:
            return result
        room -= size(result) - limit
    return cut(suffix, limit) if suffix else ""


# Discord's own autolink rule (a bare URL, or one in <…> that suppresses its preview)
_URL = re.compile(r"<https?://[^\s<>]+>|https?://[^\s<]+[^<.,:;\"')\]\s]")
_SPECIAL = re.compile(r"([\\*_~|`\[\]()<>])")
_LINE_START = re.compile(r"^([^\S\n]*)([#+-]|\d+(?=\.))", re.MULTILINE)


def _escape_plain(text: str) -> str:
    return escape_mentions(_SPECIAL.sub(r"\\\1", text))


def _escape_url(url: str) -> str:
    if url.startswith("<"):
        return "<" + quote(url[1:-1], safe=URL_SAFE) + ">"
    return quote(url, safe=URL_SAFE)


def escape(text: str) -> str:
    """Post text as inert Discord markdown: it shows as written, formats nothing, links only bare URLs."""
    out: list[str] = []
    last = 0
    for match in _URL.finditer(text):
        out.append(_escape_plain(text[last : match.start()]))
        out.append(_escape_url(match.group()))
        last = match.end()
    out.append(_escape_plain(text[last:]))
    return _LINE_START.sub(_escape_line_start, "".join(out))


def _escape_line_start(match: re.Match[str]) -> str:
    lead, marker = match.groups()
    return f"{lead}{marker}\\" if marker[0].isdigit() else f"{lead}\\{marker}"


def esc(text: str) -> str:
    return escape(text)


def safe_url(url: str | None) -> str | None:
    """The URL if Discord will take it (http/https with a host, at most 2048), else None."""
    found = link_url(url)
    return found if found is not None and size(found) <= 2048 else None


def link(label: str, url: str) -> str:
    """A markdown link whose URL cannot break out of its parentheses."""
    return f"[{label}]({quote(url, safe=URL_SAFE)})"


def highlighted(text: Highlighted, limit: int) -> str:
    """A search excerpt with its matches in bold, cut on a word without breaking the bold markers;
    one from a caption or the background starts with its label in italics."""
    out: list[str] = []
    used = 0
    if text.label and size(text.label) + 3 < limit:
        out.append(f"*{esc(text.label)}* ")
        used += size(out[0])
    for run, hit in text.segments:
        piece = esc(run)
        if hit and run.strip():
            piece = f"**{piece}**"
        if used + size(piece) <= limit:
            out.append(piece)
            used += size(piece)
            continue
        room = limit - used
        if not hit and room > size(ELLIPSIS):
            out.append(fit(piece, room))
        elif room >= size(ELLIPSIS):
            out.append(ELLIPSIS)
        break
    return "".join(out)


def format_time(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%d %b %H:%M %Z")


def render_card(card: Card, *, zone: ZoneInfo, budget: int = MAX_TOTAL) -> discord.Embed:
    """One post as an embed no larger than `budget` characters in all (and within every part's limit)."""
    url = safe_url(card.url)
    title = fit(
        esc(UPDATED_PREFIX + card.title if card.is_update else card.title),
        min(MAX_TITLE, max(budget * 3 // 10, 20)),
    )
    embed = discord.Embed(
        title=title or "(untitled)",
        url=url,
        timestamp=card.published_at,
        colour=UPDATED_COLOUR if card.is_update else NEW_COLOUR,
    )
    author = fit(
        " · ".join(p for p in (card.byline, _location(card)) if p),
        min(MAX_AUTHOR, max(budget // 8, 20)),
    )
    if author:
        embed.set_author(name=author)
    parts = [card.source_title or "", f"/post {card.ref}"]
    if card.time_estimated:  # the embed's own timestamp cannot say so
        parts.append("about " + format_time(card.published_at, zone))
    if card.updated_at is not None:
        parts.append("edited " + format_time(card.updated_at, zone))
    footer = fit(" · ".join(p for p in parts if p), min(MAX_FOOTER, budget // 5))
    embed.set_footer(text=footer)

    image = next((i for i in card.images if safe_url(i.url)), None)
    if image is not None and image.url:
        embed.set_image(url=safe_url(image.url))
    fields = _fields(card, url)
    room = budget - size(embed.title or "") - size(author) - size(footer)
    # fields give way to the description: it is the post
    while fields and room - sum(size(n) + size(v) for n, v in fields) < min(400, room // 2):
        fields.pop()
    for name, value in fields[:MAX_FIELDS]:
        embed.add_field(name=name, value=value, inline=False)
        room -= size(name) + size(value)
    embed.description = _description(card, url, max(0, min(MAX_DESCRIPTION, room))) or None
    return embed


def _description(card: Card, url: str | None, limit: int) -> str:
    if card.snippet is not None and card.snippet.segments:
        return highlighted(card.snippet, limit)
    text = esc("\n\n".join(p for p in card.body if p.strip()))
    more = f"\n{link(READ_MORE, url)}" if url else ""
    return fit(text, limit, suffix=more) if size(more) < limit else fit(text, limit)


def _fields(card: Card, url: str | None) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if card.matched_terms:
        fields.append(
            ("Matches", fit(", ".join(esc(t) for t in card.matched_terms), MAX_FIELD_VALUE))
        )
    if card.background and card.background.strip():
        more = f"\n{link('More', url)}" if url else ""
        fields.append((BACKGROUND, fit(esc(card.background), MAX_FIELD_VALUE, suffix=more)))
    captions = [
        " — ".join(p for p in (esc(i.caption.strip()), i.credit and f"({esc(i.credit)})") if p)
        for i in card.images
    ]
    captions = [c for c in captions if c]
    if captions:
        name = "Photo" if len(card.images) == 1 else f"Photos ({len(card.images)})"
        text = captions[0]
        if len(card.images) > 1:
            text += f"\n+{len(card.images) - 1} more at the post"
        fields.append((name, fit(text, MAX_FIELD_VALUE)))
    return [(fit(n, MAX_FIELD_NAME), v) for n, v in fields if v.strip()]


def render_reply(reply: Reply, *, zone: ZoneInfo) -> list[Message]:
    """A handler's reply as Discord messages: ≤ 10 embeds and ≤ 6000 embed characters each."""
    content = fit(esc(reply.text), MAX_CONTENT) if reply.text.strip() else ""
    buttons = tuple(b.model_copy(update={"label": fit(b.label, MAX_LABEL)}) for b in reply.buttons)[
        :MAX_BUTTONS
    ]
    chunks: list[Sequence[Card]] = [
        reply.cards[i : i + MAX_EMBEDS] for i in range(0, len(reply.cards), MAX_EMBEDS)
    ] or [()]
    messages: list[Message] = []
    for n, chunk in enumerate(chunks):
        budget = MAX_TOTAL // max(1, len(chunk))
        embeds = tuple(render_card(card, zone=zone, budget=budget) for card in chunk)
        messages.append(Message(content=content if n == 0 else "", embeds=embeds))
    if not messages[0].content and not messages[0].embeds:
        messages[0] = Message(content="Done." if not reply.error else "Sorry, that didn't work.")
    last = messages[-1]
    messages[-1] = Message(content=last.content, embeds=last.embeds, buttons=buttons)
    return messages


# --- buttons -------------------------------------------------------------------------------------------

BUTTON_TEMPLATE = r"ld(?P<kind>[:#])(?P<value>.{1,97})"
MAX_CUSTOM_ID = 100


class ButtonIds:
    """Custom ids for command buttons: "ld:<command>" when that fits in Discord's 100 characters
    (works after a restart too), else "ld#<short id>" for a command remembered here (the latest 4096)."""

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self._long: OrderedDict[str, str] = OrderedDict()

    def custom_id(self, command: str) -> str:
        if size("ld:" + command) <= MAX_CUSTOM_ID and "\n" not in command:
            return "ld:" + command
        key = hashlib.sha256(command.encode()).hexdigest()[:16]
        self._long[key] = command
        self._long.move_to_end(key)
        while len(self._long) > self.keep:
            self._long.popitem(last=False)
        return "ld#" + key

    def command(self, custom_id: str) -> str | None:
        """The command a button runs; None when it was a short id this process no longer knows."""
        match = re.fullmatch(BUTTON_TEMPLATE, custom_id)
        if match is None:
            return None
        return match["value"] if match["kind"] == ":" else self._long.get(match["value"])


class CommandButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=BUTTON_TEMPLATE
):
    """A button whose custom id says what to run; discord.py rebuilds it from any click it sees."""

    def __init__(self, custom_id: str, label: str = "More") -> None:
        super().__init__(
            discord.ui.Button(label=label, custom_id=custom_id, style=discord.ButtonStyle.secondary)
        )
        self.custom_id_value = custom_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> CommandButton:
        return cls(match.group(0), getattr(item, "label", None) or "More")


ClickHandler = Callable[[discord.Interaction[discord.Client], str], Awaitable[None]]


def button_class(on_click: ClickHandler) -> type[CommandButton]:
    """CommandButton answering through one adapter (registered on its client as a dynamic item)."""

    class AdapterButton(CommandButton, template=BUTTON_TEMPLATE):
        async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
            await on_click(interaction, self.custom_id_value)

    return AdapterButton


def render_view(
    buttons: Sequence[Button], button_type: type[CommandButton], ids: ButtonIds
) -> discord.ui.View | None:
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)  # only dynamic items: nothing is kept per message
    for button in buttons:
        view.add_item(button_type(ids.custom_id(button.command), button.label))
    return view


def embeds_size(embeds: Sequence[discord.Embed]) -> int:
    """What Discord counts against the 6000 limit of one message."""
    return sum(len(e) for e in embeds)


def _location(card: Card) -> str | None:
    """The place, unless the byline already names it ("From Ana Diaz in Kyiv")."""
    return card.location if card.location and card.location not in (card.byline or "") else None
