"""`latest [n] [blog]` and `post <id>`: reading posts."""

from __future__ import annotations

from bot.cards import card_from_post
from bot.models import Post, PostVersion, Reply, Request
from handlers.base import Deps, UserError, as_number, format_time, plural, quote

DEFAULT_LATEST = 5
MAX_LATEST = 20


async def handle(request: Request, deps: Deps) -> Reply:
    if request.command == "post":
        return await _post(request, deps)
    return await _latest(request, deps)


async def _latest(request: Request, deps: Deps) -> Reply:
    count: int | None = None
    words: list[str] = []
    for arg in request.args:
        number = as_number(arg) if count is None else None
        if number is not None:
            count = number
        else:
            words.append(arg.strip('"“”'))
    notes: list[str] = []
    if count is None:
        count = DEFAULT_LATEST
    elif count < 1:
        raise UserError(f"Give a number of posts from 1 to {MAX_LATEST}, e.g. /latest 5.")
    elif count > MAX_LATEST:
        notes.append(f"I show at most {MAX_LATEST} posts at once.")
        count = MAX_LATEST

    source_id: str | None = None
    source_title: str | None = None
    if words:
        name = " ".join(words)
        source = await deps.posts.find_source(name)
        if source is None:
            raise UserError(f"I don't know a blog called {quote(name)}. Send /sources to see them.")
        source_id, source_title = source.id, source.title

    posts = await deps.posts.latest(count, source_id)
    if not posts:
        where = f" in {source_title}" if source_title else ""
        return Reply(text=f"No posts{where} yet.")
    titles = await _source_titles(deps)
    cards = tuple(card_from_post(p, source_title=titles.get(p.source_id)) for p in posts)
    heading = f"The latest {plural(len(posts), 'post')}"
    if source_title:
        heading += f" from {source_title}"
    return Reply(text="\n".join([heading + ":", *notes]), cards=cards)


async def _post(request: Request, deps: Deps) -> Reply:
    if not request.args:
        raise UserError("Which post? Send /post <number>, with the number shown with each post.")
    post_id = request.args[0].strip('"“”')
    post = await deps.posts.get(post_id)
    if post is None:
        raise UserError(
            f"I can't find a post with id {quote(post_id)}. The number is shown with each post."
        )
    history = await deps.posts.history(post.id)
    titles = await _source_titles(deps)
    card = card_from_post(post, source_title=titles.get(post.source_id))
    return Reply(text=_history_summary(post, history, deps), cards=(card,))


def _history_summary(post: Post, history: list[PostVersion], deps: Deps) -> str:
    published = format_time(post.published_at, deps.timezone)
    if len(history) <= 1:
        return f"Published {published}; not edited since."
    lines = [f"Published {published}; edited {plural(len(history) - 1, 'time')}:"]
    previous: PostVersion | None = None
    for version in history:
        when = format_time(version.recorded_at, deps.timezone)
        if previous is None:
            lines.append(f"• v{version.version} first seen {when}")
        else:
            changed = _what_changed(previous.post, version.post)
            lines.append(f"• v{version.version} {when}" + (f" — {changed}" if changed else ""))
        previous = version
    return "\n".join(lines)


def _what_changed(old: Post, new: Post) -> str:
    fields = {
        "title": (old.title, new.title),
        "text": (old.body, new.body),
        "byline": (old.byline, new.byline),
        "location": (old.location, new.location),
        "images": (old.images, new.images),
        "background": (old.background, new.background),
        "link": (old.permalink, new.permalink),
    }
    changed = [name for name, (before, after) in fields.items() if before != after]
    return (", ".join(changed) + " changed") if changed else ""


async def _source_titles(deps: Deps) -> dict[str, str]:
    return {s.id: s.title for s in await deps.posts.all_sources()}
