"""Which of a keyword query's terms a post holds, without a database: FTS5's matching, in Python.

A keyword alert names the terms that matched (`Card.matched_terms`). Asking FTS5 meant building an
in-memory index of the post per delivery (~1 ms each); this module gives the same answer from the
post's words, tokenized and stemmed the way the index does it (`porter unicode61 remove_diacritics 2`,
storage.db.FTS_OPTIONS), and the compiled query's MATCH expression, evaluated here.

Written by hand rather than taken from a library: the answer must be FTS5's to the letter, and the
stemmers on offer (NLTK's, snowball's) follow other variants of Porter's rules; SQLite's is the 1980
algorithm with its own reading of a few steps, reproduced in `stem`. The tokenizer is exact for ASCII
and for the scripts news is written in (Latin, Greek, Cyrillic, Armenian, punctuation, symbols), which
the tests compare with SQLite character by character; SQLite's Unicode tables are older than Python's,
so for text with any other character `document` answers None and the caller asks FTS5 itself.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from storage import match_syntax as syntax
from storage.index_text import captions_text, joined_words
from storage.models import Post
from storage.query import CompiledQuery, QueryError, compile_query

# --- the tokenizer: unicode61, remove_diacritics 2 -------------------------------------------------

_ASCII_TOKEN = re.compile(r"[a-z0-9]+")
_SUPPORTED = (
    (0x0080, 0x037F),
    (0x0380, 0x0528),
    (0x0530, 0x058D),
    (0x1E00, 0x2066),
    (0x206A, 0x20BA),
    (0x20D0, 0x218A),
    (0x2190, 0x23F4),
    (0x2400, 0x2700),
    (0x2701, 0x2B4D),
    (0x3000, 0x3040),
)
"""Code point ranges [start, end) where this tokenizer and SQLite's agree on every character (the
gaps are characters newer than SQLite's Unicode 6.1 tables, which it reads as letters)."""
_STARTS = [start for start, _ in _SUPPORTED]
_DIACRITICS = frozenset(
    [*range(0x300, 0x305), *range(0x306, 0x30D), 0x30F, 0x311, 0x31B, *range(0x323, 0x329)]
) | {0x32D, 0x32E, 0x330, 0x331}
"""The combining marks SQLite drops inside a word; any other mark ends the word."""
_FOLDS = {
    0x00B5: "\u03bc",  # micro sign: Greek mu
    0x017F: "s",  # long s
    0x1E9B: "s",  # long s with dot above
    0x03C2: "\u03c3",  # final sigma
    0x03D0: "\u03b2",
    0x03D1: "\u03b8",
    0x03D5: "\u03c6",
    0x03D6: "\u03c0",
    0x03F0: "\u03ba",
    0x03F1: "\u03c1",
    0x03F5: "\u03b5",
    0x1FBE: "\u03b9",
    0x212B: "a",  # angstrom sign
}
"""Where SQLite's case folding is Unicode's full folding rather than lower()."""
_LOWER_ONLY = frozenset([*range(0x1E0, 0x1E4), 0x1EE, 0x1EF, *range(0x1FC, 0x200)])
"""Latin letters with two marks whose marks SQLite keeps."""
_LATIN = ((0x80, 0x250), (0x1E00, 0x1F00))
"""The ranges whose diacritics SQLite removes (elsewhere it only folds case)."""
_TOKEN, _MARK, _SEPARATOR = 0, 1, 2
_chars: dict[str, tuple[int, str] | None] = {}
"""Per non-ASCII character: (kind, folded form), or None when SQLite's reading is not known here."""


def _char(ch: str) -> tuple[int, str] | None:
    known = _chars.get(ch, False)
    if known is not False:
        return known  # type: ignore[return-value]
    cp = ord(ch)
    index = bisect.bisect_right(_STARTS, cp) - 1
    entry: tuple[int, str] | None = None
    if index >= 0 and cp < _SUPPORTED[index][1]:
        category = unicodedata.category(ch)
        if cp in _DIACRITICS:
            entry = (_MARK, "")
        elif category[0] in "LN" or category in ("Co", "Cn"):
            entry = (_TOKEN, _fold(ch, cp))
        else:
            entry = (_SEPARATOR, "")
    _chars[ch] = entry
    return entry


