"""A fake Telegram Bot API server on 127.0.0.1 that speaks the real wire format, so real python-telegram-bot
code runs end to end against it.

It serves `POST /bot{token}/{method}` (form-encoded or JSON parameters) and answers `{"ok": true, "result":
...}` or Telegram's error shapes. It
- keeps every message the bot sends or edits (`fake.sent`, `fake.messages`), answers to callback and inline
  queries, and the registered command menu;
- enforces Telegram's limits: 30 messages/s overall, 1/s per chat, 20/min per group or channel (sliding
  windows; `scale` speeds them all up so tests stay fast) with 429 + `parameters.retry_after`; text of
  1–4096 visible characters after entity parsing; HTML with only Telegram's tags, balanced, with `<`, `>`
  and `&` escaped (else 400 "can't parse entities"); at most 50 inline results;
- can be told that a chat blocked the bot (403), vanished (400 chat not found) or migrated to a supergroup
  (400 + `parameters.migrate_to_chat_id`);
- feeds updates through `getUpdates` long polling as real update JSON (commands carry their
  `bot_command` entity, so real `CommandHandler`s fire).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Self

from aiohttp import web

JSON_PARAMETERS = frozenset(
    [
        "reply_markup",
        "commands",
        "results",
        "link_preview_options",
        "allowed_updates",
        "entities",
        "scope",
    ]
)
MAX_TEXT = 4096
MAX_INLINE_RESULTS = 50
ALLOWED_TAGS = frozenset(
    [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-spoiler",
        "tg-emoji",
        "span",
    ]
)
_BARE_AMP = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")
ADMIN_RIGHTS = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
}


class ApiError(Exception):
    def __init__(self, status: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class EntityError(ValueError):
    pass


class _TelegramHtml(HTMLParser):
    """Telegram's HTML rules: known tags only, properly nested; the visible text is collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            raise EntityError(f'Unsupported start tag "{tag}" at byte offset {self.getpos()[1]}')
        if tag == "a" and not dict(attrs).get("href"):
            raise EntityError("Can't find end of the entity: a without href")
        if tag == "span" and dict(attrs).get("class") != "tg-spoiler":
            raise EntityError('Unsupported start tag "span" without class tg-spoiler')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise EntityError(f'Unexpected end tag "{tag}"')
        self.stack.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise EntityError(f'Unsupported self-closing tag "{tag}"')

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible_text(text: str, parse_mode: str | None) -> str:
    """What a Telegram user sees; raises EntityError where Telegram answers "can't parse entities"."""
    if (parse_mode or "").upper() != "HTML":
        return text
    if match := _BARE_AMP.search(text):
        raise EntityError(f"Unsupported start of an entity at byte offset {match.start()}")
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.rawdata:  # an unfinished tag such as "<b" at the end
        raise EntityError("Unclosed start tag at the end of the text")
    if parser.stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"')
    return "".join(parser.parts)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Chat:
    id: int
    type: str  # private | group | supergroup | channel
    title: str | None = None
    admins: set[int] = field(default_factory=set)
    creator: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = f"User{self.id}"
        else:
            data["title"] = self.title or f"Chat {self.id}"
        return data


@dataclass
class Sent:
    """A message the bot sent, as it stands now (edits update `html`/`text` and append to `edits`)."""

    chat_id: int
    message_id: int
    html: str
    text: str
    parse_mode: str | None
    thread_id: int | None
    reply_markup: dict[str, Any] | None
    link_preview_disabled: bool | None
    at: float
    edits: list[str] = field(default_factory=list)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]


@dataclass(frozen=True)
class Limits:
    """Telegram's limits, `scale` times faster (counts multiplied), with windows a bit forgiving
    (`tolerance`) for the time a request spends on the wire. Every rule of a chat applies at once
    (a group is under the overall, its per-chat and its per-group limit), and a command reply counts
    exactly like a pushed post. `group_window` shortens the per-group minute for tests."""

    overall: int = 30
    per_chat: int = 1
    per_group_minute: int = 20
    scale: float = 1.0
    tolerance: float = 0.02
    group_window: float = 60.0

    def rules(self, chat: Chat) -> list[tuple[str, int, float]]:
        rules = [("overall", max(1, round(self.overall * self.scale)), 1.0)]
        rules.append((f"chat:{chat.id}", max(1, round(self.per_chat * self.scale)), 1.0))
        if chat.type != "private":
            count = max(1, round(self.per_group_minute * self.scale))
            rules.append((f"group:{chat.id}", count, self.group_window))
        return rules


