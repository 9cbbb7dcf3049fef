"""Full-text search over SQLite FTS5: ranking, honest counts, highlighted snippets.

The query language is compiled by storage.query. The index covers the title, byline, body, image
captions with their credits, the background and the location (storage.db.FTS_COLUMNS); a snippet
comes from a caption or the background, and says so (`Highlighted.where`), when only they matched.

Ranking is by tier, then recency: posts whose title matches first, then those whose byline or
location does, then the body, then any other match (captions, background, words spread over
several columns); within a tier the newest first. Each tier is a column-filtered walk of an index
newest first that stops once the page is full, so nothing is scored and a common word costs what a
rare one does; title, byline and location have a small index of their own (posts_heads), so the
first tiers stay cheap even when no title matches. bm25 is not used: it reads every match of every
term once per query (its IDF), which at a million posts costs up to ~300 ms for a common word or a
phrase of common words. The count is exact up to COUNT_WINDOW matches among the newest COUNT_SPAN
posts and an estimate beyond (labelled "about …"); see bench/search.py for the figures.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite

from storage import matching
from storage.codecs import POST_COLUMNS, post_from_row
from storage.db import FTS_COLUMNS, FTS_OPTIONS, Database
from storage.index_text import captions_text, joined_words
from storage.models import Highlighted, Post, Segment, SnippetSource
from storage.query import HOW_TO, CompiledQuery, QueryError, compile_query
from storage.values import MAX_PER_PAGE, SearchHit, SearchPage

log = logging.getLogger(__name__)

COUNT_WINDOW = 1000
"""Count exactly up to this many matches; above, the count is an estimate (and says so)."""
COUNT_SPAN = 100_000
"""Counting walks only the newest this many posts: beyond, the count is an estimate (and says so).
A count of a phrase or of words that are each common reads their whole match lists, ~50 ms at a
million posts; within the span it stays a few milliseconds."""
TIERS: tuple[tuple[str, str | None], ...] = (
    ("posts_heads", "title"),
    ("posts_heads", None),
    ("posts_fts", "body"),
    ("posts_fts", None),
)
"""Rank tiers, each an index and a column filter: the title, then the byline or location (both in
the small posts_heads index), then the body, then any match (captions, background, or words spread
over several columns). Ties go to the newest."""
SNIPPET_TOKENS = 32
# bm25 weights per posts_fts column (storage.db.FTS_COLUMNS): title, byline, body, captions,
# background, location, joined (the joined forms of dotted and hyphenated words, weighed as body).
RANK_EXPRESSION = "bm25(posts_fts, 10.0, 5.0, 1.0, 0.5, 0.5, 2.0, 1.0)"
_MARK_START = "\x02"
_MARK_END = "\x03"
_MARKS = re.compile(f"([{_MARK_START}{_MARK_END}])")


# --- searching --------------------------------------------------------------------------------------


async def search(
    db: Database,
    text: str,
    *,
    page: int = 1,
    per_page: int = 5,
    source_id: str | None = None,
) -> SearchPage:
    """One page of posts matching the query, best first; raises QueryError only.

    Every statement of one search runs in the reader's own thread, as one call (Database.read):
    a search is a handful of short statements, and a round trip to aiosqlite's thread per
    statement cost more than the statements of a rare word together."""
    query = compile_query(text)
    page = max(1, page)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    try:
        return await db.read(
            partial(
                _search_page,
                text=text,
                query=query,
                page=page,
                per_page=per_page,
                source_id=source_id,
            )
        )
    except sqlite3.OperationalError as error:
        log.warning("search failed for %r (%s): %s", text, query.match, error)
        raise QueryError(f"Couldn't search for that. {HOW_TO}") from error


def _search_page(
    conn: sqlite3.Connection,
    *,
    text: str,
    query: CompiledQuery,
    page: int,
    per_page: int,
    source_id: str | None,
) -> SearchPage:
    """The page `search` asks for, read on `conn` in its thread."""
    offset = (page - 1) * per_page
    counted: tuple[int, bool] | None = None
    if offset:  # a later page: nothing to walk when it is past the end
        counted = _count(conn, query.match, source_id)
    ranked: list[_Candidate] = []
    known: int | None = None
    if counted is None or offset < counted[0]:
        need = offset + per_page + 1
        ranked, known = _candidates(conn, query.match, source_id, need, heads=query.marks)
    chosen = ranked[offset : offset + per_page]
    if known is not None:  # the walk saw every match
        total, estimated = known, False
    elif counted is not None:
        total, estimated = counted
    else:
        total, estimated = _count(conn, query.match, source_id)
    few = not estimated and total <= WALK_FOR_HITS
    hits = _hits(conn, query.marks, chosen, walk=few)
    more = len(ranked) > offset + per_page
    # Never fewer than the posts found (an estimate can be low; posts may arrive between walks).
    total = max(total, len(ranked))
    return SearchPage(
        query=text,
        hits=hits,
        page=page,
        per_page=per_page,
        total=total,
        notice=query.notice,
        total_is_estimate=estimated,
        more=more,
    )


_Candidate = tuple[float, str, int]
"""(tier, published_at, rowid): tier 0 ranks first."""


def _tier_match(match: str, columns: str | None) -> str:
    """The query restricted to `columns`; an exclusion still applies to the whole post."""
    if columns is None:
        return match
    restricted = f"{{{columns}}} : ({match})"
    return f"{restricted} AND ({match})" if " NOT " in match else restricted


def _walk(
    conn: sqlite3.Connection,
    match: str,
    source_id: str | None,
    limit: int,
    table: str = "posts_fts",
) -> list[tuple[str, int]]:
    """(published_at, rowid) of the newest `limit` matches: FTS5 walks its index newest first and
    stops there, so a common word costs what a rare one does, and nothing is scored."""
    sql = (
        f"SELECT p.published_at, {table}.rowid "
        f"FROM {table} JOIN posts p ON p.rowid = {table}.rowid WHERE {table} MATCH ?"
    )
    params: list[Any] = [match]
    if source_id is not None:
        sql += " AND p.source_id = ?"
        params.append(source_id)
    sql += f" ORDER BY {table}.rowid DESC LIMIT ?"
    params.append(limit)
    return [(str(r[0]), int(r[1])) for r in conn.execute(sql, params).fetchall()]


def _whole_post_matches(
    conn: sqlite3.Connection, match: str, rows: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The rows whose whole post matches: a heading match of `a NOT b` may have b in the body."""
    kept: set[int] = set()
    for where, params in _row_lookups([rowid for _, rowid in rows]):
        sql = f"SELECT posts_fts.rowid FROM posts_fts WHERE posts_fts MATCH ? AND {where}"
        kept.update(int(r[0]) for r in conn.execute(sql, [match, *params]).fetchall())
    return [row for row in rows if row[1] in kept]


