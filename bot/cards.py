"""Turn stored posts into neutral cards that every adapter renders."""

from __future__ import annotations

from bot.models import Card, Highlighted, Post


def card_from_post(
    post: Post,
    *,
    source_title: str | None = None,
    snippet: Highlighted | None = None,
    matched_terms: tuple[str, ...] = (),
    is_update: bool = False,
) -> Card:
    return Card(
        post_id=post.id,
        number=post.number,
        title=post.title,
        url=post.permalink,
        published_at=post.published_at,
        time_estimated=post.time_estimated,
        updated_at=post.updated_at,
        byline=post.byline,
        location=post.location,
        body=post.body,
        images=post.images,
        background=post.background,
        source_title=source_title,
        snippet=snippet,
        matched_terms=matched_terms,
        version=post.version,
        is_update=is_update,
    )
