"""`subscribe`, `unsubscribe` and `subscriptions`: which posts this chat gets.

A shared chat (group or channel) changes its subscriptions only at an admin's request; a private
chat and the operator's terminal always may.
"""

from __future__ import annotations

from bot.models import ChatKind, Reply, Request, Source, Subscription, SubscriptionState, Target
from handlers.base import Deps, UserError, as_number, error_reply, plural, quote
from storage.query import QueryError
from storage.values import SubscriptionError, normalize_query

NOT_ADMIN = "Only an admin of this chat can subscribe it."
NOT_ADMIN_UNSUBSCRIBE = "Only an admin of this chat can unsubscribe it."


async def handle(request: Request, deps: Deps) -> Reply:
    if request.command == "subscriptions":
        return await _list(request, deps)
    if request.command == "unsubscribe":
        if not _may_change(request):
            return error_reply(NOT_ADMIN_UNSUBSCRIBE)
        return await _unsubscribe(request, deps)
    if not _may_change(request):
        return error_reply(NOT_ADMIN)
    return await _subscribe(request, deps)


async def _leading_source(
    deps: Deps, args: tuple[str, ...]
) -> tuple[Source | None, tuple[str, ...]]:
    """The blog named by the first words, if any (longest name first: "Kyiv live sanctions"), and
    the words left over as keywords."""
    for count in range(len(args), 0, -1):
        name = " ".join(args[:count]).strip('"“”')
        source = await deps.posts.find_source(name)
        if source is not None:
            return source, args[count:]
    return None, args


def _may_change(request: Request) -> bool:
    return request.is_admin or request.chat_kind in (ChatKind.PRIVATE, ChatKind.TERMINAL)


async def _subscribe(request: Request, deps: Deps) -> Reply:
    source, rest = await _leading_source(deps, request.args)
    query = normalize_query(" ".join(rest))

    before = _same(await _chat_subscriptions(deps, request.target), source, query)
    try:
        subscription, created = await deps.subscriptions.add(
            request.target,
            created_by=request.user_id,
            source_id=source.id if source else None,
            query=query,
            backfill=deps.backfill,
        )
    except (QueryError, SubscriptionError) as error:
        return error_reply(str(error))

    what = _describe(source.title if source else None, query)
    if not created:
        if before is not None and before.state != SubscriptionState.ACTIVE:
            return Reply(text=f"Resumed this chat's subscription to {what}.", ephemeral=False)
        return Reply(text=f"Already subscribed to {what}. See /subscriptions.")

    lines = [f"Subscribed this chat to {what}."]
    backfill = await deps.subscriptions.backfill_count(subscription.id)
    if backfill:
        lines.append(f"You'll get the latest {plural(backfill, 'post')} now.")
    elif deps.backfill:
        lines.append("Nothing matches yet; new posts will arrive here as they are published.")
    return Reply(text=" ".join(lines), ephemeral=False)


async def _unsubscribe(request: Request, deps: Deps) -> Reply:
    target = request.target
    mine = await _chat_subscriptions(deps, target)
    if not mine:
        return Reply(text="This chat has no subscriptions.")
    if not request.args:
        removed = await deps.subscriptions.remove_for_target(target)
        return Reply(
            text=f"Unsubscribed this chat from everything ({plural(removed, 'subscription')}).",
            ephemeral=False,
        )

    text = " ".join(request.args).strip()
    number = text.lstrip("#")
    wanted = as_number(number)
    if wanted is not None and wanted >= 0:
        chosen = [s for s in mine if s.id == wanted]
        if not chosen:
            raise UserError(f"This chat has no subscription #{number}. See /subscriptions.")
    else:
        source = await deps.posts.find_source(text.strip('"“”'))
        if source is not None:
            chosen = [s for s in mine if s.source_id == source.id]
            if not chosen:
                raise UserError(
                    f"This chat isn't subscribed to {source.title}. See /subscriptions."
                )
        else:
            query = normalize_query(text)
            chosen = [s for s in mine if s.query is not None and _same_query(s.query, query)]
            if not chosen:
                raise UserError(
                    f"This chat has no subscription for {quote(text)}. "
                    "Send /subscriptions to see them with their ids."
                )

    for subscription in chosen:
        await deps.subscriptions.remove(subscription.id)
    titles = await _source_titles(deps)
    names = "; ".join(_describe(titles.get(s.source_id or ""), s.query) for s in chosen)
    return Reply(text=f"Unsubscribed this chat from {names}.", ephemeral=False)


async def _list(request: Request, deps: Deps) -> Reply:
    mine = await _chat_subscriptions(deps, request.target)
    if not mine:
        return Reply(text="This chat has no subscriptions. Send /subscribe to get new posts here.")
    titles = await _source_titles(deps)
    lines = [f"This chat has {plural(len(mine), 'subscription')}:"]
    for s in mine:
        source = titles.get(s.source_id, s.source_id) if s.source_id else "all blogs"
        line = f"#{s.id} · {source}"
        if s.query:
            line += f" · matching {quote(s.query)}"
        line += f" · {s.state.value}"
        if s.reason and s.state != SubscriptionState.ACTIVE:
            line += f" ({s.reason})"
        lines.append(line)
    lines.append("Send /unsubscribe <id> to stop one.")
    return Reply(text="\n".join(lines))


async def _chat_subscriptions(deps: Deps, target: Target) -> list[Subscription]:
    """This chat's (and this thread's) subscriptions, oldest first."""
    found = await deps.subscriptions.list(platform=target.platform, address=target.address)
    return [s for s in found if (s.target.thread or None) == (target.thread or None)]


def _same(
    subscriptions: list[Subscription], source: Source | None, query: str | None
) -> Subscription | None:
    source_id = source.id if source else None
    for s in subscriptions:
        if s.source_id == source_id and s.query == query:
            return s
    return None


def _same_query(stored: str, given: str | None) -> bool:
    return given is not None and stored.casefold() == given.casefold()


def _describe(source_title: str | None, query: str | None) -> str:
    what = source_title or "all blogs"
    return f"{what} matching {quote(query)}" if query else what


async def _source_titles(deps: Deps) -> dict[str, str]:
    return {s.id: s.title for s in await deps.posts.all_sources()}