def _fold(ch: str, cp: int) -> str:
    if cp in _FOLDS:
        return _FOLDS[cp]
    lower = ch.lower()
    if cp in _LOWER_ONLY or not any(start <= cp < end for start, end in _LATIN):
        return lower
    return "".join(c for c in unicodedata.normalize("NFD", lower) if not 0x300 <= ord(c) < 0x370)


def tokens(text: str) -> list[str] | None:
    """The words of `text` as FTS5's unicode61 tokenizer gives them (case and accents folded), or
    None when the text holds a character outside the ranges checked against SQLite."""
    if text.isascii():
        return _ASCII_TOKEN.findall(text.lower())
    found: list[str] = []
    word: list[str] = []
    for ch in text:
        if ch < "\x80":
            if ch.isalnum():
                word.append(ch.lower())
                continue
        else:
            entry = _char(ch)
            if entry is None:
                return None
            kind, folded = entry
            if kind == _TOKEN or (kind == _MARK and word):
                word.append(folded)  # a mark inside a word is dropped (folded to "")
                continue
        if word:
            found.append("".join(word))
            word = []
    if word:
        found.append("".join(word))
    return [w for w in found if w]


# --- the stemmer: SQLite's porter ------------------------------------------------------------------

_MAX_STEMMED = 64
"""SQLite passes tokens longer than this many bytes (or shorter than 3) through unstemmed."""
_stems: dict[str, str] = {}
_STEM_CACHE = 100_000


def stem(token: str) -> str:
    """The token as FTS5's porter tokenizer stems it (remembered: news repeats its words)."""
    found = _stems.get(token)
    if found is None:
        if len(_stems) >= _STEM_CACHE:
            _stems.clear()
        if token.isascii():
            found = _porter(token) if 3 <= len(token) <= _MAX_STEMMED else token
        else:
            # SQLite stems the UTF-8 bytes: one Latin-1 character per byte gives the same
            # consonant runs and lengths; the rules only ever cut or add ASCII letters.
            raw = token.encode()
            found = (
                _porter(raw.decode("latin-1")).encode("latin-1").decode()
                if 3 <= len(raw) <= _MAX_STEMMED
                else token
            )
        _stems[token] = found
    return found


def _vowel(c: str, after_consonant: bool) -> bool:
    return c in "aeiou" or (after_consonant and c == "y")


def _vc_end(w: str, start: int, end: int, after_consonant: bool) -> int:
    """The index after the first vowel-then-consonant in w[start:end], or -1."""
    consonant = after_consonant
    i = start
    while i < end:
        consonant = not _vowel(w[i], consonant)
        if not consonant:
            break
        i += 1
    i += 1
    while i < end:
        consonant = not _vowel(w[i], consonant)
        if consonant:
            return i + 1
        i += 1
    return -1


def _m_gt0(w: str, n: int) -> bool:
    return _vc_end(w, 0, n, False) >= 0


def _m_gt1(w: str, n: int) -> bool:
    k = _vc_end(w, 0, n, False)
    return k >= 0 and _vc_end(w, k, n, True) >= 0


def _m_eq1(w: str, n: int) -> bool:
    k = _vc_end(w, 0, n, False)
    return k >= 0 and _vc_end(w, k, n, True) < 0


