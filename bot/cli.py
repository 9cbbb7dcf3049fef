"""`livedesk …`: the operator's commands. Every expected error is one clear line and a non-zero exit.

Exit codes: 0 done; 1 an operation failed (a file could not be imported, an adapter could not start);
2 bad input (a setting, a query, a target, an id that does not exist).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import shlex
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.models import (
    EditPolicy,
    EventKind,
    Highlighted,
    Post,
    PostVersion,
    Subscription,
    SubscriptionState,
)
from bot.targets import FLAVORS, PLATFORMS, mask_address, operator_target, public_options
from storage.db import Database, DatabaseUnusable, check_location, classify
from storage.posts import FetchState, PostStore

if TYPE_CHECKING:
    from storage.subscriptions import DeadDelivery

log = logging.getLogger("livedesk")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

HIGHLIGHT = "bold yellow"


class UserError(Exception):
    """Bad input from the operator: printed as one line, exit code 2."""


@dataclass
class Ctx:
    settings: Settings
    db_path: Path
    json: bool
    out: Console
    err: Console

    @property
    def zone(self) -> ZoneInfo:
        return self.settings.zone

    def when(self, value: datetime | None, *, seconds: bool = False) -> str:
        """A time in the configured zone, as the operator reads it."""
        if value is None:
            return "–"
        return value.astimezone(self.zone).strftime(
            "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
        )

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    def error(self, message: str) -> None:
        self.err.print(Text(one_line(message), style="red"), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.err.print(Text(one_line(message), style="yellow"), soft_wrap=True)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


# --- the parser --------------------------------------------------------------------------------------

BIGGEST = 2**63 - 1  # SQLite's largest integer: every id and count fits below it


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def whole_number(text: str) -> int:
    """A count or page number as typed: plain digits (an optional minus), no wider than SQLite's."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if len(digits) > 19 or int(digits) > BIGGEST:
        raise argparse.ArgumentTypeError(f"{text} is too large")
    return int(text)


def record_id(text: str) -> int:
    """An id shown by `livedesk subscriptions` or `livedesk deliveries --dead` (`12` or `#12`)."""
    number = text.removeprefix("#")
    if not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a number such as 12)")
    if len(number) > 19 or int(number) > BIGGEST:
        raise argparse.ArgumentTypeError(f"there is no id {text} (ids are much smaller)")
    return int(number)


