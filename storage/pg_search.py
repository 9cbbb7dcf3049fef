"""Full-text search over PostgreSQL's tsvector column `posts.search`: the SQLite search's rules.

The query language is compiled by storage.query into an FTS5 MATCH string; `tsquery` translates
that string (and only that string's grammar: double-quoted phrases of lower-case tokens, a prefix
`"blink"*`, AND / OR / NOT, parentheses) into a PostgreSQL tsquery expression built of
`phraseto_tsquery` / `to_tsquery` pieces whose texts are all parameters: no user text is ever SQL.
FTS5's precedence is kept: NOT binds tightest, then AND, then OR; `a NOT b` is `a && !!b`.

Where PostgreSQL differs from FTS5 (say so in the tests too):
- stemming is Snowball English, not Porter: most words stem alike, a few do not;
- the configuration has stop words, and the stored vector holds none of them: a phrase made only
  of stop words (`"the"`) is an empty tsquery, which PostgreSQL leaves out of `&&`, `||` and `!!`
  (so `sanctions AND the` is `sanctions`), and a query that is nothing else matches no post
  (FTS5 finds every post holding the word); inside a phrase a stop word still takes its place
  (`"sanctions on russia"` needs one word between the two);
- a prefix `"a"*` whose letters are a stop word alone is read without stemming or stop words (the
  `simple` configuration), so `A*` still finds `apple`; any other prefix is stemmed first, as
  `to_tsquery` does (`blinking*` is `blink:*`);
- PostgreSQL's parser reads `U.S.` as the one lexeme `u.s` (FTS5: the words `u s`), so a phrase's
  run of single letters is also tried dotted (`"u s sanctions"` or `"u.s sanctions"`); it reads
  `Brandon/AP` as one file-path lexeme, and URLs, hosts and e-mail addresses whole too;
- the body tier is weight C, which holds the joined forms with the body: a post found in its body
  only through a joined form (`US` for `U.S.`) ranks as a body match, in SQLite with the rest;
- a tier is found through a GIN index of its own (`ts_filter(search, '{a}')`), but checked on
  posts already read with the query's lexemes held to its weights (`'word':A`), which finds the
  same posts without a filtered copy of each post's vector;
- the parser needs the database's LC_CTYPE to be a UTF-8 locale: under C it takes every character
  outside ASCII for a letter (`“very` is one word);
- a GIN index has no order to walk and holds no positions, so the posts are found in one of two
  ways, chosen per query (and per tier) from how many of the newest PROBE_POSTS posts match: a
  rare query is read whole through its GIN index (the tiers have an index each) and ordered here;
  a common one is walked newest first through posts_by_time, each post checked against the query
  (cheap: its vector is in its row), tier by tier until the page is full, as SQLite walks its
  tiers. Either way the page is the one ranking every match would give. A phrase is the costly
  case: GIN finds the posts holding its words, and each must be read to check their positions.
The snippet is ts_headline's, elided with `…` where it cuts the text, a phrase marked as one run.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from storage import match_syntax as syntax
from storage.codecs import POST_COLUMNS, post_from_row
from storage.models import Highlighted, Segment, SnippetSource
from storage.pg_db import Connection, PgDatabase
from storage.query import HOW_TO, CompiledQuery, QueryError, compile_query
from storage.values import SearchHit, SearchPage

log = logging.getLogger(__name__)

QUERY_FAILURES = (psycopg.DataError, psycopg.ProgrammingError, psycopg.errors.QueryCanceled)
"""The errors of a query itself (as SQLite's OperationalError for a MATCH), answered as a how-to
line or no match; a lost connection or a full pool is the store's failure and propagates."""

CONFIG = "livedesk_english"
"""The text search configuration of `posts.search` (storage.pg_schema.TEXT_SEARCH_CONFIG)."""


class TsQuery(NamedTuple):
    """A tsquery as an SQL expression and the parameters of its `%s` placeholders, in order."""

    sql: str
    params: tuple[str, ...]


# --- the translator: FTS5 MATCH (as storage.query writes it) → tsquery ------------------------------

# A token of a phrase: anything but white space and the double quote, lower case, and none of the
# characters to_tsquery reads as syntax (storage.query keeps letters and digits only).
_TSQUERY_SYNTAX = frozenset("&|!():*<>'\\")


def _bug(match: str, why: str) -> QueryError:
    log.warning("not a MATCH expression storage.query writes (%s): %r", why, match)
    return QueryError(f"Couldn't search for that. {HOW_TO}")


def _words(phrase: syntax.Phrase, match: str) -> tuple[str, ...]:
    """A phrase's words as storage.query writes them: lower case, one space apart, none holding
    tsquery syntax (they go to PostgreSQL as parameters, but a stray `:*` would still be read)."""
    words = tuple(phrase.text.split(" "))
    for word in words:
        if not word or word != word.lower() or any(ch.isspace() for ch in word):
            raise _bug(match, f"a phrase word {word!r}")
        if '"' in word or _TSQUERY_SYNTAX.intersection(word):
            raise _bug(match, f"a phrase word {word!r}")
    return words


def _tree(match: str) -> syntax.Node:
    try:
        return syntax.parse(match)
    except syntax.MatchSyntaxError as error:
        raise _bug(match, str(error)) from None


def _dotted(words: tuple[str, ...]) -> str:
    """The phrase with each run of single letters written as PostgreSQL's parser reads a dotted
    abbreviation: `u s sanctions` is `u.s sanctions` (the text's `U.S.` is the one lexeme `u.s`,
    where FTS5 reads the two words `u s`)."""
    out: list[str] = []
    for word in words:
        if len(word) == 1 and out and all(len(part) == 1 for part in out[-1].split(".")):
            out[-1] += "." + word
        else:
            out.append(word)
    return " ".join(out)


def _phrase_sql(words: tuple[str, ...], prefix: bool, params: list[str]) -> str:
    if not prefix:
        spaced = " ".join(words)
        dotted = _dotted(words)
        params.append(spaced)
        if dotted == spaced:
            return f"phraseto_tsquery('{CONFIG}', %s)"
        params.append(dotted)
        return f"(phraseto_tsquery('{CONFIG}', %s) || phraseto_tsquery('{CONFIG}', %s))"
    # `"u s"*`: the phrase `u`, then a word beginning with `s`.
    *before, last = words
    # A prefix that is a stop word alone would be an empty query: read it as it is typed.
    params.extend((last, last))
    sql = (
        f"(SELECT CASE WHEN numnode(q) = 0 THEN to_tsquery('simple', %s || ':*') ELSE q END "
        f"FROM to_tsquery('{CONFIG}', %s || ':*') AS q)"
    )
    if not before:
        return sql
    params.insert(len(params) - 2, " ".join(before))
    return f"(phraseto_tsquery('{CONFIG}', %s) <-> {sql})"


def _render(node: syntax.Node, params: list[str], match: str) -> str:
    """The tsquery of a tree; AND and OR of several parts nest from the left, as `a && b && c`
    reads: `((a && b) && c)`."""
    if isinstance(node, syntax.Phrase):
        return _phrase_sql(_words(node, match), node.prefix, params)
    if isinstance(node, syntax.Not):
        left = _render(node.left, params, match)
        return f"({left} && !!{_render(node.right, params, match)})"
    operator = "&&" if isinstance(node, syntax.All) else "||"
    sql = _render(node.parts[0], params, match)
    for part in node.parts[1:]:
        sql = f"({sql} {operator} {_render(part, params, match)})"
    return sql


def tsquery(match: str) -> TsQuery:
    """The tsquery of an FTS5 MATCH expression written by storage.query (`CompiledQuery.match` or
    `.marks`); pure. QueryError (with storage.query.HOW_TO) for anything storage.query does not
    write: that is a bug, logged."""
    params: list[str] = []
    sql = _render(_tree(match), params, match)
    return TsQuery(sql, tuple(params))


# --- one post ---------------------------------------------------------------------------------------


async def post_matches(conn: Connection, query: CompiledQuery, post_rowid: int) -> bool:
    """Whether one stored post matches; works inside an open write transaction (the generated
    column is in step with the row). A failure is logged and is no match, as in SQLite; it runs
    under a savepoint, so it never spoils the caller's transaction."""
    return post_rowid in await posts_matching(conn, query, [post_rowid])


async def posts_matching(conn: Connection, query: CompiledQuery, rowids: Sequence[int]) -> set[int]:
    """Which of these stored posts match (as `post_matches`, for many posts at once): one
    statement, by primary key, under one savepoint, whatever the number of posts."""
    try:
        compiled = tsquery(query.match)
    except QueryError:
        return set()
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT rowid FROM posts WHERE rowid = ANY(%s::bigint[]) AND search @@ {compiled.sql}",
                (list(rowids), *compiled.params),
            )
            return {int(row["rowid"]) for row in await cur.fetchall()}
    except QUERY_FAILURES as error:
        log.warning("post_matches failed for %r: %s", query.match, error)
        return set()


