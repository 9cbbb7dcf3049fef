"""The real `livedesk` command as a separate process, the way an operator runs it.

Every child gets `tests/netguard` on its path (no network but loopback, as in the tests
themselves), no `LIVEDESK_*` setting from the environment unless the test gives it, and a plain,
wide terminal so output lines are not wrapped or coloured.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETGUARD = Path(__file__).resolve().parent / "netguard"


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a spawned `livedesk`: the test's settings only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDESK_")}
    base.update(
        {
            "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(ROOT)]),
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            # The control room on a free port: tests running side by side never fight over 8080.
            "LIVEDESK_HTTP_PORT": "0",
        }
    )
    base.update(env or {})
    return base


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


def livedesk(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
) -> Finished:
    """Run `livedesk ARGS…` in `cwd` to the end; a hang fails the test after `timeout` seconds."""
    done = subprocess.run(
        command(*args),
        cwd=cwd,
        env=child_env(env),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


def spawn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `livedesk ARGS…` (e.g. `run`) in the background; the caller stops it."""
    return subprocess.Popen(
        command(*args),
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def control_room_of(process: subprocess.Popen[str]) -> str:
    """The URL a spawned `livedesk run` says its control room is on (its first lines of output)."""
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(60):
        while line := await asyncio.to_thread(process.stdout.readline):
            seen.append(line)
            found = re.search(r"Control room on (http://127\.0\.0\.1:\d+)/", line)
            if found:
                return found.group(1)
    raise AssertionError("livedesk run never said where its control room is: " + "".join(seen))
