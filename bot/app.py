"""The composition root: one object owns the lifecycle of everything `livedesk run` starts.

Start order: database → stores → subscriptions from the settings → adapters → dispatcher → poller
(→ demo replay). Which adapters start is read from `bot.platforms`: those whose section is set, and
those that need no token (incoming webhooks) whenever the store has subscriptions for them; the
subscriptions of a platform still waiting for its token are named in one line each. Stop is the exact
reverse, driven by an `AsyncExitStack`: the poller and the replay stop importing, the dispatcher lets
in-flight sends finish (the rest stay pending in the outbox), adapters disconnect, the demo's terminal
subscriptions are removed, the database closes. SIGINT and SIGTERM ask for that stop; no library owns
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from bot.adapters.base import Adapter, AdapterContext, DeliveryError, StartupError
from bot.adapters.terminal import TerminalAdapter
from bot.config import ConfigError, Settings
from bot.demo import PROMPT_HINT, SAMPLE_LOCATION, TERMINAL_TARGET, DemoReplay, forget_terminal
from bot.fleet import FleetMember, new_worker_id
from bot.metrics import Metrics
from bot.models import Card, PostEvent, Reply, Request, Subscription
from bot.platforms import CONFIGURABLE, Platform, mask_address, waiting_lines
from bot.provision import provision
from bot.ratelimit import RateLimiter, SendBudget
from bot.redact import printable
from bot.share import TargetShare
from bot.web.context import WebContext
from bot.web.server import ControlRoom

if TYPE_CHECKING:  # PostgreSQL's modules load only for a postgresql:// store (storage.store)
    from bot.dispatcher import Dispatcher
    from storage.pg_db import PgDatabase
    from storage.pg_fleet import Fleet

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTING = 2


SOURCES_ROLE = "sources"
"""The fleet's role of polling the blogs: one worker fetches them, so each is fetched once."""


@runtime_checkable
class Leadable(Protocol):
    """An adapter whose inbound traffic one worker of a fleet must receive alone: Telegram's long
    polling (a second poller gets a conflict), Discord's gateway (two sessions would answer every
    slash command twice). `polls` False before start: it receives only from `start_receiving()`."""

    platform: str
    polls: bool
    receive_role: str

    async def start_receiving(self) -> None: ...

    async def stop_receiving(self) -> None: ...