# --- searching --------------------------------------------------------------------------------------

COUNT_WINDOW = 1000
"""Count exactly up to this many matches; above, the count is an estimate (storage.search's)."""
COUNT_SPAN = 100_000
"""Counting walks only the newest this many posts, as storage.search does."""
MAX_PER_PAGE = 50
SNIPPET_WORDS = 32
TIER_WEIGHTS: tuple[str | None, ...] = ("{a}", "{a,b}", "{c}", None)
"""Rank tiers as tsvector weights (storage.pg_schema): the title (A), then the byline or location
(B, with the title), then the body (C, which here holds the joined forms too), then any match
(captions and background, D, or words spread over several weights). Ties go to the newest."""
_MARK_START = "\x02"
_MARK_END = "\x03"
_HEADLINE = f"StartSel={_MARK_START}, StopSel={_MARK_END}"
_TITLE_OPTIONS = f"HighlightAll=true, {_HEADLINE}"
_SNIPPET_OPTIONS = (
    f"MaxWords={SNIPPET_WORDS}, MinWords={SNIPPET_WORDS // 2}, ShortWord=0, MaxFragments=1, "
    f"{_HEADLINE}"
)
_ELLIPSIS = "…"
_SNIPPET_SOURCES: tuple[tuple[SnippetSource, str], ...] = (
    ("text", "p.body"),
    ("caption", "livedesk_captions(p.images)"),
    ("background", "coalesce(p.background, '')"),
)
"""Where a snippet comes from, in the order chosen: the text, a caption, the background."""