def build_parser() -> argparse.ArgumentParser:
    # Global options work before or after the command (`livedesk --json latest`, `livedesk latest
    # --json`). Subcommands get their own copies with SUPPRESS defaults, so an option given before
    # the command is not overwritten by the subcommand's default.
    def global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
        def default(value: object) -> object:
            return argparse.SUPPRESS if suppress else value

        parser.add_argument("--db", type=Path, default=default(None), help="SQLite database path")
        parser.add_argument(
            "--json", action="store_true", default=default(False), help="machine-readable output"
        )
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=default(False), help="log more"
        )

    common = Parser(add_help=False)
    global_options(common, suppress=True)
    parser = Parser(prog="livedesk", description="Live news blogs to chat notifications.")
    global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = command("import", "import live blogs from files or URLs")
    p.add_argument("locations", nargs="+", metavar="PATH_OR_URL")

    p = command("latest", "the newest posts")
    p.add_argument("-n", type=whole_number, default=5, help="how many (default 5)")
    p.add_argument("--source", help="only this blog (id or title)")

    p = command("search", "full-text search over every post")
    p.add_argument("query", nargs="+", metavar="QUERY")
    p.add_argument("--page", type=whole_number, default=1)
    p.add_argument("--per-page", type=whole_number, default=5)
    p.add_argument("--source", help="only this blog (id or title)")

    p = command("post", "one post with its edit history")
    p.add_argument("post_id", metavar="ID")

    command("sources", "the blogs imported so far")

    p = command("run", "run the bot: adapters, sources on a schedule, deliveries")
    p.add_argument(
        "--once",
        action="store_true",
        help="poll each source once (replay the demo instantly), deliver everything, then exit",
    )

    p = command("subscribe", "subscribe a chat, channel or webhook to posts")
    p.add_argument("platform", choices=PLATFORMS, metavar="PLATFORM")
    p.add_argument("target", nargs="?", metavar="TARGET", help="chat id, @channel, webhook URL")
    p.add_argument("--keywords", help='a query, e.g. "sanctions OR NATO"')
    p.add_argument("--source", help="only this blog (id or title)")
    p.add_argument("--thread", help="topic / thread id")
    p.add_argument("--flavor", choices=FLAVORS, help="webhook dialect (slack platform)")
    p.add_argument(
        "--webhook",
        metavar="URL",
        help="discord: post through this channel webhook instead of the bot (a secret)",
    )
    p.add_argument(
        "--edit-policy",
        choices=[e.value for e in EditPolicy],
        default=EditPolicy.EDIT.value,
        help="what an edited post does: edit the message, send a follow-up, or nothing",
    )
    p.add_argument(
        "--from-file",
        type=Path,
        metavar="FILE",
        help="one target per line, optional keywords after whitespace, # comments",
    )
    p.add_argument(
        "--backfill", type=whole_number, help="latest posts to send at once (default: setting)"
    )

    p = command("subscriptions", "list subscriptions")
    p.add_argument("--platform", choices=PLATFORMS)

    for name, help_text in (
        ("unsubscribe", "remove a subscription"),
        ("pause", "pause a subscription"),
        ("resume", "resume a paused or disabled subscription"),
    ):
        p = command(name, help_text)
        p.add_argument("subscription_id", type=record_id, metavar="ID")

    p = command("deliveries", "delivery counts by state; --dead lists failed ones")
    p.add_argument("--dead", action="store_true", help="list dead deliveries with the reason")
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    retry = actions.add_parser(
        "retry", help="queue dead deliveries again", parents=[common], description="retry"
    )
    retry.add_argument("ids", nargs="*", type=record_id, metavar="ID")
    return parser


# --- entry point -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The `livedesk` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        settings = load_settings()
    except ConfigError as error:
        err.print(Text(one_line(str(error)), style="red"), soft_wrap=True)
        return EXIT_BAD_INPUT
    for warning in settings.warnings:
        err.print(Text(one_line(warning), style="yellow"), soft_wrap=True)
    configure_logging(
        "DEBUG" if args.verbose else _log_level(settings, args.command), _secrets(settings)
    )
    ctx = Ctx(
        settings=settings,
        db_path=args.db or settings.db_path,
        json=args.json,
        out=out,
        err=err,
    )
    if args.command == "run":
        from bot.app import run_app

        try:  # before the run lock, which lives in the same folder
            check_location(ctx.db_path, create=True)
        except DatabaseUnusable as error:
            ctx.error(str(error))
            return EXIT_FAILED
        return run_app(settings.model_copy(update={"db_path": ctx.db_path}), once=args.once)
    handler = COMMANDS[args.command]
    try:
        return asyncio.run(handler(ctx, args))
    except KeyboardInterrupt:
        ctx.error("interrupted")
        return 130
    except DatabaseUnusable as error:
        ctx.error(str(error))
        return EXIT_FAILED
    except Exception as error:
        found = classify(ctx.db_path, error) if isinstance(error, sqlite3.Error) else None
        if found is not None:  # e.g. damage met while reading, past the checks of opening
            ctx.error(str(found))
            return EXIT_FAILED
        if _is_expected(error):
            ctx.error(str(error))
            return EXIT_BAD_INPUT
        if args.verbose:
            raise
        ctx.error(f"unexpected error: {type(error).__name__}: {error} (run with -v for details)")
        return EXIT_FAILED


def _is_expected(error: Exception) -> bool:
    # ValueError covers QueryError, SubscriptionError and target validation.
    if isinstance(error, UserError | ValueError | ConfigError):
        return True
    from bot.sources import SourceError

    return isinstance(error, SourceError)


def _log_level(settings: Settings, command: str) -> str:
    """Commands log warnings only; `run` logs at LIVEDESK_LOG_LEVEL, except that the demo keeps the
    terminal for the posts unless a level was asked for."""
    if command != "run":
        return "WARNING"
    if settings.demo_mode and "log_level" not in settings.model_fields_set:
        return "WARNING"
    return settings.log_level


def _secrets(settings: Settings) -> list[str]:
    """Every configured secret, so that no log line can carry one."""
    found: list[str] = []
    if settings.telegram:
        found.append(settings.telegram.token.get_secret_value())
        if settings.telegram.webhook_secret:
            found.append(settings.telegram.webhook_secret.get_secret_value())
    if settings.discord:
        found.append(settings.discord.token.get_secret_value())
    if settings.slack:
        if settings.slack.signing_secret:
            found.append(settings.slack.signing_secret.get_secret_value())
        found.extend(hook.url.get_secret_value() for hook in settings.slack.webhooks)
    return found


@asynccontextmanager
async def open_db(ctx: Ctx, *, create: bool = False) -> AsyncIterator[Database]:
    """The store; only commands that add to it (`import`, `subscribe`) may create its folder."""
    db = await Database.open(ctx.db_path, create=create)
    try:
        yield db
    finally:
        await db.close()


async def resolve_source(posts: PostStore, text: str | None) -> str | None:
    if text is None:
        return None
    source = await posts.find_source(text)
    if source is None:
        raise UserError(f"no blog matches {text!r}; `livedesk sources` lists them")
    return source.id


# --- import --------------------------------------------------------------------------------------------


BIG_DOCUMENT = 5_000  # posts: a feed this big gets its own progress bar while it is stored


async def cmd_import(ctx: Ctx, args: argparse.Namespace) -> int:
    from bot.sources import SourceError, load

    locations: list[str] = args.locations
    reports: list[dict[str, Any]] = []
    async with open_db(ctx, create=True) as db:
        posts = PostStore(db)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=ctx.out,
            transient=True,
            disable=ctx.json or not ctx.out.is_terminal,
        )
        with progress:
            task = progress.add_task("importing", total=len(locations))
            for location in locations:
                progress.update(task, description=f"importing {Path(location).name or location}")
                report: dict[str, Any] = {"location": location}
                try:
                    fetched = await load(location)
                    if fetched is None:  # cannot happen without an etag; be safe
                        report.update(created=0, updated=0, warnings=[], source=None)
                    else:
                        storing = None
                        if len(fetched.result.posts) >= BIG_DOCUMENT:
                            storing = progress.add_task(
                                f"storing {len(fetched.result.posts):,} posts",
                                total=len(fetched.result.posts),
                            )

                        def stored(done: int, total: int, bar: Any = storing) -> None:
                            if bar is not None:
                                progress.update(bar, completed=done, total=total)

                        events = await posts.import_result(
                            fetched.result,
                            location=location,
                            fetch_state=FetchState(fetched.etag, fetched.last_modified),
                            on_progress=stored,
                        )
                        if storing is not None:
                            progress.remove_task(storing)
                        report.update(
                            source=fetched.result.source.id,
                            posts=len(fetched.result.posts),
                            created=sum(e.kind is EventKind.CREATED for e in events),
                            updated=sum(e.kind is EventKind.UPDATED for e in events),
                            warnings=list(fetched.result.warnings),
                        )
                except SourceError as error:
                    report["error"] = one_line(str(error))
                reports.append(report)
                if not ctx.json:
                    _print_import_report(ctx, progress.console, report)
                progress.advance(task)
    if ctx.json:
        ctx.emit_json(reports)
    return EXIT_FAILED if any("error" in r for r in reports) else EXIT_OK


