"""Real `livedesk` processes for the benchmarks: spawn one, time it to ready or to its end, and read
its peak resident memory from the kernel (VmHWM in /proc/PID/status: the high-water mark of that
process's own memory since its exec). Not wait4's ru_maxrss: a child spawned with vfork inherits
the parent's high-water mark there, so every child would look as big as the benchmark itself.

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

from tests.cli_process import ROOT, child_env, command
from tests.pgserver import free_port

READY_TIMEOUT = 120.0
POLL = 0.005
"""Seconds between two /readyz probes: the start-up figure is this precise."""


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    """Spawn to ready (a server) or to exit (a command)."""
    peak_mb: float | None
    """VmHWM (`livedesk run`); None for a command that ends (it is gone before it can be read)."""
    code: int
    out: str = ""
    err: str = ""


def livedesk_script() -> list[str]:
    """The installed `livedesk` console script beside this interpreter, else `python -m bot`."""
    script = Path(sys.executable).with_name("livedesk")
    return [str(script)] if script.exists() else command()


def compile_bytecode() -> None:
    """Livedesk's modules compiled to bytecode, as an installed Livedesk has them (pip compiles at
    install): an editable checkout has none, and where PYTHONDONTWRITEBYTECODE is set no child
    ever writes it, so every timed command compiled ~25k lines of source again (a warm-up round
    cannot help there)."""
    import compileall

    for package in ("bot", "handlers", "storage"):
        compileall.compile_dir(ROOT / package, quiet=1)


def high_water_mb(pid: int | str = "self") -> float:
    """The peak RSS of process `pid` so far, in MB (VmHWM, in kB, from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


HIGH_WATER_LINE = (
    "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n"
)
"""Python that prints its own peak RSS in kB (a raw ceiling's last line)."""


def run_to_end(
    argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, *, cpu: int | None = None
) -> Measured:
    """Run a command to its end: spawn → exit in seconds, its peak RSS, its output (through files,
    so a long output never blocks it on a full pipe). `cpu`: the one core it may run on (a command
    that is one thread's work then is not moved between cores: far steadier figures here)."""
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
            preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),
        )
        code = process.wait()
        seconds = time.perf_counter() - started
    return Measured(
        seconds,
        None,
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
    after start counts too): spawn → ready in seconds, and its peak RSS until then; then SIGTERM."""
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
            peak = high_water_mb(process.pid)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        except BaseException:
            if process.returncode is None:
                process.kill()
                process.wait()
            raise
    return Measured(
        seconds,
        peak,
        code,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )
