"""`sources`: the blogs Livedesk follows, with post counts and their newest post."""

from __future__ import annotations

from bot.models import Reply, Request
from handlers.base import Deps, format_time, plural


async def handle(request: Request, deps: Deps) -> Reply:
    infos = await deps.posts.sources()
    failing = await deps.posts.failing_locations()
    feeds = await deps.store.feeds.list()
    paused = {feed.source_id for feed in feeds if not feed.enabled and feed.source_id}
    # Followed but never imported: where they live (file paths, URLs) is the operator's business,
    # not the chat's, so they are only counted.
    imported = {info.source.id for info in infos}
    failing_at = {failure.location for failure in failing}
    waiting = [
        feed
        for feed in feeds
        if feed.enabled
        and feed.location not in failing_at
        and (feed.source_id is None or feed.source_id not in imported)
    ]
    if not infos:
        if failing:
            return Reply(text="No blogs yet: the configured ones could not be read so far.")
        if waiting:
            return Reply(
                text=f"No blogs yet: {plural(len(waiting), 'followed blog')} not read so far."
            )
        return Reply(text="No blogs yet: nothing has been imported.")
    lines = [f"Following {plural(len(infos), 'blog')}:"]
    for info in infos:
        line = f"• {info.source.title} ({info.source.id}) — {plural(info.posts, 'post')}"
        if info.newest is not None:
            line += f", newest {format_time(info.newest, deps.timezone)}"
        if info.source.id in paused:
            line += " · paused"
        elif info.last_error:
            line += " · the last update failed"
        lines.append(line)
    if failing:
        lines.append(f"• {plural(len(failing), 'more blog')} could not be read yet.")
    if waiting:
        lines.append(f"• {plural(len(waiting), 'more blog')} not read yet.")
    lines.append("Send /latest <n> <blog> to read one, or /subscribe <blog> to follow it here.")
    return Reply(text="\n".join(lines))
