"""Telegram HTML for neutral cards and replies, and the few Telegram objects a reply becomes.

Telegram counts a message's length *after* entity parsing, i.e. the visible text, and rejects unknown or
unbalanced tags. So a message is built from pieces, each knowing its visible text; when the whole is too
long the body piece is cut on a word (then images, then the rest), and the markup around it stays whole.
Lengths are measured in UTF-16 code units, as Telegram's own offsets are: never more than it counts.
"""

from __future__ import annotations

import html
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InputTextMessageContent,
    LinkPreviewOptions,
)
from telegram.constants import ParseMode

from bot.adapters.text import ELLIPSIS, cut, link_url
from bot.models import Button, Card, Highlighted, Reply

MAX_TEXT = 4096
UPDATED_PREFIX = "✎ Updated: "
READ_MORE = "Read the full post ›"
SEPARATOR = "\n\n"
MAX_CALLBACK_BYTES = 64


def visible_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units of the visible text."""
    return len(text.encode("utf-16-le")) // 2


def esc(text: str) -> str:
    """Escape text for Telegram HTML (only <, > and &: quotes are fine outside attributes)."""
    return html.escape(text, quote=False)


def safe_url(url: str | None) -> str | None:
    """The URL if it may become a link (http/https with a host), else None."""
    return link_url(url)


def link(url: str, inner_html: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{inner_html}</a>'


def format_time(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%d %b %Y, %H:%M} {local.tzname() or zone.key}"


@dataclass(frozen=True, slots=True)
class _Piece:
    """Visible `prefix`, then `before` + escaped `text` + `after`; only `text` is ever cut.

    `fixed_html` replaces the whole for pieces with inner markup (never cut, only dropped).
    """

    text: str = ""
    before: str = ""
    after: str = ""
    prefix: str = ""
    fixed_html: str | None = None
    fixed_visible: str = ""

    @property
    def html(self) -> str:
        if self.fixed_html is not None:
            return self.fixed_html
        return f"{esc(self.prefix)}{self.before}{esc(self.text)}{self.after}" if self.text else ""

    @property
    def visible(self) -> int:
        if self.fixed_html is not None:
            return visible_length(self.fixed_visible)
        return visible_length(self.prefix) + visible_length(self.text) if self.text else 0

    @property
    def empty(self) -> bool:
        return self.visible == 0


def _cut_visible(text: str, limit: int) -> str:
    """cut() measured in UTF-16 units (astral characters count twice)."""
    room = limit
    result = cut(text, room)
    while visible_length(result) > limit and room > 0:
        room -= visible_length(result) - limit
        result = cut(text, room)
    return result


def _join(pieces: Iterable[_Piece]) -> tuple[str, int]:
    kept = [p for p in pieces if not p.empty]
    html_text = SEPARATOR.join(p.html for p in kept)
    visible = sum(p.visible for p in kept) + visible_length(SEPARATOR) * max(0, len(kept) - 1)
    return html_text, visible


def _fit(pieces: list[_Piece], cut_order: Sequence[int], limit: int) -> list[_Piece]:
    """Cut (then drop) pieces in `cut_order` until the visible whole fits `limit`."""
    for index in cut_order:
        _, total = _join(pieces)
        if total <= limit:
            break
        piece = pieces[index]
        # the prefix ("✎ Updated: ") is visible too, and never cut: only the text gets the room left
        room = limit - (total - piece.visible) - visible_length(piece.prefix)
        if piece.fixed_html is None and room > len(ELLIPSIS) + 10:
            pieces[index] = replace(piece, text=_cut_visible(piece.text, room))
        else:
            pieces[index] = _Piece()
    return pieces


def _meta_line(card: Card, zone: ZoneInfo) -> str:
    parts = [("about " if card.time_estimated else "") + format_time(card.published_at, zone)]
    if card.updated_at and card.updated_at != card.published_at:
        parts.append(f"updated {format_time(card.updated_at, zone)}")
    location = card.location if card.location and card.location not in (card.byline or "") else None
    parts += [p for p in (card.byline, location, card.source_title) if p]
    return " · ".join(parts)


def _title_piece(card: Card) -> _Piece:
    url = safe_url(card.url)
    prefix = UPDATED_PREFIX if card.is_update else ""
    title = card.title.strip() or "(untitled)"
    if url:
        return _Piece(
            text=title,
            prefix=prefix,
            before=f'<b><a href="{html.escape(url, quote=True)}">',
            after="</a></b>",
        )
    return _Piece(text=title, prefix=prefix, before="<b>", after="</b>")


def _terms_piece(terms: Sequence[str]) -> _Piece:
    if not terms:
        return _Piece()
    label = "Matches: "
    shown = ", ".join(f"<b>{esc(t)}</b>" for t in terms)
    return _Piece(fixed_html=f"{label}{shown}", fixed_visible=label + ", ".join(terms))


def _image_text(card: Card) -> str:
    lines = []
    for image in card.images:
        caption = image.caption.strip()
        credit = (image.credit or "").strip()
        if caption and credit:
            lines.append(f"📷 {caption} ({credit})")
        elif caption or credit:
            lines.append(f"📷 {caption or credit}")
    return "\n".join(lines)


def render_card(card: Card, zone: ZoneInfo, *, limit: int = MAX_TEXT) -> str:
    """A whole post: bold linked title, time/byline line, body, image captions; cut to `limit`."""
    body = list(card.body)
    if card.background:
        body.append(f"Background: {card.background}")
    pieces = [
        _title_piece(card),
        _Piece(text=_meta_line(card, zone), before="<i>", after="</i>"),
        _terms_piece(card.matched_terms),
        _Piece(text=SEPARATOR.join(p.strip() for p in body if p.strip())),
        _Piece(text=_image_text(card), before="<i>", after="</i>"),
    ]
    html_text, total = _join(pieces)
    if total <= limit:
        return html_text
    url = safe_url(card.url)
    more = _Piece(fixed_html=link(url, esc(READ_MORE)), fixed_visible=READ_MORE) if url else None
    room = limit - (more.visible + visible_length(SEPARATOR) if more else 0)
    fitted = _fit(pieces, cut_order=(3, 4, 2, 1, 0), limit=room)
    if fitted[3].empty and not pieces[3].empty:
        fitted[3] = _Piece(text=ELLIPSIS)  # say that something was left out
        fitted = _fit(fitted, cut_order=(4, 2, 1, 0), limit=room)
    return _join([*fitted, *([more] if more else [])])[0]


def render_highlighted(text: Highlighted) -> str:
    """Matches in bold; a snippet from a caption or the background starts with its label."""
    label = f"<i>{esc(text.label)}</i> " if text.label else ""
    return label + "".join(
        f"<b>{esc(run)}</b>" if hit else esc(run) for run, hit in text.segments if run
    )


def render_hit(card: Card, zone: ZoneInfo, *, limit: int = MAX_TEXT) -> str:
    """A search result: bold linked title, time line, and the snippet with its matches in bold."""
    snippet = card.snippet if card.snippet and card.snippet.plain.strip() else None
    label = len(snippet.label) + 1 if snippet and snippet.label else 0
    room = limit - (visible_length(snippet.plain) + 1 + label if snippet else 0)
    pieces = [
        _title_piece(card),
        _Piece(text=f"{_meta_line(card, zone)} · /post {card.ref}", before="<i>", after="</i>"),
    ]
    head, _ = _join(_fit(pieces, cut_order=(0, 1), limit=room))
    return f"{head}\n{render_highlighted(snippet)}" if snippet else head


def _split_text(text: str, limit: int) -> list[str]:
    """Plain text in chunks of at most `limit` visible units, split on lines where possible."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if visible_length(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
        while visible_length(line) > limit:
            head = _cut_visible(line, limit)
            chunks.append(head)
            line = line[len(head) - len(ELLIPSIS) :].lstrip()
        current = line
    if current:
        chunks.append(current)
    return chunks


