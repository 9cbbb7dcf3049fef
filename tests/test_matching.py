"""storage.matching gives FTS5's answers without a database: table-tested against FTS5 itself.

Every case is asked twice, of the matcher and of SQLite (a one-post index with the store's own columns
and tokenizer, which is how storage.search.matched_terms answered before), and the answers must agree:
the tokenizer character by character, the stemmer word by word, and whole queries over the query
language (words, prefixes, phrases, OR, exclusions, accents, stemming, abbreviations, variants).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from storage import matching
from storage.db import FTS_COLUMNS, FTS_OPTIONS
from storage.index_text import captions_text, joined_words
from storage.models import Image, Post
from storage.query import QueryError, compile_query
from storage.search import matched_terms


def _fts5_tokens(texts: list[str], tokenizer: str) -> list[list[str]]:
    """What FTS5's tokenizer makes of each text, in order."""
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{tokenizer}')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    conn.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", list(enumerate(texts, 1)))
    found: list[list[str]] = [[] for _ in texts]
    for doc, term in conn.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
        found[doc - 1].append(term)
    conn.close()
    return found


def _post_row(post: Post) -> tuple[str, ...]:
    texts = [post.title, post.byline, *post.body, post.background, post.location]
    for image in post.images:
        texts += [image.caption, image.credit]
    return (
        post.title,
        post.byline or "",
        post.text,
        captions_text(post.images),
        post.background or "",
        post.location or "",
        joined_words(texts),
    )


class _Fts5:
    """A one-post index with the store's columns and tokenizer: the reference answers."""

    def __init__(self, post: Post) -> None:
        self.conn = sqlite3.connect(":memory:")
        columns = ", ".join(FTS_COLUMNS)
        self.conn.execute(f"CREATE VIRTUAL TABLE t USING fts5({columns}, {FTS_OPTIONS})")
        self.conn.execute(
            f"INSERT INTO t ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)", _post_row(post)
        )

    def matches(self, expression: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM t WHERE t MATCH ?", (expression,)).fetchone()
            is not None
        )

    def terms(self, text: str) -> tuple[str, ...]:
        found: list[str] = []
        for term in compile_query(text).terms:
            try:
                if self.matches(compile_query(term).match):
                    found.append(term)
            except (QueryError, sqlite3.OperationalError):
                continue
        return tuple(found)


def _post(title: str, *body: str, **extra: object) -> Post:
    return Post(
        id="p1",
        source_id="wire",
        published_at=datetime(2022, 2, 10, 12, tzinfo=UTC),
        title=title,
        body=body,
        **extra,
    )


# --- the tokenizer ------------------------------------------------------------------------------------


def _supported() -> Iterator[int]:
    for start, end in matching._SUPPORTED:
        yield from range(start, end)


def test_every_supported_character_is_read_as_sqlite_reads_it() -> None:
    """Alone, inside a word, and after a letter (a combining mark): the same words as unicode61."""
    points = list(_supported())
    texts = [f"q{chr(cp)}z {chr(cp)} e{chr(cp)}" for cp in points]
    expected = _fts5_tokens(texts, "unicode61 remove_diacritics 2")
    wrong = [
        (hex(cp), got, want)
        for cp, text, want in zip(points, texts, expected, strict=True)
        if (got := matching.tokens(text)) != want
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "text",
    [
        "Plain ASCII, with punctuation: don't stop-me now_please 3.14 x_y",
        "Zelenskyy’s café in Kyiv — naïve résumé, São Paulo, Łódź, Straße",
        "Ελληνικά: Αθήνα, ΟΔΥΣΣΕΥΣ ς; Русский: Київ, Ёлка, й",
        "e\u0301 combining, \u0301leading mark, a\u0308\u0304 two marks",
        "\u00a0non-breaking\u2009thin\u202fspaces\u200bzero",
    ],
)
def test_texts_are_split_and_folded_as_sqlite_does(text: str) -> None:
    assert matching.tokens(text) == _fts5_tokens([text], "unicode61 remove_diacritics 2")[0]


def test_text_in_other_scripts_is_left_to_fts5() -> None:
    assert matching.tokens("北京 talks") is None
    assert matching.tokens("emoji 🤣") is None
    assert matching.document(_post("北京", "Talks in Beijing")) is None


# --- the stemmer --------------------------------------------------------------------------------------