async def search(
    db: PgDatabase,
    text: str,
    *,
    page: int = 1,
    per_page: int = 5,
    source_id: str | None = None,
) -> SearchPage:
    """One page of posts matching the query, best first; raises QueryError only (as SQLite's)."""
    query = compile_query(text)
    marks = tsquery(query.marks)
    conds = _tiers(tsquery(query.match), marks)  # the whole match last
    exact = _exact_in_index(query.match)
    page = max(1, page)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    offset = (page - 1) * per_page
    try:
        async with db.read() as conn, _planned(conn):
            walker = _Walker(conn, source_id)
            probe = await walker.probe(conds)
            counted: tuple[int, bool] | None = None
            if offset:  # a later page: nothing to rank when it is past the end
                counted = await _count(walker, conds, probe, exact)
            ranked: list[_Candidate] = []
            known: int | None = None
            if counted is None or offset < counted[0]:
                need = offset + per_page + 1
                ranked = await _candidates(walker, conds, need, probe)
                if len(ranked) < need:  # every match was ranked
                    known = len(ranked)
            chosen = ranked[offset : offset + per_page]
            hits = await _hits(conn, marks, chosen)
            if known is not None:
                total, estimated = known, False
            elif counted is not None:
                total, estimated = counted
            else:
                total, estimated = await _count(walker, conds, probe, exact)
    except QUERY_FAILURES as error:
        log.warning("search failed for %r (%s): %s", text, query.match, error)
        raise QueryError(f"Couldn't search for that. {HOW_TO}") from error
    more = len(ranked) > offset + per_page
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

_BEGIN = "BEGIN READ ONLY; SET LOCAL enable_seqscan = off"
"""One round trip (no parameters: the simple protocol takes both). Plans are chosen per statement
(each is sent with prepare=False: a generic plan cannot see the words), and a sequential scan is
never the way to a query's few matches."""


@asynccontextmanager
async def _planned(conn: Connection) -> AsyncIterator[None]:
    """A read-only transaction with the search's planner settings, ended when the block ends."""
    await conn.execute(_BEGIN, prepare=False)
    try:
        yield
    except BaseException:
        with contextlib.suppress(psycopg.Error):  # the connection may be gone: say what failed
            await conn.execute("ROLLBACK", prepare=False)
        raise
    await conn.execute("COMMIT", prepare=False)


_Row = tuple[str, int]
"""(published_at, rowid) of a matching post."""


# --- how the posts of a condition are found ------------------------------------------------------

PROBE_POSTS = 256
"""The newest posts every search checks first: how many of them match tells a rare query (read
whole through its GIN index) from a common one (read newest first until the page is full)."""
RANK_ALL_UNDER = 1000
"""A query (or a tier) with at most this many matches is read whole through its GIN index and
ordered here; above, its posts are walked newest first (posts_by_time), which stops as soon as
the page is full: reading a GIN index has no order, and costs every match it holds."""
WALK_MAX = 16_384
"""The most posts a walk newest first checks before the GIN index is asked instead (a post costs
about as much to check as a GIN match costs to read, so a walk pays while its matches are dense)."""
_WINDOW_MARGIN = 1.5
"""A window is sized for the matches it should hold at the density seen so far, and this much more."""


_BOUNDS = "(SELECT min(rowid) FROM posts) AS low, (SELECT max(rowid) FROM posts) AS high"


@dataclass(frozen=True, slots=True)
class _Cond:
    """A condition on the posts `p` as SQL and its parameters; `check`, when given, is the same
    condition in the form cheapest to test on a post already read (same parameters, same order),
    where `sql` is the form an index answers."""

    sql: str
    params: tuple[object, ...]
    check: str | None = None

    @property
    def on_row(self) -> str:
        """The condition to test on posts already read (a window, a tier of known rows)."""
        return self.check or self.sql


