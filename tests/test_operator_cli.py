"""The `livedesk` command as an operator types it: run as a real process, one behaviour per test."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser
from storage.db import Database
from storage.posts import PostStore
from tests.cli_process import ROOT, Finished, livedesk

LEGACY_ID = "127-0-0-1-18766-9974b5b5"


def feed(title: str, self_url: str, items: list[tuple[str, str, str]]) -> str:
    """An RSS 2.0 feed that names its own URL; items are (guid, title, text)."""
    entries = "".join(
        f"<item><guid>{guid}</guid><title>{head}</title><description>{text}</description>"
        f"<pubDate>Mon, 0{n + 1} Jul 2024 12:00:00 GMT</pubDate></item>"
        for n, (guid, head, text) in enumerate(items)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
        f"<title>{title}</title>"
        f'<atom:link rel="self" href="{self_url}" type="application/rss+xml"/>'
        f"{entries}</channel></rss>"
    )


GENEVA = [
    ("g1", "Lavrov meets Blinken in Geneva", "The two ministers talked for ninety minutes."),
    ("g2", "Lavrov speaks to reporters", "He called the talks useful and frank."),
    ("g3", "Blinken flies home", "The secretary of state left on Friday evening."),
    ("g4", "Sanctions list grows", "NATO allies agreed on new measures."),
]


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    """A folder with one imported feed, `Geneva talks live`, served at a loopback address."""
    path = tmp_path / "geneva.xml"
    path.write_text(feed("Geneva talks live", "http://127.0.0.1:18766/geneva.xml", GENEVA))
    done = cli(tmp_path, "import", str(path))
    assert done.code == 0, done.err
    return tmp_path


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Finished:
    return livedesk("--db", str(cwd / "desk.db"), *args, cwd=cwd, env=env)


def cli_json(cwd: Path, *args: str) -> Any:
    done = cli(cwd, "--json", *args)
    assert done.code == 0, done.err
    return json.loads(done.out)


def hit_titles(cwd: Path, *args: str) -> list[str]:
    page = cli_json(cwd, "search", *args)
    assert isinstance(page, dict)
    return [hit["post"]["title"] for hit in page["hits"]]


# --- version, help, limits ---------------------------------------------------------------------------


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    done = livedesk("--version", cwd=tmp_path)
    assert done.code == 0
    assert done.out.strip() == f"livedesk {metadata.version('livedesk')}"


def test_every_option_has_help_and_search_help_explains_the_query_language(
    tmp_path: Path,
) -> None:
    parsers = _all_parsers(build_parser())
    assert len(parsers) > 12  # the program, every command and `deliveries retry`
    missing = [
        f"{p.prog} {action.dest}"
        for p in parsers
        for action in p._actions
        if not action.help and action.dest not in ("command", "action")
    ]
    assert missing == []

    done = livedesk("search", "--help", cwd=tmp_path)
    assert done.code == 0
    for piece in ('"a phrase"', "OR", "Lavrov -Blinken", "Blink*", "lowercase"):
        assert piece in done.out


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_parsers(sub)
    return found


def test_latest_and_search_take_n_and_limit(desk: Path) -> None:
    assert len(cli_json(desk, "latest", "-n", "2")) == 2
    assert len(cli_json(desk, "latest", "--limit", "3")) == 3
    assert len(hit_titles(desk, "Lavrov", "-n", "1")) == 1
    assert len(hit_titles(desk, "Lavrov", "--limit=1")) == 1
    assert len(hit_titles(desk, "Lavrov", "-n1")) == 1
    assert len(hit_titles(desk, "Lavrov")) == 2


# --- the query as typed -------------------------------------------------------------------------------


def test_an_unquoted_exclusion_excludes_and_the_options_around_it_still_work(desk: Path) -> None:
    assert hit_titles(desk, "Lavrov", "-Blinken") == ["Lavrov speaks to reporters"]
    assert hit_titles(desk, "--page", "1", "Lavrov", "-n", "5", "-Blinken") == [
        "Lavrov speaks to reporters"
    ]
    done = cli(desk, "search", "Lavrov", "-Blinken")
    assert done.code == 0, done.err
    assert "Lavrov speaks to reporters" in done.out and "meets Blinken" not in done.out


def test_keywords_may_start_with_a_dash(desk: Path) -> None:
    assert cli(desk, "subscribe", "telegram", "@desk", "--keywords", "-Blinken Lavrov").code == 0
    done = cli(desk, "subscribe", "telegram", "@news", "--keywords", "Lavrov", "-Blinken")
    assert done.code == 0, done.err
    subs = cli_json(desk, "subscriptions")
    assert [s["keywords"] for s in subs] == ["-Blinken Lavrov", "Lavrov -Blinken"]


@pytest.mark.parametrize("word", ["or", "and"])
def test_a_lowercase_operator_is_a_word_with_the_notice_a_lone_AND_gets(
    desk: Path, word: str
) -> None:
    done = cli(desk, "search", "Lavrov", word, "Blinken")
    assert done.code == 0
    assert f'Read "{word}" as a plain word.' in done.err
    lone = cli(desk, "search", "Lavrov", "AND")
    assert 'Read "AND" as a plain word.' in lone.err
    subscribed = cli(desk, "subscribe", "telegram", "@desk", "--keywords", f"Lavrov {word} NATO")
    assert subscribed.code == 0
    assert f'Read "{word}" as a plain word.' in subscribed.err


def test_a_page_past_the_end_says_so(desk: Path) -> None:
    done = cli(desk, "search", "Lavrov", "--page", "99")
    assert done.code == 2
    assert done.err_lines == [
        "page 99 is past the end: 2 results for “Lavrov” fill 1 page of 5",
    ]
    answer = cli(desk, "--json", "search", "Lavrov", "--page", "99")
    assert answer.code == 2 and "past the end" in json.loads(answer.out)["error"]


# --- blogs: ids and --source --------------------------------------------------------------------------


def test_a_feed_is_named_by_its_title_kept_unique_and_stable(desk: Path) -> None:
    [blog] = cli_json(desk, "sources")
    assert blog["id"] == "geneva-talks-live"
    assert cli_json(desk, "latest", "-n", "1")[0]["id"].startswith("geneva-talks-live:")

    other = desk / "other.xml"
    other.write_text(feed("Geneva talks live", "https://elsewhere.example/geneva.xml", GENEVA[:1]))
    assert cli(desk, "import", str(other)).code == 0
    ids = {s["location"]: s["id"] for s in cli_json(desk, "sources")}
    assert ids[str(other)] == "geneva-talks-live-2"

    # The blog is retitled: the same location keeps its id and its posts.
    path = desk / "geneva.xml"
    path.write_text(feed("Geneva talks: day two", "http://127.0.0.1:18766/geneva.xml", GENEVA))
    done = cli(desk, "import", str(path))
    assert f"{path}: 0 new, 0 updated" in done.out
    ids = {s["location"]: s["id"] for s in cli_json(desk, "sources")}
    assert ids == {str(path): "geneva-talks-live", str(other): "geneva-talks-live-2"}


def test_a_blog_stored_under_an_old_id_keeps_it(desk: Path) -> None:
    with sqlite3.connect(desk / "desk.db") as conn:  # as an earlier version named feeds
        conn.execute("UPDATE sources SET id = ?", (LEGACY_ID,))
        conn.execute(
            "UPDATE posts SET source_id = ?, id = replace(id, 'geneva-talks-live:', ?)",
            (LEGACY_ID, f"{LEGACY_ID}:"),
        )
    done = cli(desk, "import", str(desk / "geneva.xml"))
    assert "0 new, 0 updated" in done.out
    [blog] = cli_json(desk, "sources")
    assert blog["id"] == LEGACY_ID and blog["posts"] == 4


def test_source_takes_a_number_a_word_a_prefix_or_the_id(desk: Path) -> None:
    summit = desk / "summit.xml"
    summit.write_text(
        feed(
            "Geneva summit live",
            "http://127.0.0.1:18766/summit.xml",
            [("s1", "Leaders arrive", "The first delegations landed.")],
        )
    )
    assert cli(desk, "import", str(summit)).code == 0
    numbers = {s["id"]: s["number"] for s in cli_json(desk, "sources")}
    assert set(numbers) == {"geneva-talks-live", "geneva-summit-live"}

    def titles(source: str) -> list[str]:
        return [p["title"] for p in cli_json(desk, "latest", "--source", source)]

    assert titles("summit") == ["Leaders arrive"]
    assert titles("Summ") == ["Leaders arrive"]
    assert titles("geneva-summit-live") == ["Leaders arrive"]
    assert titles(str(numbers["geneva-summit-live"])) == ["Leaders arrive"]
    assert titles("talks") == [title for _, title, _ in reversed(GENEVA)]

    done = cli(desk, "latest", "--source", "geneva")
    assert done.code == 2
    [line] = done.err_lines
    assert "matches 2 blogs" in line
    for blog_id, number in numbers.items():
        assert f"#{number} " in line and blog_id in line
    assert cli(desk, "latest", "--source", "nowhere").code == 2


async def _fail(db_path: Path, location: str, error: str) -> None:
    async with await Database.open(db_path) as db:
        await PostStore(db).record_fetch_error(location, error)


def test_sources_fits_80_columns_and_the_error_wraps(desk: Path) -> None:
    error = (
        "HTTP 503 Service Unavailable: the server answered that it is overloaded and that "
        "the client should try again in a few minutes"
    )
    asyncio.run(_fail(desk / "desk.db", "https://news.example/live/ukraine/feed.xml", error))
    asyncio.run(_fail(desk / "desk.db", str(desk / "geneva.xml"), "timed out after 30 seconds"))
    done = cli(desk, "sources", env={"COLUMNS": "80"})
    assert done.code == 0
    lines = done.out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    text = " ".join(done.out.split())
    for word in [*error.split(), "timed", "30", "seconds", "Geneva", "talks"]:
        assert word in text


# --- subscribing --------------------------------------------------------------------------------------


def test_from_file_honours_inline_comments(tmp_path: Path) -> None:
    desks = tmp_path / "desks.txt"
    desks.write_text(
        "# newsroom desks\n@world   sanctions OR NATO   # the world desk\n@europe # no keywords\n"
    )
    done = cli(tmp_path, "subscribe", "telegram", "--from-file", str(desks))
    assert done.code == 0, done.err
    subs = cli_json(tmp_path, "subscriptions")
    assert [(s["target"], s["keywords"]) for s in subs] == [
        ("@world", "sanctions OR NATO"),
        ("@europe", None),
    ]


def test_from_file_reports_every_bad_line_and_writes_nothing(tmp_path: Path) -> None:
    desks = tmp_path / "desks.txt"
    desks.write_text(
        "@world\n"
        "world-desk\n"  # line 2: not a chat id nor @name
        "@europe  sanctions\n"
        '@asia  "unclosed OR\n'  # line 4 is fine: the quote is read as a word
        "12ab\n"  # line 5
        "@news  *\n"  # line 6: nothing to look for
    )
    done = cli(tmp_path, "subscribe", "telegram", "--from-file", str(desks))
    assert done.code == 2
    assert [line.split(":")[0] for line in done.err_lines] == [
        f"{desks} line 2",
        f"{desks} line 5",
        f"{desks} line 6",
        f"{desks}",
    ]
    assert "3 bad lines, nothing subscribed" in done.err_lines[-1]
    assert cli_json(tmp_path, "subscriptions") == []
    answer = cli(tmp_path, "--json", "subscribe", "telegram", "--from-file", str(desks))
    assert answer.code == 2
    assert len(json.loads(answer.out)["details"]) == 3


def test_subscribing_again_says_what_changed(tmp_path: Path) -> None:
    assert cli(tmp_path, "subscribe", "telegram", "@desk").code == 0
    same = cli(tmp_path, "subscribe", "telegram", "@desk")
    assert same.out.startswith("Already subscribed #1") and "changed" not in same.out
    done = cli(tmp_path, "subscribe", "telegram", "@desk", "--edit-policy", "follow-up")
    assert done.code == 0
    assert "changed: edits follow-up (was edit)" in done.out
    assert cli(tmp_path, "pause", "1").code == 0
    answer = cli_json(tmp_path, "subscribe", "telegram", "@desk", "--edit-policy", "ignore")
    assert answer["existing"][0]["changed"] == [
        "edits ignore (was follow-up)",
        "resumed (was paused)",
    ]


def test_webhook_urls_are_masked_one_way(tmp_path: Path) -> None:
    slack = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN9876"
    token = "Zy" * 34
    discord = f"https://discord.com/api/webhooks/123456789012345678/{token}"
    runs: list[list[str]] = [
        ["subscribe", "slack", slack],
        ["subscribe", "discord", "222222222222222222", "--webhook", discord],
        ["subscriptions"],
        ["--json", "subscriptions"],
    ]
    for args in runs:
        done = cli(tmp_path, *args)
        assert done.code == 0, done.err
        assert "SECRETTOKEN" not in done.out + done.err and token not in done.out + done.err
        if args[0] == "subscribe":
            masked = "https://hooks.slack.com/…/9876" if args[1] == "slack" else "/…/ZyZy"
            assert masked in done.out
        else:
            assert "https://hooks.slack.com/…/9876" in done.out
            assert "https://discord.com/…/ZyZy" in done.out


# --- exit codes and --json errors ---------------------------------------------------------------------


def test_retrying_a_delivery_that_does_not_exist_is_exit_2(tmp_path: Path) -> None:
    done = cli(tmp_path, "deliveries", "retry", "999")
    assert done.code == 2
    assert done.err_lines == [
        "no dead delivery #999; nothing queued (`livedesk deliveries --dead` lists them)"
    ]
    assert cli(tmp_path, "deliveries", "retry").code == 0


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("latest", "-n", "many"), {}),  # argparse
        (("frobnicate",), {}),  # argparse: no such command
        (("search", '"'), {}),  # a query with nothing to look for
        (("post", "nope:1"), {}),  # UserError
        (("deliveries", "retry", "999"), {}),
        (("subscribe", "telegram", "not a chat"), {}),  # ValueError from the target
        (("latest",), {"LIVEDESK_TIMEZONE": "Mars/Olympus"}),  # a setting
        (("import", "missing.txt"), {}),  # an operation that failed: exit 1
    ],
)
def test_json_errors_are_json_with_the_same_exit_code(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    plain = cli(tmp_path, *args, env=env)
    answer = cli(tmp_path, "--json", *args, env=env)
    assert plain.code != 0
    assert answer.code == plain.code
    payload = json.loads(answer.out)
    if args[0] == "import":  # the import report carries the error per location
        assert "error" in payload[0]
    else:
        assert isinstance(payload["error"], str) and payload["error"]
    assert "Traceback" not in answer.out + answer.err


# --- make ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)

    def plan(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return done.stdout

    run_plan, test_plan = plan("run"), plan("test")
    assert "pip install --quiet -e .\n" in run_plan and "[dev" not in run_plan
    assert "livedesk run" in run_plan
    assert "-e '.[dev,bench]'" in test_plan and "pytest" in test_plan
