"""This process as one worker of a fleet that shares a PostgreSQL database (`livedesk run`).

A `FleetMember` joins the fleet's registry, and every HEARTBEAT seconds refreshes its heartbeat,
tries to lead each role it wants and does not lead yet (a role is led by one worker of the fleet at
a time: polling Telegram, fetching the sources), counts the live workers, and tells its owner
through `on_change` when the roles it leads change. Losing the database loses the roles too (their
locks live on its connection, and another worker may take them meanwhile): an outage is logged once,
not once per beat, and the member keeps trying until the database answers again. A worker that
joins a running fleet sends nothing until the others have counted it (`FleetMember.ready`): they
divide the bot-wide limits by the live workers, and learn of a new one only at their next beat.

The registry and the locks come from the composition root (storage.pg_fleet's Fleet and Leadership
on PostgreSQL); this module names only what it needs of them, so it touches no storage engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

HEARTBEAT = 2.0
"""Seconds between two heartbeats of a member."""
STALE_AFTER = 3 * HEARTBEAT
"""A worker whose heartbeat is older than this is taken for dead: three beats missed."""

OnChange = Callable[[frozenset[str]], Awaitable[None] | None]


class Registry(Protocol):
    """Who is in the fleet (storage.pg_fleet.Fleet). Unreachable: ConnectionError."""

    async def join(self, worker_id: str, host: str, pid: int) -> None: ...

    async def heartbeat(self, worker_id: str, roles: Iterable[str] = ()) -> bool: ...

    async def leave(self, worker_id: str) -> None: ...

    async def live(self, stale_after: float) -> tuple[float, dict[str, float]]: ...


class Leaders(Protocol):
    """The roles this process leads (storage.pg_fleet.Leadership). Unreachable: ConnectionError."""

    @property
    def held(self) -> frozenset[str]: ...

    def holds(self, role: str) -> bool: ...

    async def try_take(self, role: str) -> bool: ...

    async def check(self) -> frozenset[str]: ...

    async def release(self, role: str) -> None: ...

    async def close(self) -> None: ...


def new_worker_id(host: str | None = None, pid: int | None = None) -> str:
    """`host:pid:random`: unique per process start, even when a pid comes round again."""
    return f"{host or socket.gethostname()}:{os.getpid() if pid is None else pid}:{secrets.token_hex(3)}"


class FleetMember:
    """One `livedesk run` in the fleet: its heartbeat, and the roles it leads."""

    def __init__(
        self,
        registry: Registry,
        leaders: Leaders,
        roles: Sequence[str],
        on_change: OnChange,
        *,
        heartbeat: float = HEARTBEAT,
        stale_after: float | None = None,
        host: str | None = None,
        pid: int | None = None,
        worker_id: str | None = None,
        settle: float = 0.0,
        on_live: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        # The outbox leases deliveries under the same id (`livedesk workers` counts them).
        self.id = worker_id or new_worker_id(self.host, self.pid)
        self.roles = tuple(dict.fromkeys(roles))
        self.heartbeat = heartbeat
        self.stale_after = 3 * heartbeat if stale_after is None else stale_after
        self._registry = registry
        self._leaders = leaders
        self._on_change = on_change
        self._held: frozenset[str] = frozenset()
        self._live = 1
        self._live_ids: tuple[str, ...] = (self.id,)
        self._joined = False
        self._outage = False
        # The bot-wide limits are shared by the live workers (bot.share): the others learn of
        # this one at their next heartbeat, and until then go on at their larger share. So this
        # one sends nothing until each has beaten since it joined, then `settle` seconds more
        # (the longest window of a bot-wide limit), for their sends at that share to leave it.
        self.settle = settle
        self.on_live = on_live
        self._counted_from: float | None = None
        self._counted = asyncio.Event()
        self._send_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> frozenset[str]:
        """The roles this member leads, as of the last heartbeat round."""
        return self._held

    @property
    def live_count(self) -> int:
        """Live workers in the fleet at the last heartbeat round, this one included (at least 1)."""
        return self._live

    @property
    def live_ids(self) -> tuple[str, ...]:
        """The live workers' ids at the last heartbeat round (this one's at least)."""
        return self._live_ids

    @property
    def counted(self) -> bool:
        """Whether every other live worker has counted this one (see `ready`)."""
        return self._counted.is_set()

    async def ready(self) -> None:
        """Until this worker may send: every other live worker has beaten since it joined (and
        so divides the bot-wide limits by a count that includes it), and `settle` seconds have
        passed since the last of those beats. At once when it is alone."""
        await self._counted.wait()
        wait = self._send_at - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    @property
    def reachable(self) -> bool:
        """Whether the last heartbeat round reached the database from start to end."""
        return not self._outage

    async def start(self) -> None:
        """Join and take what roles are free now, then keep beating in the background. An
        unreachable database is logged, not raised: the member keeps trying."""
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"fleet heartbeat {self.id}")

    async def stop(self) -> None:
        """Stop beating, give up every role, and leave the fleet."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            for role in self.roles:
                await self._leaders.release(role)
        except ConnectionError:
            pass  # the locks went with the connection
        finally:
            await self._leaders.close()
        await self._changed(frozenset())
        if self._joined:
            try:
                await self._registry.leave(self.id)
            except ConnectionError as error:
                log.warning("fleet: could not leave (%s); the row goes stale on its own", error)
            self._joined = False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat round (start() and the background task run it; tests may call it)."""
        try:
            await self._round()
        except ConnectionError as error:
            if not self._outage:
                log.warning("fleet: %s; trying again every %g s", error, self.heartbeat)
            self._outage = True
        except Exception:  # a bug must not stop the heartbeat, nor flood the log every beat
            if not self._outage:
                log.exception(
                    "fleet: the heartbeat failed; trying again every %g s", self.heartbeat
                )
            self._outage = True
        else:
            if self._outage:
                log.warning("fleet: the database answers again")
            self._outage = False
        await self._changed(self._leaders.held)

    async def _round(self) -> None:
        if not self._joined:
            await self._registry.join(self.id, self.host, self.pid)
            self._joined = True
        await self._leaders.check()
        for role in self.roles:
            if not self._leaders.holds(role):
                await self._leaders.try_take(role)
        if not await self._registry.heartbeat(self.id, sorted(self._leaders.held)):
            # The row was pruned while this worker was cut off: join again.
            await self._registry.join(self.id, self.host, self.pid)
            await self._registry.heartbeat(self.id, sorted(self._leaders.held))
        now, beats = await self._registry.live(self.stale_after)
        self._live = max(1, len(beats))
        self._live_ids = tuple(beats) or (self.id,)
        first = self._counted_from is None
        if self._counted_from is None:
            self._counted_from = now  # a clock read after the join was committed
        counted_from = self._counted_from
        if not self._counted.is_set():
            others = [beat for worker, beat in beats.items() if worker != self.id]
            if first and others:
                log.info(
                    "fleet: %d other worker(s) will count this one at their next heartbeat; "
                    "sending then",
                    len(others),
                )
            if all(beat > counted_from for beat in others):
                hold = max((beat + self.settle - now for beat in others), default=0.0)
                self._send_at = asyncio.get_running_loop().time() + max(0.0, hold)
                self._counted.set()
        if self.on_live is not None:
            self.on_live(self._live_ids)

    async def _changed(self, held: frozenset[str]) -> None:
        if held == self._held:
            return
        self._held = held
        try:
            result = self._on_change(held)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("fleet: on_change(%s) failed", sorted(held))
