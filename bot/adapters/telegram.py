"""Telegram, through python-telegram-bot 22: commands, "More ›" buttons, inline mode, and pushed posts.

The composition root owns the loop: `start()` enters the PTB `Application` as an async context, starts
it and its updater (long polling, or a webhook when a public URL and a secret are configured) — never
`run_polling()`. Inbound commands become neutral `Request`s for `handlers/`; replies and posts are
rendered as Telegram HTML by `bot.adapters.telegram_render`.

Sending is paced from `capabilities.rate_limits` by one budget (`bot.ratelimit.SendBudget`) that the
dispatcher's pushes and this adapter's command replies share, so the PTB application gets no
`AIORateLimiter`: two limiters would each take their share of the budget and halve throughput, and PTB's
own 429 retries would hide the retry-after the dispatcher needs to see. A reply goes ahead of queued
pushes within the same limits, and one that meets a 429 is sent again after its retry-after.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from functools import partial
from typing import Any, TypeAlias
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from telegram import (
    BotCommand,
    Chat,
    InlineKeyboardMarkup,
    InlineQueryResultsButton,
    LinkPreviewOptions,
    Message,
    Update,
    User,
)
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    InlineQueryHandler,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from bot.adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    DeliveryError,
    InvalidPayload,
    Pacer,
    PermanentError,
    Rate,
    RateLimited,
    RateLimits,
    StartupError,
    TargetMoved,
    TransientError,
)
from bot.adapters.telegram_render import (
    MAX_TEXT,
    CallbackCommands,
    inline_article,
    keyboard,
    render_card,
    render_reply,
)
from bot.config import TelegramSettings
from bot.models import Button, Card, ChatKind, Reply, Request, Target
from bot.ratelimit import SendBudget
from handlers import COMMANDS, split_command_line

log = logging.getLogger(__name__)

# RetryAfter reads its own `retry_after` in __init__, which warns on every 429 unless this opt-in to
# PTB's coming timedelta periods is set (read at that moment). We accept timedelta or number either way.
os.environ.setdefault("PTB_TIMEDELTA", "true")

UTC_ZONE = ZoneInfo("UTC")
TOKEN_REJECTED = "Telegram rejected the token (check LIVEDESK_TELEGRAM__TOKEN)"
COMMAND_NAMES = frozenset({"start", *(c.name for c in COMMANDS)})
UPDATE_KINDS = ["message", "channel_post", "callback_query", "inline_query"]
INLINE_RESULTS = 50
INLINE_PAGES = 10
# BadRequest descriptions that mean the chat is gone for us, not that one message was wrong.
GONE = ("chat not found", "have no rights to send", "not enough rights", "chat_write_forbidden")
NOT_MODIFIED = "message is not modified"

PtbApp: TypeAlias = Application[ExtBot[None], Any, Any, Any, Any, Any]


def telegram_capabilities(scale: float = 1.0) -> Capabilities:
    """Telegram's published limits, `scale` times faster (a scaled fake in tests)."""

    def rate(count: int, per: float) -> Rate:
        return Rate(max(1, round(count * scale)), per)

    return Capabilities(
        max_text=MAX_TEXT,
        markup="html",
        can_edit=True,
        rate_limits=RateLimits(
            overall=rate(30, 1),
            per_target=rate(1, 1),
            per_kind={"group": rate(20, 60), "channel": rate(20, 60)},
        ),
    )


def delivery_error(exc: TelegramError) -> DeliveryError:
    """What a Bot API failure means for a delivery (see bot/adapters/base.py)."""
    reason = f"Telegram: {exc.message}"
    if isinstance(exc, ChatMigrated):
        return TargetMoved(str(exc.new_chat_id))
    if isinstance(exc, RetryAfter):
        return RateLimited(retry_seconds(exc), message=reason)
    if isinstance(exc, Forbidden):
        return PermanentError(reason)
    if isinstance(exc, InvalidToken):
        return TransientError(TOKEN_REJECTED)
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest is one
        gone = any(p in exc.message.lower() for p in GONE)
        return PermanentError(reason) if gone else InvalidPayload(reason)
    return TransientError(reason)  # TimedOut, NetworkError, Conflict, anything new


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: int | float | timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _chat_id(address: str) -> int | str:
    return int(address) if address.lstrip("-").isdigit() else address


def _chat_kind(chat: Chat) -> ChatKind:
    if chat.type == Chat.PRIVATE:
        return ChatKind.PRIVATE
    return ChatKind.CHANNEL if chat.type == Chat.CHANNEL else ChatKind.GROUP


