"""The invented vocabulary every synthetic corpus draws from (bench/store.py, bench/search.py): its
own module so that neither benchmark imports the other for it."""

from __future__ import annotations

import itertools
import random

SEED = 20220121
VOCABULARY = 50_000


def zipf_vocabulary(seed: int = SEED) -> tuple[list[str], list[float]]:
    """VOCABULARY distinct invented words and their cumulative Zipf weights (rank r weighs 1/r):
    the same words for every benchmark that uses the seed."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choices(letters, k=rng.randint(3, 9)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = list(itertools.accumulate(1.0 / rank for rank in range(1, VOCABULARY + 1)))
    return words, weights