def _print_import_report(ctx: Ctx, console: Console, report: dict[str, Any]) -> None:
    if "error" in report:
        ctx.error(report["error"])
        return
    console.print(
        Text.assemble(
            (report["location"], "bold"),
            f": {report['created']} new, {report['updated']} updated",
        ),
        soft_wrap=True,
    )
    for warning in report["warnings"]:
        ctx.warn(f"  warning: {warning}")


# --- reading -------------------------------------------------------------------------------------------


def post_ref(post: Post) -> str:
    """What to type after `livedesk post` (or `/post` in a chat): the post's short number."""
    return str(post.number) if post.number is not None else post.id


def post_json(post: Post) -> dict[str, Any]:
    return post.model_dump(mode="json")


async def cmd_latest(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError("-n must be at least 1")
    async with open_db(ctx) as db:
        posts = PostStore(db)
        source_id = await resolve_source(posts, args.source)
        found = await posts.latest(args.n, source_id=source_id)
        titles = {s.id: s.title for s in await posts.all_sources()}
    if ctx.json:
        ctx.emit_json([post_json(p) for p in found])
        return EXIT_OK
    if not found:
        ctx.out.print("No posts yet. Import a blog with `livedesk import PATH_OR_URL`.")
        return EXIT_OK
    several = len({p.source_id for p in found}) > 1
    table = Table(title="Latest posts", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("published", no_wrap=True)
    table.add_column("post", overflow="fold")
    if several:
        table.add_column("blog", max_width=30)
    for post in found:
        row: list[str | Text] = [post_ref(post), ctx.when(post.published_at), Text(post.title)]
        if several:
            row.append(Text(titles.get(post.source_id, post.source_id)))
        table.add_row(*row)
    ctx.out.print(table)
    return EXIT_OK


def highlighted_text(value: Highlighted, *, flat: bool = False) -> Text:
    """Search highlights in rich; `flat` folds paragraph breaks into one running line."""
    text = Text()
    for run, hit in value.segments:
        text.append(" ".join(run.split("\n")) if flat else run, style=HIGHLIGHT if hit else None)
    return text


async def cmd_search(ctx: Ctx, args: argparse.Namespace) -> int:
    from storage.search import search

    query = " ".join(args.query)
    if args.page < 1 or args.per_page < 1:
        raise UserError("--page and --per-page start at 1")
    async with open_db(ctx) as db:
        posts = PostStore(db)
        source_id = await resolve_source(posts, args.source)
        page = await search(db, query, page=args.page, per_page=args.per_page, source_id=source_id)
    if ctx.json:
        ctx.emit_json(
            {
                "query": page.query,
                "page": page.page,
                "per_page": page.per_page,
                "total": page.total,
                "has_more": page.has_more,
                "notice": page.notice,
                "hits": [
                    {
                        "post": post_json(hit.post),
                        "title": hit.title.plain,
                        "snippet": hit.snippet.plain,
                        "highlights": [t for t, hit_ in hit.snippet.segments if hit_],
                        "rank": hit.rank,
                    }
                    for hit in page.hits
                ],
            }
        )
        return EXIT_OK
    if page.notice:
        ctx.warn(page.notice)
    if page.total == 0:
        ctx.out.print(Text(f"No posts match “{query}”."))
        return EXIT_OK
    pages = max(1, -(-page.total // page.per_page))
    ctx.out.print(
        Text(f"{page.total} result{'s' if page.total != 1 else ''} for “{query}”")
        + Text(f" · page {page.page} of {pages}", style="dim")
    )
    first = (page.page - 1) * page.per_page
    for number, hit in enumerate(page.hits, start=first + 1):
        ctx.out.print()
        ctx.out.print(Text(f"{number}. ", style="bold") + highlighted_text(hit.title))
        ctx.out.print(
            Text(f"   {ctx.when(hit.post.published_at)} · #{post_ref(hit.post)}", style="dim"),
            soft_wrap=True,
        )
        ctx.out.print(Text("   ") + highlighted_text(hit.snippet, flat=True))
    if page.has_more:
        ctx.out.print()
        ctx.out.print(
            Text(f"More: livedesk search {shlex.quote(query)} --page {page.page + 1}", style="dim"),
            soft_wrap=True,
        )
    return EXIT_OK


_COMPARED = ("title", "byline", "location", "body", "images", "background", "permalink")


def changed_fields(old: Post, new: Post) -> list[str]:
    return [name for name in _COMPARED if getattr(old, name) != getattr(new, name)]


def body_diff(old: Post, new: Post) -> list[str]:
    return list(
        difflib.unified_diff(
            list(old.body),
            list(new.body),
            fromfile=f"version {old.version}",
            tofile=f"version {new.version}",
            lineterm="",
        )
    )


async def cmd_post(ctx: Ctx, args: argparse.Namespace) -> int:
    async with open_db(ctx) as db:
        posts = PostStore(db)
        post = await posts.get(args.post_id)
        if post is None:
            raise UserError(f"no post with id {args.post_id!r}; `livedesk latest` shows ids")
        versions = await posts.history(post.id)
        source = await posts.source(post.source_id)
    if ctx.json:
        ctx.emit_json(
            {
                "post": post_json(post),
                "source": source.model_dump(mode="json") if source else None,
                "versions": [_version_json(versions, i) for i in range(len(versions))],
            }
        )
        return EXIT_OK
    _print_post(ctx, post, source.title if source else post.source_id)
    if len(versions) > 1:
        ctx.out.print()
        ctx.out.rule(f"Edit history: {len(versions)} versions", align="left")
        for index in range(len(versions)):
            _print_version(ctx, versions, index)
    return EXIT_OK


def _version_json(versions: list[PostVersion], index: int) -> dict[str, Any]:
    version = versions[index]
    item: dict[str, Any] = {
        "version": version.version,
        "recorded_at": version.recorded_at.isoformat(),
        "post": post_json(version.post),
    }
    if index:
        previous = versions[index - 1].post
        item["changed"] = changed_fields(previous, version.post)
        item["body_diff"] = "\n".join(body_diff(previous, version.post))
    return item


def _print_post(ctx: Ctx, post: Post, source_title: str) -> None:
    out = ctx.out
    out.print(Text(post.title, style="bold"))
    meta = f"{ctx.when(post.published_at)} · {source_title} · #{post_ref(post)} · {post.id}"
    if post.updated_at:
        meta += f" · updated {ctx.when(post.updated_at)}"
    if post.version > 1:
        meta += f" · version {post.version}"
    out.print(Text(meta, style="dim"), soft_wrap=True)
    if post.byline:
        out.print(Text(post.byline, style="italic"))
    if post.location:
        out.print(Text(post.location, style="italic"))
    for paragraph in post.body:
        out.print()
        out.print(Text(paragraph))
    for image in post.images:
        out.print()
        credit = f" ({image.credit})" if image.credit else ""
        out.print(Text(f"[image] {image.caption}{credit}", style="dim"))
    if post.background:
        out.print()
        out.print(Text("Background: ", style="bold") + Text(post.background))
    if post.permalink:
        out.print()
        out.print(Text(post.permalink, style="blue underline"), soft_wrap=True)


def _print_version(ctx: Ctx, versions: list[PostVersion], index: int) -> None:
    version = versions[index]
    head = Text(f"version {version.version}", style="bold") + Text(
        f" · recorded {ctx.when(version.recorded_at, seconds=True)}", style="dim"
    )
    if index == 0:
        ctx.out.print(head + Text(" · first seen"))
        return
    previous = versions[index - 1].post
    changed = changed_fields(previous, version.post)
    ctx.out.print(head + Text(f" · changed: {', '.join(changed) or 'nothing visible'}"))
    if "title" in changed:
        ctx.out.print(Text(f"- {previous.title}", style="red"), soft_wrap=True)
        ctx.out.print(Text(f"+ {version.post.title}", style="green"), soft_wrap=True)
    for line in body_diff(previous, version.post):
        style = None
        if line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        ctx.out.print(Text(line, style=style or ""), soft_wrap=True)


async def cmd_sources(ctx: Ctx, args: argparse.Namespace) -> int:
    async with open_db(ctx) as db:
        store = PostStore(db)
        infos = await store.sources()
        failing = await store.failing_locations()
    if ctx.json:
        ctx.emit_json(
            [
                {
                    **info.source.model_dump(mode="json"),
                    "location": info.location,
                    "posts": info.posts,
                    "newest": info.newest.isoformat() if info.newest else None,
                    "imported_at": info.imported_at.isoformat() if info.imported_at else None,
                    "last_error": info.last_error,
                }
                for info in infos
            ]
            + [
                {
                    "id": None,
                    "title": None,
                    "location": failure.location,
                    "posts": 0,
                    "newest": None,
                    "imported_at": None,
                    "last_error": failure.error,
                    "failed_at": failure.at.isoformat(),
                }
                for failure in failing
            ]
        )
        return EXIT_OK
    if not infos and not failing:
        ctx.out.print("No blogs yet. Import one with `livedesk import PATH_OR_URL`.")
        return EXIT_OK
    errors = bool(failing) or any(info.last_error for info in infos)
    table = Table(title="Blogs", title_justify="left")
    table.add_column("blog (id, format)", overflow="fold", min_width=30, ratio=1)
    table.add_column("posts", justify="right")
    table.add_column("newest post", no_wrap=True)
    table.add_column("imported", no_wrap=True)
    if errors:
        table.add_column("last error", overflow="fold", ratio=1)
    for info in infos:
        row: list[str | Text] = [
            Text(info.source.title)
            + Text(f"\n{info.source.id} · {info.source.kind.value}", style="dim"),
            str(info.posts),
            ctx.when(info.newest),
            ctx.when(info.imported_at),
        ]
        if errors:
            row.append(Text(info.last_error or "", style="red"))
        table.add_row(*row)
    for failure in failing:
        table.add_row(
            Text(failure.location) + Text("\nnot imported yet", style="dim"),
            "0",
            "",
            "",
            Text(f"{failure.error} ({ctx.when(failure.at)})", style="red"),
        )
    ctx.out.print(table)
    return EXIT_OK


# --- subscriptions -----------------------------------------------------------------------------------


def read_target_file(
    path: Path, platform: str, *, flavor: str | None, thread: str | None
) -> list[tuple[Any, str | None]]:
    """(target, keywords) for each line of FILE; UserError naming the line when one is wrong."""
    from storage.search import QueryError, compile_query

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    entries: list[tuple[Any, str | None]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        address, _, rest = line.partition(" ")
        if "\t" in address:
            address, _, tail = address.partition("\t")
            rest = f"{tail} {rest}"
        keywords = rest.strip() or None
        try:
            target = operator_target(platform, address, thread=thread, flavor=flavor)
            if keywords is not None:
                compile_query(keywords)
        except (QueryError, ValueError) as error:
            raise UserError(f"{path} line {number}: {one_line(str(error))}") from None
        entries.append((target, keywords))
    if not entries:
        raise UserError(f"{path}: no targets in it (one per line, # for comments)")
    return entries


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "platform": sub.target.platform,
        "target": mask_address(sub.target),
        "thread": sub.target.thread,
        "kind": sub.target.kind,
        "options": public_options(sub.target),
        "source_id": sub.source_id,
        "keywords": sub.query,
        "edit_policy": sub.edit_policy.value,
        "state": sub.state.value,
        "reason": sub.reason,
        "created_by": sub.created_by,
        "created_at": sub.created_at.isoformat(),
    }


def _describe(sub: Subscription) -> str:
    parts = [f"#{sub.id} {sub.target.platform} {mask_address(sub.target)}"]
    if sub.target.thread:
        parts.append(f"thread {sub.target.thread}")
    parts.append(f"keywords {sub.query!r}" if sub.query else "every post")
    if sub.source_id:
        parts.append(f"blog {sub.source_id}")
    return ", ".join(parts)


async def cmd_subscribe(ctx: Ctx, args: argparse.Namespace) -> int:
    from storage.subscriptions import NewSubscription, SubscriptionStore

    policy = EditPolicy(args.edit_policy)
    backfill = ctx.settings.backfill if args.backfill is None else args.backfill
    if not 0 <= backfill <= 50:
        raise UserError("--backfill is between 0 and 50")
    if args.from_file is not None and args.target is not None:
        raise UserError("give either a TARGET or --from-file, not both")
    if args.from_file is None and args.target is None:
        raise UserError("give a TARGET (chat id, @channel, webhook URL) or --from-file FILE")
    if args.from_file is not None and args.keywords is not None:
        raise UserError("with --from-file, keywords go on each line after the target")
    created: list[Subscription] = []
    existing: list[Subscription] = []
    async with open_db(ctx, create=True) as db:
        posts = PostStore(db)
        store = SubscriptionStore(db)
        source_id = await resolve_source(posts, args.source)
        if args.from_file is not None:
            entries = read_target_file(
                args.from_file, args.platform, flavor=args.flavor, thread=args.thread
            )
            before = {s.id for s in await store.list()}
            subs = await store.add_many(
                [
                    NewSubscription(
                        target=target,
                        created_by="cli",
                        source_id=source_id,
                        query=keywords,
                        edit_policy=policy,
                    )
                    for target, keywords in entries
                ],
                backfill=backfill,
            )
            for sub in subs:
                (existing if sub.id in before else created).append(sub)
        else:
            target = operator_target(
                args.platform,
                args.target,
                thread=args.thread,
                flavor=args.flavor,
                webhook=args.webhook,
            )
            sub, is_new = await store.add(
                target,
                created_by="cli",
                source_id=source_id,
                query=args.keywords,
                edit_policy=policy,
                backfill=backfill,
            )
            (created if is_new else existing).append(sub)
    if ctx.json:
        ctx.emit_json(
            {
                "created": [subscription_json(s) for s in created],
                "existing": [subscription_json(s) for s in existing],
            }
        )
        return EXIT_OK
    for sub in created:
        ctx.out.print(Text("Subscribed ", style="green") + Text(_describe(sub)), soft_wrap=True)
    for sub in existing:
        ctx.out.print(Text("Already subscribed ") + Text(_describe(sub)), soft_wrap=True)
    return EXIT_OK


async def cmd_subscriptions(ctx: Ctx, args: argparse.Namespace) -> int:
    from storage.subscriptions import SubscriptionStore

    async with open_db(ctx) as db:
        subs = await SubscriptionStore(db).list(platform=args.platform)
    if ctx.json:
        ctx.emit_json([subscription_json(s) for s in subs])
        return EXIT_OK
    if not subs:
        ctx.out.print("No subscriptions. Add one with `livedesk subscribe PLATFORM TARGET`.")
        return EXIT_OK
    table = Table(title="Subscriptions", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("platform", no_wrap=True)
    table.add_column("target", overflow="fold")
    table.add_column("posts", overflow="fold")
    table.add_column("edits", no_wrap=True)
    table.add_column("state", overflow="fold")
    for sub in subs:
        state = Text(sub.state.value, style="green" if sub.state.value == "active" else "yellow")
        if sub.reason:
            state.append(f" ({sub.reason})", style="dim")
        flavor = sub.target.options.get("flavor")
        platform = f"{sub.target.platform}/{flavor}" if flavor and flavor != "slack" else ""
        target = Text(mask_address(sub.target))
        if sub.target.thread:
            target.append(f" · thread {sub.target.thread}", style="dim")
        filters = Text(sub.query or "every post")
        if sub.source_id:
            filters.append(f"\nblog {sub.source_id}", style="dim")
        table.add_row(
            str(sub.id),
            platform or sub.target.platform,
            target,
            filters,
            sub.edit_policy.value,
            state,
        )
    ctx.out.print(table)
    return EXIT_OK


async def cmd_unsubscribe(ctx: Ctx, args: argparse.Namespace) -> int:
    from storage.subscriptions import SubscriptionStore

    async with open_db(ctx) as db:
        removed = await SubscriptionStore(db).remove(args.subscription_id)
    if not removed:
        raise UserError(f"no subscription #{args.subscription_id}")
    if ctx.json:
        ctx.emit_json({"removed": args.subscription_id})
    else:
        ctx.out.print(f"Removed subscription #{args.subscription_id}.")
    return EXIT_OK


async def _set_state(ctx: Ctx, subscription_id: int, state_name: str, verb: str) -> int:
    from storage.subscriptions import SubscriptionStore

    async with open_db(ctx) as db:
        changed = await SubscriptionStore(db).set_state(
            subscription_id, SubscriptionState(state_name)
        )
    if not changed:
        raise UserError(f"no subscription #{subscription_id}")
    if ctx.json:
        ctx.emit_json({"id": subscription_id, "state": state_name})
    else:
        ctx.out.print(f"{verb} subscription #{subscription_id}.")
    return EXIT_OK


async def cmd_pause(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _set_state(ctx, args.subscription_id, "paused", "Paused")


async def cmd_resume(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _set_state(ctx, args.subscription_id, "active", "Resumed")


# --- deliveries --------------------------------------------------------------------------------------


async def cmd_deliveries(ctx: Ctx, args: argparse.Namespace) -> int:
    from storage.subscriptions import Outbox

    async with open_db(ctx) as db:
        outbox = Outbox(db)
        if args.action == "retry":
            count = await outbox.retry_dead(ids=args.ids or None)
            if ctx.json:
                ctx.emit_json({"retried": count})
            else:
                ctx.out.print(f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again.")
            return EXIT_OK
        counts = await outbox.counts()
        dead = await outbox.dead(limit=1000) if args.dead else []
    if ctx.json:
        payload: dict[str, Any] = {"counts": counts}
        if args.dead:
            payload["dead"] = [_dead_json(item) for item in dead]
        ctx.emit_json(payload)
        return EXIT_OK
    table = Table(title="Deliveries", title_justify="left")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state in ("pending", "sent", "dead", "skipped"):
        table.add_row(state, str(counts.get(state, 0)))
    for state, count in counts.items():
        if state not in ("pending", "sent", "dead", "skipped"):
            table.add_row(state, str(count))
    ctx.out.print(table)
    if args.dead:
        if not dead:
            ctx.out.print("No dead deliveries.")
            return EXIT_OK
        listing = Table(title="Dead deliveries", title_justify="left")
        for column in ("id", "subscription", "target", "post", "attempts", "reason"):
            listing.add_column(column, overflow="fold")
        for item in dead:
            listing.add_row(
                str(item.id),
                f"#{item.subscription_id}",
                Text(mask_address(item.target)),
                Text(item.post_title) + Text(f"\n{item.post_id}", style="dim"),
                str(item.attempts),
                Text(item.last_error or "", style="red"),
            )
        ctx.out.print(listing)
        ctx.out.print("Queue them again with `livedesk deliveries retry [ID...]`.")
    return EXIT_OK


def _dead_json(item: DeadDelivery) -> dict[str, Any]:
    """A dead delivery as plain data; webhook URLs masked."""
    return {
        "id": item.id,
        "subscription_id": item.subscription_id,
        "target": mask_address(item.target),
        "post_id": item.post_id,
        "post_title": item.post_title,
        "event": item.event,
        "attempts": item.attempts,
        "reason": item.last_error,
    }


COMMANDS: dict[str, Callable[[Ctx, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "import": cmd_import,
    "latest": cmd_latest,
    "search": cmd_search,
    "post": cmd_post,
    "sources": cmd_sources,
    "subscribe": cmd_subscribe,
    "subscriptions": cmd_subscriptions,
    "unsubscribe": cmd_unsubscribe,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "deliveries": cmd_deliveries,
}


if __name__ == "__main__":
    raise SystemExit(main())
