"""The terminal: posts and replies rendered with rich, and a command prompt for the operator.

Every piece of post text reaches rich as a `Text` object, never as a markup string, so a post that
contains "[bold]" shows exactly that; and without control characters or escape sequences (rich passes
ESC through), so nothing a feed or a platform said can clear the screen or retitle the window. A
post's panel carries the post's own number (what `/post N` opens); an edit prints an "✎ Updated"
block that names the same number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import TextIO
from zoneinfo import ZoneInfo

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from bot.adapters.base import Adapter, AdapterContext, Capabilities
from bot.models import Card, ChatKind, Highlighted, Reply, Request, Target
from bot.redact import printable
from handlers.base import format_time, split_command_line

log = logging.getLogger(__name__)

UTC_ZONE = ZoneInfo("UTC")
CONSOLE_TARGET = Target(platform="terminal", address="console", kind="terminal")
REFERENCE_PREFIX = "term-"
QUIT_COMMANDS = frozenset({"quit", "exit"})

HIGHLIGHT_STYLE = "bold black on yellow"
META_STYLE = "dim"
ERROR_STYLE = "bold red"


class TerminalAdapter(Adapter):
    """Prints to a rich console; with `prompt=True` it also reads command lines from `input_stream`."""

    platform = "terminal"
    capabilities = Capabilities(max_text=1_000_000, markup="rich", can_edit=True)

    def __init__(
        self,
        *,
        console: Console | None = None,
        timezone: ZoneInfo = UTC_ZONE,
        prompt: bool = False,
        input_stream: TextIO | None = None,
        on_quit: Callable[[], None] | None = None,
        hint: str = "Type a command — help, latest 3, search WORDS, subscribe — or quit.",
    ) -> None:
        self.console = console or Console(highlight=False)
        self.timezone = timezone
        self.prompt = prompt
        self.input_stream = input_stream
        self.on_quit = on_quit
        self.hint = hint
        self._more: str | None = None  # the last reply's "More ›" command, run by typing "more"
        self._prompt_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self, context: AdapterContext) -> None:
        if self.prompt:
            self.console.print(Text(self.hint, style=META_STYLE))
            self._prompt_task = asyncio.create_task(
                self._run_prompt(context), name="terminal prompt"
            )

    async def stop(self) -> None:
        task, self._prompt_task = self._prompt_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_closed(self) -> None:
        """Until the prompt has ended (end of input or quit); returns at once without a prompt."""
        if self._prompt_task is not None:
            await asyncio.shield(self._prompt_task)

    # --- sending ------------------------------------------------------------------------------------

    async def send(self, target: Target, card: Card) -> str:
        self.console.print(self.render_card(card, numbered=True))
        return f"{REFERENCE_PREFIX}{card.ref}"

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        label = f"#{card.ref}"
        self.console.print(self.render_card(card, banner=f"✎ Updated {label}", numbered=True))
        return reference

    # --- rendering ----------------------------------------------------------------------------------

    def render_card(
        self, card: Card, *, numbered: bool = False, banner: str | None = None
    ) -> Panel:
        """A post as a panel: title, when/who/where, the text (or a search snippet), images, link."""
        parts: list[RenderableType] = []
        title = Text(printable(card.title), style="bold")
        if card.is_update:
            title = Text.assemble(("Updated: ", "bold magenta"), title)
        if banner:
            title = Text.assemble((banner + " ", "bold magenta"), title)
        parts.append(title)

        when = format_time(card.published_at, self.timezone)
        meta = [f"about {when}" if card.time_estimated else when]
        if card.updated_at and card.updated_at != card.published_at:
            meta.append(f"updated {format_time(card.updated_at, self.timezone)}")
        if card.byline:
            meta.append(card.byline)
        if card.location and card.location not in (card.byline or ""):
            meta.append(card.location)
        parts.append(Text(printable(" · ".join(meta)), style=META_STYLE))

        if card.snippet is not None and card.snippet.segments:
            parts.append(Text())
            parts.append(highlighted_text(card.snippet))
        else:
            for paragraph in card.body:
                parts.append(Text())
                parts.append(Text(printable(paragraph)))
        for image in card.images:
            caption = " — ".join(x for x in (image.caption, image.credit) if x) or "image"
            parts.append(Text.assemble(("🖼 ", ""), (printable(caption), "italic")))
        if card.background:
            parts.append(Text())
            parts.append(
                Text.assemble(("Background: ", "bold dim"), (printable(card.background), "dim"))
            )
        if card.matched_terms:
            parts.append(
                Text(printable("matched: " + ", ".join(card.matched_terms)), style="green")
            )
        if card.url:
            parts.append(Text(printable(card.url), style="underline blue"))

        # The number on a panel is the post's own: what `/post N` opens.
        heading = [x for x in (card.source_title, f"#{card.ref}" if numbered else None) if x]
        footer = f"/post {card.ref}" + (f" · v{card.version}" if card.version > 1 else "")
        return Panel(
            Group(*parts),
            title=Text(printable(" · ".join(heading))) if heading else None,
            title_align="left",
            subtitle=Text(printable(footer), style=META_STYLE),
            subtitle_align="right",
            border_style="magenta" if (card.is_update or banner) else "cyan",
        )

    def render_reply(self, reply: Reply) -> Group:
        parts: list[RenderableType] = []
        if reply.text:
            parts.append(Text(printable(reply.text), style=ERROR_STYLE if reply.error else ""))
        parts.extend(self.render_card(card) for card in reply.cards)
        for button in reply.buttons:
            hint = "type: more" if button.label.startswith("More") else f"type: {button.command}"
            parts.append(
                Text.assemble(
                    (printable(f"[{button.label}]"), "bold"), (printable(f"  {hint}"), META_STYLE)
                )
            )
        return Group(*parts)

    def print_reply(self, reply: Reply) -> None:
        self.console.print(self.render_reply(reply))
        more = [b.command for b in reply.buttons if b.label.startswith("More")]
        self._more = more[0] if more else None

    # --- the prompt ---------------------------------------------------------------------------------

    async def _run_prompt(self, context: AdapterContext) -> None:
        stream = self.input_stream or sys.stdin
        echo = not _is_tty(stream)  # a typed line is on screen already; a piped one is not
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        _start_reader(stream, asyncio.get_running_loop(), lines)
        while (line := await lines.get()) is not None:
            command, args = split_command_line(line)
            if not command:
                continue
            if echo:
                self.console.print(Text(printable(f"› {line.strip()}"), style="bold"))
            if command in QUIT_COMMANDS:
                if self.on_quit is not None:
                    self.on_quit()
                return
            if command == "more" and not args:
                if self._more is None:
                    self.console.print(Text("Nothing more to show.", style=META_STYLE))
                    continue
                command, args = split_command_line(self._more)
            await self._answer(context, command, args)

    async def _answer(self, context: AdapterContext, command: str, args: tuple[str, ...]) -> None:
        request = Request(
            platform=self.platform,
            command=command,
            args=args,
            user_id="operator",
            user_name="operator",
            target=CONSOLE_TARGET,
            chat_kind=ChatKind.TERMINAL,
            is_admin=True,
        )
        try:
            reply = await context.handle(request)
        except Exception:
            log.exception("terminal command %r failed", command)
            reply = Reply(text="Sorry, something went wrong. Please try again.", error=True)
        self.print_reply(reply)


def highlighted_text(value: Highlighted) -> Text:
    """Highlight markers as styled runs; the text itself is never read as markup."""
    text = Text()
    if value.label:  # a snippet from a caption or the background
        text.append(value.label + " ", style="italic " + META_STYLE)
    for segment, marked in value.segments:
        text.append(printable(segment), style=HIGHLIGHT_STYLE if marked else "")
    return text


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _start_reader(
    stream: TextIO, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]
) -> None:
    """Read lines in a daemon thread: a blocked stdin read never holds up the loop or the exit."""

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while we were reading
            loop.call_soon_threadsafe(lines.put_nowait, item)

    def read() -> None:
        try:
            for line in iter(stream.readline, ""):
                put(line)
        except (OSError, ValueError) as error:  # a closed stream ends the prompt like EOF
            log.debug("terminal input ended: %s", error)
        finally:
            put(None)

    threading.Thread(target=read, name="terminal input", daemon=True).start()
