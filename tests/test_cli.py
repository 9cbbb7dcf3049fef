"""The `livedesk` command, run in-process against a real SQLite file, as an operator would use it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.platforms import mask_address, operator_target
from tests.conftest import FIXTURES, SEED, shared

BLOG = FIXTURES / "cli_blog.txt"
TRAM_POST = "live-city-council-votes-on-the-new-tram-line:20230303T2310Z-1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LIVEDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width; keep lines whole


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def imported(capsys: pytest.CaptureFixture[str], db: Path, *paths: Path) -> None:
    code, _, err = run(capsys, db, "import", *map(str, paths))
    assert code == 0, err


def test_import_reports_new_and_updated_counts(
    capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, db_path, "import", str(BLOG))
    assert code == 0
    assert "cli_blog.txt: 4 new, 0 updated" in out

    code, out, _ = run(capsys, db_path, "import", str(BLOG))
    assert "cli_blog.txt: 0 new, 0 updated" in out

    edited = tmp_path / "edited.txt"
    edited.write_text(BLOG.read_text().replace("next spring", "next autumn"))
    code, out, _ = run(capsys, db_path, "import", str(edited))
    assert code == 0
    assert "edited.txt: 0 new, 1 updated" in out


def test_import_of_the_seed_warns_that_the_page_is_partial(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    code, out, err = run(capsys, db_path, "import", str(shared(SEED)))
    assert code == 0
    assert "9 new, 0 updated" in out
    assert "partial" in err


def test_a_bad_file_is_one_red_line_and_the_others_still_import(
    capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.txt"
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    code, out, err = run(capsys, db_path, "import", str(missing), str(BLOG), str(binary))
    assert code == 1
    assert "4 new" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert "missing.txt" in lines[0]
    assert "binary.txt" in lines[1]
    assert "Traceback" not in err + out


def test_import_json(capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path) -> None:
    code, out, _ = run(
        capsys, db_path, "--json", "import", str(shared(SEED)), str(tmp_path / "nope.txt")
    )
    assert code == 1
    report = json.loads(out)
    assert report[0]["created"] == 9
    assert any("partial" in w for w in report[0]["warnings"])
    assert "not found" in report[1]["error"]


def test_latest_json_is_newest_first(capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    imported(capsys, db_path, shared(SEED), BLOG)
    code, out, _ = run(capsys, db_path, "latest", "-n", "5", "--json")
    assert code == 0
    posts = json.loads(out)
    assert len(posts) == 5
    times = [p["published_at"] for p in posts]
    assert times == sorted(times, reverse=True)
    assert posts[0]["title"] == "Council approves the tram line by nine votes to four"


def test_latest_table_and_source_filter(capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    imported(capsys, db_path, shared(SEED), BLOG)
    code, out, _ = run(capsys, db_path, "latest", "-n", "2", "--source", "The latest on tensions")
    assert code == 0
    assert "Blinken will brief EU foreign ministers" in out
    assert "tram" not in out

    code, _, err = run(capsys, db_path, "latest", "--source", "no such blog")
    assert code == 2
    assert "no blog matches" in err


def test_search_shows_highlighted_snippets(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    imported(capsys, db_path, shared(SEED), BLOG)
    code, out, _ = run(capsys, db_path, "search", "sanctions")
    assert code == 0
    assert "Blinken will brief EU foreign ministers on Lavrov meeting" in out
    assert "sanctions" in out

    code, out, _ = run(capsys, db_path, "--json", "search", "tram", "--per-page", "1")
    page = json.loads(out)
    assert page["total"] >= 2
    assert page["has_more"] is True
    assert all("tram" in h["title"].lower() + h["snippet"].lower() for h in page["hits"])
    assert any("tram" in word.lower() for h in page["hits"] for word in h["highlights"])


def test_a_broken_query_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    imported(capsys, db_path, BLOG)
    code, out, err = run(capsys, db_path, "search", '""')
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_post_shows_its_edit_history_as_a_diff(
    capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path
) -> None:
    imported(capsys, db_path, BLOG)
    edited = tmp_path / "edited.txt"
    edited.write_text(BLOG.read_text().replace("next spring", "next autumn"))
    imported(capsys, db_path, edited)

    code, out, _ = run(capsys, db_path, "post", TRAM_POST)
    assert code == 0
    assert "Council approves the tram line" in out
    assert "The council approved the eastern tram line" in out
    assert "version 1" in out and "version 2" in out
    assert "changed: body" in out
    assert "-Construction is expected to begin next spring" in out
    assert "+Construction is expected to begin next autumn" in out

    code, out, _ = run(capsys, db_path, "--json", "post", TRAM_POST)
    data = json.loads(out)
    assert [v["version"] for v in data["versions"]] == [1, 2]
    assert data["versions"][1]["changed"] == ["body"]
    assert "+Construction is expected to begin next autumn" in data["versions"][1]["body_diff"]


def test_an_unknown_post_id_is_one_line(capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    code, out, err = run(capsys, db_path, "post", "nope:123")
    assert code == 2
    assert "no post" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_sources_lists_blogs_with_counts(capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    imported(capsys, db_path, shared(SEED), BLOG)
    code, out, _ = run(capsys, db_path, "--json", "sources")
    assert code == 0
    counts = {s["title"]: s["posts"] for s in json.loads(out)}
    assert counts == {
        "The latest on tensions at the Ukraine-Russia border": 9,
        "Live: City council votes on the new tram line": 4,
    }
    code, out, _ = run(capsys, db_path, "sources")
    assert "Live: City council votes on the new tram line" in out


def test_subscribe_and_list_masks_webhook_urls(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    secret_url = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN9876"
    code, out, _ = run(capsys, db_path, "subscribe", "slack", secret_url, "--flavor", "mattermost")
    assert code == 0
    assert "SECRETTOKEN" not in out
    code, out, _ = run(
        capsys, db_path, "subscribe", "telegram", "@newsdesk", "--keywords", "sanctions OR NATO"
    )
    assert code == 0
    assert "Subscribed" in out

    code, out, _ = run(capsys, db_path, "subscriptions")
    assert "https://hooks.slack.com/…/9876" in out
    assert "SECRETTOKEN" not in out
    assert "@newsdesk" in out and "sanctions OR NATO" in out

    code, out, _ = run(capsys, db_path, "--json", "subscriptions", "--platform", "slack")
    subs = json.loads(out)
    assert [s["target"] for s in subs] == ["https://hooks.slack.com/…/9876"]
    assert subs[0]["options"] == {"flavor": "mattermost"}
    assert "SECRETTOKEN" not in out


def test_a_discord_channel_can_be_served_through_its_webhook(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    token = "Ab" * 34
    url = f"https://discord.com/api/webhooks/123456789012345678/{token}"
    code, out, err = run(
        capsys, db_path, "subscribe", "discord", "222222222222222222", "--webhook", url
    )
    assert code == 0 and token not in out + err
    code, out, _ = run(capsys, db_path, "--json", "subscriptions", "--platform", "discord")
    [sub] = json.loads(out)
    assert sub["options"] == {
        "webhook_id": "123456789012345678",
        "webhook": f"https://discord.com/…/{token[-4:]}",
    }
    assert token not in out

    bad = f"https://evil.example/api/webhooks/1/{token}"
    code, _, err = run(
        capsys, db_path, "subscribe", "discord", "222222222222222222", "--webhook", bad
    )
    assert code == 2 and token not in err and "discord.com/api/webhooks" in err
    code, _, err = run(capsys, db_path, "subscribe", "telegram", "@desk", "--webhook", url)
    assert code == 2 and "Discord channels only" in err


def test_subscribe_from_file_with_a_bad_line_writes_nothing(
    capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path
) -> None:
    desks = tmp_path / "desks.txt"
    desks.write_text(
        "# newsroom desks\n"
        "https://hooks.slack.com/services/T0/B0/AAAA   sanctions OR NATO\n"
        "\n"
        "ftp://not-a-webhook\n"
    )
    code, out, err = run(capsys, db_path, "subscribe", "slack", "--from-file", str(desks))
    assert code == 2
    assert "line 4" in err and "nothing subscribed" in err
    assert "Traceback" not in err
    code, out, _ = run(capsys, db_path, "--json", "subscriptions")
    assert json.loads(out) == []

    desks.write_text(
        "# newsroom desks\n"
        "https://hooks.slack.com/services/T0/B0/AAAA   sanctions OR NATO\n"
        "https://hooks.slack.com/services/T0/B1/BBBB\n"
    )
    code, out, err = run(capsys, db_path, "subscribe", "slack", "--from-file", str(desks))
    assert code == 0, err
    code, out, _ = run(capsys, db_path, "--json", "subscriptions")
    assert [(s["target"], s["keywords"]) for s in json.loads(out)] == [
        ("https://hooks.slack.com/…/AAAA", "sanctions OR NATO"),
        ("https://hooks.slack.com/…/BBBB", None),
    ]


@pytest.mark.parametrize(
    ("platform", "target"),
    [("telegram", "newsdesk"), ("discord", "12"), ("slack", "hooks.slack.com/x")],
)
def test_an_invalid_target_is_one_line(
    capsys: pytest.CaptureFixture[str], db_path: Path, platform: str, target: str
) -> None:
    code, out, err = run(capsys, db_path, "subscribe", platform, target)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_pause_resume_unsubscribe(capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    run(capsys, db_path, "subscribe", "discord", "123456789012345678")
    assert run(capsys, db_path, "pause", "1")[0] == 0
    _, out, _ = run(capsys, db_path, "--json", "subscriptions")
    assert json.loads(out)[0]["state"] == "paused"
    assert run(capsys, db_path, "resume", "1")[0] == 0
    _, out, _ = run(capsys, db_path, "--json", "subscriptions")
    assert json.loads(out)[0]["state"] == "active"
    assert run(capsys, db_path, "unsubscribe", "1")[0] == 0
    code, _, err = run(capsys, db_path, "unsubscribe", "1")
    assert code == 2
    assert "no subscription #1" in err


async def _kill_deliveries(db_path: Path) -> None:
    from storage.db import Database

    db = await Database.open(db_path)
    try:
        async with db.write() as conn:
            await conn.execute(
                "UPDATE deliveries SET state = 'dead', attempts = 8, "
                "last_error = 'channel_not_found' WHERE id IN (SELECT min(id) FROM deliveries)"
            )
    finally:
        await db.close()


def test_deliveries_counts_dead_and_retry(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        return run(capsys, db_path, *args)

    cli("import", str(BLOG))
    cli("subscribe", "slack", "https://hooks.slack.com/services/T0/B0/DEAD", "--backfill", "2")
    asyncio.run(_kill_deliveries(db_path))

    code, out, _ = cli("--json", "deliveries")
    assert code == 0
    assert json.loads(out)["counts"]["dead"] == 1
    assert json.loads(out)["counts"]["pending"] == 1

    code, out, _ = cli("deliveries", "--dead")
    assert "channel_not_found" in out
    assert "https://hooks.slack.com/…/DEAD" in out
    assert "services/T0" not in out

    code, out, _ = cli("--json", "deliveries", "retry")
    assert json.loads(out) == {"retried": 1}
    code, out, _ = cli("--json", "deliveries")
    assert json.loads(out)["counts"] == {"pending": 2, "sent": 0, "dead": 0, "skipped": 0}


@pytest.mark.parametrize(
    ("platform", "address", "kind", "stored"),
    [
        ("telegram", "42", "private", "42"),
        ("telegram", "-42", "group", "-42"),
        ("telegram", "-1001234567890", "channel", "-1001234567890"),
        ("telegram", "@newsdesk", "channel", "@newsdesk"),
        ("discord", "123456789012345678", "channel", "123456789012345678"),
        ("slack", "https://hooks.slack.com/services/T/B/X", "webhook", None),
        ("terminal", "console", "terminal", "console"),
    ],
)
def test_operator_targets(platform: str, address: str, kind: str, stored: str | None) -> None:
    target = operator_target(platform, address)
    assert target.kind == kind
    assert target.address == (stored or address)


def test_webhook_flavor_and_masking() -> None:
    target = operator_target("slack", "https://chat.example.org/hooks/abcdefgh", flavor="teams")
    assert target.options == {"flavor": "teams"}
    assert mask_address(target) == "https://chat.example.org/…/efgh"
    assert operator_target("slack", "https://h.example/x/y").options == {"flavor": "slack"}
    with pytest.raises(ValueError, match="flavor"):
        operator_target("telegram", "@newsdesk", flavor="slack")
    with pytest.raises(ValueError) as caught:
        operator_target("slack", "hooks.slack.com/SECRET")
    assert "SECRET" not in str(caught.value)


async def _fail_fetch(db_path: Path, location: str) -> None:
    from storage.db import Database
    from storage.posts import PostStore

    async with await Database.open(db_path) as db:
        await PostStore(db).record_fetch_error(location, "HTTP 503 Service Unavailable")


def test_sources_lists_a_blog_that_could_not_be_read_yet(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    asyncio.run(_fail_fetch(db_path, "https://news.example/live/feed.xml"))
    code, out, _ = run(capsys, db_path, "sources")
    assert code == 0
    assert "https://news.example/live/feed.xml" in out and "not imported yet" in out
    assert "HTTP 503" in out
    code, out, _ = run(capsys, db_path, "--json", "sources")
    [entry] = json.loads(out)
    assert entry["location"] == "https://news.example/live/feed.xml" and entry["posts"] == 0


@pytest.mark.parametrize("where", ["loading the CLI", "building the parser"])
def test_ctrl_c_while_the_command_itself_loads_is_one_word_and_exit_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The console script's first tenth of a second: the CLI's own modules import, then the
    parser is built (what the interpreter does before, the script cannot catch)."""
    import builtins

    import bot.__main__
    import bot.cli

    def interrupted(*args: object, **kwargs: object) -> Any:
        raise KeyboardInterrupt

    if where == "loading the CLI":
        real_import = builtins.__import__

        def importing(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "bot.cli":
                raise KeyboardInterrupt
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", importing)
        code = bot.__main__.main()
    else:
        monkeypatch.setattr(bot.cli, "build_parser", interrupted)
        code = main(["latest"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err == "interrupted\n" and captured.out == ""


@pytest.mark.parametrize("json_mode", [False, True])
def test_ctrl_c_while_a_command_starts_is_one_word_and_exit_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, json_mode: bool
) -> None:
    """Ctrl-C lands where it lands: while the settings or the store's modules load, too."""
    import bot.cli

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(bot.cli, "run_command", interrupted)
    code = main([*(["--json"] if json_mode else []), "latest"])
    captured = capsys.readouterr()
    assert code == 130
    if json_mode:
        assert json.loads(captured.out) == {"error": "interrupted"} and captured.err == ""
    else:
        assert captured.err == "interrupted\n" and captured.out == ""