class App:
    """Everything `livedesk run` runs, started in order and stopped in reverse.

    `once=True`: poll every source once, replay the demo instantly, deliver all that is due, stop.
    `stop()` may be called from anywhere in the loop (signal handlers, the terminal's /quit).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        once: bool = False,
        prompt: bool = True,
        demo_step: float = 5.0,
        idle_timeout: float = 60.0,
        console: Console | None = None,
        extra_adapters: Sequence[Adapter] = (),
        loud_without_demo: bool = False,
    ) -> None:
        self.settings = settings
        # Logging starts quiet when the demo may run (the terminal shows the posts); when it turns
        # out not to run, LIVEDESK_LOG_LEVEL applies again.
        self.loud_without_demo = loud_without_demo
        self.once = once
        self.prompt = prompt and not once
        self.demo_step = demo_step
        self.idle_timeout = idle_timeout
        self.console = console or Console(highlight=False)
        self.errors = Console(stderr=True, highlight=False)
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self.extra_adapters = tuple(extra_adapters)  # embedding and tests: started like the others
        self.adapters: dict[str, Adapter] = {}
        self.store: Any = None
        self.fleet: Any = None
        self.worker_id = new_worker_id()  # this process in a PostgreSQL fleet
        self._leadable: list[Leadable] = []
        self.posts: Any = None
        self.subscriptions: Any = None
        self.dispatcher: Any = None
        self.poller: Any = None
        self.demo: Any = None
        self.metrics = Metrics()  # what GET /metrics shows; one registry per app
        self.control_room: ControlRoom | None = None
        self.budget = SendBudget()  # one per bot and chat: pushes and command replies share it
        self._adapters_started = False
        self._dispatcher_task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Ask the app to stop; `run()` then shuts everything down in reverse order."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> int:
        """Run until `stop()` (or, with `once`, until everything is delivered); the exit code."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
        try:
            async with AsyncExitStack() as stack:
                await self._start(stack)
                self.started.set()
                if self.once:
                    if not await self._run_once():
                        return EXIT_FAILED
                else:
                    await self._stopping.wait()
                log.info("stopping")
            return EXIT_OK
        except StartupError as error:
            self._fail(str(error))
            return EXIT_FAILED
        except ConfigError as error:  # e.g. bad webhook keywords found while syncing them
            self._fail(str(error))
            return EXIT_BAD_SETTING
        except OSError as error:  # e.g. the database file cannot be created
            self._fail(f"cannot start: {error}")
            return EXIT_FAILED
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _fail(self, message: str) -> None:
        self.errors.print(Text(" ".join(printable(message).split()), style="red"), soft_wrap=True)

    def _say(self, message: str) -> None:
        self.console.print(Text(message, style="dim"), soft_wrap=True)

    def _warn(self, message: str) -> None:
        self.errors.print(Text(" ".join(message.split()), style="yellow"), soft_wrap=True)

    # --- start, in order; each step registers its own stop --------------------------------------------

    async def _start(self, stack: AsyncExitStack) -> None:
        from bot.dispatcher import Dispatcher
        from bot.poller import Poller
        from handlers import handle
        from handlers.base import Deps
        from storage import variants
        from storage.interface import Store
        from storage.store import open_sqlite

        settings = self.settings
        variants.use(settings.search.variants)  # the operator's name variants, for every search
        store: Store
        # On PostgreSQL several `livedesk run` share the store as a fleet (bot/fleet.py); a
        # one-shot run (--once) delivers what is due and leaves, without joining it.
        fleet_db: PgDatabase | None = None
        if settings.database_url is not None:
            from storage.pg_store import open_postgres

            postgres = await open_postgres(
                settings.database_url.get_secret_value(),
                lease_seconds=settings.dispatch.lease_seconds,
                owner=self.worker_id,
            )
            stack.push_async_callback(postgres.close)
            store = postgres
            if not self.once:
                fleet_db = postgres.db
        else:
            stack.enter_context(_run_lock(settings.db_path))
            store = await open_sqlite(settings.db_path)
            stack.push_async_callback(store.close)
        self.store = store
        stack.push_async_callback(self._end_demo)  # after everything else stopped
        self.posts = store.posts
        self.subscriptions = store.subscriptions
        deps = Deps(
            store=store,
            backfill=settings.backfill,
            timezone=settings.zone,
            on_search=self.metrics.searched,
        )

        async def handle_request(request: Request) -> Reply:
            return await handle(request, deps)

        budget = self.budget
        room = None if self.once else self._control_room(store)
        context = AdapterContext(
            handle=handle_request,
            pacer=budget,
            timezone=settings.zone,
            http_host=settings.http_host,
            http_port=settings.http_port,
            source_names=self._source_names,
            first_seen=store.replays.first_seen,
            mount=room.mount if room is not None else None,
        )
        await provision(self.subscriptions, settings)
        active = await self.subscriptions.count_by_platform(active_only=True)
        for line in waiting_lines(settings, active):
            self._warn(line)
        sections = self._sections(active)
        alone = not sections and not self.extra_adapters
        demo_wanted = settings.demo if settings.demo is not None else alone
        if demo_wanted and store.backend == "postgresql":
            if settings.demo:
                self._warn("the demo runs on the embedded SQLite store only, not on PostgreSQL")
            demo_wanted = False
        followed = bool(settings.sources) or bool(await store.feeds.list())
        demo_on = await self._demo_allowed(
            demo_wanted, followed=followed, nothing_else=alone and not followed
        )
        leadable: list[Leadable] = []
        for adapter in self._build_adapters(sections, demo=demo_on):
            if fleet_db is not None and isinstance(adapter, Leadable):
                adapter.polls = False  # only the fleet's leader receives commands
                leadable.append(adapter)
            await self._start_adapter(adapter, context)
            stack.push_async_callback(self._stop_adapter, adapter)
            self.adapters[adapter.platform] = adapter
        # A demo that was killed could not remove its terminal subscription: nothing serves it.
        if TERMINAL_TARGET.platform not in self.adapters and (
            removed := await forget_terminal(self.subscriptions)
        ):
            log.info("removed %d terminal subscription(s) left by an earlier demo", removed)
        if not demo_on and self.loud_without_demo:
            logging.getLogger().setLevel(settings.log_level.upper())
        self._adapters_started = True
        if room is not None:
            await self._open_control_room(room, stack)

        member: FleetMember | None = None
        share: TargetShare | None = None
        if fleet_db is not None:
            from storage.pg_fleet import Fleet, Leadership

            roles = [SOURCES_ROLE, *(a.receive_role for a in leadable)]
            registry = Fleet(fleet_db)
            member = FleetMember(
                registry,
                Leadership(fleet_db),
                roles,
                self._roles_changed,
                worker_id=self.worker_id,
                settle=_longest_bot_window(self.adapters.values()),
            )
            share = TargetShare(member.id)
            member.on_live = partial(_follow_live, share, budget.limiter)
        self.fleet = member
        self._leadable = leadable
        self.dispatcher = dispatcher = Dispatcher(
            store.outbox,
            dict(self.adapters),
            settings.dispatch,
            limiter=budget.limiter,
            share=share,
            metrics=self.metrics,
        )
        if not self.once:
            delivering = dispatcher.run() if member is None else self._deliver(member, dispatcher)
            task = asyncio.create_task(delivering, name="dispatcher")
            self._dispatcher_task = task
            stack.push_async_callback(self._stop_dispatcher, task)

        def wake(events: list[PostEvent]) -> None:
            dispatcher.wake()

        self.poller = poller = Poller(
            store,
            settings.sources,
            on_import=wake,
            new_source_backfill=settings.new_source_backfill,
            metrics=self.metrics,
        )
        if self.control_room is not None:
            self.control_room.context.feeds_changed = poller.changed  # the API added or changed one
        stack.push_async_callback(poller.stop)
        if member is not None and share is not None and fleet_db is not None:
            from storage.pg_db import OUTBOX_CHANNEL

            # The leader polls the blogs and the chats; every worker delivers its share.
            listening = asyncio.create_task(
                fleet_db.listen(OUTBOX_CHANNEL, dispatcher.wake), name="outbox notifications"
            )
            stack.push_async_callback(_cancel, listening)
            await member.start()
            stack.push_async_callback(member.stop)
            pruning = asyncio.create_task(self._prune_fleet(member, registry), name="fleet prune")
            stack.push_async_callback(_cancel, pruning)
        elif not self.once:
            poller.start()

        if demo_on:
            self.demo = demo = DemoReplay(
                store,
                step_seconds=0.0 if self.once else self.demo_step,
                on_import=wake,
                settle=partial(self._settle, dispatcher),
                say=self._say,
            )
            await demo.prepare()
            dispatcher.wake()  # a backfill for the terminal, if any
            if not self.once:
                replay = asyncio.create_task(demo.run(), name="demo replay")
                stack.push_async_callback(_cancel, replay)
        log.info(
            "running: adapters %s%s",  # the poller says how many blogs it follows
            ", ".join(self.adapters) or "none",
            ", demo replay" if demo_on else "",
        )

    # --- the control room (bot.web.server) -------------------------------------------------------------

    def _control_room(self, store: Any) -> ControlRoom:
        """The HTTP server, routes built; adapters mount theirs at start, then it listens."""
        settings = self.settings
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        web = WebContext(
            store=store,
            feeds=store.feeds,
            metrics=self.metrics,
            zone=settings.zone,
            admin_token=token or None,
            send_test=self._send_test,
            readiness=self._readiness,
            backfill=settings.backfill,
        )
        self.metrics.on_scrape(self._rate_limit_use)
        self.control_room = room = ControlRoom(
            web, host=settings.http_host, port=settings.http_port
        )
        return room

    async def _open_control_room(self, room: ControlRoom, stack: AsyncExitStack) -> None:
        """Listen, and say where in one line. An address that cannot be bound is fatal only when a
        platform needs the server (Slack's slash command); otherwise deliveries go on without it."""
        try:
            await room.start()
        except OSError as error:
            where = f"{room.host}:{room.port}"
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            if room.mounted:
                raise StartupError(
                    f"cannot serve {room.mounted[0][0]} on {where}: {reason}"
                ) from None
            self._warn(
                f"the control room is off: cannot listen on {where} ({reason}); "
                "set LIVEDESK_HTTP_PORT to a free port"
            )
            self.control_room = None
            return
        stack.push_async_callback(room.stop)
        if room.context.admin_token:
            self._say(
                f"Control room on {room.url}/ (API {room.url}/api/v1, metrics /metrics, "
                "health /healthz and /readyz)"
            )
        else:
            self._say(
                f"Control room on {room.url}: health and metrics only; the API and the dashboard "
                "are off (set LIVEDESK_ADMIN_TOKEN to turn them on)"
            )

    async def _readiness(self) -> dict[str, bool]:
        """What `/readyz` checks: the store answers, the adapters started, the dispatcher runs."""
        checks: dict[str, bool] = {}
        try:
            async with asyncio.timeout(3.0):
                await self.store.outbox.data_version()
            checks["store"] = True
        except Exception:
            checks["store"] = False
        checks["adapters"] = self._adapters_started and not self.stopping
        if not self.once:
            task = self._dispatcher_task
            checks["dispatcher"] = task is not None and not task.done()
        return checks

    async def _send_test(self, subscription: Subscription) -> str:
        """A test message to the subscription's chat or webhook, through its platform's adapter and
        within the bot's send budget; DeliveryError (addresses masked) when it does not go."""
        target = subscription.target
        where = f"{target.platform} {mask_address(target)}"
        adapter = self.adapters.get(target.platform)
        if adapter is None:
            raise DeliveryError(f"{target.platform} is not running here: nothing sent to {where}")
        card = Card(
            post_id="livedesk-test",
            title="Livedesk test message",
            published_at=datetime.now(UTC),
            body=(f"Subscription #{subscription.id} reaches this chat.",),
            source_title="Livedesk",
        )
        try:
            async with asyncio.timeout(30.0):
                await self.budget.reply(adapter, target, lambda: adapter.send(target, card))
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(f"{where} did not answer in 30 s") from None
        except Exception as error:
            log.exception("the test send to subscription %d failed", subscription.id)
            raise DeliveryError(f"{where}: {type(error).__name__}") from None
        return f"test message sent to {where}"

    def _rate_limit_use(self) -> None:
        limiter = self.budget.limiter
        for name, adapter in self.adapters.items():
            limits = adapter.capabilities.rate_limits
            self.metrics.set_rate_limit_use(name, limiter.use(name, limits))

    async def _roles_changed(self, held: frozenset[str]) -> None:
        """This worker became (or stopped being) a leader of the fleet: poll the blogs, and the
        chats whose platform polls, only while it leads."""
        if self.poller is not None:
            if SOURCES_ROLE in held:
                self.poller.start()
            else:
                await self.poller.stop()
        for adapter in self._leadable:
            if adapter.receive_role in held:
                await adapter.start_receiving()
            else:
                await adapter.stop_receiving()
        log.info("fleet: leading %s", ", ".join(sorted(held)) or "nothing")

    async def _deliver(self, member: FleetMember, dispatcher: Dispatcher) -> None:
        """Deliver once the other workers of the fleet have counted this one (FleetMember.ready)."""
        await member.ready()
        await dispatcher.run()

    async def _prune_fleet(self, member: FleetMember, registry: Fleet) -> None:
        """The `sources` leader forgets workers gone for a day (and holding no lease), every ten
        minutes. (Each heartbeat keeps this worker's shares in step: `_follow_live`.)"""
        while True:
            await asyncio.sleep(600.0)
            if SOURCES_ROLE in member.held:
                with contextlib.suppress(ConnectionError):
                    await registry.prune(older_than=86_400)

    def _sections(self, active: dict[str, int]) -> list[tuple[Platform, BaseModel]]:
        """The platforms to start, with their settings: those configured, and those that need no
        token (incoming webhooks) whenever the store has subscriptions for them."""
        chosen: list[tuple[Platform, BaseModel]] = []
        for entry in CONFIGURABLE:
            section = entry.settings_of(self.settings)
            if section is None and not entry.needs_token and active.get(entry.name):
                assert entry.settings_class is not None
                section = entry.settings_class()
            if section is not None:
                chosen.append((entry, section))
        return chosen

    async def _demo_allowed(self, wanted: bool, *, followed: bool, nothing_else: bool) -> bool:
        """The demo runs only on a database that is new or its own (holding nothing but the sample
        blog and terminal subscriptions, following no blog): it never writes an operator's data.
        Refused with nothing else to run, `livedesk run` stops with that one line (exit 2) instead
        of idling."""
        if not wanted:
            return False
        sources = await self.posts.sources()
        failing = await self.posts.failing_locations()
        platforms = await self.subscriptions.count_by_platform()
        foreign_sources = [s for s in sources if s.location != SAMPLE_LOCATION] or failing
        foreign_subscriptions = {p for p in platforms if p != TERMINAL_TARGET.platform}
        if not foreign_sources and not foreign_subscriptions and not followed:
            return True
        refusal = (
            "this database has real blogs or subscriptions: the demo does not run here; "
            f"configure a platform, or give the demo another --db (not {self.settings.db_path})"
        )
        if nothing_else:
            raise ConfigError(refusal)
        self._warn(refusal)
        return False

    async def _end_demo(self) -> None:
        """The terminal channel lives as long as the demo: its subscriptions go with it."""
        if self.demo is not None:
            try:
                await self.demo.forget_terminal()
            except Exception:
                log.exception("could not remove the demo's terminal subscription")

    async def _settle(self, dispatcher: Any) -> None:
        """Until what is due now is delivered (the demo's last post before its "done" line)."""
        with contextlib.suppress(TimeoutError):
            await dispatcher.run_until_idle(timeout=self.idle_timeout)

    def _build_adapters(
        self, sections: Sequence[tuple[Platform, BaseModel]], *, demo: bool
    ) -> list[Adapter]:
        settings = self.settings
        adapters: list[Adapter] = []
        if demo:
            adapters.append(
                TerminalAdapter(
                    timezone=settings.zone,
                    prompt=self.prompt,
                    on_quit=self.stop,
                    console=self.console,
                    hint=PROMPT_HINT,
                )
            )
        adapters.extend(self.extra_adapters)
        for entry, section in sections:
            try:
                factory = entry.adapter_class()
            except Exception as error:
                log.error(
                    "the %s adapter cannot be loaded, running without it: %s", entry.name, error
                )
                self._fail(f"{entry.name}: adapter cannot be loaded ({error}); running without it")
                continue
            adapters.append(factory(section))
        return adapters

    async def _source_names(self) -> list[str]:
        """Blog titles, for adapters that offer them as choices (Discord's autocomplete)."""
        return [source.title for source in await self.posts.all_sources()]

    async def _start_adapter(self, adapter: Adapter, context: AdapterContext) -> None:
        try:
            await adapter.start(context)
        except StartupError:
            with contextlib.suppress(Exception):
                await adapter.stop()
            raise
        log.info("%s adapter started", adapter.platform)

    async def _stop_adapter(self, adapter: Adapter) -> None:
        try:
            await adapter.stop()
        except Exception:
            log.exception("%s adapter did not stop cleanly", adapter.platform)

    async def _stop_dispatcher(self, task: asyncio.Task[None]) -> None:
        if not self.dispatcher.running:  # a worker the fleet has not counted yet: not started
            await _cancel(task)
            return
        await self.dispatcher.stop()
        try:
            await asyncio.wait_for(task, timeout=30.0)
        except TimeoutError:
            log.warning("the dispatcher did not stop in 30 s; cancelling it")
            await _cancel(task)
        except Exception:
            log.exception("the dispatcher failed")

    async def _run_once(self) -> bool:
        """Import once, deliver everything due; False when that did not finish in time."""
        deliver = partial(self.dispatcher.run_until_idle, timeout=self.idle_timeout)
        try:
            if self.demo is not None:
                await self.demo.run(instant=True, after_step=deliver)
            await self.poller.poll_all()
            await deliver()
        except TimeoutError:
            self._fail(
                f"deliveries did not finish in {self.idle_timeout:g} s; "
                "the rest stay pending for the next run"
            )
            return False
        return True


def _longest_bot_window(adapters: Iterable[Adapter]) -> float:
    """The longest window of a bot-wide limit (Telegram's 30 per second: 1.0), 0 without one."""
    windows = [a.capabilities.rate_limits.overall for a in adapters]
    return max((rate.per for rate in windows if rate is not None), default=0.0)


def _follow_live(share: TargetShare, limiter: RateLimiter, live: tuple[str, ...]) -> None:
    """A heartbeat counted the live workers: this one's share of the targets and of the bot-wide
    limits follows at once (the dispatcher redistributes its queues at its next turn)."""
    share.update(live)
    limiter.share_among(len(share.workers))


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_app(settings: Settings, *, once: bool = False, loud_without_demo: bool = False) -> int:
    """`livedesk run`: the app on a fresh event loop; the exit code."""
    return asyncio.run(App(settings, once=once, loud_without_demo=loud_without_demo).run())


@contextlib.contextmanager
def _run_lock(db_path: Path) -> Iterator[None]:
    """One running Livedesk per database: its dispatcher keeps claims in memory, so a second one
    would send every post twice. `livedesk import` and the other commands need no lock."""
    lock_path = db_path.with_name(db_path.name + ".run-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(
                f"another `livedesk run` is already using {db_path}; stop it first"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
