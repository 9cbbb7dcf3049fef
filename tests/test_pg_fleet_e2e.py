"""The fleet end to end: three real `livedesk run` processes on one PostgreSQL database.

- one post to 600 slow webhook desks reaches each desk exactly once, and all three workers sent
  some of it (the receiver maps each request's client socket to the process that holds it);
- a worker killed with SIGKILL mid fan-out loses nothing: its claims move on when their lease
  (LIVEDESK_DISPATCH__LEASE_SECONDS) runs out, and only its in-flight sends come twice;
- the fleet keeps Telegram's 30/s: the fake Bot API answers no 429 to 300 private chats, nor
  to 600 when two workers join one that is sending them (and they take a share);
- a Telegram command is answered once by the `telegram-polling` leader, and still after that
  leader is killed with SIGKILL (another worker takes the role over).

Every process gets the real CLI (tests/cli_process.py); every test asserts outcomes, never times.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.cli_process import Finished, livedesk, spawn
from tests.fakes.telegram import FakeTelegram
from tests.fakes.webhooks import WebhookReceiver

WORKERS = 3
DESKS = 600
TOKEN = "123456:TEST-token"

ONE_POST_BLOG = """Live: City council votes on the new tram line

By Petra Vance, Livedesk

Updated 6:10 p.m. ET, March 3, 2023
1 Posts
Sort byDropdown arrow
6:10 p.m. ET, March 3, 2023

Council approves the tram line by nine votes to four

From Livedesk's Petra Vance at City Hall

The council approved the eastern tram line after a debate that lasted almost five hours.
"""


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    """`livedesk ARGS` in a child process, while this loop keeps serving the fakes."""
    return await asyncio.to_thread(livedesk, *args, cwd=cwd, env=env, timeout=120)


# --- which process holds a client socket --------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def _inode_of(port: int, server_port: int) -> str | None:
    """The inode of the TCP socket from 127.0.0.1:`port` to 127.0.0.1:`server_port` (a client's
    end; matching both ends skips a closed socket that had the same local port)."""
    local, remote = f"0100007F:{port:04X}", f"0100007F:{server_port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[9] != "0":
                return fields[9]
    return None


def process_of(port: int, server_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the client socket 127.0.0.1:`port` → `server_port` (None: none)."""
    for _ in range(3):  # /proc/net/tcp is read in pages: a busy table may skip a line
        inode = _inode_of(port, server_port)
        if inode is not None:
            break
    else:
        return None
    for pid in pids:
        if inode in _socket_inodes(pid):
            return pid
    return None


# --- a receiver of slow desks that knows which worker sent each request -------------------------


@dataclass(frozen=True)
class Arrival:
    path: str
    pid: int | None
    body: str


