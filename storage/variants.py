"""Spelling variants of names (Kyiv = Kiev, Zelensky = Zelenskyy): folded at query time by search.

The table ships as `storage/data/variants.txt`; an operator's file of the same shape (named by the
setting LIVEDESK_SEARCH__VARIANTS_FILE) adds groups to it. Folding happens when a query is compiled,
so a new line works at the next start without re-indexing anything.

The format: one group a line, forms separated by "=", "#" starts a comment line. A form's words are
compared folded (case, diacritics, hyphens, dots and apostrophes do not matter); a form that appears
in two groups joins them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BUNDLED = Path(__file__).parent / "data" / "variants.txt"
MAX_FORM_WORDS = 6

_PIECE = re.compile(r"[^\W_]+")
_EXAMPLE = "write a group as forms separated by =, e.g. Kyiv = Kiev"

Form = tuple[str, ...]
"""A form as the folded words FTS5 sees (`("al", "qaida")`)."""


class VariantsError(ValueError):
    """A variants file that cannot be read; str(e) is one line naming the file (and line)."""


def fold(text: str) -> Form:
    """The words of `text` folded like the index folds them: case and diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return tuple(_PIECE.findall(plain))


@dataclass(slots=True)
class Variants:
    """Groups of forms that mean the same name; `of(form)` gives every form of its group."""

    _groups: dict[Form, frozenset[Form]] = field(default_factory=dict)
    longest: int = 1
    """The most words of any form: how far a query's words are read ahead to find one."""

    def add(self, forms: Iterable[Form]) -> None:
        group: set[Form] = {form for form in forms if form}
        for form in list(group):
            group |= self._groups.get(form, frozenset())
        frozen = frozenset(group)
        for form in frozen:
            self._groups[form] = frozen
            self.longest = max(self.longest, len(form))

    def of(self, form: Form) -> tuple[Form, ...]:
        """Every form of `form`'s group, `form` first; just `form` when it has no variants."""
        group = self._groups.get(form)
        if group is None:
            return (form,)
        return (form, *sorted(f for f in group if f != form))

    def __len__(self) -> int:
        return len(set(self._groups.values()))


def parse(text: str, name: str) -> list[list[Form]]:
    """The groups of a variants file's text; VariantsError naming `name` and the line if not."""
    groups: list[list[Form]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        forms = [fold(part) for part in line.split("=")]
        if len(forms) < 2 or not all(forms):
            raise VariantsError(f"{name} line {number}: {_EXAMPLE}")
        if any(len(form) > MAX_FORM_WORDS for form in forms):
            raise VariantsError(
                f"{name} line {number}: a form has more than {MAX_FORM_WORDS} words"
            )
        groups.append(forms)
    return groups


def read(path: Path) -> list[list[Form]]:
    """The groups of the file at `path`; VariantsError (one line) when it is missing or bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VariantsError(f"variants file {path} does not exist") from None
    except IsADirectoryError:
        raise VariantsError(f"variants file {path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise VariantsError(f"variants file {path} is not UTF-8 text") from None
    except OSError as error:
        raise VariantsError(
            f"cannot read variants file {path}: {error.strerror or error}"
        ) from None
    return parse(text, f"variants file {path}")


def load(extra: Path | None = None) -> Variants:
    """The bundled table, with the groups of the operator's file `extra` added."""
    variants = Variants()
    for group in read(BUNDLED):
        variants.add(group)
    if extra is not None:
        for group in read(extra):
            variants.add(group)
    return variants


_active: Variants | None = None


def active() -> Variants:
    """The table queries are folded with: the bundled one until `use` installs another."""
    global _active
    if _active is None:
        _active = load()
    return _active


def use(variants: Variants) -> None:
    """Fold queries with `variants` from now on (the composition root calls this at start)."""
    global _active
    _active = variants
