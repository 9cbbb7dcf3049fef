"""Crash safety: a dispatcher killed with SIGKILL mid fan-out loses nothing when restarted.

The dispatcher runs in a child process with a fake adapter that appends each delivery to a file (flushed,
so a kill loses none of the lines) and sleeps a little per send. One post goes to 1,000 targets; the child
is killed part-way and a new one is started. Every target must have the post; duplicates (sends whose
outcome was not yet committed at the kill) must stay within the dispatcher's bound of 2 × concurrency.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bot.models import Target
from storage.db import Database
from storage.outbox import Outbox
from storage.subscriptions import SubscriptionStore
from storage.values import NewSubscription
from tests.conftest import ROOT
from tests.fakes.flaky import import_posts, make_post

TARGETS = 1000
CONCURRENCY = 16

CHILD = r"""
import asyncio, random, sys
from bot.adapters.base import Adapter, AdapterContext, Capabilities
from bot.config import DispatchSettings
from bot.dispatcher import Dispatcher
from bot.models import Card, Target
from storage.db import Database
from storage.outbox import Outbox as SqliteOutbox

db_path, log_path, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])

class AppendingAdapter(Adapter):
    platform = "fake"
    capabilities = Capabilities(max_text=4096, markup="plain", can_edit=True)

    def __init__(self) -> None:
        self.log = open(log_path, "a", encoding="utf-8")

    async def start(self, context: AdapterContext) -> None: ...
    async def stop(self) -> None: ...

    async def send(self, target: Target, card: Card) -> str:
        await asyncio.sleep(random.uniform(0.002, 0.02))
        self.log.write(f"{target.address} {card.post_id}\n")
        self.log.flush()
        return target.address

async def main() -> None:
    async with await Database.open(db_path) as db:
        settings = DispatchSettings(concurrency=concurrency)
        await Dispatcher(SqliteOutbox(db), {"fake": AppendingAdapter()}, settings).run_until_idle(timeout=60)

asyncio.run(main())
"""


def start_child(db_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), str(log_path), str(CONCURRENCY)],
        cwd=ROOT,
        env=env,
    )


def lines(log_path: Path) -> list[str]:
    if not log_path.exists():
        return []
    return log_path.read_text(encoding="utf-8").splitlines()


async def test_sigkill_mid_fanout_loses_nothing_and_duplicates_are_bounded(tmp_path: Path) -> None:
    db_path = tmp_path / "livedesk.db"
    log_path = tmp_path / "sent.log"
    async with await Database.open(db_path) as db:
        await SubscriptionStore(db).add_many(
            [
                NewSubscription(Target(platform="fake", address=f"chat{n}"), created_by="ops")
                for n in range(TARGETS)
            ]
        )
        await import_posts(db, [make_post(1)])

    child = start_child(db_path, log_path)
    deadline = time.monotonic() + 30
    while len(lines(log_path)) < TARGETS // 3 and child.poll() is None:
        assert time.monotonic() < deadline, "the dispatcher made no progress"
        await asyncio.sleep(0.005)
    assert child.poll() is None, "the child finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    sent_before_kill = len(lines(log_path))
    assert sent_before_kill < TARGETS

    restarted = start_child(db_path, log_path)
    assert restarted.wait(timeout=60) == 0

    sent = Counter(line.split()[0] for line in lines(log_path))
    assert set(sent) == {f"chat{n}" for n in range(TARGETS)}  # nothing lost
    duplicates = sum(sent.values()) - TARGETS
    assert duplicates <= 2 * CONCURRENCY, f"{duplicates} duplicates"
    assert all(line.endswith(" blog-1") for line in lines(log_path))
    async with await Database.open(db_path) as db:
        assert await Outbox(db).counts() == {
            "pending": 0,
            "sent": TARGETS,
            "dead": 0,
            "skipped": 0,
        }
    print(f"killed after {sent_before_kill} sends; {duplicates} duplicates after restart")
