"""Every benchmark runs end to end at a tiny size (`--smoke`) and prints its table, and
`python -m bench` ends with the one summary table holding that benchmark's rows.

Outcome only, never timing: which rows each benchmark records (path, backend, a goal where it has
one) and that its own table was printed. PostgreSQL parts run on the session's test server; without
the server binaries they are left out (the benchmark says so) and the fleet's test skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import _common
from bench.__main__ import main as bench_main
from tests import pgserver


@pytest.fixture
def benches(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[bool]:
    """Summary and caches in tmp_path, the session's PostgreSQL shared (when there is one);
    yields whether PostgreSQL is measured."""
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(_common, "RECORDED", [])
    monkeypatch.setitem(pgserver.SETTINGS, "shared_buffers", pgserver.SETTINGS["shared_buffers"])
    with_postgres = pgserver.find_binaries() is not None or pgserver.postgres_required()
    if with_postgres:  # in CI without the binaries this fails, as every PostgreSQL test does
        monkeypatch.setattr(_common, "SHARED_SERVER", request.getfixturevalue("postgres_server"))
    yield with_postgres


def _run(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[_common.Figure], str]:
    code = bench_main([name, "--smoke"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "Every hot path (--smoke)" in out  # the one summary table ends the run
    return list(_common.RECORDED), out


def _rows(figures: list[_common.Figure]) -> list[tuple[str, str]]:
    return [(f.backend, f.path) for f in figures]


@pytest.mark.parametrize(
    ("name", "title", "sqlite", "postgres"),
    [
        (
            "cli",
            "CLI start-up",
            [
                ("—", "livedesk --help start-up (raw: python -c pass)"),
                ("SQLite", 'livedesk latest start-up (raw: python -c "import sqlite3")'),
            ],
            [("PostgreSQL", 'livedesk latest start-up (raw: python -c "import psycopg")')],
        ),
        (
            "bulk",
            "livedesk subscribe slack --from-file, 300 lines",
            [("SQLite", "subscribe --from-file, 300 lines (raw: executemany of the same rows)")],
            [
                (
                    "PostgreSQL",
                    "subscribe --from-file, 300 lines (raw: executemany of the same rows)",
                )
            ],
        ),
        (
            "memory",
            "livedesk run: peak RSS and start-up",
            [
                ("SQLite", "livedesk run peak RSS, 1,000 webhook subscriptions"),
                ("SQLite", "livedesk run spawn → ready, 1,000 webhook subscriptions"),
            ],
            [
                ("PostgreSQL", "livedesk run peak RSS, 1,000 webhook subscriptions"),
                ("PostgreSQL", "livedesk run spawn → ready, 1,000 webhook subscriptions"),
            ],
        ),
        (
            "store",
            "Import 200 posts",
            [
                ("SQLite", "import 200 posts (raw: executemany)"),
                (
                    "SQLite",
                    "import 200 posts into a store with 20 subscriptions (raw: executemany)",
                ),
                ("SQLite", "livedesk import of a 50-item feed, spawn → exit (raw: executemany)"),
            ],
            [
                ("PostgreSQL", "import 200 posts (raw: COPY)"),
                ("PostgreSQL", "import 200 posts (raw: executemany)"),
                ("PostgreSQL", "import 200 posts into a store with 20 subscriptions (raw: COPY)"),
                (
                    "PostgreSQL",
                    "livedesk import of a 50-item feed, spawn → exit (raw: executemany)",
                ),
            ],
        ),
    ],
)
def test_a_benchmark_prints_its_table_and_the_summary(
    name: str,
    title: str,
    sqlite: list[tuple[str, str]],
    postgres: list[tuple[str, str]],
    benches: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures, out = _run(name, capsys)
    assert title in out
    assert _rows(figures) == sqlite + (postgres if benches else [])
    assert all(f.bench == name and f.raw is not None for f in figures)
    assert (_common.RESULTS / f"summary-{name}.json").exists()


def test_search_records_the_rare_word_on_both_backends(
    benches: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    figures, out = _run("search", capsys)
    assert "Search at 300 posts" in out
    rows = _rows(figures)
    assert (
        "SQLite",
        "search p50, rare word, 300 posts (raw: FTS5 bm25 + highlight + snippet)",
    ) in rows
    assert ("SQLite", "import 100 posts with the richer index (raw: executemany)") in rows
    if benches:
        assert "PostgreSQL beside SQLite" in out
        rare = next(f for f in figures if f.backend == "PostgreSQL" and "rare word" in f.path)
        assert rare.raw is not None and rare.goal == _common.at_most_raw(1.5)
    assert [f.backend for f in figures].count("SQLite") == 3


def test_fanout_records_each_section(benches: bool, capsys: pytest.CaptureFixture[str]) -> None:
    figures, out = _run("fanout", capsys)
    assert "(1) fan-out through the dispatcher" in out and "(4) peak RSS" in out
    paths = [f.path for f in figures]
    assert paths[0] == "one post → 200 subscriptions (1 in 10 with keywords)"
    backends = [f.backend for f in figures if f.path == paths[0]]
    assert backends == (["SQLite", "PostgreSQL"] if benches else ["SQLite"])
    assert paths[len(backends)].startswith("import commit → first delivery p50")
    assert paths[len(backends) + 1].startswith(
        "import commit → first delivery p50, one post to 200 subscriptions"
    )
    assert sum("429s from the fake" in p for p in paths) == 2
    assert paths[-1] == "peak RSS of one process delivering one post to 1,000 subscriptions"


@pytest.mark.parametrize(
    ("name", "title", "paths"),
    [
        pytest.param(
            "webhooks",
            "one post → 30 Mattermost-style webhooks",
            ["one post → 30 Mattermost webhooks, commit → last delivery (raw: aiohttp)"],
            # apprise (the comparison in that benchmark) still imports imghdr
            marks=pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),
        ),
        (
            "replies",
            "one post to 90 Telegram chats",
            [
                "/search reply during a broadcast to 90 Telegram chats, slowest (raw: the same "
                "on an idle bot)",
                "429s from the fake Bot API during the broadcast",
            ],
        ),
    ],
)
def test_a_delivery_benchmark_prints_its_figures(
    name: str, title: str, paths: list[str], benches: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    figures, out = _run(name, capsys)
    assert title in out
    assert [f.path for f in figures] == paths


def test_fleet_records_one_worker_beside_raw(
    benches: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    if not benches:
        pytest.skip(pgserver.MISSING)
    figures, out = _run("fleet", capsys)
    assert "livedesk run` workers on one PostgreSQL" in out
    assert _rows(figures) == [
        ("PostgreSQL", "one post → 100 webhooks, 1 `livedesk run` worker (raw: aiohttp)")
    ]
