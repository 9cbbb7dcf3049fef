"""Full-text search: the user's query language → a safe FTS5 expression, ranking, highlighted snippets.

The language: words (all must match), "phrases", OR, AND, NOT (in capitals), -exclusion and prefix*.
A lowercase `or`/`and` is a plain word, with a notice (as is an operator with nothing beside it).
Anything else is read as plain words (with a notice) or answered with a QueryError whose text says how
to write the query. Every word reaches FTS5 double-quoted, so no user text is ever FTS5 syntax, and no
SQL or FTS error ever reaches the user.

What a reader means is folded in when the query is compiled, so nothing needs re-indexing: `U.S.` and
`US` are the joined `us`, which the index holds for every dotted abbreviation (storage.index_text);
`de-escalate` is the phrase `de escalate` or the joined `deescalate`, and `de escalate` may also be
`deescalate`; a name takes its spelling variants (storage.variants: Kyiv = Kiev). Curly quotes,
apostrophes and dashes read as straight ones, non-breaking spaces as spaces; FTS5 folds case and
diacritics. The index covers the title, byline, body, image captions with their credits, the
background and the location (storage.db.FTS_COLUMNS); a snippet comes from a caption or the
background, and says so (`Highlighted.where`), when only they matched.

Ranking is by tier, then recency: posts whose title matches first, then those whose byline or
location does, then the body, then any other match (captions, background, words spread over
several columns); within a tier the newest first. Each tier is a column-filtered walk of an index
newest first that stops once the page is full, so nothing is scored and a common word costs what a
rare one does; title, byline and location have a small index of their own (posts_heads), so the
first tiers stay cheap even when no title matches. bm25 is not used: it reads every match of every term once per query (its IDF), which
at a million posts costs up to ~300 ms for a common word or a phrase of common words.
The count is exact up to COUNT_WINDOW matches among the newest COUNT_SPAN posts and an estimate
beyond (labelled "about …");
see bench/search.py for the figures.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

import aiosqlite

from storage import variants as variants_table
from storage.db import FTS_COLUMNS, FTS_OPTIONS, Database
from storage.index_text import HYPHENS, captions_text, joined_words
from storage.models import Highlighted, Post, Segment, SnippetSource
from storage.posts import POST_COLUMNS, post_from_row
from storage.variants import Form

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
MAX_TERMS = 32
MAX_QUERY_CHARS = 1000
MAX_PER_PAGE = 50
SNIPPET_TOKENS = 32
# bm25 weights per posts_fts column (storage.db.FTS_COLUMNS): title, byline, body, captions,
# background, location, joined (the joined forms of dotted and hyphenated words, weighed as body).
RANK_EXPRESSION = "bm25(posts_fts, 10.0, 5.0, 1.0, 0.5, 0.5, 2.0, 1.0)"
MAX_JOINED_PAIRS = 3
"""A word typed apart from the prefix it compounds with is also tried as one word (`de escalate` finds
`deescalate`): at most this many pairs per query, so a long query does not grow many alternatives."""
COMPOUND_PREFIXES = frozenset(
    [
        "anti",
        "bi",
        "co",
        "counter",
        "cross",
        "cyber",
        "de",
        "dis",
        "ex",
        "extra",
        "inter",
        "intra",
        "macro",
        "micro",
        "mid",
        "mini",
        "multi",
        "neo",
        "non",
        "over",
        "pan",
        "post",
        "pre",
        "pro",
        "re",
        "semi",
        "sub",
        "super",
        "trans",
        "tri",
        "ultra",
        "un",
        "under",
        "vice",
    ]
)
"""The prefixes news writes joined, hyphenated or apart (deescalate, de-escalate, de escalate)."""

HOW_TO = 'Search with words, "a phrase", OR, -word to leave out, or a prefix like Blink*.'
_MARK_START = "\x02"
_MARK_END = "\x03"


class QueryError(ValueError):
    """A query that cannot be searched; str(e) is one short polite line saying how to write it."""


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    text: str
    match: str
    """A safe FTS5 MATCH expression."""
    terms: tuple[str, ...]
    """The positive words and phrases, as the user wrote them (phrases in double quotes)."""
    notice: str | None
    """Set when part of the input was reinterpreted, e.g. 'Read "NEAR(" as plain words.'"""
    highlight: str = ""
    """`match` with forms only worth marking in the text (`u s` for US: `match` finds U.S. through
    the joined forms); matches every post `match` does. For highlights and snippets only."""

    @property
    def marks(self) -> str:
        """The expression to highlight with."""
        return self.highlight or self.match


@dataclass(frozen=True, slots=True)
class SearchHit:
    post: Post
    title: Highlighted
    snippet: Highlighted
    rank: float


@dataclass(frozen=True, slots=True)
class SearchPage:
    query: str
    hits: tuple[SearchHit, ...]
    page: int
    per_page: int
    total: int
    notice: str | None
    total_is_estimate: bool = False
    """True when more than COUNT_WINDOW posts match: `total` is then an estimate (never below
    COUNT_WINDOW + 1)."""
    more: bool | None = None
    """Whether a post follows this page; None: decided by `total`."""

    @property
    def has_more(self) -> bool:
        if self.more is not None:
            return self.more
        return self.page * self.per_page < self.total

    @property
    def total_label(self) -> str:
        """'12', or 'about 340,000' when the count is an estimate."""
        return f"about {self.total:,}" if self.total_is_estimate else f"{self.total:,}"


# --- the query language -----------------------------------------------------------------------------

_OPERATORS = frozenset({"OR", "AND", "NOT"})
# Operators only in capitals; these in any other case are words, with a notice.
_CAPITALS_ONLY = frozenset({"OR", "AND"})
# unicode61 keeps letters and numbers and splits on everything else; so do we.
_PIECE = re.compile(r"[^\W_]+")
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
# Characters that are FTS5 syntax: worth telling the user we read them as plain text.
_SYNTAX = re.compile(r"[:^+{}]")
_NEAR = re.compile(r"\bNEAR\s*\(", re.IGNORECASE)
_BRACKETS = frozenset("()")
# What stands between the letters of an abbreviation (U.S.) or the parts of a compound (de-escalate).
_DOTTED = re.compile(r"^[^\W\d_](?:\.[^\W\d_])+\.?$")
_PART = r"(?:[^\W\d_]\.(?:[^\W\d_]\.?)+|[^\W_]+)"
_HYPHENATED = re.compile(rf"^{_PART}(?:[{HYPHENS}]{_PART})+$")
_QUOTES = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2033": '"',
        "\uff02": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "\u2212": "-",
        "\u2013": "-",
        "\uff0a": "*",
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
        "\u200b": " ",
        "\ufeff": " ",
    }
)


def _quoted(form: Form) -> str:
    return '"' + " ".join(form) + '"'


def _either(forms: tuple[Form, ...]) -> str:
    if len(forms) == 1:
        return _quoted(forms[0])
    return "(" + " OR ".join(_quoted(f) for f in forms) + ")"


@dataclass(frozen=True, slots=True)
class _Atom:
    pieces: Form
    prefix: bool
    phrase: bool
    negated: bool
    label: str = ""
    alternatives: tuple[Form, ...] = ()
    """Other forms that mean the same (the joined compound, a name's variants): OR'ed in."""
    marks: tuple[Form, ...] = ()
    """Forms only worth marking in the text (`u s` for US): in `CompiledQuery.highlight` only."""

    @property
    def expression(self) -> str:
        if self.prefix:
            return _quoted(self.pieces) + "*"
        return _either((self.pieces, *self.alternatives))

    @property
    def marks_expression(self) -> str:
        if self.prefix or not self.marks:
            return self.expression
        return _either((self.pieces, *self.alternatives, *self.marks))

    @property
    def plain(self) -> bool:
        """One word as typed, nothing folded into it: it may join its neighbour (`de escalate`)."""
        plain = not (self.prefix or self.phrase or self.alternatives or self.marks)
        return plain and len(self.pieces) == 1

    @property
    def display(self) -> str:
        if self.phrase:
            return '"' + " ".join(self.pieces) + '"' + ("*" if self.prefix else "")
        return self.label or " ".join(self.pieces)


@dataclass(frozen=True, slots=True)
class _Op:
    name: str  # OR | AND | NOT


_Token = _Atom | _Op


def _folded(form: Form) -> Form:
    return variants_table.fold(" ".join(form))


def _with_variants(atom: _Atom) -> _Atom:
    """The atom with the other spellings of its name (Kiev for Kyiv) among its alternatives."""
    if atom.prefix:
        return atom
    table = variants_table.active()
    extra: list[Form] = []
    for form in (atom.pieces, *atom.alternatives):
        folded = _folded(form)
        others = table.of(folded)[1:]
        if not others and len(folded) > 1 and folded[-1] == "s":  # a possessive: Kiev's
            others = tuple((*other, "s") for other in table.of(folded[:-1])[1:])
        for other in others:
            if other not in extra and other != atom.pieces and other not in atom.alternatives:
                extra.append(other)
    if not extra:
        return atom
    return replace(atom, alternatives=(*atom.alternatives, *extra))


def _is_capitals(word: str) -> bool:
    """An abbreviation typed in capitals (US, EU)."""
    return 2 <= len(word) <= 5 and word.isalpha() and word.isupper()


def _word_forms(raw: str) -> tuple[Form, tuple[Form, ...], tuple[Form, ...]]:
    """A typed word's pieces, its alternatives and its marks-only forms.

    `U.S.` is the joined `us` (which the index holds for every `U.S.`), marking `u s` in the text;
    `de-escalate` is the phrase `de escalate` or the joined `deescalate`; `US` marks `U.S.` too."""
    word = _EDGES.sub("", raw)
    pieces = tuple(p.lower() for p in _PIECE.findall(word))
    if len(pieces) > 1 and _DOTTED.match(word):
        return ("".join(pieces),), (), (pieces,)
    if len(pieces) > 1 and _HYPHENATED.match(word):
        # `US-Russia` marks `U.S.-Russia` in the text too: an abbreviation typed in capitals.
        spelled = tuple(
            letter
            for part in _PIECE.findall(word)
            for letter in (tuple(part.lower()) if _is_capitals(part) else (part.lower(),))
        )
        return pieces, (("".join(pieces),),), ((spelled,) if spelled != pieces else ())
    if len(pieces) == 1 and _is_capitals(word):
        # An abbreviation typed in capitals (US, EU): its dotted form is worth marking too.
        return pieces, (), (tuple(pieces[0]),)
    return pieces, (), ()


def _phrase_forms(inner: str) -> tuple[Form, tuple[Form, ...]]:
    """A quoted phrase's pieces, and the same phrase with its dotted and hyphenated words joined
    (`"U.S. sanctions"` is also `"us sanctions"`)."""
    pieces: list[str] = []
    joined: list[str] = []
    for word in inner.split():
        forms, alternatives, _ = _word_forms(word)
        word_pieces = [p.lower() for p in _PIECE.findall(word)]
        pieces += word_pieces
        if forms != tuple(word_pieces):  # dotted: the joined form is the word's own
            joined += forms
        elif alternatives:
            joined += alternatives[0]
        else:
            joined += word_pieces
    alternatives = (tuple(joined),) if joined != pieces and joined else ()
    return tuple(pieces), alternatives


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.notices: list[str] = []
        self.lone_star = False

    def tokens(self) -> list[_Token]:
        text, i, n = self.text, 0, len(self.text)
        tokens: list[_Token] = []
        if _NEAR.search(text):
            self._notice('Read "NEAR(" as plain words.')
        elif any(ch in _BRACKETS for ch in text):
            self._notice("Read the brackets as plain words.")
        while i < n:
            ch = text[i]
            if ch.isspace() or ch in _BRACKETS:
                i += 1
                continue
            negated = False
            if ch == "-" and i + 1 < n and not text[i + 1].isspace() and text[i + 1] not in "-()":
                negated = True
                i += 1
                ch = text[i]
            if ch == '"':
                end = text.find('"', i + 1)
                if end < 0:
                    self._notice('Read the unmatched " as plain words.')
                    i += 1
                    continue
                inner = text[i + 1 : end]
                i = end + 1
                prefix = i < n and text[i] == "*"
                if prefix:
                    i += 1
                pieces, alternatives = _phrase_forms(inner)
                if pieces:
                    atom = _Atom(pieces, prefix, phrase=True, negated=negated)
                    if not prefix:
                        atom = _with_variants(replace(atom, alternatives=alternatives))
                    tokens.append(atom)
                continue
            start = i
            while i < n and not text[i].isspace() and text[i] not in '"()':
                i += 1
            raw = text[start:i]
            if raw in _OPERATORS and not negated:
                tokens.append(_Op(raw))
                continue
            if raw.upper() in _CAPITALS_ONLY and not negated:
                # "sanctions or NATO" most likely meant OR: say that it was read as a word.
                self._notice(f'Read "{raw}" as a plain word.')
            word = self._word(raw, negated)
            if word is not None:
                tokens.append(word)
        return tokens

    def _word(self, raw: str, negated: bool) -> _Atom | None:
        pieces = tuple(p.lower() for p in _PIECE.findall(raw))
        if not pieces:
            if "*" in raw:
                self.lone_star = True
            return None
        if _SYNTAX.search(raw):
            self._notice(f'Read "{raw}" as plain words.')
        prefix = raw.endswith("*") and _PIECE.search(raw[-2:-1] or "") is not None
        label = _EDGES.sub("", raw).lower() + ("*" if prefix else "")
        if prefix:
            return _Atom(pieces, prefix, phrase=False, negated=negated, label=label)
        forms, alternatives, marks = _word_forms(raw)
        atom = _Atom(forms, False, False, negated, label, alternatives, marks)
        return _with_variants(atom)

    def _notice(self, text: str) -> None:
        if text not in self.notices:
            self.notices.append(text)


def _join_names(tokens: list[_Token]) -> list[_Token]:
    """Read plain words that together spell a name of several words (Czech Republic) as that name,
    with its variants (Czechia); the longest name first."""
    table = variants_table.active()
    if table.longest < 2:
        return tokens
    joined: list[_Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not isinstance(token, _Atom) or not token.plain:
            joined.append(token)
            i += 1
            continue
        run = 1
        while (
            i + run < len(tokens)
            and run < table.longest
            and isinstance(tokens[i + run], _Atom)
            and _plain_like(tokens[i + run], token.negated)
        ):
            run += 1
        for size in range(run, 1, -1):
            words = [t for t in tokens[i : i + size] if isinstance(t, _Atom)]
            form = tuple(p for w in words for p in w.pieces)
            if len(table.of(_folded(form))) > 1:
                name = _Atom(
                    form,
                    False,
                    phrase=False,
                    negated=token.negated,
                    label=" ".join(w.display for w in words),
                )
                joined.append(_with_variants(name))
                i += size
                break
        else:
            joined.append(token)
            i += 1
    return joined


def _plain_like(token: _Token, negated: bool) -> bool:
    return isinstance(token, _Atom) and token.plain and token.negated == negated


def _resolve_operators(tokens: list[_Token], notices: list[str]) -> list[_Token]:
    """Keep operators only where they have something on both sides; read the rest as words."""
    resolved: list[_Token] = []
    for index, token in enumerate(tokens):
        if isinstance(token, _Atom):
            resolved.append(token)
            continue
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        before = resolved[-1] if resolved else None
        next_is_atom = isinstance(after, _Atom) and not after.negated
        if token.name == "NOT":
            valid = next_is_atom
        elif token.name == "AND":
            valid = isinstance(before, _Atom) and (
                next_is_atom or (isinstance(after, _Op) and after.name == "NOT")
            )
        else:  # OR
            valid = isinstance(before, _Atom) and isinstance(after, _Atom)
        if valid:
            resolved.append(token)
        else:
            resolved.append(_Atom((token.name.lower(),), False, phrase=False, negated=False))
            message = f'Read "{token.name}" as a plain word.'
            if message not in notices:
                notices.append(message)
    return resolved


def _all_of(expressions: list[str]) -> str:
    return " AND ".join(expressions)


def _group_expression(positives: list[_Atom], marks: bool) -> str:
    """All the group's words; a prefix and the word after it may also be one joined word
    (`de escalate` finds `deescalate`), as an alternative beside the words themselves."""
    parts = [a.marks_expression if marks else a.expression for a in positives]
    base = _all_of(parts)
    alternatives: list[str] = []
    for index in range(len(positives) - 1):
        first, second = positives[index], positives[index + 1]
        if len(alternatives) >= MAX_JOINED_PAIRS:
            break
        if first.plain and second.plain and first.pieces[0] in COMPOUND_PREFIXES:
            joined = _quoted((first.pieces[0] + second.pieces[0],))
            alternatives.append(_all_of([*parts[:index], joined, *parts[index + 2 :]]))
    if not alternatives:
        return base
    return " OR ".join(f"({e})" for e in (base, *alternatives))


def compile_query(text: str) -> CompiledQuery:
    """Parse the user's query into a safe FTS5 MATCH expression; raises QueryError with a how-to line."""
    original = text
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"That query is too long: use at most {MAX_TERMS} words.")
    normalized = unicodedata.normalize("NFC", text).translate(_QUOTES)
    lexer = _Lexer(normalized)
    tokens = lexer.tokens()
    notices = lexer.notices
    tokens = _join_names(_resolve_operators(tokens, notices))

    groups: list[tuple[list[_Atom], list[_Atom]]] = [([], [])]
    negate_next = False
    for token in tokens:
        if isinstance(token, _Op):
            if token.name == "OR":
                groups.append(([], []))
            elif token.name == "NOT":
                negate_next = True
            continue
        positives, negatives = groups[-1]
        side = negatives if token.negated or negate_next else positives
        if all(a.expression != token.expression for a in side):
            side.append(token)
        negate_next = False

    atoms = sum(len(p) + len(n) for p, n in groups)
    if atoms > MAX_TERMS:
        raise QueryError(f"That query is too long: use at most {MAX_TERMS} words.")

    kept = [(p, n) for p, n in groups if p]
    if len(kept) < len(groups) and kept and any(n for p, n in groups if not p):
        notices.append("Left out an exclusion that had no word to look for beside it.")
    if not kept:
        if atoms:
            raise QueryError("Add at least one word to look for, e.g. Lavrov -Blinken.")
        if lexer.lone_star:
            raise QueryError("Put a few letters before *, e.g. Blink*.")
        raise QueryError('Type a word or two to look for, e.g. sanctions or "written response".')

    def expression(marks: bool) -> str:
        expressions: list[str] = []
        for positives, negatives in kept:
            found = _group_expression(positives, marks)
            if negatives:
                if len(positives) > 1 or " OR " in found:
                    found = f"({found})"
                # Exclusions never take the marks-only forms: `highlight` must match a superset.
                found += "".join(f" NOT {a.expression}" for a in negatives)
            expressions.append(found)
        several = len(expressions) > 1
        return " OR ".join(f"({e})" if several else e for e in expressions)

    terms: list[str] = []
    for positives, _ in kept:
        for atom in positives:
            if atom.display not in terms:
                terms.append(atom.display)
    match = expression(marks=False)
    marked = expression(marks=True)
    return CompiledQuery(
        text=original,
        match=match,
        terms=tuple(terms),
        notice=" ".join(notices) if notices else None,
        highlight=marked if marked != match else "",
    )


