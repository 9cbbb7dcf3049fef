"""Real `livedesk` processes for the benchmarks: spawn one, time it to ready or to its end, and read
its peak resident memory from the kernel when it is reaped (wait4's ru_maxrss: the whole life of
that one process, not a sample).

Every child gets tests/cli_process.py's environment (tests/netguard on its path: no network but
loopback) and so does the raw ceiling beside it, so both pay the same interpreter start-up.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.cli_process import child_env, command
from tests.pgserver import free_port

READY_TIMEOUT = 120.0
POLL = 0.005
"""Seconds between two /readyz probes: the start-up figure is this precise."""


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    """Spawn to ready (a server) or to exit (a command)."""
    peak_mb: float
    code: int
    out: str = ""
    err: str = ""


def livedesk_script() -> list[str]:
    """The installed `livedesk` console script beside this interpreter, else `python -m bot`."""
    script = Path(sys.executable).with_name("livedesk")
    return [str(script)] if script.exists() else command()


def _reap(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for the child; its exit code and peak RSS in MB (Linux reports ru_maxrss in KiB)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def run_to_end(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Run a command to its end: spawn → exit in seconds, its peak RSS, its output (through files,
    so a long output never blocks it on a full pipe)."""
    out_path, err_path = cwd / "command.out", cwd / "command.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        code, peak = _reap(process)
        seconds = time.perf_counter() - started
    return Measured(
        seconds,
        peak,
        code,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )


def _ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def run_until_ready(
    cwd: Path, env: dict[str, str], settle: float = 1.0, timeout: float = READY_TIMEOUT
) -> Measured:
    """`livedesk run` until its /readyz answers 200, then `settle` seconds more (what it does just
    after start counts too), then SIGTERM: spawn → ready in seconds, its lifetime peak RSS."""
    port = free_port()
    settings = {**env, "LIVEDESK_HTTP_PORT": str(port)}
    out_path, err_path = cwd / "run.out", cwd / "run.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*livedesk_script(), "run"],
            cwd=cwd,
            env=child_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            while not _ready(port):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"livedesk run exited ({process.returncode}): "
                        + err_path.read_text(errors="replace")[-2000:]
                    )
                if time.perf_counter() - started > timeout:
                    raise RuntimeError("livedesk run was not ready in time")
                time.sleep(POLL)
            seconds = time.perf_counter() - started
            time.sleep(settle)
            process.send_signal(signal.SIGTERM)
            code, peak = _reap(process)
        except BaseException:
            if process.returncode is None:
                process.kill()
                _reap(process)
            raise
    return Measured(
        seconds,
        peak,
        code,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )
