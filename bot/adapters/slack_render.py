"""Slack-style webhook payloads: Slack Block Kit, Mattermost/Rocket.Chat attachments, Teams Adaptive Cards.

Post text is never trusted. Per flavor:

- **Slack mrkdwn**: `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;` (Slack's own rule), so no `<!channel>`,
  `<@U…>` or `<url|fake>` survives. Slack has no escape character for `* _ ~ \\``, so those are replaced by
  their fullwidth look-alikes (`＊ ＿ ～ ｀`): a zero-width joiner between them is invisible but Slack's
  parser treats it inconsistently, while a look-alike is certain never to format. They are rare in news
  text, so readers barely notice. A `>` starting a line (a quote) gets the look-alike `＞`. Post text also
  goes out with `"verbatim": true`, so Slack does not auto-link channel names or parse bare mentions.
- **plain_text** (Slack header): Slack shows it literally; a `<` before text (`<!channel>`, `<@U1>`,
  `<https://…|x>`) still gets a word joiner (U+2060) after it in case a client parses it.
- **Markdown** (Mattermost, Rocket.Chat, Teams): markdown specials get a backslash, line-start list and
  heading markers too, entity-like `&x;` gets `\\&`, so `[x](y)`, `**bold**` and `<url>` stay literal.
  Our own links (`[Read the full post ›](permalink)`) percent-encode the permalink's `(`, `)`, `[`, `]`,
  `\\`, spaces and `<`, `>`, so a permalink cannot close the link early and append markup of its own.
- **Mentions** everywhere: `@word` (`@channel`, `@here`, `@all`, `@user`) gets a word joiner after the `@`:
  it reads the same and pings nobody.

Every limit is met by cutting on a word with a link to the full post (`bot.adapters.text.cut`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from bot.adapters.text import cut
from bot.models import Card, Reply, Segment

Flavor = Literal["slack", "mattermost", "teams"]
FLAVORS: tuple[Flavor, ...] = ("slack", "mattermost", "teams")
Payload = dict[str, Any]

# Slack's published limits, and what we keep to.
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 4000  # Slack truncates at 40,000; beyond ~4,000 nobody reads a notification
SLACK_BUTTON_MAX = 75
SLACK_URL_MAX = 3000
MARKDOWN_TEXT_MAX = 4000  # Mattermost allows 16,383; keep the same reading length as Slack
TEAMS_MAX_BYTES = 28 * 1024
OPEN_LABEL = "Open live blog"
MORE_LABEL = "Read the full post"
MATTERMOST_COLOR = "#1d4ed8"

WORD_JOINER = "\u2060"
URL_SAFE = ":/?#@!$&'*+,;=%~.-_"  # kept as they are in a markdown link's URL; `()[]\\<>` and spaces are not
_MENTION = re.compile(r"(?<!\w)@(?=\w)")
_SLACK_CONTROL = str.maketrans({"*": "＊", "_": "＿", "~": "～", "`": "｀"})
_SLACK_QUOTE = re.compile(r"^(\s*)&gt;", re.MULTILINE)
_PLAIN_TOKEN = re.compile(r"<(?=\S)")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#|~!])")
_MD_BULLET = re.compile(r"^(\s*)([-+=])", re.MULTILINE)
_MD_NUMBERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")


# --- escaping ----------------------------------------------------------------------------------------


def _no_mentions(text: str) -> str:
    return _MENTION.sub("@" + WORD_JOINER, text)


def escape_mrkdwn(text: str) -> str:
    """Post text as inert Slack mrkdwn: no mentions, links, or formatting."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SLACK_QUOTE.sub(r"\1＞", text)
    return _no_mentions(text.translate(_SLACK_CONTROL))


def escape_plain(text: str) -> str:
    """Text for Slack plain_text objects, which are shown as typed: only mentions are broken."""
    return _no_mentions(_PLAIN_TOKEN.sub("<" + WORD_JOINER, text))


def escape_markdown(text: str) -> str:
    """Post text as inert markdown (Mattermost, Rocket.Chat, Teams TextBlock)."""
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_ENTITY.sub(r"\\&", text)
    text = _MD_BULLET.sub(r"\1\\\2", text)
    text = _MD_NUMBERED.sub(r"\1\\\2", text)
    return _no_mentions(text)


def safe_link(url: str | None, limit: int = SLACK_URL_MAX) -> str | None:
    """The URL if it is a plain http(s) link we may put behind a button, else None."""
    if not url or len(url) > limit or any(c in url for c in "<>|\"' \n\t"):
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


# --- highlighting and cutting ------------------------------------------------------------------------


def highlight(text: str, terms: Sequence[str]) -> tuple[Segment, ...]:
    """Mark each word that starts with a matched term (case-insensitive), e.g. 'sanction' → 'sanctions'."""
    words = sorted({t.strip('"*“” ') for t in terms} - {""}, key=len, reverse=True)
    if not words or not text:
        return ((text, False),) if text else ()
    pattern = re.compile(
        r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")\w*", re.IGNORECASE
    )
    segments: list[Segment] = []
    last = 0
    for match in pattern.finditer(text):
        if match.start() > last:
            segments.append((text[last : match.start()], False))
        segments.append((match.group(), True))
        last = match.end()
    if last < len(text):
        segments.append((text[last:], False))
    return tuple(segments)


def render_segments(
    segments: Iterable[Segment], escape: Callable[[str], str], bold: Callable[[str], str]
) -> str:
    out: list[str] = []
    for text, marked in segments:
        core = text.strip()
        if marked and core:
            lead = text[: len(text) - len(text.lstrip())]
            trail = text[len(text.rstrip()) :]
            out.append(lead + bold(escape(core)) + trail)
        else:
            out.append(escape(text))
    return "".join(out)


def fit(plain: str, limit: int, render: Callable[[str], str]) -> tuple[str, bool]:
    """Render `plain`, cut on a word so that the *rendered* text fits `limit`; (text, was_cut)."""
    budget = limit
    while True:
        shortened = cut(plain, budget)
        rendered = render(shortened)
        if len(rendered) <= limit or budget <= 1:
            return rendered, shortened != plain
        budget -= max(1, len(rendered) - limit)


def _slack_bold(text: str) -> str:
    return f"*{text}*"


def _md_bold(text: str) -> str:
    return f"**{text}**"


def _card_text(card: Card) -> tuple[str, tuple[Segment, ...] | None]:
    """The card's readable text, and the search snippet's own highlighting when it has one."""
    if card.snippet is not None and card.snippet.segments:
        if card.snippet.label:  # from a caption or the background: say so first
            label = card.snippet.label + " "
            return label + card.snippet.plain, ((label, False), *card.snippet.segments)
        return card.snippet.plain, card.snippet.segments
    return "\n\n".join(p for p in card.body if p.strip()), None


def render_body(
    card: Card,
    limit: int,
    *,
    escape: Callable[[str], str],
    bold: Callable[[str], str],
    more: Callable[[str], str],
) -> str:
    """The body with matched terms in bold, cut to `limit` with a link to the full post if needed."""
    plain, segments = _card_text(card)
    terms = card.matched_terms or tuple(t for t, marked in segments or () if marked)
    link = safe_link(card.url)
    tail = "\n" + more(link) if link else ""

    def render(text: str) -> str:
        if segments is not None and text == plain:
            return render_segments(segments, escape, bold)
        return render_segments(highlight(text, terms), escape, bold)

    text, was_cut = fit(plain, limit - len(tail), render)
    return text + tail if was_cut else text


# --- shared pieces -----------------------------------------------------------------------------------


def format_time(moment: datetime, zone: ZoneInfo) -> str:
    """'21 Jan 2022, 14:05 CET' in the configured time zone."""
    local = moment.astimezone(zone)
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname() or ''}".rstrip()


def context_parts(card: Card, zone: ZoneInfo) -> list[str]:
    """Byline, place, time (with the edit time for an update) and blog name: plain, unescaped."""
    when = ("about " if card.time_estimated else "") + format_time(card.published_at, zone)
    if card.is_update and card.updated_at is not None:
        when += f" (updated {format_time(card.updated_at, zone)})"
    parts = [card.byline, card.location, when, card.source_title]
    return [p.strip() for p in parts if p and p.strip()]


def _title(card: Card) -> str:
    title = card.title.strip() or "(untitled post)"
    return f"Updated: {title}" if card.is_update else title


# --- Slack Block Kit ---------------------------------------------------------------------------------


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _slack_more(url: str) -> str:
    return f"<{url}|{MORE_LABEL} ›>"


def _matched_line(card: Card, escape: Callable[[str], str], bold: Callable[[str], str]) -> str:
    return "Matched: " + ", ".join(bold(escape(t)) for t in card.matched_terms)


def slack_card_blocks(
    card: Card, zone: ZoneInfo, *, command: str | None = None
) -> list[dict[str, Any]]:
    """A post as blocks: header, body, context, matched terms, button.

    With `command` (a slash-command reply) the card is compact: a bold linked title line instead of the
    header and button, and the command that opens the whole post.
    """
    compact = command is not None
    blocks: list[dict[str, Any]] = []
    limit = SLACK_SECTION_MAX
    link = safe_link(card.url)
    if compact:
        title = escape_mrkdwn(cut(_title(card), 300))
        line = f"*<{link}|{title}>*" if link else f"*{title}*"
        limit -= len(line) + 1
    else:
        header = fit(_title(card), SLACK_HEADER_MAX, escape_plain)[0]
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": header}})
    body = render_body(card, limit, escape=escape_mrkdwn, bold=_slack_bold, more=_slack_more)
    if compact:
        body = f"{line}\n{body}" if body else line
    if body:
        blocks.append({"type": "section", "text": _mrkdwn(body)})
    parts = [escape_mrkdwn(cut(p, 300)) for p in context_parts(card, zone)]
    if command is not None:
        parts.append(f"`{escape_mrkdwn(f'{command} post {card.ref}')}`")
    if parts:
        blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(parts))]})
    if card.matched_terms:
        matched = _matched_line(card, escape_mrkdwn, _slack_bold)
        blocks.append({"type": "context", "elements": [_mrkdwn(matched[:SLACK_SECTION_MAX])]})
    if link and not compact:
        button = {"type": "button", "text": {"type": "plain_text", "text": OPEN_LABEL}, "url": link}
        blocks.append({"type": "actions", "elements": [{**button, "action_id": "open_live_blog"}]})
    return blocks


def slack_fallback(card: Card) -> str:
    """The notification text shown where blocks are not (push notifications, old clients)."""
    pieces = [_title(card), card.source_title or ""]
    if card.matched_terms:
        pieces.append("Matched: " + ", ".join(card.matched_terms))
    plain = " — ".join(p for p in pieces if p)
    return fit(plain, SLACK_TEXT_MAX, escape_mrkdwn)[0]


def slack_payload(card: Card, zone: ZoneInfo) -> Payload:
    return {
        "text": slack_fallback(card),
        "blocks": slack_card_blocks(card, zone),
        "unfurl_links": False,
        "unfurl_media": False,
    }


# --- Mattermost / Rocket.Chat ------------------------------------------------------------------------


def md_url(url: str) -> str:
    """A URL that stays whole inside markdown's `[label](url)`: nothing in it can end the link."""
    return quote(url, safe=URL_SAFE)


def _md_more(url: str) -> str:
    return f"[{MORE_LABEL} ›]({md_url(url)})"


def mattermost_payload(card: Card, zone: ZoneInfo) -> Payload:
    """Slack-compatible `text` plus one legacy attachment: what Mattermost and Rocket.Chat render."""
    head = f"**{escape_markdown(cut(_title(card), 300))}**"
    if card.matched_terms:
        head += "\n" + _matched_line(card, escape_markdown, _md_bold)
    footer = " · ".join(escape_markdown(cut(p, 300)) for p in context_parts(card, zone))
    link = safe_link(card.url)
    extra = [f"_{footer}_"] if footer else []
    if link:
        extra.append(f"[{OPEN_LABEL}]({md_url(link)})")
    tail = "\n\n" + " · ".join(extra) if extra else ""
    room = MARKDOWN_TEXT_MAX - len(head) - len(tail)
    body = render_body(card, room, escape=escape_markdown, bold=_md_bold, more=_md_more)
    attachment: dict[str, Any] = {
        "fallback": fit(_title(card), 300, escape_plain)[0],
        "color": MATTERMOST_COLOR,
        "text": body + tail if body else tail.lstrip(),
    }
    return {"text": head, "attachments": [attachment]}


# --- Microsoft Teams ---------------------------------------------------------------------------------


def teams_payload(card: Card, zone: ZoneInfo) -> Payload:
    """An Adaptive Card 1.4 in the message envelope that Teams Workflows webhooks take (≤ 28 KB)."""
    limit = MARKDOWN_TEXT_MAX
    while True:
        payload = _teams(card, zone, limit)
        if len(json.dumps(payload, ensure_ascii=False).encode("utf-8")) <= TEAMS_MAX_BYTES:
            return payload
        limit //= 2


def _teams(card: Card, zone: ZoneInfo, limit: int) -> Payload:
    def block(text: str, **style: Any) -> dict[str, Any]:
        return {"type": "TextBlock", "text": text, "wrap": True, **style}

    body = [block(escape_markdown(cut(_title(card), 300)), size="Large", weight="Bolder")]
    text = render_body(card, limit, escape=escape_markdown, bold=_md_bold, more=_md_more)
    if text:
        body.append(block(text))
    context = " · ".join(escape_markdown(cut(p, 300)) for p in context_parts(card, zone))
    if context:
        body.append(block(context, isSubtle=True, size="Small", spacing="Small"))
    if card.matched_terms:
        body.append(block(_matched_line(card, escape_markdown, _md_bold), size="Small"))
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    link = safe_link(card.url)
    if link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": OPEN_LABEL, "url": link}]
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "content": content}
    return {"type": "message", "attachments": [attachment]}


RENDERERS: dict[str, Callable[[Card, ZoneInfo], Payload]] = {
    "slack": slack_payload,
    "mattermost": mattermost_payload,
    "teams": teams_payload,
}


def render_card(flavor: str, card: Card, zone: ZoneInfo) -> Payload:
    """The webhook payload for `card` in `flavor` ('slack', 'mattermost' or 'teams'); ValueError else."""
    try:
        renderer = RENDERERS[flavor]
    except KeyError:
        raise ValueError(f"unknown webhook flavor {flavor!r}") from None
    return renderer(card, zone)


# --- slash-command replies ---------------------------------------------------------------------------


def slack_reply(reply: Reply, zone: ZoneInfo, *, command: str = "/livedesk") -> Payload:
    """A handler's reply as a slash-command response: text, compact post cards, next commands."""
    blocks: list[dict[str, Any]] = []
    text = reply.text.strip()
    if text:
        shown = fit(text, SLACK_SECTION_MAX - 10, escape_mrkdwn)[0]
        blocks.append(
            {"type": "section", "text": _mrkdwn((":warning: " if reply.error else "") + shown)}
        )
    for card in reply.cards:
        blocks.extend(slack_card_blocks(card, zone, command=command))
        blocks.append({"type": "divider"})
    if blocks and blocks[-1]["type"] == "divider":
        blocks.pop()
    if reply.buttons:
        hints = [
            f"`{command} {escape_mrkdwn(b.command)}` ({escape_mrkdwn(b.label)})"
            for b in reply.buttons
        ]
        blocks.append({"type": "context", "elements": [_mrkdwn(cut(" · ".join(hints), 2000))]})
    if len(blocks) > SLACK_MAX_BLOCKS:
        note = {"type": "context", "elements": [_mrkdwn("(more results left out)")]}
        blocks = [*blocks[: SLACK_MAX_BLOCKS - 1], note]
    fallback = text or (reply.cards[0].title if reply.cards else "Done.")
    return {
        "response_type": "ephemeral" if reply.ephemeral else "in_channel",
        "text": fit(fallback, SLACK_TEXT_MAX, escape_mrkdwn)[0],
        "blocks": blocks,
    }
