"""`help` and `start`: what the bot does, how to subscribe, and example commands."""

from __future__ import annotations

from bot.models import Reply, Request
from handlers.base import COMMANDS, Deps

WELCOME = (
    "Livedesk follows live news blogs and posts their updates here as they happen, edits included."
)

SUBSCRIBING = (
    "To get new posts in this chat, send /subscribe (every blog), /subscribe <blog> "
    "or /subscribe <keywords> for posts matching some words. "
    "In a group or channel only an admin can subscribe it."
)

EXAMPLES = (
    "/latest 3",
    "/search sanctions",
    '/search "energy prices" -oil',
    "/subscribe sanctions",
    "/sources",
)


async def handle(request: Request, deps: Deps) -> Reply:
    examples = "Try: " + " · ".join(EXAMPLES)
    if request.command == "start":
        return Reply(
            text="\n\n".join((WELCOME, SUBSCRIBING, examples, "Send /help for every command."))
        )
    commands = "\n".join(f"/{c.usage} — {c.summary}" for c in COMMANDS)
    return Reply(text="\n\n".join((WELCOME, commands, SUBSCRIBING, examples)))
