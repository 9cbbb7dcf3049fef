"""`clean()` gives byte for byte what its earlier, regex-only form gave.

The reference below is that form, kept here unchanged: the fast paths of bot.sources.text (ASCII by
`bytes.translate`, whitespace by `str.split`) must agree with it on hostile inputs (every kind of
Unicode space, zero-width and bidi characters, controls, markup, script URLs in any case, combining
sequences) and on every text the importers clean while reading the real feeds in ../shared.
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

import bot.sources.text as text_module
from bot.sources import SourceError, parse_document
from bot.sources.text import _drop_markup, _drop_sections, clean
from tests.conftest import FIXTURES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

_REFERENCE_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]"
)
_REFERENCE_SPACES = re.compile(r"[^\S\n]+")
_REFERENCE_MARKUP = text_module._MARKUP


def reference_clean(text: str) -> str:
    """clean() as it was before its fast paths."""
    text = unicodedata.normalize("NFC", text)
    text = _REFERENCE_CONTROL.sub("", text)
    if "<" in text:
        text = _drop_sections(text, "<!--", "-->", keep_inside=False)
        text = _drop_sections(text, "<![CDATA[", "]]>", keep_inside=True)
        text = _REFERENCE_MARKUP.sub(_drop_markup, text)
    return _REFERENCE_SPACES.sub(" ", text.replace("\n", " ")).strip()


SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u180e",
    "\ufffe",
    "\uffff",
]
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))]
COMBINING = ["e\u0301", "\u0301", "A\u030a", "\u1100\u1161\u11a8", "\u212b", "\u0344", "Å"]
MARKUP = [
    "<b>",
    "</B>",
    "<script>alert(1)</script>",
    "<SCRIPT SRC=x>",
    "<a href='javascript:alert(1)'>",
    '<a href="JaVaScRiPt:alert(1)">',
    "<img src=x onerror=alert(1)>",
    "<!-- note -->",
    "<!--",
    "-->",
    "<![CDATA[inside]]>",
    "<![CDATA[",
    "]]>",
    "<!DOCTYPE html>",
    "<?xml version='1.0'?>",
    "<entry>",
    "<half of",
    "a < b",
    "<",
    ">",
    "&lt;b&gt;",
    "javascript:",
    "JAVASCRIPT:",
    "vbscript:",
    "data:text/html,",
]
WORDS = [
    "word",
    "Kharkív",
    "Zürich",
    "日本語",
    "naïve",
    "U.S.",
    "x",
    "",
    "🙂",
    "\U0001f469\u200d\U0001f52c",
]
PIECES = SPACES + INVISIBLE + BIDI + CONTROLS + COMBINING + MARKUP + WORDS + ["\n", "\t", "\r\n"]


def hostile() -> Iterator[str]:
    yield from PIECES
    for piece in PIECES:
        yield f"  a{piece}b  "
        yield f"{piece}{piece}word{piece}"
    for space in SPACES:
        yield f"one{space}two{space}{space}three\n{space}four{space}"
    rng = random.Random(13)
    for _ in range(4000):
        yield "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 24)))
    ascii_pieces = [p for p in PIECES if p.isascii()]
    for _ in range(2000):  # the ASCII fast path on its own
        yield "".join(rng.choice(ascii_pieces) for _ in range(rng.randint(1, 40)))


def test_clean_agrees_with_the_reference_on_hostile_input() -> None:
    disagreements = [
        (t, clean(t), reference_clean(t)) for t in hostile() if clean(t) != reference_clean(t)
    ]
    assert disagreements == []


def test_every_unicode_space_folds_as_before() -> None:
    for space in SPACES:
        assert clean(f"{space}a{space}{space}b{space}") == reference_clean(
            f"{space}a{space}{space}b{space}"
        )


def _documents() -> list[Path]:
    found = [
        path
        for root in (SHARED / "realworld", SHARED / "seed", FIXTURES)
        if root.is_dir()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".md"
    ]
    return found


@pytest.mark.skipif(not (SHARED / "realworld").is_dir(), reason="../shared/realworld is not here")
def test_clean_agrees_with_the_reference_on_every_text_of_the_real_feeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every string the importers clean while reading the real feeds, the seed and the fixtures."""
    seen: list[str] = []

    def recording(text: str) -> str:
        seen.append(text)
        return clean(text)

    modules = [m for name, m in sys.modules.items() if name.startswith("bot.sources")]
    for module in modules:
        if getattr(module, "clean", None) is clean:
            monkeypatch.setattr(module, "clean", recording)
    documents = _documents()
    assert len(documents) > 30
    for path in documents:
        with contextlib.suppress(SourceError):
            parse_document(path.read_bytes(), location=path.name)
        seen.append(path.read_bytes().decode("utf-8", errors="replace"))  # the whole file too
    assert len(seen) > 1000
    assert [t for t in seen if clean(t) != reference_clean(t)] == []
