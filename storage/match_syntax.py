"""The syntax tree of an FTS5 MATCH expression as storage.query writes it; pure.

Two readers need the expression's structure rather than its text: storage.matching (a post matched in
memory, for a keyword alert's terms) and storage.pg_search (the expression written as a tsquery). Both
read it here, with FTS5's precedence: NOT binds tightest, then AND, then OR. storage.query always
writes AND, so an implied AND (`"a" "b"`) is refused as any other text it does not write.

A phrase keeps its quoted text as written (a doubled `""` read as one `"`); what a word of it is, and
whether it is acceptable, is the reader's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str
    prefix: bool


@dataclass(frozen=True, slots=True)
class Not:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any:
    parts: tuple[Node, ...]


Node = Phrase | Not | All | Any

_LEXEME = re.compile(r'\s*(?:"((?:[^"]|"")*)"(\*?)|(\()|(\))|(AND|OR|NOT)(?![^\s()"]))')

_Lexeme = Phrase | str  # a phrase, an operator (AND, OR, NOT) or a bracket


class MatchSyntaxError(ValueError):
    """Not an expression storage.query writes; the message says where it went wrong."""


def lexemes(expression: str) -> list[_Lexeme]:
    """The expression's phrases, operators and brackets, in order."""
    out: list[_Lexeme] = []
    at = 0
    end = len(expression.rstrip())
    while at < end:
        found = _LEXEME.match(expression, at)
        if found is None:
            raise MatchSyntaxError(f"unexpected text at {at}")
        quoted, star, opening, closing, operator = found.groups()
        if quoted is not None:
            out.append(Phrase(quoted.replace('""', '"'), bool(star)))
        else:
            out.append(opening or closing or operator)
        at = found.end()
    return out


def parse(expression: str) -> Node:
    """The expression's tree; MatchSyntaxError when it is empty or not well formed."""
    parser = _Parser(lexemes(expression))
    if not parser.lexemes:
        raise MatchSyntaxError("empty")
    node = parser.any_of()
    if parser.at != len(parser.lexemes):
        raise MatchSyntaxError(f"unexpected {parser.lexemes[parser.at]!r}")
    return node


class _Parser:
    """Recursive descent: any := all (OR all)*; all := not (AND not)*; not := atom (NOT atom)*;
    atom := phrase | ( any )."""

    def __init__(self, found: list[_Lexeme]) -> None:
        self.lexemes = found
        self.at = 0

    def _peek(self) -> _Lexeme | None:
        return self.lexemes[self.at] if self.at < len(self.lexemes) else None

    def _take(self) -> _Lexeme:
        if self.at >= len(self.lexemes):
            raise MatchSyntaxError("unexpected end")
        lexeme = self.lexemes[self.at]
        self.at += 1
        return lexeme

    def any_of(self) -> Node:
        parts = [self._all_of()]
        while self._peek() == "OR":
            self.at += 1
            parts.append(self._all_of())
        return parts[0] if len(parts) == 1 else Any(tuple(parts))

    def _all_of(self) -> Node:
        parts = [self._but_not()]
        while self._peek() == "AND":
            self.at += 1
            parts.append(self._but_not())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def _but_not(self) -> Node:
        node = self._atom()
        while self._peek() == "NOT":
            self.at += 1
            node = Not(node, self._atom())
        return node

    def _atom(self) -> Node:
        lexeme = self._take()
        if isinstance(lexeme, Phrase):
            return lexeme
        if lexeme == "(":
            node = self.any_of()
            if self._take() != ")":
                raise MatchSyntaxError("an unclosed bracket")
            return node
        raise MatchSyntaxError(f"expected a phrase or a bracket, found {lexeme!r}")
