"""Command handlers shared by every platform: neutral `Request` in, neutral `Reply` out.

Adapters call `handle(request, deps)` and list `COMMANDS` in their menus (Telegram's command list,
Discord slash commands, help text).
"""

from __future__ import annotations

import logging

from bot.models import Reply, Request
from handlers import help, posts, search, sources, subscriptions
from handlers.base import (
    COMMANDS,
    ArgInfo,
    CommandInfo,
    Deps,
    Handler,
    UserError,
    error_reply,
    normalize_command,
    split_command_line,
)

__all__ = [
    "COMMANDS",
    "ArgInfo",
    "CommandInfo",
    "Deps",
    "handle",
    "split_command_line",
]

log = logging.getLogger(__name__)

# command → (handler, what it was doing: "Sorry, something went wrong while <doing>.")
ROUTES: dict[str, tuple[Handler, str]] = {
    "help": (help.handle, "preparing the help"),
    "start": (help.handle, "saying hello"),
    "latest": (posts.handle, "fetching the latest posts"),
    "post": (posts.handle, "fetching that post"),
    "search": (search.handle, "searching"),
    "subscribe": (subscriptions.handle, "subscribing this chat"),
    "unsubscribe": (subscriptions.handle, "unsubscribing this chat"),
    "subscriptions": (subscriptions.handle, "listing this chat's subscriptions"),
    "sources": (sources.handle, "listing the blogs"),
}


async def handle(request: Request, deps: Deps) -> Reply:
    """Answer one command. Never raises: a crash becomes a short polite reply and a logged traceback."""
    command = normalize_command(request.command)
    route = ROUTES.get(command)
    if route is None:
        shown = command or request.command.strip() or "that"
        return error_reply(f"I don't know /{shown}. Try /help.")
    handler, doing = route
    if command != request.command:
        request = request.model_copy(update={"command": command})
    try:
        return await handler(request, deps)
    except UserError as error:
        return error_reply(str(error))
    except Exception:
        log.exception(
            "command %r failed (platform=%s, chat=%s, user=%s, args=%r)",
            command,
            request.platform,
            request.target.address,
            request.user_id,
            request.args,
        )
        return error_reply(f"Sorry, something went wrong while {doing}. Please try again.")
