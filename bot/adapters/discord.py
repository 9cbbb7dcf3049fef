"""Discord: slash commands answered by the shared handlers, and posts pushed as embeds.

discord.py runs inside our composition root: `start()` logs in (a wrong token is one clear line), syncs the
slash commands (to `guild_id` when set, else globally) and keeps the gateway connection as a task; `stop()`
closes it. With `connect_gateway=False` it only logs in: REST only, for push-only deployments and tests
(interactions are then fed to `client._connection.parse_interaction_create`).

Pushes go through the bot's REST client (`get_partial_messageable(id).send`) or, when a subscription's
target carries `webhook_id`/`webhook_token` options, through that channel webhook. Every message goes out
with `AllowedMentions.none()`: an @everyone or a role mention inside a post never pings anyone.
References are "channel_id:message_id" or "webhook:<webhook id>:<message id>".

Slash-command answers do not take from the bot's send budget (`bot.ratelimit.SendBudget`), unlike
Telegram's replies: Discord does not count interaction responses and follow-ups against the bot's global
50/s nor a channel's bucket (they go to /interactions/… and /webhooks/{application}/{token}), and
discord.py's webhook client already waits out a 429's retry_after and sends again (up to 5 tries);
what still fails is one log line in `_run`.

`api_base` and `gateway_url` redirect discord.py (process-global class attributes: set at start, restored
at stop), so the whole bot can run against a local fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import yarl

from bot.adapters.base import (
    Adapter,
    AdapterContext,
    Capabilities,
    InvalidPayload,
    PermanentError,
    Rate,
    RateLimited,
    RateLimits,
    StartupError,
    TransientError,
)
from bot.config import DiscordSettings
from bot.models import Card, ChatKind, Reply, Request, Target
from handlers.base import split_command_line

with warnings.catch_warnings():
    # discord.py imports the stdlib's deprecated audioop (voice); we use no voice
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.gateway import DiscordWebSocket
    from discord.utils import MISSING

    from bot.adapters.discord_render import (
        ButtonIds,
        button_class,
        render_card,
        render_reply,
        render_view,
    )

log = logging.getLogger(__name__)

UTC = ZoneInfo("UTC")
NO_MENTIONS = discord.AllowedMentions.none()
# discord.py may wait on a bucket's reset; past this a send is given back to be retried later
SEND_TIMEOUT = 30.0
# Discord allows 3 s for the first answer: a slower handler shows "thinking…" first
DEFER_AFTER = 2.0
REFERENCE = re.compile(r"(?:webhook:(?P<webhook>[0-9]+)|(?P<channel>[0-9]+)):(?P<message>[0-9]+)")
PUBLIC_COMMANDS = frozenset({"subscribe", "unsubscribe"})  # their answers are for the whole channel
UNKNOWN_MESSAGE = 10008
SourceNames = Callable[[], Awaitable[list[str]]]


async def _no_sources() -> list[str]:
    return []


class DiscordAdapter(Adapter):
    platform = "discord"
    capabilities = Capabilities(
        max_text=2000,
        markup="markdown",
        can_edit=True,
        rate_limits=RateLimits(overall=Rate(50, 1), per_target=Rate(5, 5)),
    )

    def __init__(
        self,
        settings: DiscordSettings,
        *,
        connect_gateway: bool = True,
    ) -> None:
        self.settings = settings
        self.timezone = UTC  # the operator's zone and blog names come with the context at start
        self.source_names: SourceNames = _no_sources
        self.connect_gateway = connect_gateway
        self.polls = True
        """Hold the gateway (slash commands, buttons) from the start. A fleet worker sets it False
        and holds it only while it leads (`start_receiving`, `stop_receiving`): two sessions of one
        bot would each answer every command."""
        self.receive_role = "discord-gateway"
        self._context: AdapterContext | None = None
        self._answering = 0  # interactions being answered now
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: discord.Client | None = None
        self._tree: app_commands.CommandTree[discord.Client] | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._webhook_session: aiohttp.ClientSession | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self._button_ids = ButtonIds()
        self._buttons = button_class(self._clicked)

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("the Discord adapter is not started")
        return self._client

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self, context: AdapterContext) -> None:
        self._context = context
        self.timezone = context.timezone
        self.source_names = context.source_names
        self._redirect()
        intents = discord.Intents.none()
        intents.guilds = True
        client_type = discord.AutoShardedClient if self.settings.sharded else discord.Client
        self._client = client = client_type(intents=intents, allowed_mentions=NO_MENTIONS)
        self._tree = tree = app_commands.CommandTree(client)
        for command in self._commands():
            tree.add_command(command)
        client.add_dynamic_items(self._buttons)
        try:
            await client.login(self.settings.token.get_secret_value())
        except discord.LoginFailure:
            raise StartupError(
                "Discord rejected the token (check LIVEDESK_DISCORD__TOKEN)"
            ) from None
        except (aiohttp.ClientError, OSError, discord.HTTPException) as error:
            raise StartupError(f"cannot log in to Discord's API: {error}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # not Discord's answer (a proxy's page, another service): discord.py cannot read it
            log.debug("discord: unreadable log-in answer", exc_info=True)
            where = self.settings.api_base
            raise StartupError(
                f"Discord's API{f' at {where}' if where else ''} answered the log-in with something "
                f"that is not a Discord answer ({type(error).__name__})"
                + ("; check LIVEDESK_DISCORD__API_BASE" if where else "")
            ) from None
        if self.connect_gateway and self.polls:
            await self.start_receiving()
        log.info("discord: logged in as %s", client.user)

    async def start_receiving(self) -> None:
        """Sync the slash commands and hold the gateway connection (a task)."""
        client = self._client
        if client is None or not self.connect_gateway or self._gateway is not None:
            return
        try:
            await self.sync_commands()
        except (aiohttp.ClientError, OSError, discord.HTTPException) as error:
            # pushes still work; the commands Discord already has stay as they were
            log.error("discord: slash commands could not be synced: %s", error)
        self._gateway = asyncio.create_task(self._connect(client), name="discord gateway")

    async def stop_receiving(self) -> None:
        """Leave the gateway (another worker of the fleet holds it now); sending goes on (REST)."""
        gateway, self._gateway = self._gateway, None
        if gateway is None:
            return
        client = self._client
        if client is not None and client.ws is not None:
            with contextlib.suppress(Exception):
                await client.ws.close(code=1000)
        gateway.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await gateway

    async def _connect(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discord: the gateway connection ended; slash commands are off")

    async def sync_commands(self) -> None:
        """Register the slash commands: on the development guild when set (instant), else globally."""
        tree = self._tree
        if tree is None:
            raise RuntimeError("the Discord adapter is not started")
        if self.settings.guild_id is not None:
            guild = discord.Object(id=self.settings.guild_id)
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
        else:
            synced = await tree.sync()
        log.info("discord: %d slash commands synced", len(synced))

    async def stop(self) -> None:
        try:
            if self._client is not None:
                await self._client.close()
            if self._gateway is not None:
                self._gateway.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._gateway
            if self._webhook_session is not None:
                await self._webhook_session.close()
        finally:
            self._gateway = self._webhook_session = None
            self._restore()

    def _redirect(self) -> None:
        if self._saved is None:
            self._saved = (discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        if self.settings.api_base:
            discord.http.Route.BASE = self.settings.api_base.rstrip("/")
        if self.settings.gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)

    def _restore(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    # --- pushing posts ------------------------------------------------------------------------------

    async def send(self, target: Target, card: Card) -> str:
        embed = render_card(card, zone=self.timezone)
        thread = discord.Object(int(target.thread)) if target.thread else MISSING
        with _delivery_errors():
            async with asyncio.timeout(SEND_TIMEOUT):
                if (webhook := self._webhook(target)) is not None:
                    sent = await webhook.send(
                        embed=embed, wait=True, allowed_mentions=NO_MENTIONS, thread=thread
                    )
                    return f"webhook:{webhook.id}:{sent.id}"
                channel = self.client.get_partial_messageable(int(target.thread or target.address))
                message = await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
                return f"{channel.id}:{message.id}"

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        match = REFERENCE.fullmatch(reference)
        if match is None:
            raise InvalidPayload(f"not a Discord message reference: {reference!r}")
        embed = render_card(card, zone=self.timezone)
        thread = discord.Object(int(target.thread)) if target.thread else MISSING
        message_id = int(match["message"])
        try:
            with _delivery_errors():
                async with asyncio.timeout(SEND_TIMEOUT):
                    if match["webhook"]:
                        webhook = self._webhook(target)
                        if webhook is None or str(webhook.id) != match["webhook"]:
                            raise InvalidPayload("that message was sent by another webhook")
                        await webhook.edit_message(
                            message_id, embed=embed, allowed_mentions=NO_MENTIONS, thread=thread
                        )
                    else:
                        channel = self.client.get_partial_messageable(int(match["channel"]))
                        await channel.get_partial_message(message_id).edit(
                            embed=embed, allowed_mentions=NO_MENTIONS
                        )
        except _MessageGone:
            log.info("discord: message %s was deleted; sending the edit as a new one", reference)
            return await self.send(target, card)
        return reference

    def _webhook(self, target: Target) -> discord.Webhook | None:
        webhook_id, token = target.options.get("webhook_id"), target.options.get("webhook_token")
        if not webhook_id or not token:
            return None
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession()
        return discord.Webhook.partial(int(webhook_id), token, session=self._webhook_session)

    # --- slash commands -----------------------------------------------------------------------------

    def _commands(self) -> list[app_commands.Command[Any, ..., None]]:
        answer = self._answer

        @app_commands.command(name="latest", description="Show the newest posts")
        @app_commands.describe(count="How many posts (1-20, default 5)", source="Only this blog")
        async def latest(
            interaction: discord.Interaction[discord.Client],
            count: app_commands.Range[int, 1, 20] | None = None,
            source: str | None = None,
        ) -> None:
            await answer(interaction, "latest", count, source)

        @app_commands.command(name="search", description="Search all posts")
        @app_commands.describe(query='Words, "a phrase", -excluded', page="Result page")
        async def search(
            interaction: discord.Interaction[discord.Client],
            query: str,
            page: app_commands.Range[int, 1, 1000] | None = None,
        ) -> None:
            await answer(interaction, "search", query, page)

        @app_commands.command(name="post", description="Show one whole post and its edit history")
        @app_commands.describe(id="The post id shown under each post")
        async def post(interaction: discord.Interaction[discord.Client], id: str) -> None:
            await answer(interaction, "post", _quoted(id))

        @app_commands.command(name="subscribe", description="Send new posts to this channel")
        @app_commands.describe(source="Only this blog", keywords="Only posts matching these words")
        @app_commands.default_permissions(manage_channels=True)
        async def subscribe(
            interaction: discord.Interaction[discord.Client],
            source: str | None = None,
            keywords: str | None = None,
        ) -> None:
            await answer(interaction, "subscribe", _quoted(source), keywords)

        @app_commands.command(name="unsubscribe", description="Stop sending posts to this channel")
        @app_commands.describe(which="A subscription id, a blog or keywords; leave out for all")
        @app_commands.default_permissions(manage_channels=True)
        async def unsubscribe(
            interaction: discord.Interaction[discord.Client], which: str | None = None
        ) -> None:
            await answer(interaction, "unsubscribe", which)

        @app_commands.command(name="subscriptions", description="List this channel's subscriptions")
        async def subscriptions(interaction: discord.Interaction[discord.Client]) -> None:
            await answer(interaction, "subscriptions")

        @app_commands.command(name="sources", description="List the blogs, with post counts")
        async def sources(interaction: discord.Interaction[discord.Client]) -> None:
            await answer(interaction, "sources")

        @app_commands.command(name="help", description="What this bot does and how to use it")
        async def help(interaction: discord.Interaction[discord.Client]) -> None:
            await answer(interaction, "help")

        latest.autocomplete("source")(self._complete_source)
        subscribe.autocomplete("source")(self._complete_source)
        return [latest, search, post, subscribe, unsubscribe, subscriptions, sources, help]

    async def _complete_source(
        self, interaction: discord.Interaction[discord.Client], current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            names = await self.source_names()
        except Exception:
            log.exception("discord: listing the blogs for autocomplete failed")
            return []
        typed = current.casefold().strip()
        found = [n for n in names if typed in n.casefold()][:25]
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in found]

    async def _answer(
        self, interaction: discord.Interaction[discord.Client], command: str, *values: object
    ) -> None:
        line = " ".join([command, *(str(v) for v in values if v is not None and str(v).strip())])
        name, args = split_command_line(line)
        await self._run(interaction, name, args)

    async def answered(self) -> None:
        """Until every interaction in hand is answered (each message of its reply sent)."""
        await self._idle.wait()

    async def _run(
        self, interaction: discord.Interaction[discord.Client], command: str, args: tuple[str, ...]
    ) -> None:
        """Answer one interaction through the shared handlers; never raises."""
        if self._context is None:
            return
        self._answering += 1
        self._idle.clear()
        try:
            await self._answer_with(self._context, interaction, command, args)
        finally:
            self._answering -= 1
            if not self._answering:
                self._idle.set()

    async def _answer_with(
        self,
        context: AdapterContext,
        interaction: discord.Interaction[discord.Client],
        command: str,
        args: tuple[str, ...],
    ) -> None:
        request = self._request(interaction, command, args)
        handling = asyncio.ensure_future(context.handle(request))
        # if answering fails early, the handler still finishes (a subscription is still made)
        handling.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            done, _ = await asyncio.wait({handling}, timeout=DEFER_AFTER)
            if not done:
                await interaction.response.defer(
                    ephemeral=command not in PUBLIC_COMMANDS, thinking=True
                )
            try:
                reply = await handling
            except Exception:
                log.exception("discord: /%s failed", command)
                reply = Reply(text="Sorry, something went wrong. Please try again.", error=True)
            await self._reply(interaction, reply)
        except discord.HTTPException as error:
            log.warning("discord: could not answer /%s: %s", command, error)
        except Exception:
            log.exception("discord: answering /%s failed", command)

    def _request(
        self, interaction: discord.Interaction[discord.Client], command: str, args: tuple[str, ...]
    ) -> Request:
        in_guild = interaction.guild_id is not None
        permissions = interaction.permissions
        is_admin = in_guild and (
            permissions.administrator or permissions.manage_channels or permissions.manage_guild
        )
        user = interaction.user
        return Request(
            platform=self.platform,
            command=command,
            args=args,
            user_id=str(user.id),
            user_name=user.display_name,
            target=Target(
                platform=self.platform,
                address=str(interaction.channel_id or user.id),
                kind="channel" if in_guild else "private",
            ),
            chat_kind=ChatKind.GROUP if in_guild else ChatKind.PRIVATE,
            is_admin=is_admin,
        )

    async def _reply(self, interaction: discord.Interaction[discord.Client], reply: Reply) -> None:
        for message in render_reply(reply, zone=self.timezone):
            # the first answer is the interaction's response, the rest are follow-ups
            answer: Any = interaction.response.send_message
            if interaction.response.is_done():
                answer = interaction.followup.send
            await answer(
                content=message.content or MISSING,
                embeds=list(message.embeds) or MISSING,
                view=render_view(message.buttons, self._buttons, self._button_ids) or MISSING,
                ephemeral=reply.ephemeral,
                allowed_mentions=NO_MENTIONS,
            )

    async def _clicked(
        self, interaction: discord.Interaction[discord.Client], custom_id: str
    ) -> None:
        command = self._button_ids.command(custom_id)
        if command is None:
            await interaction.response.send_message(
                "This button has expired. Please send the command again.", ephemeral=True
            )
            return
        name, args = split_command_line(command)
        await self._run(interaction, name, args)


def _quoted(value: str | None) -> str | None:
    """One argument, even with spaces (a blog called "Kyiv live")."""
    if value is None or not value.strip():
        return None
    value = value.strip().strip('"“”„')
    return f'"{value}"' if " " in value else value


class _MessageGone(Exception):
    """An edit found its message deleted."""


@contextlib.contextmanager
def _delivery_errors() -> Iterator[None]:
    """discord.py's errors as the dispatcher's: what to retry, what to wait for, what to give up on."""
    try:
        yield
    except discord.RateLimited as error:
        raise RateLimited(error.retry_after) from None
    except discord.NotFound as error:
        if error.code == UNKNOWN_MESSAGE:
            raise _MessageGone() from None
        raise PermanentError(_reason(error)) from None
    except discord.Forbidden as error:
        raise PermanentError(_reason(error)) from None
    except discord.DiscordServerError as error:
        raise TransientError(_reason(error)) from None
    except discord.HTTPException as error:
        if error.status == 429:
            headers = error.response.headers
            retry_after = float(headers.get("Retry-After") or 1.0)
            global_ = headers.get("X-RateLimit-Global") == "true"
            raise RateLimited(retry_after, global_=global_, message=_reason(error)) from None
        if error.status >= 500 or error.status in (401, 408):
            raise TransientError(_reason(error)) from None
        raise InvalidPayload(_reason(error)) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise TransientError(f"Discord unreachable: {error or type(error).__name__}") from None


def _reason(error: discord.HTTPException) -> str:
    """E.g. 'Discord: 404 Unknown Channel (code 10003)'."""
    text = " ".join((error.text or error.response.reason or "").split())[:300]
    code = f" (code {error.code})" if error.code else ""
    return f"Discord: {error.status} {text}{code}"