_STEMS = [
    "sanction",
    "connect",
    "relat",
    "hope",
    "run",
    "fil",
    "agre",
    "gener",
    "conform",
    "radic",
    "adjust",
    "formal",
    "sensit",
    "electr",
    "depend",
    "rational",
    "hop",
    "tann",
    "fall",
    "fizz",
    "fail",
    "sky",
    "happy",
    "cry",
    "cat",
    "ca",
    "die",
    "boy",
    "tree",
    "feed",
    "bleed",
    "ground",
    "troubl",
    "size",
    "oper",
    "decis",
    "cautio",
    "valen",
    "digit",
    "sens",
    "a",
    "ab",
    "abc",
    "y",
    "yy",
    "ty",
    "try",
]
_SUFFIXES = [
    "",
    "s",
    "es",
    "ies",
    "sses",
    "ss",
    "ed",
    "eed",
    "ing",
    "ings",
    "ly",
    "ness",
    "ful",
    "fulness",
    "ousness",
    "iveness",
    "ational",
    "tional",
    "enci",
    "anci",
    "izer",
    "logi",
    "bli",
    "alli",
    "entli",
    "eli",
    "ousli",
    "ization",
    "ation",
    "ator",
    "alism",
    "aliti",
    "iviti",
    "biliti",
    "ical",
    "icate",
    "iciti",
    "ative",
    "alize",
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
    "sion",
    "tion",
    "ou",
    "ism",
    "ate",
    "iti",
    "ous",
    "ive",
    "ize",
    "e",
    "ll",
    "y",
    "at",
    "bl",
    "iz",
]
_WORDS = [
    "caresses",
    "ponies",
    "ties",
    "caress",
    "cats",
    "feed",
    "agreed",
    "disabled",
    "matting",
    "mating",
    "meeting",
    "milling",
    "messing",
    "meetings",
    "plastered",
    "bled",
    "motoring",
    "sing",
    "conflated",
    "troubled",
    "sized",
    "hopping",
    "tanned",
    "falling",
    "hissing",
    "fizzed",
    "failing",
    "filing",
    "happy",
    "sky",
    "relational",
    "conditional",
    "rational",
    "valenci",
    "hesitanci",
    "digitizer",
    "conformabli",
    "radicalli",
    "differentli",
    "vileli",
    "analogousli",
    "vietnamization",
    "predication",
    "operator",
    "feudalism",
    "decisiveness",
    "hopefulness",
    "callousness",
    "formaliti",
    "sensitiviti",
    "sensibiliti",
    "triplicate",
    "formative",
    "formalize",
    "electriciti",
    "electrical",
    "hopeful",
    "goodness",
    "revival",
    "allowance",
    "inference",
    "airliner",
    "gyroscopic",
    "adjustable",
    "defensible",
    "irritant",
    "replacement",
    "adjustment",
    "dependent",
    "adoption",
    "homologou",
    "communism",
    "activate",
    "angulariti",
    "homologous",
    "effective",
    "bowdlerize",
    "probate",
    "rate",
    "cease",
    "controll",
    "roll",
    "generously",
    "news",
    "sanctions",
    "russia",
    "ukrainian",
    "talks",
    "negotiations",
    "escalation",
    "deescalation",
    "said",
    "says",
    "saying",
    "statement",
    "statements",
    "officials",
    "military",
    "troops",
    "border",
]


def _stem_cases() -> list[str]:
    words = [stem + suffix for stem in _STEMS for suffix in _SUFFIXES]
    words += _WORDS
    words += ["x" * 63 + "ing", "x" * 64 + "ing", "ab", "é" * 31 + "ing", "é" * 33 + "ing"]
    words += ["naïveté", "cafés", "résumés", "zelenskyys", "київські", "αθήνας", "façades"]
    return words


def test_the_stemmer_is_sqlites_porter() -> None:
    words = _stem_cases()
    folded = [matching.tokens(word) for word in words]
    expected = _fts5_tokens(words, "porter unicode61 remove_diacritics 2")
    wrong = [
        (word, got, want)
        for word, pieces, want in zip(words, folded, expected, strict=True)
        if pieces is not None and (got := [matching.stem(p) for p in pieces]) != want
    ]
    assert wrong == []
    assert all(pieces is not None for pieces in folded)


# --- whole queries --------------------------------------------------------------------------------------

