"""The invented vocabulary every synthetic corpus draws from (bench/store.py, bench/search.py): its
own module so that neither benchmark imports the other for it."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

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


def rss_feed(count: int, seed: int = SEED) -> bytes:
    """A plain RSS 2.0 feed of `count` items shaped like a newspaper's (the Guardian's in
    ../shared/realworld): a title, a link, an escaped HTML description of ~1,200 characters in
    paragraphs with links, emphasis and now and then a figure with its caption, categories, a
    date, a permalink guid and one or two authors. Deterministic for a seed; newest item first."""
    words, weights = zipf_vocabulary(seed)
    rng = random.Random(seed + 2)
    names = ["Heather Stewart", "Rowena Mason", "Jon Henley", "Ana Costa", "Kim Willsher"]
    start = datetime(2022, 1, 1, tzinfo=UTC)
    items: list[str] = []
    for index in range(count - 1, -1, -1):
        drawn = rng.choices(words, cum_weights=weights, k=9 + 190 + 4)
        title = " ".join(drawn[:9]).capitalize()[:58]
        body = drawn[9:199]
        slug = "-".join(drawn[:5])
        link = f"https://news.example.org/world/2022/{index:07d}/{slug}"
        paragraphs: list[str] = []
        for first in range(0, 190, 48):
            chunk = body[first : first + 48]
            chunk[3] = f'<a href="https://news.example.org/topic/{chunk[3]}">{chunk[3]}</a>'
            chunk[10] = f"<strong>{chunk[10]}</strong>"
            paragraphs.append(f"<p>{' '.join(chunk).capitalize()}.</p>")
        if index % 4 == 0:
            paragraphs.insert(
                1,
                f'<figure><img src="https://img.example.org/{index}.jpg" alt="{drawn[199]}">'
                f"<figcaption>{' '.join(drawn[199:203])}</figcaption></figure>",
            )
        authors = " and ".join(rng.sample(names, rng.randint(1, 2)))
        published = start + timedelta(seconds=30 * index)
        categories = "".join(
            f'<category domain="https://news.example.org/{w}">{w}</category>' for w in drawn[:3]
        )
        items.append(
            f"<item><title>{escape(title)}</title><link>{link}</link>"
            f"<description>{escape(''.join(paragraphs))}</description>{categories}"
            f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>"
            f"<guid>{link}</guid><dc:creator>{authors}</dc:creator></item>\n"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0"><channel>\n'
        "<title>The Example News: world live</title><link>https://news.example.org/world</link>"
        "<description>Latest world news</description><language>en-gb</language>\n"
        + "".join(items)
        + "</channel></rss>\n"
    ).encode()
