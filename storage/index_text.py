"""What the search index holds beside the stored texts: joined forms of dotted and hyphenated words.

FTS5's unicode61 tokenizer splits `U.S.` into `u` `s` and `de-escalate` into `de` `escalate`, so a
reader typing `US` or `deescalate` would miss them. Each post also carries the joined forms of such
words (`us deescalate bidenputin`) in a hidden column of the index: a query for the plain form is then
one term lookup, as fast as any word, instead of a phrase over `s`, one of the commonest tokens.
The store writes them with the post (`posts.joined_words`); the migration that added the column
computed them for the posts stored before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

_PIECE = re.compile(r"[^\W_]+")
HYPHENS = "-\u2010\u2011\u2012\u2013"
"""Hyphen, the Unicode hyphens and the en dash (`Biden–Putin`); not the em dash, which news sets
between clauses."""
DOTTED_COMPOUND = (".-", ".\u2010", ".\u2011", ".\u2012", ".\u2013")
"""What a compound with a dotted part holds (`U.S.-Russia`): schema 7 re-joins the posts that do."""
# A compound starts where a word starts: without the lookbehind the engine would try every suffix
# of every word.
_PART = r"(?:[^\W\d_]\.(?:[^\W\d_]\.?)+|[^\W_]+)"
"""A part of a compound: a dotted abbreviation (`U.S.` in `U.S.-Russia`) or a word."""
_HYPHENATED = re.compile(rf"(?<![^\W_]){_PART}(?:[{HYPHENS}]{_PART})+")
_DOTTED = re.compile(r"(?<![\w.])[^\W\d_](?:\.[^\W\d_])+(?![^\W_])\.?")
# Cheap scans first: most texts have no letter after a dot and no hyphen, and a scan for one
# character class costs a twentieth of the full patterns (measured at import: 195 µs → 9 µs a post).
_MAYBE_DOTTED = re.compile(r"\.[^\W\d_]")
_MAYBE_HYPHENATED = re.compile(f"[{HYPHENS}]")


def joined_forms(text: str) -> list[str]:
    """The joined forms of the dotted abbreviations and hyphenated compounds in `text`."""
    found: list[str] = []
    if _MAYBE_DOTTED.search(text):
        for match in _DOTTED.finditer(text):
            found.append(match.group().replace(".", "").lower())
    if _MAYBE_HYPHENATED.search(text):
        for match in _HYPHENATED.finditer(text):
            found.append("".join(_PIECE.findall(match.group())).lower())
    return found


def joined_words(texts: Iterable[str | None]) -> str:
    """Every joined form of the texts once, space-separated (the `joined` column of the index)."""
    seen: dict[str, None] = {}
    for text in texts:
        if text:
            for form in joined_forms(text):
                seen.setdefault(form, None)
    return " ".join(seen)


def captions_text(images: Sequence[Any]) -> str:
    """The images' captions with their credits, one image a line: `Caption text (Credit)`.

    Takes `Image`s or the stored JSON dicts; the index's SQL (`storage.db.CAPTIONS_SQL`) writes the
    same text from the stored JSON."""
    lines: list[str] = []
    for image in images:
        caption = image.get("caption") if isinstance(image, dict) else image.caption
        credit = image.get("credit") if isinstance(image, dict) else image.credit
        line = (caption or "").strip()
        if credit:
            line = f"{line} ({credit})" if line else f"({credit})"
        if line:
            lines.append(line)
    return "\n".join(lines)
