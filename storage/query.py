"""The /search query language, compiled to a safe FTS5 MATCH expression: pure, no database.

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
diacritics.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace

from storage import variants as variants_table
from storage.index_text import HYPHENS
from storage.variants import Form

MAX_TERMS = 32
MAX_QUERY_CHARS = 1000
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


def compile_each(queries: Iterable[str | None]) -> None:
    """Every query readable (QueryError for the first that is not), each distinct one compiled once:
    a file's 100k subscriptions share a few."""
    for query in dict.fromkeys(queries):
        if query:
            compile_query(query)