def _cvc(w: str, n: int) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (Porter's *o)."""
    if n < 3 or w[n - 1] in "wxy":
        return False
    consonant = False
    flags = []
    for i in range(n):
        consonant = not _vowel(w[i], consonant)
        flags.append(consonant)
    return flags[-3] and not flags[-2] and flags[-1]


def _has_vowel(w: str, n: int) -> bool:
    return any(_vowel(w[i], i > 0) for i in range(n))


def _m_gt1_s_or_t(w: str, n: int) -> bool:
    return w[n - 1] in "st" and _m_gt1(w, n)


_Rule = tuple[str, str, int]  # suffix, replacement, condition (below)
_GT0, _GT1, _GT1_ST = 0, 1, 2
_CONDITIONS = (_m_gt0, _m_gt1, _m_gt1_s_or_t)


def _steps(rules: Sequence[_Rule]) -> dict[str, tuple[_Rule, ...]]:
    """Rules by their suffix's second-to-last letter, in order: the first suffix that fits is the
    only one tried (whether or not its condition holds)."""
    by_letter: dict[str, list[_Rule]] = {}
    for rule in rules:
        by_letter.setdefault(rule[0][-2], []).append(rule)
    return {letter: tuple(found) for letter, found in by_letter.items()}


_STEP2 = _steps(
    [
        (suffix, out, _GT0)
        for suffix, out in (
            ("ational", "ate"),
            ("tional", "tion"),
            ("enci", "ence"),
            ("anci", "ance"),
            ("izer", "ize"),
            ("logi", "log"),
            ("bli", "ble"),
            ("alli", "al"),
            ("entli", "ent"),
            ("eli", "e"),
            ("ousli", "ous"),
            ("ization", "ize"),
            ("ation", "ate"),
            ("ator", "ate"),
            ("alism", "al"),
            ("iveness", "ive"),
            ("fulness", "ful"),
            ("ousness", "ous"),
            ("aliti", "al"),
            ("iviti", "ive"),
            ("biliti", "ble"),
        )
    ]
)
_STEP3 = _steps(
    [
        (suffix, out, _GT0)
        for suffix, out in (
            ("ical", "ic"),
            ("ness", ""),
            ("icate", "ic"),
            ("iciti", "ic"),
            ("ful", ""),
            ("ative", ""),
            ("alize", "al"),
        )
    ]
)
_STEP4 = _steps(
    [
        (suffix, "", _GT1_ST if suffix == "ion" else _GT1)
        for suffix in (
            "al",
            "ance",
            "ence",
            "er",
            "ic",
            "able",
            "ible",
            "ant",
            "ement",
            "ment",
            "ent",
            "ion",
            "ou",
            "ism",
            "ate",
            "iti",
            "ous",
            "ive",
            "ize",
        )
    ]
)
_STEP1B2 = {"at": "ate", "bl": "ble", "iz": "ize"}


def _apply(w: str, step: dict[str, tuple[_Rule, ...]]) -> str:
    if len(w) < 2:
        return w
    for suffix, out, condition in step.get(w[-2], ()):
        if len(w) > len(suffix) and w.endswith(suffix):
            stem_length = len(w) - len(suffix)
            if _CONDITIONS[condition](w, stem_length):
                return w[:stem_length] + out
            return w
    return w


def _porter(w: str) -> str:
    # Step 1a: plurals.
    if w[-1] == "s":
        if w[-2] == "e":
            n = len(w)
            cut_two = (n > 4 and w[-4:-2] == "ss") or (n > 3 and w[-3] == "i")  # sses, ies
            w = w[:-2] if cut_two else w[:-1]
        elif w[-2] != "s":
            w = w[:-1]
    # Step 1b: -eed, -ed, -ing.
    cut = False
    n = len(w)
    if n > 3 and w.endswith("eed"):
        if _m_gt0(w, n - 3):
            w = w[:-1]
    elif n > 2 and w.endswith("ed"):
        if _has_vowel(w, n - 2):
            w, cut = w[:-2], True
    elif n > 3 and w.endswith("ing") and _has_vowel(w, n - 3):
        w, cut = w[:-3], True
    if cut:
        n = len(w)
        tail = w[-2:] if n > 2 else ""
        if tail in _STEP1B2:
            w = w[:-2] + _STEP1B2[tail]
        elif n >= 2 and not _vowel(w[-1], False) and w[-1] not in "lsz" and w[-1] == w[-2]:
            w = w[:-1]
        elif _m_eq1(w, n) and _cvc(w, n):
            w += "e"
    # Step 1c: y after a vowel somewhere before it.
    if w[-1] == "y" and _has_vowel(w, len(w) - 1):
        w = w[:-1] + "i"
    # Steps 2 to 4: suffixes.
    w = _apply(_apply(_apply(w, _STEP2), _STEP3), _STEP4)
    # Step 5a: a final e.
    n = len(w)
    if w[-1] == "e" and (_m_gt1(w, n - 1) or (_m_eq1(w, n - 1) and not _cvc(w, n - 1))):
        w = w[:-1]
    # Step 5b: a final double l.
    n = len(w)
    if n > 1 and w.endswith("ll") and _m_gt1(w, n - 1):
        w = w[:-1]
    return w


# --- a post, as the index holds it -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """A post's words per index column (storage.db.FTS_COLUMNS), stemmed as the index holds them."""

    columns: tuple[tuple[str, ...], ...]
    words: frozenset[str]

    def has_phrase(self, phrase: tuple[str, ...], prefix: bool) -> bool:
        if not phrase:
            return False
        if len(phrase) == 1:
            if not prefix:
                return phrase[0] in self.words
            return any(word.startswith(phrase[0]) for word in self.words)
        first, size = phrase[0], len(phrase)
        for column in self.columns:
            for start in range(len(column) - size + 1):
                if column[start] != first:
                    continue
                window = column[start : start + size]
                if prefix:
                    if window[:-1] == phrase[:-1] and window[-1].startswith(phrase[-1]):
                        return True
                elif window == phrase:
                    return True
        return False


def document(post: Post) -> Document | None:
    """The post as the index holds it (the same columns as storage.db's triggers write), or None when
    its text holds characters this module does not read exactly as SQLite does."""
    texts = [post.title, post.byline, *post.body, post.background, post.location]
    for image in post.images:
        texts += [image.caption, image.credit]
    columns: list[tuple[str, ...]] = []
    words: set[str] = set()
    for text in (
        post.title,
        post.byline or "",
        post.text,
        captions_text(post.images),
        post.background or "",
        post.location or "",
        joined_words(texts),
    ):
        found = tokens(text)
        if found is None:
            return None
        stemmed = tuple(map(stem, found))
        columns.append(stemmed)
        words.update(stemmed)
    return Document(tuple(columns), frozenset(words))


# --- the MATCH expression --------------------------------------------------------------------------


_Stems = dict[syntax.Phrase, tuple[str, ...]]
"""Each phrase of an expression, tokenized and stemmed as FTS5 reads it."""

_parsed: dict[str, tuple[syntax.Node, _Stems] | None] = {}


def _parse(expression: str) -> tuple[syntax.Node, _Stems] | None:
    """The expression's tree (storage.match_syntax) and its phrases' words; None when it is not
    well formed or a phrase holds text this module does not tokenize exactly as FTS5 does."""
    if expression not in _parsed:
        if len(_parsed) > 10_000:
            _parsed.clear()
        try:
            found = syntax.lexemes(expression)
            node = syntax.parse(expression)
        except syntax.MatchSyntaxError:
            _parsed[expression] = None
            return None
        stems: _Stems = {}
        for lexeme in found:
            if isinstance(lexeme, syntax.Phrase):
                pieces = tokens(lexeme.text)
                if pieces is None:
                    _parsed[expression] = None
                    return None
                stems[lexeme] = tuple(map(stem, pieces))
        _parsed[expression] = (node, stems)
    return _parsed[expression]


def _holds(node: syntax.Node, doc: Document, stems: _Stems) -> bool:
    if isinstance(node, syntax.Phrase):
        return doc.has_phrase(stems[node], node.prefix)
    if isinstance(node, syntax.Not):
        return _holds(node.left, doc, stems) and not _holds(node.right, doc, stems)
    if isinstance(node, syntax.All):
        return all(_holds(part, doc, stems) for part in node.parts)
    return any(_holds(part, doc, stems) for part in node.parts)


def matches(expression: str, doc: Document) -> bool | None:
    """Whether the post matches an FTS5 MATCH expression as storage.query writes them; None when
    the expression is not one this module reads."""
    parsed = _parse(expression)
    if parsed is None:
        return None
    node, stems = parsed
    return _holds(node, doc, stems)


_term_expressions: dict[str, str | None] = {}


def matched_terms(query: CompiledQuery, doc: Document) -> tuple[str, ...] | None:
    """Which of the query's positive terms the post holds (what storage.search.matched_terms asks
    FTS5); None when one of them is not an expression this module reads."""
    found: list[str] = []
    for term in query.terms:
        if term not in _term_expressions:
            if len(_term_expressions) > 10_000:
                _term_expressions.clear()
            try:
                _term_expressions[term] = compile_query(term).match
            except QueryError:
                _term_expressions[term] = None  # FTS5's answer too: the term is left out
        expression = _term_expressions[term]
        if expression is None:
            continue
        verdict = matches(expression, doc)
        if verdict is None:
            return None
        if verdict:
            found.append(term)
    return tuple(found)