# --- searching --------------------------------------------------------------------------------------


async def search(
    db: Database,
    text: str,
    *,
    page: int = 1,
    per_page: int = 5,
    source_id: str | None = None,
) -> SearchPage:
    """One page of posts matching the query, best first; raises QueryError only."""
    query = compile_query(text)
    page = max(1, page)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    offset = (page - 1) * per_page
    try:
        counted: tuple[int, bool] | None = None
        if offset:  # a later page: nothing to walk when it is past the end
            counted = await _count(db.reader, query.match, source_id)
        ranked: list[_Candidate] = []
        known: int | None = None
        if counted is None or offset < counted[0]:
            need = offset + per_page + 1
            ranked, known = await _candidates(
                db.reader, query.match, source_id, need, heads=query.marks
            )
        chosen = ranked[offset : offset + per_page]
        hits = await _hits(db.reader, query.marks, chosen)
        if known is not None:  # the walk saw every match
            total, estimated = known, False
        elif counted is not None:
            total, estimated = counted
        else:
            total, estimated = await _count(db.reader, query.match, source_id)
    except sqlite3.OperationalError as error:
        log.warning("search failed for %r (%s): %s", text, query.match, error)
        raise QueryError(f"Couldn't search for that. {HOW_TO}") from error
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


async def _walk(
    conn: aiosqlite.Connection,
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
    async with conn.execute(sql, params) as cur:
        return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def _whole_post_matches(
    conn: aiosqlite.Connection, match: str, rows: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The rows whose whole post matches: a heading match of `a NOT b` may have b in the body."""
    kept: set[int] = set()
    for where, params in _row_lookups([rowid for _, rowid in rows]):
        sql = f"SELECT posts_fts.rowid FROM posts_fts WHERE posts_fts MATCH ? AND {where}"
        async with conn.execute(sql, [match, *params]) as cur:
            kept.update(int(r[0]) for r in await cur.fetchall())
    return [row for row in rows if row[1] in kept]


CLUSTER_GAP = 256
"""Rowids at most this far apart are looked up by walking the range between them."""


def _row_lookups(rowids: list[int]) -> list[tuple[str, list[int]]]:
    """WHERE clauses (with their parameters) that pick these posts_fts rows cheaply.

    FTS5 answers `rowid IN (…)` by re-running the query once per rowid (~0.1-0.4 ms each), and a
    range by walking every match inside it: rows close together are read as one range, the IN
    list, unindexed (+), picking them out; rows far apart are looked up one by one.
    """
    clusters: list[list[int]] = []
    for rowid in sorted(rowids):
        if clusters and rowid - clusters[-1][-1] <= CLUSTER_GAP:
            clusters[-1].append(rowid)
        else:
            clusters.append([rowid])
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


async def _candidates(
    conn: aiosqlite.Connection,
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
            rows = await _walk(conn, _tier_match(tier_match, columns), source_id, limit, table)
            exhausted = len(rows) < limit
            if table != "posts_fts" and excludes:
                rows = await _whole_post_matches(conn, match, rows)
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


async def _count(conn: aiosqlite.Connection, match: str, source_id: str | None) -> tuple[int, bool]:
    """(count, is an estimate). Only the newest COUNT_SPAN posts are walked, and at most
    COUNT_WINDOW + 1 matches among them: when every post is within the span and no more match,
    the count is exact; else the density of matches in what was walked, spread over the whole
    table and rounded to two significant figures, is the estimate."""
    async with conn.execute(
        "SELECT (SELECT min(rowid) FROM posts), (SELECT max(rowid) FROM posts)"
    ) as cur:
        row = await cur.fetchone()
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
    async with conn.execute(sql, params) as cur:
        rowids = [int(r[0]) for r in await cur.fetchall()]
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


async def _hits(
    conn: aiosqlite.Connection, match: str, chosen: list[_Candidate]
) -> tuple[SearchHit, ...]:
    """The chosen posts with highlighted title and snippet, made for those rows only."""
    if not chosen:
        return ()
    rowids = [rowid for _, _, rowid in chosen]
    sql = (
        f"SELECT {POST_COLUMNS}, "
        f"highlight(posts_fts, 0, '{_MARK_START}', '{_MARK_END}') AS marked_title, "
        f"{_SNIPPETS_SQL} "
        "FROM posts_fts JOIN posts p ON p.rowid = posts_fts.rowid WHERE posts_fts MATCH ?"
    )
    rows: dict[int, Any] = {}
    for where, params in _row_lookups(rowids):
        async with conn.execute(f"{sql} AND {where}", [match, *params]) as cur:
            rows.update((int(r["rowid"]), r) for r in await cur.fetchall())
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
        if ch == _MARK_START:
            flush()
            inside = True
        elif ch == _MARK_END:
            flush()
            inside = False
        else:
            buffer.append(ch)
    flush()
    return Highlighted(segments=tuple(segments), where=where)


async def post_matches(conn: aiosqlite.Connection, query: CompiledQuery, post_rowid: int) -> bool:
    """Whether one stored post matches; works inside an open write transaction (the triggers keep
    the index in step with the posts table)."""
    try:
        async with conn.execute(
            "SELECT 1 FROM posts_fts WHERE posts_fts MATCH ? AND rowid = ?",
            (query.match, post_rowid),
        ) as cur:
            return await cur.fetchone() is not None
    except sqlite3.OperationalError as error:
        log.warning("post_matches failed for %r: %s", query.match, error)
        return False


def matched_terms(query: CompiledQuery, post: Post) -> tuple[str, ...]:
    """Which of the query's positive terms occur in the post (stemmed and folded like the index)."""
    if not query.terms:
        return ()
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