_POST = _post(
    "New sanctions announced on Russia",
    "Blinken spoke about the written response to the U.S.-Russia talks.",
    "Officials said they want to de-escalate; NATO allies are negotiating in Brüssel.",
    byline="By Zoë Ångström",
    location="Kyiv",
    background="The café owners in Kiev were running late.",
    images=(Image(url="https://example.org/a.jpg", caption="Troops at the border", credit="AFP"),),
)
_QUERIES = [
    "sanctions",
    "sanction",
    "SANCTIONED",
    "announcement",
    "russia",
    "russian",
    "blink*",
    "bli*",
    "blinke*",
    "respon*",
    '"written response"',
    '"response written"',
    '"written resp"*',
    '"the written"',
    "sanctions OR lavrov",
    "lavrov OR putin",
    "sanctions -russia",
    "sanctions -lavrov",
    "sanctions NOT russia",
    "sanctions AND russia",
    "sanctions AND NOT lavrov",
    "-russia sanctions",
    'talks -"written response"',
    "US",
    "U.S.",
    "u s",
    "US-Russia",
    "de-escalate",
    "deescalate",
    "de escalate",
    "nato",
    "negotiate",
    "negotiations",
    "brussel",
    "brüssel",
    "zoe",
    "angstrom",
    "Ångström",
    "kyiv",
    "kiev",
    "Kyiv -kiev",
    "cafe",
    "café owners",
    '"cafe owners"',
    "run",
    "running late",
    "troops",
    "border OR frontier",
    "afp",
    "caption",
    "lavrov OR (sanctions",
    "sanctions or russia",
    "NEAR(sanctions russia)",
    "written: response",
    "blinken response -talks OR lavrov",
    '"new sanctions" OR "old sanctions" -putin',
    "officials said want",
    "allies are",
]


@pytest.mark.parametrize("text", _QUERIES)
def test_queries_match_as_fts5_matches_them(text: str) -> None:
    doc = matching.document(_POST)
    assert doc is not None
    reference = _Fts5(_POST)
    compiled = compile_query(text)
    assert matching.matches(compiled.match, doc) == reference.matches(compiled.match)
    assert matching.matched_terms(compiled, doc) == reference.terms(text)
    assert matched_terms(compiled, _POST) == reference.terms(text)


_VOCABULARY = [
    "sanctions",
    "sanction",
    "russia",
    "russian",
    "talks",
    "talk",
    "said",
    "saying",
    "officials",
    "official",
    "nato",
    "allies",
    "border",
    "troops",
    "written",
    "response",
    "kyiv",
    "kiev",
    "zelensky",
    "zelenskiy",
    "café",
    "cafe",
    "naïve",
    "u.s.",
    "US",
    "eu",
    "de-escalate",
    "deescalate",
    "escalation",
    "running",
    "runs",
    "ran",
]


def test_random_queries_over_random_posts_agree_with_fts5() -> None:
    rng = random.Random(13)
    for _ in range(150):
        words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(3, 30))]
        post = _post(
            " ".join(words[:4]),
            " ".join(words[4:]),
            background=" ".join(rng.sample(_VOCABULARY, 3)),
        )
        parts: list[str] = []
        for _ in range(rng.randint(1, 4)):
            word = rng.choice(_VOCABULARY)
            shape = rng.random()
            if shape < 0.15:
                word = f"-{word}"
            elif shape < 0.3:
                word = f'"{word} {rng.choice(_VOCABULARY)}"'
            elif shape < 0.4:
                word = word[: rng.randint(2, max(2, len(word)))] + "*"
            elif shape < 0.5 and parts:
                parts.append("OR")
            parts.append(word)
        text = " ".join(parts)
        try:
            compiled = compile_query(text)
        except QueryError:
            continue
        doc = matching.document(post)
        assert doc is not None
        reference = _Fts5(post)
        assert matching.matches(compiled.match, doc) == reference.matches(compiled.match), text
        assert matching.matched_terms(compiled, doc) == reference.terms(text), text


def test_a_post_in_another_script_still_gets_fts5s_terms() -> None:
    post = _post("Talks in 北京", "Sanctions were announced.")
    compiled = compile_query("sanctions OR lavrov")
    assert (
        matched_terms(compiled, post) == _Fts5(post).terms("sanctions OR lavrov") == ("sanctions",)
    )