@dataclass(frozen=True, slots=True)
class _Probe:
    """The matches among the newest PROBE_POSTS posts (newest first) with their tiers, how many
    posts were looked at, and whether those were all of them."""

    rows: list[_Row]
    tiers: list[int]
    walked: int
    whole: bool

    @property
    def density(self) -> float:
        return len(self.rows) / max(1, self.walked)

    def tier_density(self, tier: int) -> float:
        """The share of the posts looked at that rank in `tier` or before."""
        return sum(1 for seen in self.tiers if seen <= tier) / max(1, self.walked)


class _Walker:
    """Finds the newest posts meeting a condition, in one blog or all, exactly whatever way is
    cheapest: a window of the newest posts checked one by one, or the condition's GIN index read
    whole and ordered here. `floor` (a rowid) orders by rowid and keeps only the posts above it,
    as counting does; without it the order is the rank order's, published_at then rowid."""

    def __init__(self, conn: Connection, source_id: str | None) -> None:
        self.conn = conn
        self.source_id = source_id
        self._bounds: tuple[int, int] | None = None
        self._every: dict[_Cond, list[_Row] | None] = {}
        self._tiered: dict[tuple[_Cond, ...], list[_Candidate] | None] = {}

    async def bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) rowid of the posts table; None when it is empty."""
        if self._bounds is None:
            rows = await self._rows(f"SELECT {_BOUNDS}", [])
            if not rows or rows[0]["low"] is None:
                return None
            self._bounds = int(rows[0]["low"]), int(rows[0]["high"])
        return self._bounds

    def _scope(self, floor: int | None) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        if self.source_id is not None:
            where.append("p.source_id = %s")
            params.append(self.source_id)
        if floor is not None:
            where.append("p.rowid > %s")
            params.append(floor)
        return where, params

    @staticmethod
    def _order(floor: int | None) -> str:
        return "p.rowid DESC" if floor is not None else "p.published_at DESC, p.rowid DESC"

    async def _rows(self, sql: str, params: list[object]) -> list[dict[str, Any]]:
        cur = await self.conn.execute(sql, params, prepare=False)
        return await cur.fetchall()

    def _newest_sql(self, floor: int | None) -> tuple[str, list[object]]:
        """The newest posts in scope, at most %s of them (the caller's next parameter)."""
        where, params = self._scope(floor)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        sql = (
            f"SELECT p.rowid, p.published_at, p.search FROM posts p {clause}"
            f"ORDER BY {self._order(floor)} LIMIT %s"
        )
        return sql, params

    async def probe(self, conds: list[_Cond], posts: int = PROBE_POSTS) -> _Probe:
        """Which of the newest `posts` posts meet the last condition (a match), and the first of
        `conds` each meets (its tier): every post checked. In the same statement, when those say
        the query is rare (`_every_match`'s rule), every match with its tier through the GIN
        index, as `every_tiered` reads it (a gate PostgreSQL checks once: a common query's index
        is never read); and the table's rowids. One row, its lists as arrays."""
        *tiers, whole = conds
        inner, params = self._newest_sql(None)
        where, scope = self._scope(None)
        newest_order = "ORDER BY published_at DESC, rowid DESC"
        sql = (
            f"WITH newest AS MATERIALIZED (SELECT p.rowid, p.published_at, "
            f"{_tier_case(tiers, unless=whole)} AS tier FROM ({inner}) AS p), "
            f"seen AS (SELECT count(*) AS walked, count(*) FILTER (WHERE tier >= 0) AS matched, "
            f"{_BOUNDS} FROM newest), "
            "rare AS (SELECT walked >= %s AND matched::float8 / greatest(walked, 1) "
            "* (high - low + 1) <= %s AS rare FROM seen) "
            "SELECT s.walked, s.low, s.high, (SELECT rare FROM rare) AS rare, n.*, e.* FROM seen s, "
            f"(SELECT array_agg(rowid {newest_order}) AS probe_rowids, "
            f"array_agg(published_at {newest_order}) AS probe_published, "
            f"array_agg(tier {newest_order}) AS probe_tiers FROM newest WHERE tier >= 0) AS n, "
            "(SELECT array_agg(rowid) AS every_rowids, array_agg(published_at) AS every_published, "
            "array_agg(tier) AS every_tiers, count(*) AS every_count FROM "
            f"(SELECT p.rowid, p.published_at, {_tier_case(tiers)} AS tier FROM posts p "
            f"WHERE {' AND '.join([whole.sql, *where, '(SELECT rare FROM rare)'])} LIMIT %s) AS x"
            ") AS e"
        )
        tier_values = [param for cond in tiers for param in cond.params]
        values = [
            *whole.params,
            *tier_values,
            *params,
            posts,
            posts,
            RANK_ALL_UNDER,
            *tier_values,
            *whole.params,
            *scope,
            RANK_ALL_UNDER + 1,
        ]
        (row,) = await self._rows(sql, values)
        if row["low"] is not None:  # the table's rowids, in the same round trip
            self._bounds = int(row["low"]), int(row["high"])
        walked = int(row["walked"])
        probe = _Probe(
            [
                (str(published), int(rowid))
                for published, rowid in zip(
                    row["probe_published"] or (), row["probe_rowids"] or (), strict=True
                )
            ],
            [int(tier) for tier in row["probe_tiers"] or ()],
            walked,
            walked < posts,
        )
        if row["rare"]:  # every match was read: `every_tiered`'s answer, kept as it keeps it
            found = (
                None
                if int(row["every_count"]) > RANK_ALL_UNDER
                else [
                    (float(tier), str(published), int(rowid))
                    for tier, published, rowid in zip(
                        row["every_tiers"] or (),
                        row["every_published"] or (),
                        row["every_rowids"] or (),
                        strict=True,
                    )
                ]
            )
            self._keep_tiered(conds, found)
        return probe

    async def _window(self, cond: _Cond, posts: int, limit: int, floor: int | None) -> list[_Row]:
        """The newest `limit` posts meeting `cond` among the newest `posts` posts."""
        inner, params = self._newest_sql(floor)
        sql = (
            f"SELECT p.rowid, p.published_at FROM ({inner}) AS p WHERE {cond.on_row} "
            f"ORDER BY {self._order(floor)} LIMIT %s"
        )
        rows = await self._rows(sql, [*params, posts, *cond.params, limit])
        return [(str(r["published_at"]), int(r["rowid"])) for r in rows]

    async def _beyond(self, posts: int, floor: int | None) -> bool:
        """Whether there are more than `posts` posts in scope."""
        where, params = self._scope(floor)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        sql = f"SELECT 1 FROM posts p {clause}ORDER BY {self._order(floor)} OFFSET %s LIMIT 1"
        return bool(await self._rows(sql, [*params, posts]))

    async def every(self, cond: _Cond, cap: int, floor: int | None = None) -> list[_Row] | None:
        """Every post meeting `cond` (in no order) through its GIN index; None past `cap`."""
        if floor is None and cond in self._every:
            return self._every[cond]
        where, params = self._scope(floor)
        sql = (
            f"SELECT p.rowid, p.published_at FROM posts p WHERE {' AND '.join([cond.sql, *where])} "
            "LIMIT %s"
        )
        rows = await self._rows(sql, [*cond.params, *params, cap + 1])
        found = (
            None if len(rows) > cap else [(str(r["published_at"]), int(r["rowid"])) for r in rows]
        )
        if floor is None:
            self._every[cond] = found
        return found

    async def every_tiered(self, conds: list[_Cond], cap: int) -> list[_Candidate] | None:
        """Every post meeting the last of `conds` (a match, through its GIN index) with its tier,
        the first of the others it meets: one statement; None past `cap`."""
        key = tuple(conds)
        if key in self._tiered:
            return self._tiered[key]
        *tiers, whole = conds
        where, params = self._scope(None)
        sql = (
            f"SELECT p.rowid, p.published_at, {_tier_case(tiers)} AS tier FROM posts p "
            f"WHERE {' AND '.join([whole.sql, *where])} LIMIT %s"
        )
        values = [param for cond in tiers for param in cond.params]
        rows = await self._rows(sql, [*values, *whole.params, *params, cap + 1])
        found = (
            None
            if len(rows) > cap
            else [(float(r["tier"]), str(r["published_at"]), int(r["rowid"])) for r in rows]
        )
        self._keep_tiered(conds, found)
        return found

    def _keep_tiered(self, conds: list[_Cond], found: list[_Candidate] | None) -> None:
        self._tiered[tuple(conds)] = found
        # The same answer for the match alone (a walk's tier may ask the GIN index for it).
        self._every[conds[-1]] = None if found is None else [(p, r) for _, p, r in found]

    async def by_rowid_ranges(
        self, cond: _Cond, limit: int, floor: int, density: float
    ) -> list[_Row]:
        """The first `limit` posts above `floor` meeting `cond`, by rowid, newest first: the GIN
        index ANDed with a range of the newest rowids (grown until it holds `limit`), so only the
        matches in the range are read from the table. Exact only for a condition its GIN index
        answers without reading the rows (no phrase): else a walk is as cheap."""
        bounds = await self.bounds()
        if bounds is None:
            return []
        high = bounds[1]
        span = _window_for(limit, density)
        where, params = self._scope(None)
        sql = (
            f"SELECT p.rowid, p.published_at FROM posts p "
            f"WHERE {' AND '.join([cond.sql, 'p.rowid > %s', *where])} "
            "ORDER BY p.rowid DESC LIMIT %s"
        )
        while True:
            above = max(floor, high - span)
            # A bitmap of the range ANDed with the GIN index's, not a walk of the rowid index.
            # (On a failure the transaction is rolled back, and the setting with it.)
            await self.conn.execute("SET LOCAL enable_indexscan = off", prepare=False)
            rows = await self._rows(sql, [*cond.params, above, *params, limit])
            await self.conn.execute("SET LOCAL enable_indexscan = on", prepare=False)
            if len(rows) >= limit or above <= floor:
                return [(str(r["published_at"]), int(r["rowid"])) for r in rows]
            span *= 4

    async def _walk(self, cond: _Cond, limit: int, floor: int | None) -> list[_Row]:
        where, params = self._scope(floor)
        sql = (
            f"SELECT p.rowid, p.published_at FROM posts p WHERE {' AND '.join([cond.sql, *where])} "
            f"ORDER BY {self._order(floor)} LIMIT %s"
        )
        rows = await self._rows(sql, [*cond.params, *params, limit])
        return [(str(r["published_at"]), int(r["rowid"])) for r in rows]

    async def newest(
        self,
        cond: _Cond,
        limit: int,
        *,
        floor: int | None = None,
        density: float | None = None,
    ) -> list[_Row]:
        """The first `limit` posts meeting `cond`, in order (see the class). `density`, the share
        of posts seen to match, sizes the first window; without it a probe's worth is walked."""
        bounds = await self.bounds()
        if bounds is None:
            return []
        table = bounds[1] - bounds[0] + 1  # at least as many as there are posts
        if density is not None and density * table <= RANK_ALL_UNDER / 2:  # rare, by the probe
            every = await self.every(cond, RANK_ALL_UNDER, floor)
            if every is not None:
                return _ordered(every, floor)[:limit]
            density = None  # the probe was wrong: many match, though not among the newest
        posts = PROBE_POSTS if not density else _window_for(limit, density)
        seen = density or 0.0
        while posts <= WALK_MAX:
            rows = await self._window(cond, posts, limit, floor)
            if len(rows) >= limit or posts >= table or not await self._beyond(posts, floor):
                return rows
            seen = len(rows) / posts
            posts = max(posts * 4, _window_for(limit, seen) if rows else WALK_MAX + 1)
        if seen * table <= RANK_ALL_UNDER:  # rare: read them all through the GIN index
            every = await self.every(cond, RANK_ALL_UNDER, floor)
            if every is not None:
                return _ordered(every, floor)[:limit]
        return await self._walk(cond, limit, floor)  # many matches: newest first to the end


def _tier_case(tiers: list[_Cond], unless: _Cond | None = None) -> str:
    """A CASE giving the first of `tiers` a post meets (the last tier's number when none), or
    -1 when it does not meet `unless`. Its parameters: `unless`'s, then each tier's, in order."""
    cases = " ".join(f"WHEN {cond.on_row} THEN {tier}" for tier, cond in enumerate(tiers))
    first = "" if unless is None else f"WHEN NOT ({unless.on_row}) THEN -1 "
    return f"CASE {first}{cases} ELSE {len(tiers)} END"


def _ordered(rows: list[_Row], floor: int | None) -> list[_Row]:
    """Rows in a walk's order: rowid (counting, when there is a floor), else the rank order's."""
    if floor is not None:
        return sorted(rows, key=lambda row: row[1], reverse=True)
    return sorted(rows, reverse=True)


def _window_for(limit: int, density: float) -> int:
    """How many of the newest posts should hold `limit` matches at `density`."""
    return max(PROBE_POSTS, int(limit / max(density, 1e-9) * _WINDOW_MARGIN) + 1)


def _whole(match: TsQuery) -> _Cond:
    return _Cond(f"p.search @@ {match.sql}", match.params)


def _tiers(match: TsQuery, marks: TsQuery) -> list[_Cond]:
    """Each tier's condition (TIER_WEIGHTS): its weights' part of the vector matches (the heading
    tiers with the query's marks), and the whole post matches `match` (left out where implied: a
    match in a part is one in the whole unless the query excludes something)."""
    whole = _whole(match)
    excludes = "!!" in match.sql
    conds: list[_Cond] = []
    for tier, weights in enumerate(TIER_WEIGHTS):
        if weights is None:
            conds.append(whole)
            continue
        expression = marks if tier < 2 else match
        cond = _Cond(
            f"ts_filter(p.search, '{weights}') @@ {expression.sql}",
            expression.params,
            f"p.search @@ {_weighted(expression.sql, weights)}",
        )
        if excludes or expression != match:
            cond = _Cond(
                f"{cond.sql} AND {whole.sql}",
                (*cond.params, *whole.params),
                f"{cond.check} AND {whole.sql}",
            )
        conds.append(cond)
    return conds


_LEXEME = "(''(?:[^'']|'''')*'')"
"""A lexeme as a tsquery's text writes it, single-quoted (a quote inside doubled), in SQL."""


def _weighted(expression: str, weights: str) -> str:
    """The tsquery `expression` with every lexeme held to `weights` (`{a,b}`: 'word':AB), so that
    `search @@` it is `ts_filter(search, weights) @@ expression` without a filtered copy of each
    post's vector (two to three times cheaper per post). The weights are written into the query's
    text, after each lexeme and after a prefix's `:*`; an empty query stays as it is."""
    letters = weights.strip("{}").replace(",", "").upper()
    return (
        "(SELECT CASE WHEN numnode(q) = 0 THEN q ELSE replace(regexp_replace(q::text, "
        f"'{_LEXEME}', '\\1:{letters}', 'g'), ':{letters}:*', ':*{letters}')::tsquery END "
        f"FROM (SELECT {expression} AS q) AS weighted)"
    )


async def _candidates(
    walker: _Walker, conds: list[_Cond], need: int, probe: _Probe
) -> list[_Candidate]:
    """The first `need` posts in rank order: tier (title, then byline or location, then body,
    then the rest), then newest first. The heading tiers are found with the query's marks (`u s`
    for US: the title and byline hold no joined forms), held to `match` over the whole post, as in
    SQLite; a title match is never lost behind newer body matches: the tier is part of the order.

    A query with few matches (judged by the probe of the newest posts, and held to
    RANK_ALL_UNDER) is read whole and tiered here. Otherwise each tier is read newest first, as
    SQLite walks its tiers, only while the page is not full: a tier is left once it has fewer
    posts than the page still needs, so every post of an earlier tier is already ranked.
    `conds`: the tiers' conditions (`_tiers`)."""
    few = await _every_match(walker, conds, probe)
    if few is not None:
        return sorted(few, key=lambda c: (-c[0], c[1], c[2]), reverse=True)[:need]
    ranked: list[_Candidate] = []
    seen: set[int] = set()
    for tier, cond in enumerate(conds):
        wanted = need - len(ranked)
        if wanted <= 0:
            break
        # Rows of earlier tiers meet this tier's condition too (those tiers were read to the end).
        limit = wanted + len(seen)
        rows = await walker.newest(cond, limit, density=probe.tier_density(tier))
        fresh = [row for row in rows if row[1] not in seen][:wanted]
        for published, rowid in fresh:
            ranked.append((float(tier), published, rowid))
            seen.add(rowid)
    return ranked


async def _every_match(
    walker: _Walker, conds: list[_Cond], probe: _Probe
) -> list[_Candidate] | None:
    """Every match of a rare query with its tier (`conds`: the tiers' conditions, the whole
    match last), in no order; None for a common one (the probe's density spread over the table,
    or the GIN index, says more than RANK_ALL_UNDER match). The probe's own when it saw every
    post: it tiered them already."""
    if probe.whole:
        return [
            (float(tier), published, rowid)
            for (published, rowid), tier in zip(probe.rows, probe.tiers, strict=True)
        ]
    bounds = await walker.bounds()
    posts = 0 if bounds is None else bounds[1] - bounds[0] + 1
    if probe.density * posts > RANK_ALL_UNDER:
        return None
    return await walker.every_tiered(conds, RANK_ALL_UNDER)


DENSE = 0.2
"""A query matching at least this share of the newest posts is counted by walking them: below,
its 1,001 matches are found faster by the GIN index ANDed with a range of the newest rowids."""


def _exact_in_index(match: str) -> bool:
    """Whether GIN answers the FTS5 expression (as `tsquery` reads it) without reading the posts:
    no phrase of several words (GIN holds no positions)."""
    return not any(
        isinstance(lexeme, syntax.Phrase) and " " in lexeme.text for lexeme in syntax.lexemes(match)
    )


async def _count(
    walker: _Walker, conds: list[_Cond], probe: _Probe, exact: bool = False
) -> tuple[int, bool]:
    """(count, is an estimate), as storage.search counts: only the newest COUNT_SPAN posts are
    walked, and at most COUNT_WINDOW + 1 matches among them; exact when every post is within the
    span and no more match, else the density of matches in what was walked, spread over the whole
    table and rounded to two significant figures."""
    bounds = await walker.bounds()
    if bounds is None:
        return 0, False
    low, high = bounds
    floor = high - COUNT_SPAN
    whole = conds[-1]
    few = await _every_match(walker, conds, probe)
    if few is not None:
        rowids = sorted((rowid for _, _, rowid in few if rowid > floor), reverse=True)
        rowids = rowids[: COUNT_WINDOW + 1]
    elif probe.density >= DENSE or not exact:
        found = await walker.newest(whole, COUNT_WINDOW + 1, floor=floor, density=probe.density)
        rowids = [rowid for _, rowid in found]
    else:
        found = await walker.by_rowid_ranges(whole, COUNT_WINDOW + 1, floor, probe.density)
        rowids = [rowid for _, rowid in found]
    if len(rowids) > COUNT_WINDOW:
        boundary = rowids[COUNT_WINDOW - 1]
        high = max(high, rowids[0])
        spread = COUNT_WINDOW * (high - low + 1) / max(1, high - boundary + 1)
        return max(COUNT_WINDOW + 1, _two_figures(spread)), True
    if floor < low:
        return len(rowids), False
    return _two_figures(len(rowids) * (high - low + 1) / COUNT_SPAN), True


def _two_figures(value: float) -> int:
    """Rounded to two significant figures: 338,512 is 340,000."""
    number = round(value)
    if number < 100:
        return number
    digits = len(str(number))
    return round(number, 2 - digits)


async def _hits(
    conn: Connection, marks: TsQuery, chosen: list[_Candidate]
) -> tuple[SearchHit, ...]:
    """The chosen posts with highlighted title and snippet (ts_headline), for those rows only, in
    one statement. A caption's and the background's headlines (and texts) are made only for the
    posts whose text's holds no mark (a headline parses its whole text: most of a search's cost
    once the posts are found)."""
    if not chosen:
        return ()
    (text_source, text_column), *others = _SNIPPET_SOURCES
    unmarked = f"strpos(h.snippet_{text_source}, %s) = 0"
    columns = [
        f"h.marked_title, h.snippet_{text_source}, {text_column} AS source_{text_source}",
    ]
    params: list[object] = []
    sources: list[str] = []
    for where, column in others:
        columns.append(
            f"CASE WHEN o.source_{where} IS NOT NULL THEN ts_headline('{CONFIG}', "
            f"o.source_{where}, {marks.sql}, %s) END AS snippet_{where}, o.source_{where}"
        )
        params.extend((*marks.params, _SNIPPET_OPTIONS))
        sources.append(f"CASE WHEN {unmarked} THEN {column} END AS source_{where}")
    # OFFSET 0 keeps each headline and each other source a value of its own, made once, not once
    # per use (a post's captions are read out of its JSON by a function).
    sql = (
        f"SELECT {POST_COLUMNS}, {', '.join(columns)} FROM posts p CROSS JOIN LATERAL "
        f"(SELECT ts_headline('{CONFIG}', p.title, {marks.sql}, %s) AS marked_title, "
        f"coalesce(ts_headline('{CONFIG}', {text_column}, {marks.sql}, %s), '') "
        f"AS snippet_{text_source} OFFSET 0) AS h CROSS JOIN LATERAL "
        f"(SELECT {', '.join(sources)} OFFSET 0) AS o WHERE p.rowid = ANY(%s)"
    )
    params = [
        *params,
        *marks.params,
        _TITLE_OPTIONS,
        *marks.params,
        _SNIPPET_OPTIONS,
        *(_MARK_START for _ in others),
        [rowid for _, _, rowid in chosen],
    ]
    cur = await conn.execute(sql, params, prepare=False)
    rows = {int(row["rowid"]): row for row in await cur.fetchall()}
    hits: list[SearchHit] = []
    for score, _, rowid in chosen:
        row = rows.get(rowid)
        if row is None:  # deleted since it was ranked
            continue
        hits.append(
            SearchHit(
                post=post_from_row(row),
                title=_marked(row["marked_title"] or ""),
                snippet=_chosen_snippet(row),
                rank=score,
            )
        )
    return tuple(hits)


def _chosen_snippet(row: dict[str, Any]) -> Highlighted:
    """The body's snippet when the body matched (or nothing else did: a title match shows the
    text's start), else the caption's or the background's, labelled with where it comes from."""
    for where, _ in _SNIPPET_SOURCES:
        marked = row.get(f"snippet_{where}") or ""
        if _MARK_START in marked:
            return _marked(_elided(marked, row.get(f"source_{where}") or ""), where)
    return _marked(_elided(row["snippet_text"] or "", row["source_text"] or ""))


def _elided(marked: str, text: str) -> str:
    """The snippet with `…` where it cuts the text, as FTS5's snippet() shows."""
    plain = marked.replace(_MARK_START, "").replace(_MARK_END, "")
    if not plain:
        return marked
    if not text.startswith(plain):
        marked = _ELLIPSIS + marked
    if not text.endswith(plain):
        marked += _ELLIPSIS
    return marked


_MARKERS = re.compile(f"([{_MARK_START}{_MARK_END}])")
_BETWEEN_MARKS = re.compile(f"{_MARK_END}( +){_MARK_START}")


def _marked(text: str, where: SnippetSource = "text") -> Highlighted:
    """Text with \\x02…\\x03 markers as Highlighted segments (the runs between the markers)."""
    segments: list[Segment] = []
    inside = False
    # ts_headline marks a phrase word by word; FTS5 marks it whole: join marks only a space apart.
    text = _BETWEEN_MARKS.sub(r"\1", text)
    for piece in _MARKERS.split(text):
        if piece in (_MARK_START, _MARK_END):
            inside = piece == _MARK_START
        elif piece:
            if segments and segments[-1][1] == inside:
                segments[-1] = (segments[-1][0] + piece, inside)
            else:
                segments.append((piece, inside))
    return Highlighted(segments=tuple(segments), where=where)