class TelegramAdapter(Adapter):
    platform = "telegram"

    def __init__(
        self,
        settings: TelegramSettings,
        *,
        poll_timeout: float = 10.0,
        connection_pool_size: int = 128,
    ) -> None:
        self.settings = settings
        self.timezone = UTC_ZONE  # the operator's, from the context at start
        self.capabilities = telegram_capabilities(settings.rate_scale)
        self.poll_timeout = poll_timeout
        self.connection_pool_size = connection_pool_size
        self.previews = LinkPreviewOptions(is_disabled=not settings.link_previews)
        self.polls = True
        """Long-poll for commands at start (without a webhook). A fleet worker sets it False and
        polls only while it leads (`start_receiving`, `stop_receiving`)."""
        self.receive_role = "telegram-polling"
        """The fleet's role whose leader polls (Telegram answers a second poller with a conflict)."""
        self._polling = False
        self._app: PtbApp | None = None
        self._stack = AsyncExitStack()
        self._context: AdapterContext | None = None
        self._pacer: Pacer = SendBudget()  # until start() brings the bot's shared one
        # chat id → (expiry, its administrators, those of them who may post in a channel)
        self._admins: dict[int, tuple[float, frozenset[int], frozenset[int]]] = {}
        self._callbacks = CallbackCommands()

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self, context: AdapterContext) -> None:
        if self._app is not None:
            raise RuntimeError("the Telegram adapter is already running")
        self._context = context
        self.timezone = context.timezone
        if context.pacer is not None:
            self._pacer = context.pacer
        _quiet_http_logs()
        webhook = self._webhook_mode()
        app = self._build()
        try:
            await self._stack.enter_async_context(app)  # initialize(): getMe checks the token
        except TelegramError as exc:
            await app.bot.shutdown()  # the app only shuts down what finished initializing
            if isinstance(exc, InvalidToken):
                raise StartupError(TOKEN_REJECTED) from None
            raise StartupError(f"Telegram is unreachable: {self._scrub(exc.message)}") from None
        self._app = app
        try:
            self._add_handlers(app)
            await self._register_commands(app)
            await app.start()
            self._stack.push_async_callback(app.stop)
            updater = app.updater
            assert updater is not None
            if webhook:
                await self._start_webhook(app)
                self._stack.push_async_callback(updater.stop)
            elif self.polls:
                await self.start_receiving()
            self._stack.push_async_callback(self._stop_polling, app)
        except BaseException:
            self._app = None
            await self._stack.aclose()
            raise
        how = "on a webhook" if webhook else "polling" if self.polls else "sending only"
        log.info("Telegram: @%s is %s", app.bot.username, how)

    async def start_receiving(self) -> None:
        """Receive commands by long polling. In a fleet only the leader polls (Telegram answers a
        second poller with a conflict), so it calls this when it becomes the leader."""
        app = self._app
        if app is None or app.updater is None or self._polling or self._webhook_mode():
            return
        await app.updater.start_polling(
            poll_interval=0,
            timeout=timedelta(seconds=self.poll_timeout),
            allowed_updates=UPDATE_KINDS,
        )
        self._polling = True
        log.info("Telegram: polling for commands")

    async def stop_receiving(self) -> None:
        """Stop long polling (the commands in progress are answered); sending goes on."""
        if self._app is not None:
            await self._stop_polling(self._app)

    async def _stop_polling(self, app: PtbApp) -> None:
        if self._polling and app.updater is not None:
            self._polling = False
            await app.updater.stop()

    @property
    def updates_in_progress(self) -> int:
        """Chat updates (commands, button presses) being handled now, their replies included."""
        if self._app is None:
            return 0
        return (
            self._app.update_processor.current_concurrent_updates + self._app.update_queue.qsize()
        )

    async def stop(self) -> None:
        """Stop receiving, then close the application (in-flight handlers finish first)."""
        self._app = None
        await self._stack.aclose()

    def _build(self) -> PtbApp:
        s = self.settings
        builder = (
            ApplicationBuilder()
            .token(s.token.get_secret_value())
            .base_url(s.base_url)
            .request(
                HTTPXRequest(
                    connection_pool_size=self.connection_pool_size,
                    pool_timeout=30.0,
                    read_timeout=15.0,
                    write_timeout=15.0,
                    connect_timeout=10.0,
                )
            )
            .get_updates_request(HTTPXRequest(connection_pool_size=2, read_timeout=10.0))
            .concurrent_updates(16)
        )
        if s.base_file_url:
            builder = builder.base_file_url(s.base_file_url)
        return builder.build()

    def _webhook_mode(self) -> bool:
        s = self.settings
        if not s.webhook_url:
            return False
        if s.webhook_secret is None:
            raise StartupError(
                "Telegram webhook mode needs a secret token (set LIVEDESK_TELEGRAM__WEBHOOK_SECRET)"
            )
        return True

    async def _start_webhook(self, app: PtbApp) -> None:
        s = self.settings
        assert app.updater is not None and s.webhook_url and s.webhook_secret
        try:
            await app.updater.start_webhook(
                listen=s.webhook_listen,
                port=s.webhook_port,
                url_path=urlsplit(s.webhook_url).path.lstrip("/"),
                webhook_url=s.webhook_url,
                secret_token=s.webhook_secret.get_secret_value(),
                allowed_updates=UPDATE_KINDS,
            )
        except RuntimeError as exc:  # PTB without its [webhooks] extra (tornado)
            raise StartupError(f"Telegram webhook mode is unavailable: {exc}") from None

    def _add_handlers(self, app: PtbApp) -> None:
        not_edited = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
        app.add_handler(CommandHandler(sorted(COMMAND_NAMES), self._on_command, not_edited))
        # Unknown commands get a polite answer in private chats; in groups they may be another bot's.
        app.add_handler(
            MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, self._on_command)
        )
        app.add_handler(CallbackQueryHandler(self._on_button))
        app.add_handler(InlineQueryHandler(self._on_inline))
        app.add_error_handler(self._on_error)

    async def _register_commands(self, app: PtbApp) -> None:
        menu = [BotCommand(c.name, c.summary[:256]) for c in COMMANDS]
        try:
            await app.bot.set_my_commands(menu)
        except TelegramError as exc:  # a missing menu is no reason not to run
            log.warning("Telegram: could not register the command menu: %s", exc.message)

    def _scrub(self, text: str) -> str:
        return text.replace(self.settings.token.get_secret_value(), "***")

    # --- inbound ------------------------------------------------------------------------------------------

    async def _on_command(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        message, chat = update.effective_message, update.effective_chat
        if message is None or chat is None or not message.text:
            return
        first, _sep, rest = message.text.partition(" ")
        command = first.lstrip("/").split("@", 1)[0].lower()
        args = split_command_line(f"x {rest}")[1] if rest.strip() else ()
        thread = message.message_thread_id if message.is_topic_message else None
        request = await self._request(chat, update.effective_user, message, command, args, thread)
        await self._answer(request.target, await self._handle(request))

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        data = query.data or ""
        line = self._callbacks.command(data)
        message = query.message
        if line is None or message is None:
            await query.answer("This button has expired. Please send the command again.")
            return
        await query.answer()
        command, args = split_command_line(line)
        chat = message.chat
        topic = isinstance(message, Message) and message.is_topic_message
        thread = message.message_thread_id if topic and isinstance(message, Message) else None
        request = await self._request(chat, query.from_user, None, command, args, thread)
        await self._answer(request.target, await self._handle(request))

    async def _on_inline(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        """Up to 50 posts matching "@bot words", from as many pages of /search as it takes."""
        query = update.inline_query
        if query is None:
            return
        text, user = query.query.strip(), query.from_user
        chat = Chat(user.id, Chat.PRIVATE, username=user.username, first_name=user.first_name)
        command, args = split_command_line(f"search {text}") if text else ("latest", ("20",))
        cards: list[Card] = []
        problem: str | None = None
        for _page in range(INLINE_PAGES):
            reply = await self._handle(await self._request(chat, user, None, command, args, None))
            if reply.error and not reply.cards:
                problem = reply.text
            cards.extend(reply.cards)
            following = _next_page(reply.buttons, command)
            if len(cards) >= INLINE_RESULTS or following is None:
                break
            args = following
        results = [
            inline_article(i, card, self.timezone, self.previews)
            for i, card in enumerate(cards[:INLINE_RESULTS])
        ]
        button = None
        if problem or not results:
            label = (problem or "Nothing found").splitlines()[0]
            button = InlineQueryResultsButton(text=label[:64], start_parameter="help")
        await query.answer(results, cache_time=10, is_personal=True, button=button)

    async def _request(
        self,
        chat: Chat,
        user: User | None,
        message: Message | None,
        command: str,
        args: tuple[str, ...],
        thread: int | None,
    ) -> Request:
        kind = _chat_kind(chat)
        if kind is ChatKind.PRIVATE:
            is_admin = True
        elif message is not None and message.sender_chat and message.sender_chat.id == chat.id:
            if kind is ChatKind.CHANNEL:  # a channel post: fine while the bot may post there
                is_admin = await self._is_admin(chat.id, self._bot().id, posting=True)
            else:  # a group's anonymous admin, posting as the group itself
                is_admin = True
        else:
            is_admin = user is not None and await self._is_admin(chat.id, user.id)
        return Request(
            platform=self.platform,
            command=command,
            args=args,
            user_id=str(user.id) if user else str(chat.id),
            user_name=(user.username or user.full_name) if user else chat.title,
            target=Target(
                platform=self.platform,
                address=str(chat.id),
                thread=str(thread) if thread is not None else None,
                kind=kind.value,
            ),
            chat_kind=kind,
            is_admin=is_admin,
        )

    async def _is_admin(self, chat_id: int, user_id: int, *, posting: bool = False) -> bool:
        """Whether the user administers the chat (and, with `posting`, may post in a channel).
        From getChatAdministrators, cached for `admin_cache_seconds`."""
        now = time.monotonic()
        cached = self._admins.get(chat_id)
        if cached is None or cached[0] <= now:
            try:
                members = await self._bot().get_chat_administrators(chat_id)
            except TelegramError as exc:
                log.warning("Telegram: no administrators for chat %s: %s", chat_id, exc.message)
                return False
            owners = {m.user.id for m in members if m.status == ChatMemberStatus.OWNER}
            admins = {m.user.id for m in members if m.status == ChatMemberStatus.ADMINISTRATOR}
            posters = {
                m.user.id
                for m in members
                if m.status == ChatMemberStatus.ADMINISTRATOR
                and getattr(m, "can_post_messages", None) is not False
            }
            expiry = now + self.settings.admin_cache_seconds
            cached = (expiry, frozenset(owners | admins), frozenset(owners | posters))
            self._admins[chat_id] = cached
        return user_id in (cached[2] if posting else cached[1])

    async def _handle(self, request: Request) -> Reply:
        assert self._context is not None
        return await self._context.handle(request)

    async def _answer(self, target: Target, reply: Reply) -> None:
        """Send a reply, each message within the shared budget and again after a 429; a failure
        is logged (one line), never raised into PTB."""
        texts = render_reply(reply, self.timezone)
        for number, text in enumerate(texts, start=1):
            last = number == len(texts)
            markup = keyboard(reply.buttons, self._callbacks) if last else None
            try:
                await self._pacer.reply(self, target, partial(self._say, target, text, markup))
            except DeliveryError as exc:
                log.warning("Telegram: reply to chat %s failed: %s", target.address, exc)
                return

    async def _say(self, target: Target, text: str, markup: InlineKeyboardMarkup | None) -> None:
        """One message of a reply; a Bot API failure as a DeliveryError (a 429 as RateLimited)."""
        try:
            await self._bot().send_message(
                _chat_id(target.address),
                text,
                parse_mode=ParseMode.HTML,
                link_preview_options=self.previews,
                message_thread_id=int(target.thread) if target.thread else None,
                reply_markup=markup,
            )
        except TelegramError as exc:
            raise delivery_error(exc) from exc

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Telegram: handling an update failed", exc_info=context.error)

    # --- push ---------------------------------------------------------------------------------------------

    def _bot(self) -> ExtBot[None]:
        if self._app is None:
            raise TransientError("the Telegram adapter is not running")
        return self._app.bot

    async def send(self, target: Target, card: Card) -> str:
        try:
            message = await self._bot().send_message(
                _chat_id(target.address),
                render_card(card, self.timezone),
                parse_mode=ParseMode.HTML,
                link_preview_options=self.previews,
                message_thread_id=int(target.thread) if target.thread else None,
            )
        except TelegramError as exc:
            raise delivery_error(exc) from exc
        return f"{message.chat_id}:{message.message_id}"

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        chat, _sep, message_id = reference.rpartition(":")
        if not chat or not message_id.isdigit():
            raise InvalidPayload(f"not a Telegram message reference: {reference!r}")
        try:
            await self._bot().edit_message_text(
                render_card(card, self.timezone),
                chat_id=_chat_id(chat),
                message_id=int(message_id),
                parse_mode=ParseMode.HTML,
                link_preview_options=self.previews,
            )
        except BadRequest as exc:
            if NOT_MODIFIED not in exc.message.lower():
                raise delivery_error(exc) from exc
        except TelegramError as exc:
            raise delivery_error(exc) from exc
        return reference


def _next_page(buttons: Sequence[Button], command: str) -> tuple[str, ...] | None:
    """The arguments of the reply's next page of `command` (its "More ›" button), if any."""
    for button in buttons:
        name, args = split_command_line(button.command)
        if name == command:
            return args
    return None


def _quiet_http_logs() -> None:
    """httpx logs every request URL at INFO, and a Bot API URL holds the token."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