def render_reply(reply: Reply, zone: ZoneInfo, *, limit: int = MAX_TEXT) -> list[str]:
    """A handler's reply as one or more messages, each within `limit` visible units."""
    blocks: list[tuple[str, int]] = [
        (esc(c), visible_length(c)) for c in _split_text(reply.text, limit)
    ]
    for card in reply.cards:
        if card.snippet is not None:
            rendered = render_hit(card, zone, limit=limit)
        else:
            rendered = render_card(card, zone, limit=limit)
        blocks.append((rendered, visible_length(html_to_text(rendered))))
    messages: list[str] = []
    current: list[str] = []
    used = 0
    for block, size in blocks:
        extra = size + (visible_length(SEPARATOR) if current else 0)
        if current and used + extra > limit:
            messages.append(SEPARATOR.join(current))
            current, used = [], 0
            extra = size
        current.append(block)
        used += extra
    if current:
        messages.append(SEPARATOR.join(current))
    return messages or ["…"]


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html_text: str) -> str:
    """The visible text of our own markup (tags dropped, entities decoded)."""
    parser = _VisibleText()
    parser.feed(html_text)
    parser.close()
    return "".join(parser.parts)


# --- Telegram objects -------------------------------------------------------------------------------


class CallbackCommands:
    """A button's callback_data is its command line when that fits Telegram's 64 bytes; a longer one
    is kept here (the newest `size`) and the button carries "#id"."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lines: OrderedDict[str, str] = OrderedDict()
        self._ids = itertools.count(1)

    def data(self, command: str) -> str:
        if len(command.encode()) <= MAX_CALLBACK_BYTES and not command.startswith("#"):
            return command
        key = f"#{next(self._ids)}"
        self._lines[key] = command
        while len(self._lines) > self.size:
            self._lines.popitem(last=False)
        return key

    def command(self, data: str) -> str | None:
        """The command line a button carries; None when it has expired."""
        return self._lines.get(data) if data.startswith("#") else data


def keyboard(buttons: Sequence[Button], callbacks: CallbackCommands) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    keys = [InlineKeyboardButton(b.label, callback_data=callbacks.data(b.command)) for b in buttons]
    return InlineKeyboardMarkup([keys[i : i + 3] for i in range(0, len(keys), 3)])


def inline_article(
    index: int, card: Card, zone: ZoneInfo, previews: LinkPreviewOptions
) -> InlineQueryResultArticle:
    """One post offered in inline mode: its title and snippet to pick, the whole card to share."""
    plain = card.snippet.plain if card.snippet else " ".join(card.body)
    if card.snippet is not None and card.snippet.label:  # from a caption or the background
        plain = f"{card.snippet.label} {plain}"
    return InlineQueryResultArticle(
        id=f"{index}:{card.post_id}".encode()[:64].decode(errors="ignore"),
        title=card.title[:256] or "(untitled)",
        description=plain[:200] or None,
        input_message_content=InputTextMessageContent(
            render_card(card.model_copy(update={"snippet": None}), zone),
            parse_mode=ParseMode.HTML,
            link_preview_options=previews,
        ),
    )
