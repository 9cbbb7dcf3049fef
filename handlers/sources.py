"""`sources`: the blogs Livedesk follows, with post counts and their newest post."""

from __future__ import annotations

from bot.models import Reply, Request
from handlers.base import Deps, format_time, plural


async def handle(request: Request, deps: Deps) -> Reply:
    infos = await deps.posts.sources()
    failing = await deps.posts.failing_locations()
    if not infos:
        if failing:
            return Reply(text="No blogs yet: the configured ones could not be read so far.")
        return Reply(text="No blogs yet: nothing has been imported.")
    lines = [f"Following {plural(len(infos), 'blog')}:"]
    for info in infos:
        line = f"• {info.source.title} ({info.source.id}) — {plural(info.posts, 'post')}"
        if info.newest is not None:
            line += f", newest {format_time(info.newest, deps.timezone)}"
        if info.last_error:
            line += " · the last update failed"
        lines.append(line)
    if failing:
        # Where they live (file paths, URLs) is the operator's business, not the chat's.
        lines.append(f"• {plural(len(failing), 'more blog')} could not be read yet.")
    lines.append("Send /latest <n> <blog> to read one, or /subscribe <blog> to follow it here.")
    return Reply(text="\n".join(lines))
