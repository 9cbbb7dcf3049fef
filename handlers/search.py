"""`search <query> [page]`: full-text search, one page of highlighted hits at a time."""

from __future__ import annotations

from bot.cards import card_from_post
from bot.models import Button, Reply, Request
from handlers.base import Deps, UserError, as_number, error_reply, quote
from storage.query import QueryError

PER_PAGE = 5


async def handle(request: Request, deps: Deps) -> Reply:
    args = list(request.args)
    page = 1
    # A trailing number is the page ("search sanctions 2"); a lone number is what to look for.
    last = as_number(args[-1]) if len(args) > 1 else None
    if last is not None and last >= 0:
        args.pop()
        page = max(1, last)
    text = " ".join(args).strip()
    if not text:
        raise UserError(
            'What should I look for? E.g. /search sanctions or /search "energy prices".'
        )

    try:
        result = await deps.search(text, page=page, per_page=PER_PAGE)
    except QueryError as error:
        return error_reply(str(error))

    notice = [result.notice] if result.notice else []
    noun = "result" if result.total == 1 and not result.total_is_estimate else "results"
    if not result.hits:
        if result.total and page > 1:
            line = (
                f"There are only {result.total_label} {noun} for {quote(text)}; "
                f"send /search {text} to see the first page."
            )
        else:
            line = f"No posts match {quote(text)}. Try fewer or different words."
        return Reply(text="\n".join([*notice, line]))

    titles = {s.id: s.title for s in await deps.posts.all_sources()}
    cards = tuple(
        card_from_post(hit.post, source_title=titles.get(hit.post.source_id), snippet=hit.snippet)
        for hit in result.hits
    )
    first = (result.page - 1) * result.per_page + 1
    last = first + len(result.hits) - 1
    summary = f"{result.total_label} {noun} for {quote(text)}"
    if result.total > len(result.hits) or page > 1:
        summary += f", showing {first}–{last}"
    buttons = (
        (Button(label="More ›", command=f"search {text} {page + 1}"),) if result.has_more else ()
    )
    return Reply(text="\n".join([*notice, summary + ":"]), cards=cards, buttons=buttons)