class SlowDesks(WebhookReceiver):
    """Webhook desks that answer `200 ok` after 20-50 ms, recording on arrival who sent what."""

    def __init__(self, pids: list[int], *, delay: tuple[float, float] = (0.02, 0.05)) -> None:
        super().__init__()
        self.pids = pids
        self.delay = delay
        self.arrivals: list[Arrival] = []
        self.on_arrival: Callable[[Arrival], None] | None = None
        self._ports: dict[int, int | None] = {}
        self._random = random.Random(11)
        self._changed = asyncio.Condition()

    async def _on_post(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        pid: int | None = None
        if peer is not None:
            port = int(peer[1])
            if self._ports.get(port) is None:
                self._ports[port] = process_of(port, self.port, self.pids)
            pid = self._ports[port]
        arrival = Arrival(request.path, pid, body)
        self.arrivals.append(arrival)
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        async with self._changed:
            self._changed.notify_all()
        await asyncio.sleep(self._random.uniform(*self.delay))
        return web.Response(text="ok")

    async def until(self, predicate: Callable[[], bool], *, within: float = 60.0) -> None:
        """Until `predicate()` holds (checked at every arrival), at most `within` seconds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    def per_desk(self) -> Counter[str]:
        return Counter(a.path for a in self.arrivals)

    def desk(self, n: int) -> str:
        return self.url(f"desk{n:04d}")


# --- the fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    url: str
    cwd: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[str]]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def workers(self) -> list[dict[str, Any]]:
        done = await run("--json", "--db", self.url, "workers", cwd=self.cwd)
        assert done.code == 0, done.err
        listed: list[dict[str, Any]] = json.loads(done.out)
        return listed

    async def until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], *, tries: int = 200
    ) -> list[dict[str, Any]]:
        """`livedesk workers --json` until `predicate` holds of it."""
        listed: list[dict[str, Any]] = []
        for _ in range(tries):
            listed = await self.workers()
            if predicate(listed):
                return listed
            await asyncio.sleep(0.2)
        raise AssertionError(f"the fleet never got there: {listed}")

    async def all_live(self) -> list[dict[str, Any]]:
        """Until every worker beats; then a little more, for each to have counted the others at a
        heartbeat of its own (its share of the targets and of the bot-wide limits follows them),
        so that every worker has a share of what comes next."""
        alive = {p.pid for p in self.processes if p.poll() is None}
        listed = await self.until(lambda ws: {w["pid"] for w in ws if w["live"]} == alive)
        await asyncio.sleep(2.5)
        return listed


@asynccontextmanager
async def fleet(
    url: str, cwd: Path, env: dict[str, str], count: int = WORKERS
) -> AsyncIterator[Fleet]:
    env = {"LIVEDESK_HTTP_PORT": "0", **env}
    processes = [spawn("--db", url, "run", cwd=cwd, env=env) for _ in range(count)]
    the_fleet = Fleet(url, cwd, env, processes)
    try:
        yield the_fleet
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def write_targets(path: Path, targets: list[str]) -> Path:
    path.write_text("".join(f"{t}\n" for t in targets), encoding="utf-8")
    return path


async def import_one_post(url: str, cwd: Path) -> None:
    blog = cwd / "one-post.txt"
    blog.write_text(ONE_POST_BLOG, encoding="utf-8")
    done = await run("--db", url, "import", str(blog), cwd=cwd)
    assert done.code == 0, done.err


# --- 1. fan-out ---------------------------------------------------------------------------------


async def test_one_post_reaches_600_slow_desks_once_each_from_all_three_workers(
    tmp_path: Path, postgres_url: str
) -> None:
    pids: list[int] = []
    async with SlowDesks(pids) as hooks:
        desks = [hooks.desk(n) for n in range(DESKS)]
        targets = write_targets(tmp_path / "desks.txt", desks)
        subscribed = await run(
            "--db", postgres_url, "subscribe", "slack", "--from-file", str(targets), cwd=tmp_path
        )
        assert subscribed.code == 0, subscribed.err
        env = {"LIVEDESK_DISPATCH__CONCURRENCY": "8"}
        async with fleet(postgres_url, tmp_path, env) as workers:
            pids.extend(workers.pids)
            await workers.all_live()

            await import_one_post(postgres_url, tmp_path)
            await hooks.until(lambda: len(hooks.per_desk()) == DESKS)
            await asyncio.sleep(1.0)  # time for a second copy to show up, if there were one

        per_desk = hooks.per_desk()
        assert set(per_desk) == {hooks.path_of(d) for d in desks}  # none missing
        assert max(per_desk.values()) == 1  # no duplicate
        assert len({a.body for a in hooks.arrivals}) == 1  # the same post to every desk
        senders = Counter(a.pid for a in hooks.arrivals)
        assert set(senders) == set(pids), senders  # all three took part, and nobody else
        assert all(p.returncode == 0 for p in workers.processes)


# --- 2. SIGKILL mid fan-out ---------------------------------------------------------------------

CONCURRENCY = 8


async def test_a_worker_killed_mid_fanout_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    """The worker that sends the 150th request is killed with SIGKILL at that moment: its claims
    move on when their 3 s leases end and the fleet sees its heartbeat stop; only what it had sent
    but not yet committed (bot/dispatcher.py: below 2 x its concurrency) reaches a desk twice."""
    pids: list[int] = []
    killed: list[int] = []
    killed_at: list[int] = []  # requests that had arrived then
    async with SlowDesks(pids) as hooks:
        desks = [hooks.desk(n) for n in range(DESKS)]
        targets = write_targets(tmp_path / "desks.txt", desks)
        subscribed = await run(
            "--db", postgres_url, "subscribe", "slack", "--from-file", str(targets), cwd=tmp_path
        )
        assert subscribed.code == 0, subscribed.err
        env = {
            "LIVEDESK_DISPATCH__CONCURRENCY": str(CONCURRENCY),
            "LIVEDESK_DISPATCH__LEASE_SECONDS": "3",
        }

        def kill_the_150th_sender(arrival: Arrival) -> None:
            if not killed and len(hooks.arrivals) >= 150 and arrival.pid is not None:
                os.kill(arrival.pid, signal.SIGKILL)
                killed.append(arrival.pid)
                killed_at.append(len(hooks.arrivals))

        hooks.on_arrival = kill_the_150th_sender
        async with fleet(postgres_url, tmp_path, env) as workers:
            pids.extend(workers.pids)
            await workers.all_live()

            await import_one_post(postgres_url, tmp_path)
            await hooks.until(lambda: bool(killed))
            sent_before_kill = killed_at[0]
            await hooks.until(lambda: len(hooks.per_desk()) == DESKS)
            # the survivors are two, and the dead one is gone from the listing's live workers
            listed = await workers.until(lambda ws: len([w for w in ws if w["live"]]) == 2)
            assert killed[0] not in {w["pid"] for w in listed if w["live"]}
            await asyncio.sleep(1.0)  # time for a late copy to show up, if there were one
        victim = next(p for p in workers.processes if p.pid == killed[0])
        assert victim.returncode == -signal.SIGKILL
        assert all(p.returncode == 0 for p in workers.processes if p is not victim)

    assert sent_before_kill < DESKS  # killed mid fan-out
    per_desk = hooks.per_desk()
    assert set(per_desk) == {hooks.path_of(d) for d in desks}  # nothing lost
    twice = [path for path, count in per_desk.items() if count > 1]
    assert max(per_desk.values()) <= 2
    # the dispatcher's bound (bot/dispatcher.py): sends in flight plus outcomes not yet committed
    # (they wait up to GROUP_COMMIT_WINDOW to share a commit) stay below 2 x concurrency
    assert len(twice) <= 2 * CONCURRENCY, f"{len(twice)} duplicates"
    first_sender: dict[str, int | None] = {}
    for arrival in hooks.arrivals:
        first_sender.setdefault(arrival.path, arrival.pid)
    senders = {path: [a.pid for a in hooks.arrivals if a.path == path] for path in twice}
    # only the dead one's sends come twice (None: a request read after its sender's socket was
    # gone, which only the killed worker's can be)
    gone = {killed[0], None}
    assert all(first_sender[path] in gone for path in twice), (killed, pids, senders)
    assert all(set(senders[path][1:]) <= set(pids) - gone for path in twice), senders
    print(f"killed after {sent_before_kill} requests; {len(twice)} desks got the post twice")


# --- 3. Telegram's 30/s ---------------------------------------------------------------------------

CHATS = 300


class CountingTelegram(FakeTelegram):
    """The fake Bot API, noting which of `pids` made each sendMessage call."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(TOKEN)
        self.pids = pids
        self.senders: Counter[int | None] = Counter()
        self._ports: dict[int, int | None] = {}

    async def _serve(self, request: web.Request) -> web.Response:
        if request.match_info["method"].lower() == "sendmessage":
            peer = request.transport.get_extra_info("peername") if request.transport else None
            if peer is not None:
                port = int(peer[1])
                if self._ports.get(port) is None:
                    self._ports[port] = process_of(port, self.port, self.pids)
                self.senders[self._ports[port]] += 1
        return await super()._serve(request)


def telegram_env(fake: FakeTelegram) -> dict[str, str]:
    return {"LIVEDESK_TELEGRAM__TOKEN": fake.token, "LIVEDESK_TELEGRAM__BASE_URL": fake.base_url}


async def test_the_fleet_keeps_telegrams_30_per_second(tmp_path: Path, postgres_url: str) -> None:
    """One post to 300 private chats from three workers: each worker takes a third of the bot's
    30 messages/s, so the fake Bot API (which enforces Telegram's limits) never answers 429."""
    pids: list[int] = []
    async with CountingTelegram(pids) as fake:
        env = telegram_env(fake)
        chats = [1000 + n for n in range(CHATS)]
        targets = write_targets(tmp_path / "chats.txt", [str(c) for c in chats])
        subscribed = await run(
            "--db",
            postgres_url,
            "subscribe",
            "telegram",
            "--from-file",
            str(targets),
            cwd=tmp_path,
            env=env,
        )
        assert subscribed.code == 0, subscribed.err
        async with fleet(postgres_url, tmp_path, env) as workers:
            pids.extend(workers.pids)
            await workers.all_live()

            await import_one_post(postgres_url, tmp_path)
            await fake.wait_for(lambda: len({m.chat_id for m in fake.sent}) == CHATS, timeout=60)
            await asyncio.sleep(1.0)  # time for a second copy to show up, if there were one
            fake.end_long_polls()
        assert all(p.returncode == 0 for p in workers.processes)

    assert fake.rate_limited == 0 and fake.errors == []
    assert sorted(m.chat_id for m in fake.sent) == chats  # each chat once
    assert all("Council approves the tram line" in m.text for m in fake.sent)
    assert set(fake.senders) == set(pids), fake.senders  # all three sent their share


async def test_two_workers_that_join_a_sending_fleet_keep_the_limit_and_take_a_share(
    tmp_path: Path, postgres_url: str
) -> None:
    """One worker is sending a post to 600 private chats at the bot's whole 30 messages/s when
    two more start: they send only once it has counted them, it drops to its third at once (the
    slots it took at the whole rate do not carry it on), and what it had claimed of their share it
    hands over. No 429, each chat once, and the newcomers sent some."""
    pids: list[int] = []
    async with CountingTelegram(pids) as fake:
        env = telegram_env(fake)
        chats = [5000 + n for n in range(2 * CHATS)]
        targets = write_targets(tmp_path / "chats.txt", [str(c) for c in chats])
        subscribed = await run(
            "--db", postgres_url, "subscribe", "telegram", "--from-file", str(targets),
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert subscribed.code == 0, subscribed.err
        async with fleet(postgres_url, tmp_path, env, count=1) as workers:
            await workers.all_live()
            first = workers.pids[0]
            pids.append(first)
            await import_one_post(postgres_url, tmp_path)
            await fake.wait_for(lambda: len(fake.sent) >= 30, timeout=60)  # it is sending
            env = {"LIVEDESK_HTTP_PORT": "0", **env}
            joined = [spawn("--db", postgres_url, "run", cwd=tmp_path, env=env) for _ in range(2)]
            workers.processes.extend(joined)  # stopped with the fleet
            pids.extend(p.pid for p in joined)
            await fake.wait_for(
                lambda: len({m.chat_id for m in fake.sent}) == len(chats), timeout=90
            )
            await asyncio.sleep(1.0)  # time for a second copy to show up, if there were one
            fake.end_long_polls()
        assert all(p.returncode == 0 for p in workers.processes)

    assert fake.rate_limited == 0 and fake.errors == []
    assert sorted(m.chat_id for m in fake.sent) == chats  # each chat once
    assert set(fake.senders) == set(pids), fake.senders  # the newcomers took a share


# --- 4. a command, and the polling leader killed ------------------------------------------------


def polling_leaders(listed: list[dict[str, Any]]) -> list[int]:
    return [w["pid"] for w in listed if w["live"] and "telegram-polling" in w["roles"]]


async def test_a_command_is_answered_once_and_after_the_polling_leader_is_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    async with FakeTelegram(TOKEN) as fake:
        env = telegram_env(fake)
        await import_one_post(postgres_url, tmp_path)
        async with fleet(postgres_url, tmp_path, env) as workers:
            listed = await workers.until(
                lambda ws: (
                    len([w for w in ws if w["live"]]) == WORKERS and len(polling_leaders(ws)) == 1
                )
            )
            leader = polling_leaders(listed)[0]

            first = fake.command(501, "/latest")
            await fake.wait_for(lambda: bool(fake.messages_in(501)), timeout=30)
            # the leader took the update off the queue (its next getUpdates moved the offset past
            # it), so whoever polls next does not get it again
            await fake.wait_for(
                lambda: any(
                    method == "getUpdates" and int(params.get("offset") or 0) > first
                    for method, params in fake.calls
                ),
                timeout=30,
            )
            os.kill(leader, signal.SIGKILL)

            listed = await workers.until(
                lambda ws: bool(polling_leaders(ws)) and leader not in polling_leaders(ws)
            )
            assert len(polling_leaders(listed)) == 1
            fake.command(502, "/latest")
            await fake.wait_for(lambda: bool(fake.messages_in(502)), timeout=30)
            await asyncio.sleep(1.0)  # time for a second answer to show up, if there were one
            fake.end_long_polls()
        killed = next(p for p in workers.processes if p.pid == leader)
        assert killed.returncode == -signal.SIGKILL
        assert all(p.returncode == 0 for p in workers.processes if p is not killed)

    for chat in (501, 502):
        answers = fake.messages_in(chat)
        assert len(answers) == 1, [a.text for a in answers]  # answered once
        assert "Council approves the tram line" in answers[0].text
    assert fake.rate_limited == 0