WALK_FOR_HITS = 1000
"""A query with at most this many matches (counted exactly) has its page's rows picked out of one
walk of its matches: ~0.5 ms for a rare word, where a lookup per row cost ~0.9 ms."""
CLUSTER_GAP = 256
"""Rowids at most this far apart are looked up by walking the range between them."""


def _row_lookups(rowids: list[int]) -> list[tuple[str, list[int]]]:
    """WHERE clauses (with their parameters) that pick these posts_fts rows cheaply.

    FTS5 answers `rowid IN (…)` by re-running the query once per rowid (~0.1-0.4 ms each), and a
    range by walking every match inside it: rows close together are read as one range, the IN
    list, unindexed (+), picking them out; rows far apart are looked up one by one.
    """
    clusters = _clusters(rowids)
    lookups: list[tuple[str, list[int]]] = []
    single = [c[0] for c in clusters if len(c) == 1]
    if single:
        lookups.append((f"posts_fts.rowid IN ({','.join('?' * len(single))})", single))
    for cluster in (c for c in clusters if len(c) > 1):
        marks = ",".join("?" * len(cluster))
        lookups.append(
            (
                f"posts_fts.rowid BETWEEN ? AND ? AND +posts_fts.rowid IN ({marks})",
                [cluster[0], cluster[-1], *cluster],
            )
        )
    return lookups