class FakeTelegram:
    """`async with FakeTelegram(token) as fake:` then point PTB at `fake.base_url`."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        username: str = "LivedeskTestBot",
        limits: Limits | None = None,
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.username = username
        self.limits = limits or Limits()
        self.chats: dict[int, Chat] = {}
        self.blocked: set[int] = set()
        self.missing: set[int] = set()
        self.migrated: dict[int, int] = {}
        self.forced_429: deque[float] = deque()  # retry_after values for the next sends
        self.sent: list[Sent] = []
        self.messages: dict[tuple[int, int], Sent] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.commands: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None  # setWebhook's parameters while one is set
        self.callback_answers: list[dict[str, Any]] = []
        self.inline_answers: list[dict[str, Any]] = []
        self.rate_limited = 0
        self.errors: list[tuple[int, str]] = []
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._polls_end = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._serve)
        app.router.add_get("/bot{token}/{method}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # --- the scene ----------------------------------------------------------------------------------

    def chat(self, chat_id: int, type_: str = "private", *, admins: set[int] | None = None) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = Chat(chat_id, type_)
        chat.type = type_
        if admins is not None:
            chat.admins = set(admins)
        return chat

    def _chat_for(self, chat_id: int) -> Chat:
        if chat_id not in self.chats:
            self.chat(chat_id, "private" if chat_id > 0 else "supergroup")
        return self.chats[chat_id]

    def messages_in(self, chat_id: int) -> list[Sent]:
        return [m for m in self.sent if m.chat_id == chat_id]

    def _push(self, kind: str, payload: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, kind: payload})
        self._notify()
        return update_id

    def _notify(self) -> None:
        """Wake everyone waiting for a change (long polls, tests)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _user(self, user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}

    def command(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        thread_id: int | None = None,
        anonymous: bool = False,
    ) -> int:
        """A user sends `text` (a "/command args" line) in a chat; a channel post when the chat is a
        channel (then there is no user: the channel itself is the sender). `anonymous`: a group
        admin posting as the group (Telegram then names GroupAnonymousBot as the sender)."""
        chat = self._chat_for(chat_id)
        word = text.split(maxsplit=1)[0] if text.strip() else ""
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat.to_json(),
            "text": text,
        }
        if word.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_length(word)}
            ]
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if chat.type == "channel":
            message["sender_chat"] = chat.to_json()
            return self._push("channel_post", message)
        message["from"] = self._user(user_id if user_id is not None else chat_id)
        if anonymous:
            message["sender_chat"] = chat.to_json()
            message["from"] = {"id": 1087968824, "is_bot": True, "first_name": "Group"}
        return self._push("message", message)

    def press(self, sent: Sent, callback_data: str, *, user_id: int | None = None) -> str:
        """A user presses an inline keyboard button under a message the bot sent."""
        query_id = str(next(self._query_ids))
        chat = self._chat_for(sent.chat_id)
        message = {
            "message_id": sent.message_id,
            "date": int(sent.at),
            "chat": chat.to_json(),
            "text": sent.text,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Livedesk"},
        }
        self._push(
            "callback_query",
            {
                "id": query_id,
                "from": self._user(user_id if user_id is not None else sent.chat_id),
                "chat_instance": str(sent.chat_id),
                "message": message,
                "data": callback_data,
            },
        )
        return query_id

    def inline(self, query: str, *, user_id: int = 4242) -> str:
        """A user types "@bot query" in any chat."""
        query_id = str(next(self._query_ids))
        self._push(
            "inline_query",
            {"id": query_id, "from": self._user(user_id), "query": query, "offset": ""},
        )
        return query_id

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds (re-checked whenever the bot calls the fake)."""
        async with asyncio.timeout(timeout):
            await self._until(predicate)

    # --- serving ------------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        handler = getattr(self, f"_m_{method.lower()}", None)
        try:
            if handler is None:
                raise ApiError(400, f"Bad Request: method {method} is not implemented by the fake")
            if method.lower() == "getupdates":
                result = await self._m_getupdates(params)
            else:
                result = handler(params)
        except ApiError as exc:
            if exc.status == 429:
                self.rate_limited += 1
            self.errors.append((exc.status, exc.description))
            self._notify()
            return _error(exc.status, exc.description, exc.parameters)
        self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _m_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._until(lambda: bool(self._updates) or self._polls_end)
        return list(self._updates[:100])

    def _m_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Livedesk",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
        }

    def _m_deletewebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    def _m_setwebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = params
        return True

    def end_long_polls(self) -> None:
        """From now on answer getUpdates at once: a bot process told to stop need not wait out
        its long poll."""
        self._polls_end = True
        self._notify()

    def take_updates(self) -> list[dict[str, Any]]:
        """The pending updates, as Telegram would POST them to a webhook (and no longer queued)."""
        taken, self._updates = self._updates, []
        return taken

    def _m_setmycommands(self, params: dict[str, Any]) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    def _m_getmycommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands

    def _m_answercallbackquery(self, params: dict[str, Any]) -> bool:
        self.callback_answers.append(params)
        return True

    def _m_answerinlinequery(self, params: dict[str, Any]) -> bool:
        results = params.get("results") or []
        if len(results) > MAX_INLINE_RESULTS:
            raise ApiError(400, "Bad Request: RESULTS_TOO_MUCH")
        for result in results:
            content = result.get("input_message_content") or {}
            self._check_text(content.get("message_text", ""), content.get("parse_mode"))
        self.inline_answers.append(params)
        return True

    def _member(self, chat: Chat, user_id: int) -> dict[str, Any]:
        user = self._user(user_id)
        if user_id == chat.creator:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id in chat.admins:
            return {"status": "administrator", "user": user, **ADMIN_RIGHTS}
        return {"status": "member", "user": user}

    def _m_getchatmember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._known_chat(params)
        return self._member(chat, int(params["user_id"]))

    def _m_getchatadministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        chat = self._known_chat(params)
        ids = sorted(chat.admins | ({chat.creator} if chat.creator else set()))
        return [self._member(chat, user_id) for user_id in ids]

    def _known_chat(self, params: dict[str, Any]) -> Chat:
        chat_id = int(params["chat_id"])
        if chat_id in self.missing:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.migrated:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat_id],
            )
        return self._chat_for(chat_id)

    def _check_text(self, text: str, parse_mode: str | None) -> str:
        try:
            visible = visible_text(text, parse_mode)
        except EntityError as exc:
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        if not visible.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_length(visible) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return visible

    def _pace(self, chat: Chat) -> None:
        """Telegram's flood control: 429 with retry_after when any window is full."""
        if self.forced_429:
            raise ApiError(
                429,
                "Too Many Requests: retry after",
                retry_after=self.forced_429.popleft(),
            )
        now = time.monotonic()
        wait = 0.0
        rules = self.limits.rules(chat)
        for key, count, per in rules:
            window = self._windows[key]
            span = per * (1 - self.limits.tolerance)
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) >= count:
                wait = max(wait, window[0] + span - now)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        for key, _, _ in rules:
            self._windows[key].append(now)

    def _m_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._known_chat(params)
        parse_mode = params.get("parse_mode")
        visible = self._check_text(str(params.get("text", "")), parse_mode)
        self._pace(chat)
        thread = params.get("message_thread_id")
        preview = params.get("link_preview_options") or {}
        if params.get("disable_web_page_preview") is not None:
            preview = {"is_disabled": _truthy(params["disable_web_page_preview"])}
        sent = Sent(
            chat_id=chat.id,
            message_id=next(self._message_ids),
            html=str(params["text"]),
            text=visible,
            parse_mode=parse_mode,
            thread_id=int(thread) if thread is not None else None,
            reply_markup=params.get("reply_markup"),
            link_preview_disabled=_truthy(preview["is_disabled"])
            if "is_disabled" in preview
            else None,
            at=time.monotonic(),
        )
        self.sent.append(sent)
        self.messages[(chat.id, sent.message_id)] = sent
        return self._message_json(chat, sent)

    def _m_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._known_chat(params)
        sent = self.messages.get((chat.id, int(params.get("message_id") or 0)))
        if sent is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        visible = self._check_text(str(params.get("text", "")), params.get("parse_mode"))
        markup = params.get("reply_markup")
        if str(params["text"]) == sent.html and markup == sent.reply_markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        self._pace(chat)
        sent.edits.append(sent.html)
        sent.html, sent.text, sent.reply_markup = str(params["text"]), visible, markup
        return self._message_json(chat, sent)

    def _message_json(self, chat: Chat, sent: Sent) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": chat.to_json(),
            "text": sent.text,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Livedesk"},
        }
        if sent.thread_id is not None:
            data["message_thread_id"] = sent.thread_id
        if sent.reply_markup:
            data["reply_markup"] = sent.reply_markup
        return data


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


async def _params(request: web.Request) -> dict[str, Any]:
    """Form-encoded parameters (lists/objects arrive as JSON strings) or a JSON body."""
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = value if isinstance(value, str) else ""
        params[key] = json.loads(text) if key in JSON_PARAMETERS and text else text
    return params


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
