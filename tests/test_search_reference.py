"""A search page's hits are the same however their rows are read, and highlights split as before.

A query with few matches has its page's rows picked out of one walk of its matches; any other
looks each row (or cluster of rows) up. Both must give the very same hits. `highlighted` splits the
marked text a piece at a time; the reference below is its earlier form, a character at a time.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from storage import search as search_module
from storage.db import Database
from storage.ingest import ingest
from storage.models import (
    Highlighted,
    ImportResult,
    Post,
    Segment,
    SnippetSource,
    Source,
    SourceKind,
)
from storage.query import compile_query

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
WORDS = ["tram", "harbour", "ferry", "strike", "café", "U.S.", "mayor", "storm", "bridge", "vote"]


def reference_highlighted(marked: str, where: SnippetSource = "text") -> Highlighted:
    segments: list[Segment] = []
    inside = False
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            run = "".join(buffer)
            if segments and segments[-1][1] == inside:
                segments[-1] = (segments[-1][0] + run, inside)
            else:
                segments.append((run, inside))
            buffer.clear()

    for ch in marked:
        if ch == "\x02":
            flush()
            inside = True
        elif ch == "\x03":
            flush()
            inside = False
        else:
            buffer.append(ch)
    flush()
    return Highlighted(segments=tuple(segments), where=where)


def test_highlights_split_as_before() -> None:
    rng = random.Random(17)
    pieces = ["\x02", "\x03", "a", " ", "bc", "é", "…", "\n", ""]
    for _ in range(20_000):
        marked = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert search_module.highlighted(marked, "caption") == reference_highlighted(
            marked, "caption"
        ), repr(marked)


async def test_a_page_reads_the_same_hits_by_one_walk_or_by_lookups(db: Database) -> None:
    rng = random.Random(23)
    posts = [
        Post(
            id=f"blog-{n}",
            source_id="blog",
            published_at=START + timedelta(minutes=rng.randint(0, 5000)),
            title=" ".join(rng.choices(WORDS, k=2)),
            body=tuple(" ".join(rng.choices(WORDS, k=3)) for _ in range(2)),
        )
        for n in range(600)
    ]
    source = Source(id="blog", title="Blog", kind=SourceKind.PAGE_TEXT)
    await ingest(db, ImportResult(source=source, posts=tuple(posts)))
    found = 0
    for text in ["tram", "café ferry", '"harbour strike"', "US", "storm -vote", "bri*"]:
        query = compile_query(text)

        def both(conn: object, query: object = query) -> tuple[object, object]:
            ranked, _ = search_module._candidates(
                conn,  # type: ignore[arg-type]
                query.match,  # type: ignore[attr-defined]
                None,
                40,
                heads=query.marks,  # type: ignore[attr-defined]
            )
            chosen = ranked[5:35]
            marks = query.marks  # type: ignore[attr-defined]
            walked = search_module._hits(conn, marks, chosen, walk=True)  # type: ignore[arg-type]
            looked_up = search_module._hits(conn, marks, chosen, walk=False)  # type: ignore[arg-type]
            return walked, looked_up

        walked, looked_up = await db.read(both)
        assert walked == looked_up, text
        found += bool(walked)
    assert found >= 5  # the comparison means something
