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
  `to_tsquery` does (`blinking*` is `blink:*`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import NamedTuple

import psycopg

from storage.pg_db import Connection
from storage.query import HOW_TO, CompiledQuery, QueryError

log = logging.getLogger(__name__)

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
_LEXEME = re.compile(r'"([^"]*)"(\*?)|(AND|OR|NOT)\b|([()])|(\s+)')


@dataclass(frozen=True, slots=True)
class _Phrase:
    words: tuple[str, ...]
    prefix: bool


@dataclass(frozen=True, slots=True)
class _Not:
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _And:
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Or:
    left: _Node
    right: _Node


_Node = _Phrase | _Not | _And | _Or


def _bug(match: str, why: str) -> QueryError:
    log.warning("not a MATCH expression storage.query writes (%s): %r", why, match)
    return QueryError(f"Couldn't search for that. {HOW_TO}")


def _lexemes(match: str) -> list[str | _Phrase]:
    """The expression's tokens: phrases, operators and brackets; QueryError for anything else."""
    tokens: list[str | _Phrase] = []
    position = 0
    while position < len(match):
        found = _LEXEME.match(match, position)
        if found is None:
            raise _bug(match, f"unexpected text at {position}")
        position = found.end()
        inner, star, operator, bracket, _ = found.groups()
        if inner is not None:
            words = tuple(inner.split(" "))
            for word in words:
                if not word or word != word.lower() or any(ch.isspace() for ch in word):
                    raise _bug(match, f"a phrase word {word!r}")
                if _TSQUERY_SYNTAX.intersection(word):
                    raise _bug(match, f"a phrase word {word!r}")
            tokens.append(_Phrase(words, star == "*"))
        elif operator is not None:
            tokens.append(operator)
        elif bracket is not None:
            tokens.append(bracket)
    return tokens


class _Parser:
    """Recursive descent over FTS5's precedence: or := and (OR and)*; and := not (AND not)*;
    not := atom (NOT atom)*; atom := phrase | ( or )."""

    def __init__(self, match: str) -> None:
        self.match = match
        self.tokens = _lexemes(match)
        self.at = 0

    def parse(self) -> _Node:
        if not self.tokens:
            raise _bug(self.match, "empty")
        node = self._or()
        if self.at != len(self.tokens):
            raise _bug(self.match, f"unexpected {self.tokens[self.at]!r}")
        return node

    def _peek(self) -> str | _Phrase | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _or(self) -> _Node:
        node = self._and()
        while self._peek() == "OR":
            self.at += 1
            node = _Or(node, self._and())
        return node

    def _and(self) -> _Node:
        node = self._not()
        while self._peek() == "AND":
            self.at += 1
            node = _And(node, self._not())
        return node

    def _not(self) -> _Node:
        node = self._atom()
        while self._peek() == "NOT":
            self.at += 1
            node = _Not(node, self._atom())
        return node

    def _atom(self) -> _Node:
        token = self._peek()
        self.at += 1
        if isinstance(token, _Phrase):
            return token
        if token == "(":
            node = self._or()
            if self._peek() != ")":
                raise _bug(self.match, "an unclosed bracket")
            self.at += 1
            return node
        raise _bug(self.match, f"expected a phrase or a bracket, found {token!r}")


def _phrase_sql(phrase: _Phrase, params: list[str]) -> str:
    if not phrase.prefix:
        params.append(" ".join(phrase.words))
        return f"phraseto_tsquery('{CONFIG}', %s)"
    # `"u s"*`: the phrase `u`, then a word beginning with `s`.
    *words, last = phrase.words
    # A prefix that is a stop word alone would be an empty query: read it as it is typed.
    params.extend((last, last))
    prefix = (
        f"(SELECT CASE WHEN numnode(q) = 0 THEN to_tsquery('simple', %s || ':*') ELSE q END "
        f"FROM to_tsquery('{CONFIG}', %s || ':*') AS q)"
    )
    if not words:
        return prefix
    params.insert(len(params) - 2, " ".join(words))
    return f"(phraseto_tsquery('{CONFIG}', %s) <-> {prefix})"


def _render(node: _Node, params: list[str]) -> str:
    if isinstance(node, _Phrase):
        return _phrase_sql(node, params)
    left = _render(node.left, params)
    right = _render(node.right, params)
    if isinstance(node, _Not):
        return f"({left} && !!{right})"
    if isinstance(node, _And):
        return f"({left} && {right})"
    return f"({left} || {right})"


def tsquery(match: str) -> TsQuery:
    """The tsquery of an FTS5 MATCH expression written by storage.query (`CompiledQuery.match` or
    `.marks`); pure. QueryError (with storage.query.HOW_TO) for anything storage.query does not
    write: that is a bug, logged."""
    params: list[str] = []
    sql = _render(_Parser(match).parse(), params)
    return TsQuery(sql, tuple(params))


# --- one post ---------------------------------------------------------------------------------------


async def post_matches(conn: Connection, query: CompiledQuery, post_rowid: int) -> bool:
    """Whether one stored post matches; works inside an open write transaction (the generated
    column is in step with the row). A failure is logged and is no match, as in SQLite; it runs
    under a savepoint, so it never spoils the caller's transaction."""
    try:
        compiled = tsquery(query.match)
    except QueryError:
        return False
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT 1 FROM posts WHERE rowid = %s AND search @@ {compiled.sql}",
                (post_rowid, *compiled.params),
            )
            return await cur.fetchone() is not None
    except psycopg.Error as error:
        log.warning("post_matches failed for %r: %s", query.match, error)
        return False
