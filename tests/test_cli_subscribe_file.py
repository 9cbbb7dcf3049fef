"""`livedesk subscribe PLATFORM --from-file FILE` with many lines: all or nothing, and a short answer.

A file of thousands of targets is subscribed in one transaction; one bad line anywhere refuses the
whole file and names its line. The answer names the first few subscriptions one line each and
says how many more; under --json every one is listed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import LISTED, main


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def hooks(count: int) -> list[str]:
    return [f"https://hooks.slack.com/services/T{n:05d}/B0/SECRET{n:05d}" for n in range(count)]


def test_one_bad_line_in_a_big_file_refuses_all_of_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    lines = [f"{url}  sanctions" if n % 7 == 0 else url for n, url in enumerate(hooks(3000))]
    lines[2499] = "ftp://not-a-webhook"
    desks = tmp_path / "desks.txt"
    desks.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, db, "subscribe", "slack", "--from-file", str(desks))
    assert code == 2 and out == ""
    assert f"{desks} line 2500:" in err and "1 bad line, nothing subscribed" in err
    assert "Traceback" not in err
    code, out, _ = run(capsys, db, "--json", "subscriptions")
    assert json.loads(out) == []


def test_a_big_file_is_named_in_a_few_lines_and_listed_whole_in_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    desks = tmp_path / "desks.txt"
    urls = hooks(3000)
    desks.write_text("\n".join(f"{url}  sanctions or nato" for url in urls) + "\n")
    code, out, err = run(capsys, db, "subscribe", "slack", "--from-file", str(desks))
    assert code == 0, err
    said = out.splitlines()
    assert len(said) == LISTED + 1
    assert all(line.startswith("Subscribed #") for line in said[:LISTED])
    assert said[-1].startswith(f"… and {3000 - LISTED:,} more subscribed, #{LISTED + 1} to #3000")
    assert "SECRET" not in out  # webhook URLs stay masked
    # The lowercase "or" notice is said once, not once per line.
    assert err.count("sanctions or nato") == 1

    # Again, ignoring edits: every one is there already, and says what changed.
    code, out, err = run(
        capsys,
        db,
        "--json",
        "subscribe",
        "slack",
        "--from-file",
        str(desks),
        "--edit-policy",
        "ignore",
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["created"] == [] and len(answer["existing"]) == 3000
    assert [s["id"] for s in answer["existing"]] == list(range(1, 3001))
    assert {tuple(s["changed"]) for s in answer["existing"]} == {("edits ignore (was follow-up)",)}
    code, out, _ = run(capsys, db, "--json", "subscriptions")
    assert len(json.loads(out)) == 3000
