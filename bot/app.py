"""The composition root: one object owns the lifecycle of everything `livedesk run` starts.

Start order: database → stores → adapters → dispatcher → poller (→ demo replay). Stop is the exact
reverse, driven by an `AsyncExitStack`: the poller and the replay stop importing, the dispatcher lets
in-flight sends finish (the rest stay pending in the outbox), adapters disconnect, the database closes.
SIGINT and SIGTERM ask for that stop; no library owns the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import inspect
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from bot.adapters.base import Adapter, AdapterContext, StartupError
from bot.config import ConfigError, Settings
from bot.models import PostEvent, Reply, Request
from bot.ratelimit import SendBudget

log = logging.getLogger(__name__)

# platform → (settings attribute, module, class). Imported lazily: a broken platform module
# must not take the others down.
PLATFORM_ADAPTERS: tuple[tuple[str, str, str], ...] = (
    ("telegram", "bot.adapters.telegram", "TelegramAdapter"),
    ("discord", "bot.adapters.discord", "DiscordAdapter"),
    ("slack", "bot.adapters.slack", "SlackAdapter"),
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTING = 2


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
    ) -> None:
        self.settings = settings
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
        self.db: Any = None
        self.posts: Any = None
        self.subscriptions: Any = None
        self.dispatcher: Any = None
        self.poller: Any = None
        self.demo: Any = None

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
        self.errors.print(Text(" ".join(message.split()), style="red"), soft_wrap=True)

    def _say(self, message: str) -> None:
        self.console.print(Text(message, style="dim"), soft_wrap=True)

    # --- start, in order; each step registers its own stop --------------------------------------------

    async def _start(self, stack: AsyncExitStack) -> None:
        from bot.dispatcher import Dispatcher
        from bot.poller import Poller
        from handlers import handle
        from handlers.base import Deps
        from storage.db import Database
        from storage.posts import PostStore
        from storage.subscriptions import SubscriptionStore

        settings = self.settings
        stack.enter_context(_run_lock(settings.db_path))
        self.db = db = await Database.open(settings.db_path)
        stack.push_async_callback(db.close)
        self.posts = PostStore(db)
        self.subscriptions = SubscriptionStore(db)
        deps = Deps(
            db=db,
            posts=self.posts,
            subscriptions=self.subscriptions,
            backfill=settings.backfill,
            timezone=settings.zone,
        )

        async def handle_request(request: Request) -> Reply:
            return await handle(request, deps)

        budget = SendBudget()  # one per bot and chat: pushes and command replies share it
        context = AdapterContext(handle=handle_request, pacer=budget)
        for adapter in self._build_adapters():
            await self._start_adapter(adapter, context)
            stack.push_async_callback(self._stop_adapter, adapter)
            self.adapters[adapter.platform] = adapter
        await self._sync_slack_webhooks()

        self.dispatcher = dispatcher = Dispatcher(
            db, dict(self.adapters), settings.dispatch, limiter=budget.limiter
        )
        if not self.once:
            task = asyncio.create_task(dispatcher.run(), name="dispatcher")
            stack.push_async_callback(self._stop_dispatcher, task)

        def wake(events: list[PostEvent]) -> None:
            dispatcher.wake()

        self.poller = poller = Poller(self.posts, settings.sources, on_import=wake)
        if not self.once:
            poller.start()
        stack.push_async_callback(poller.stop)

        if settings.demo_mode:
            from bot.demo import DemoReplay

            self.demo = demo = DemoReplay(
                self.posts,
                self.subscriptions,
                step_seconds=0.0 if self.once else self.demo_step,
                on_import=wake,
                say=self._say,
            )
            await demo.prepare()
            dispatcher.wake()  # a backfill for the terminal, if any
            if not self.once:
                replay = asyncio.create_task(demo.run(), name="demo replay")
                stack.push_async_callback(_cancel, replay)
        log.info(
            "running: adapters %s, %d sources%s",
            ", ".join(self.adapters) or "none",
            len(settings.sources),
            ", demo replay" if settings.demo_mode else "",
        )

    def _build_adapters(self) -> list[Adapter]:
        settings = self.settings
        adapters: list[Adapter] = []
        if settings.demo_mode:
            from bot.adapters.terminal import TerminalAdapter

            adapters.append(
                TerminalAdapter(
                    timezone=settings.zone,
                    prompt=self.prompt,
                    on_quit=self.stop,
                    console=self.console,
                )
            )
        adapters.extend(self.extra_adapters)
        for name, module_name, class_name in PLATFORM_ADAPTERS:
            section = getattr(settings, name)
            if section is None:
                continue
            try:
                factory: Callable[..., Adapter] = getattr(
                    importlib.import_module(module_name), class_name
                )
            except Exception as error:
                log.error("the %s adapter cannot be loaded, running without it: %s", name, error)
                self._fail(f"{name}: adapter cannot be loaded ({error}); running without it")
                continue
            adapters.append(factory(section, **self._adapter_options(factory)))
        return adapters

    def _adapter_options(self, factory: Callable[..., Adapter]) -> dict[str, Any]:
        """timezone for every adapter; the shared HTTP address and the blog names to those that take them."""
        offered: dict[str, Any] = {
            "http_host": self.settings.http_host,
            "http_port": self.settings.http_port,
            "source_names": self._source_names,
        }
        accepted = inspect.signature(factory).parameters
        options = {name: value for name, value in offered.items() if name in accepted}
        return {"timezone": self.settings.zone, **options}

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

    async def _sync_slack_webhooks(self) -> None:
        """Webhooks listed in the settings become subscriptions (when the Slack module offers it)."""
        slack = self.adapters.get("slack")
        if slack is None or self.settings.slack is None:
            return
        sync = getattr(slack, "sync_configured_webhooks", None)
        if sync is None:
            module = importlib.import_module("bot.adapters.slack")
            sync = getattr(module, "sync_configured_webhooks", None)
        if sync is not None:
            await sync(self.subscriptions, self.settings.slack)

    async def _stop_dispatcher(self, task: asyncio.Task[None]) -> None:
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


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_app(settings: Settings, *, once: bool = False) -> int:
    """`livedesk run`: the app on a fresh event loop; the exit code."""
    return asyncio.run(App(settings, once=once).run())


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