def _clusters(rowids: Iterable[int]) -> list[list[int]]:
    """The rowids, sorted, in runs whose neighbours are at most CLUSTER_GAP apart."""
    clusters: list[list[int]] = []
    for rowid in sorted(rowids):
        if clusters and rowid - clusters[-1][-1] <= CLUSTER_GAP:
            clusters[-1].append(rowid)
        else:
            clusters.append([rowid])
    return clusters


def _candidates(
    conn: sqlite3.Connection,
    match: str,
    source_id: str | None,
    need: int,
    heads: str | None = None,
) -> tuple[list[_Candidate], int | None]:
    """The first `need` posts in rank order: tier by tier (title, then byline or location, then
    body, then the rest), newest first within a tier; and the number of matches when the walk of
    the last tier saw them all (else None).

    A tier is only walked while the page is not full, and each walk stops after the rows the page
    can use, so only candidates that can reach the page are read: a post whose title matches is
    never lost behind newer body matches, however many there are.

    `heads` (the query's marks) walks the heading tiers: posts_heads has no joined forms, so a
    title's `U.S.` is found there as the phrase `u s` that `US` marks; whatever it finds beyond
    `match` is then held to `match` over the whole post.
    """
    heads = heads or match
    ranked: list[_Candidate] = []
    seen: set[int] = set()
    total: int | None = None
    excludes = " NOT " in match or heads != match
    for tier, (table, columns) in enumerate(TIERS):
        wanted = need - len(ranked)
        if wanted <= 0:
            break
        # Rows of earlier tiers match here too (their tiers were walked to the end): skip them.
        limit = wanted + len(seen)
        while True:
            tier_match = match if table == "posts_fts" else heads
            rows = _walk(conn, _tier_match(tier_match, columns), source_id, limit, table)
            exhausted = len(rows) < limit
            if table != "posts_fts" and excludes:
                rows = _whole_post_matches(conn, match, rows)
            fresh = [(published, rowid) for published, rowid in rows if rowid not in seen]
            if exhausted or len(fresh) >= wanted:
                break
            limit *= 4
        if table == "posts_fts" and columns is None and exhausted:
            total = len(rows)  # the last tier is the whole query
        # Newest first by publication time within the walked window (the walk is by rowid,
        # which is import order).
        fresh.sort(reverse=True)
        for published, rowid in fresh[:wanted]:
            ranked.append((float(tier), published, rowid))
            seen.add(rowid)
    return ranked, total


def _count(conn: sqlite3.Connection, match: str, source_id: str | None) -> tuple[int, bool]:
    """(count, is an estimate). Only the newest COUNT_SPAN posts are walked, and at most
    COUNT_WINDOW + 1 matches among them: when every post is within the span and no more match,
    the count is exact; else the density of matches in what was walked, spread over the whole
    table and rounded to two significant figures, is the estimate."""
    row = conn.execute(
        "SELECT (SELECT min(rowid) FROM posts), (SELECT max(rowid) FROM posts)"
    ).fetchone()
    if row is None or row[0] is None:
        return 0, False
    low, high = int(row[0]), int(row[1])
    floor = high - COUNT_SPAN
    sql = "SELECT posts_fts.rowid FROM posts_fts"
    params: list[Any] = [match, floor]
    if source_id is not None:
        sql += " JOIN posts p ON p.rowid = posts_fts.rowid"
    sql += " WHERE posts_fts MATCH ? AND posts_fts.rowid > ?"
    if source_id is not None:
        sql += " AND p.source_id = ?"
        params.append(source_id)
    sql += " ORDER BY posts_fts.rowid DESC LIMIT ?"
    params.append(COUNT_WINDOW + 1)
    rowids = [int(r[0]) for r in conn.execute(sql, params).fetchall()]
    if len(rowids) > COUNT_WINDOW:
        boundary = rowids[COUNT_WINDOW - 1]
        high = max(high, rowids[0])
        spread = COUNT_WINDOW * (high - low + 1) / max(1, high - boundary + 1)
        return max(COUNT_WINDOW + 1, _two_figures(spread)), True
    if floor < low:
        return len(rowids), False
    return _two_figures(len(rowids) * (high - low + 1) / COUNT_SPAN), True


def _two_figures(value: float) -> int:
    """Round to two significant figures: 338,512 → 340,000."""
    number = round(value)
    if number < 100:
        return number
    scale = int(10 ** (len(str(number)) - 2))
    return int(round(number / scale) * scale)


def _hits(
    conn: sqlite3.Connection, match: str, chosen: list[_Candidate], *, walk: bool = False
) -> tuple[SearchHit, ...]:
    """The chosen posts with highlighted title and snippet, made for those rows only.

    `walk`: the query has few matches (WALK_FOR_HITS at most), so one walk of them all, picking
    the chosen rows out (`+rowid`, unindexed), costs less than looking each row up."""
    if not chosen:
        return ()
    rowids = [rowid for _, _, rowid in chosen]
    sql = (
        f"SELECT {POST_COLUMNS}, "
        f"highlight(posts_fts, 0, '{_MARK_START}', '{_MARK_END}') AS marked_title, "
        f"{_SNIPPETS_SQL} "
        "FROM posts_fts JOIN posts p ON p.rowid = posts_fts.rowid WHERE posts_fts MATCH ?"
    )
    lookups = (
        [(f"+posts_fts.rowid IN ({','.join('?' * len(rowids))})", rowids)]
        if walk
        else _row_lookups(rowids)
    )
    rows: dict[int, Any] = {}
    for where, params in lookups:
        found = conn.execute(f"{sql} AND {where}", [match, *params]).fetchall()
        rows.update((int(r["rowid"]), r) for r in found)
    hits: list[SearchHit] = []
    for score, _, rowid in chosen:
        row = rows.get(rowid)
        if row is None:  # deleted since it was ranked
            continue
        hits.append(
            SearchHit(
                post=post_from_row(row),
                title=highlighted(row["marked_title"] or ""),
                snippet=chosen_snippet(row),
                rank=score,
            )
        )
    return tuple(hits)


# The snippet comes from the text; from a caption or the background when only they matched.
_SNIPPET_SOURCES: tuple[tuple[SnippetSource, str], ...] = (
    ("text", "body"),
    ("caption", "captions"),
    ("background", "background"),
)
_SNIPPETS_SQL = ", ".join(
    f"snippet(posts_fts, {FTS_COLUMNS.index(column)}, '{_MARK_START}', '{_MARK_END}', '…', "
    f"{SNIPPET_TOKENS}) AS snippet_{where}"
    for where, column in _SNIPPET_SOURCES
)


def chosen_snippet(row: Any) -> Highlighted:
    """The body's snippet when the body matched (or nothing else did: a title match shows the
    text's start), else the caption's or the background's, labelled with where it comes from."""
    for where, _ in _SNIPPET_SOURCES:
        marked = row[f"snippet_{where}"] or ""
        if _MARK_START in marked:
            return highlighted(marked, where)
    return highlighted(row["snippet_text"] or "")


def highlighted(marked: str, where: SnippetSource = "text") -> Highlighted:
    """Split text with \\x02…\\x03 markers into neutral highlight segments."""
    segments: list[Segment] = []
    inside = False
    # The text between two markers, a piece at a time (not a character at a time: ~20 µs a hit).
    for piece in _MARKS.split(marked) if _MARK_START in marked or _MARK_END in marked else [marked]:
        if piece == _MARK_START:
            inside = True
        elif piece == _MARK_END:
            inside = False
        elif piece:
            if segments and segments[-1][1] == inside:
                segments[-1] = (segments[-1][0] + piece, inside)
            else:
                segments.append((piece, inside))
    return Highlighted(segments=tuple(segments), where=where)


async def post_matches(conn: aiosqlite.Connection, query: CompiledQuery, post_rowid: int) -> bool:
    """Whether one stored post matches; works inside an open write transaction (the triggers keep
    the index in step with the posts table)."""
    return post_rowid in await posts_matching(conn, query, [post_rowid])


async def posts_matching(
    conn: aiosqlite.Connection, query: CompiledQuery, rowids: Sequence[int]
) -> set[int]:
    """Which of these stored posts match (as `post_matches`, for many posts at once), in a few
    statements (`_row_lookups`' clusters): a run of rowids at most CLUSTER_GAP apart is one range,
    walked, the rows asked about kept here (a document's new posts, consecutive, are one
    statement whatever their number); rowids far from any other are looked up in lists of
    SINGLES_PER_LOOKUP. A query SQLite refuses is logged once and matches nothing."""
    wanted = set(rowids)
    clusters = _clusters(wanted)
    singles = [cluster[0] for cluster in clusters if len(cluster) == 1]
    lookups = [("rowid BETWEEN ? AND ?", [c[0], c[-1]]) for c in clusters if len(c) > 1]
    for start in range(0, len(singles), SINGLES_PER_LOOKUP):
        chunk = singles[start : start + SINGLES_PER_LOOKUP]
        lookups.append((f"rowid IN ({','.join('?' * len(chunk))})", chunk))
    found: set[int] = set()
    try:
        for where, params in lookups:
            async with conn.execute(
                f"SELECT rowid FROM posts_fts WHERE posts_fts MATCH ? AND {where}",
                (query.match, *params),
            ) as cur:
                found.update(rowid for (rowid,) in await cur.fetchall() if rowid in wanted)
    except sqlite3.OperationalError as error:
        log.warning("post_matches failed for %r: %s", query.match, error)
        return set()
    return found


SINGLES_PER_LOOKUP = 500
"""Rowids one `rowid IN (…)` lookup of `posts_matching` holds (SQLite allows 32,766 parameters)."""


def matched_terms(query: CompiledQuery, post: Post) -> tuple[str, ...]:
    """Which of the query's positive terms occur in the post (stemmed and folded like the index).

    Read in Python (storage.matching); FTS5 itself, on a one-post index, only for text in scripts
    the matcher does not read exactly as SQLite does."""
    if not query.terms:
        return ()
    doc = matching.document(post)
    if doc is not None:
        terms = matching.matched_terms(query, doc)
        if terms is not None:
            return terms
    conn = sqlite3.connect(":memory:")
    try:
        columns = ", ".join(FTS_COLUMNS)
        conn.execute(f"CREATE VIRTUAL TABLE t USING fts5({columns}, {FTS_OPTIONS})")
        texts = [post.title, post.byline, *post.body, post.background, post.location]
        for image in post.images:
            texts += [image.caption, image.credit]
        conn.execute(
            f"INSERT INTO t ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                post.title,
                post.byline or "",
                post.text,
                captions_text(post.images),
                post.background or "",
                post.location or "",
                joined_words(texts),
            ),
        )
        found: list[str] = []
        for term in query.terms:
            try:
                expression = compile_query(term).match
                if conn.execute("SELECT 1 FROM t WHERE t MATCH ?", (expression,)).fetchone():
                    found.append(term)
            except (QueryError, sqlite3.OperationalError):
                continue
        return tuple(found)
    finally:
        conn.close()
