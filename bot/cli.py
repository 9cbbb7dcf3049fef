"""`livedesk …`: the operator's commands. Every expected error is one clear line and a non-zero exit.

Exit codes: 0 done; 1 an operation failed (a file could not be imported, an adapter could not start);
2 bad input (a setting, a query, a target, an id that does not exist, a page past the end);
130 interrupted (Ctrl-C): the one line "interrupted", no traceback.
Under --json an error is one JSON object on stdout, `{"error": "…"}` (with `"details"`, one per bad
line, for --from-file), and the exit code is the same.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import shlex
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from bot.choices import EDIT_POLICIES, FLAVORS, MAX_PER_PAGE, MIN_FEED_INTERVAL, PLATFORM_NAMES
from bot.redact import printable

# What a command needs beyond parsing its arguments is imported when it runs: `livedesk --help`
# (and every command's --help, and a command line argparse refuses) loads neither pydantic, nor
# asyncio, rich or the store; `latest` loads no progress bar, no feed code (aiohttp, feedparser)
# and, on an SQLite store, no psycopg (tests/test_layering.py checks what each one loads).
if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text

    from bot.config import Settings
    from bot.models import Highlighted, Post, PostVersion, Subscription
    from storage.interface import Posts, Store
    from storage.values import Added, DeadDelivery, Feed, FetchFailure, SourceInfo

log = logging.getLogger("livedesk")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

HIGHLIGHT = "bold yellow"


class UserError(Exception):
    """Bad input from the operator: printed as one line (after one line per detail), exit code 2."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


@dataclass
class Ctx:
    settings: Settings
    db_path: Path
    json: bool
    out: Console
    err: Console
    database_url: str | None = None
    """A PostgreSQL server (from --db or LIVEDESK_DATABASE_URL) instead of the SQLite file."""

    @property
    def shown_store(self) -> str:
        """Where the store is, for messages: the file, or the server URL with its password masked."""
        if self.database_url is None:
            return str(self.db_path)
        from storage.pg_db import masked

        return masked(self.database_url)

    @property
    def zone(self) -> ZoneInfo:
        return self.settings.zone

    def when(self, value: datetime | None, *, seconds: bool = False, about: bool = False) -> str:
        """A time in the configured zone, as the operator reads it; `about` for an estimated one."""
        if value is None:
            return "–"
        text = value.astimezone(self.zone).strftime(
            "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
        )
        return f"about {text}" if about else text

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    def error(self, message: str, details: Sequence[str] = ()) -> None:
        """An error: red lines on stderr, or `{"error": …}` on stdout under --json."""
        report_error(self.json, self.err, message, details)

    def warn(self, message: str) -> None:
        from rich.text import Text

        self.err.print(Text(one_line(message), style="yellow"), soft_wrap=True)


def one_line(message: str) -> str:
    return " ".join(printable(str(message)).split())  # no escape sequence from a remote answer


# --- the parser --------------------------------------------------------------------------------------

QUERY_HELP = """\
query language:
  words            every word must appear: Lavrov Blinken
  "a phrase"       these words together, in this order
  A OR B           either side (in capitals: a lowercase "or" is a plain word)
  -word, NOT word  leave out posts with the word: Lavrov -Blinken
  prefix*          words that start so: Blink*
Words match their other forms (sanction, sanctions); case and accents do not matter.
Quotes are needed only for phrases: `livedesk search Lavrov -Blinken` works as typed.
"""


class UsageError(Exception):
    """A command line argparse refuses; main() prints it as argparse would, or as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse without its exit on bad input, so that `--json` can answer in JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


BIGGEST = 2**63 - 1  # SQLite's largest integer: every id and count fits below it


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

        parser.add_argument(
            "--db",
            default=default(None),
            metavar="PATH|URL",
            help="SQLite database file, or a postgresql:// URL (default: LIVEDESK_DATABASE_URL, "
            "else LIVEDESK_DB_PATH, else livedesk.db)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=default(False),
            help='machine-readable output on stdout; errors too, as {"error": ...}',
        )
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=default(False), help="log more"
        )

    common = Parser(add_help=False, allow_abbrev=False)
    global_options(common, suppress=True)
    parser = Parser(
        prog="livedesk", description="Live news blogs to chat notifications.", allow_abbrev=False
    )
    parser.add_argument("--version", action=ShowVersion, help="show the version")
    global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            allow_abbrev=False,
            **kwargs,
        )

    source_help = "only this blog: its number, id, or a unique word or beginning of its title"

    p = command("import", "import live blogs from files or URLs")
    p.add_argument(
        "locations", nargs="+", metavar="PATH_OR_URL", help="a file or http(s) URL of a live blog"
    )

    p = command("latest", "the newest posts")
    p.add_argument(
        "-n",
        "--limit",
        type=whole_number,
        default=5,
        metavar="N",
        help="how many posts (default 5)",
    )
    p.add_argument("--source", metavar="BLOG", help=source_help)

    p = command(
        "search",
        "full-text search over every post",
        epilog=QUERY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="+", metavar="QUERY", help="what to look for (see below)")
    p.add_argument(
        "--page", type=whole_number, default=1, metavar="N", help="which page (default 1)"
    )
    p.add_argument(
        "-n",
        "--limit",
        "--per-page",
        dest="limit",
        type=whole_number,
        default=5,
        metavar="N",
        help=f"results per page (default 5, at most {MAX_PER_PAGE})",
    )
    p.add_argument("--source", metavar="BLOG", help=source_help)

    p = command("post", "one post with its edit history")
    p.add_argument(
        "post_id", metavar="ID", help="the post's number (as `latest` shows it) or its id"
    )

    p = command(
        "sources",
        "the blogs followed and imported; add, set, pause, resume, remove, import, export",
    )
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(
            name, help=help_text, description=help_text, parents=[common], allow_abbrev=False
        )

    interval_help = (
        f"seconds between polls, at least {MIN_FEED_INTERVAL:g} (default {DEFAULT_INTERVAL:g})"
    )
    a = action("add", "follow a blog: poll a file or an http(s) URL on its interval")
    a.add_argument("location", metavar="PATH_OR_URL", help="a file or http(s) URL of a live blog")
    a.add_argument(
        "--interval",
        type=interval_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=interval_help,
    )
    a = action("set", "change how often a followed blog is polled")
    a.add_argument("feed_id", type=record_id, metavar="ID", help="as `livedesk sources` shows it")
    a.add_argument(
        "--interval",
        type=interval_seconds,
        required=True,
        metavar="SECONDS",
        help=f"seconds between polls, at least {MIN_FEED_INTERVAL:g}",
    )
    for name, help_text in (
        ("pause", "stop polling a followed blog for now (kept, with its posts)"),
        ("resume", "poll a paused blog again, at once"),
        ("remove", "stop following a blog (its posts stay in the store)"),
    ):
        a = action(name, help_text)
        a.add_argument(
            "feed_id", type=record_id, metavar="ID", help="as `livedesk sources` shows it"
        )
    a = action("import", "follow every feed of an OPML file, as feed readers export them")
    a.add_argument("file", type=Path, metavar="FILE.opml", help="OPML 1.0 or 2.0")
    a.add_argument(
        "--interval",
        type=interval_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=interval_help,
    )
    a = action("export", "the followed blogs as OPML 2.0, for a feed reader or another Livedesk")
    a.add_argument(
        "file", type=Path, nargs="?", metavar="FILE", help="where to write it (default: stdout)"
    )

    p = command("run", "run the bot: adapters, sources on a schedule, deliveries")
    p.add_argument(
        "--once",
        action="store_true",
        help="poll each source once (replay the demo instantly), deliver everything, then exit",
    )

    p = command(
        "subscribe",
        "subscribe a chat, channel or webhook to posts",
        epilog=QUERY_HELP.replace("livedesk search Lavrov -Blinken", "--keywords Lavrov -Blinken"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "platform",
        choices=PLATFORM_NAMES,
        metavar="PLATFORM",
        help=f"one of {', '.join(PLATFORM_NAMES)}",
    )
    p.add_argument("target", nargs="?", metavar="TARGET", help="chat id, @channel, webhook URL")
    p.add_argument(
        "--keywords", metavar="QUERY", help='only posts that match, e.g. "sanctions OR NATO"'
    )
    p.add_argument("--source", metavar="BLOG", help=source_help)
    p.add_argument("--thread", metavar="ID", help="topic / thread id")
    p.add_argument("--flavor", choices=FLAVORS, help="webhook dialect (slack platform)")
    p.add_argument(
        "--webhook",
        metavar="URL",
        help="discord: post through this channel webhook instead of the bot (a secret)",
    )
    p.add_argument(
        "--edit-policy",
        choices=list(EDIT_POLICIES),
        help="what an edited post does: edit the message (default where the platform can), "
        "send a follow-up (default for webhooks), or nothing",
    )
    p.add_argument(
        "--from-file",
        type=Path,
        metavar="FILE",
        help="one target per line, optional keywords after whitespace, # comments",
    )
    p.add_argument(
        "--backfill",
        type=whole_number,
        metavar="N",
        help="latest posts to send at once, 0 to 50 (default: LIVEDESK_BACKFILL)",
    )

    p = command("subscriptions", "list subscriptions")
    p.add_argument("--platform", choices=PLATFORM_NAMES, help="only this platform's")

    for name, help_text in (
        ("unsubscribe", "remove a subscription"),
        ("pause", "pause a subscription"),
        ("resume", "resume a paused or disabled subscription"),
    ):
        p = command(name, help_text)
        p.add_argument(
            "subscription_id",
            type=record_id,
            metavar="ID",
            help="as `livedesk subscriptions` shows it",
        )

    p = command("deliveries", "delivery counts by state; --dead lists failed ones")
    p.add_argument("--dead", action="store_true", help="list dead deliveries with the reason")
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    retry = actions.add_parser(
        "retry",
        help="queue dead deliveries again",
        parents=[common],
        description="queue dead deliveries again: these ids, or every one",
        allow_abbrev=False,
    )
    retry.add_argument(
        "ids", nargs="*", type=record_id, metavar="ID", help="as `deliveries --dead` shows them"
    )
    p = command(
        "migrate",
        "copy this SQLite store (--db PATH) into a PostgreSQL database, idempotently",
    )
    p.add_argument(
        "url",
        metavar="URL",
        help="postgresql://user:password@host/dbname (empty, or a copy of this store)",
    )

    command("workers", "the workers of a fleet sharing a PostgreSQL database, and their roles")

    return parser


class ShowVersion(argparse.Action):
    """`--version`, asking the installed metadata only when given: reading it (importlib.metadata
    scans the installed packages) was a tenth of every command's start-up."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"livedesk {_version()}\n")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("livedesk")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def query_words_as_typed(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Let query words start with '-', as the query language has them.

    `search Lavrov -Blinken` and `subscribe … --keywords -NATO` would otherwise be refused by
    argparse (it reads `-Blinken` as an option). A word that starts with a single '-' and is not one
    of the command's options becomes a query word; the real options keep working anywhere."""
    argv = list(argv)
    # argparse's option tables (`_actions`, `_option_string_actions`) are private but long stable;
    # reading them keeps this pass in step with the options the parser really has.
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    index = _command_index(argv, parser)
    if index is None or argv[index] not in ("search", "subscribe"):
        return argv
    command = argv[index]
    sub: argparse.ArgumentParser = subparsers.choices[command]
    options = sub._option_string_actions
    head, rest = argv[: index + 1], argv[index + 1 :]
    kept: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token == "--":
            words.extend(rest[i:])
            break
        name = token.partition("=")[0]
        action = options.get(name) if token.startswith("-") else None
        if action is None and _short_with_value(token, options):
            kept.append(token)  # -n3
            continue
        if action is None:
            # search: a word, or an unknown --option left for argparse to refuse.
            is_word = command == "search" and not token.startswith("--")
            (words if is_word else kept).append(token)
            continue
        if action.nargs == 0 or "=" in token or i >= len(rest):
            kept.append(token)
            continue
        value = rest[i]
        i += 1
        if name == "--keywords":
            # Unquoted exclusions after the keywords belong to them: --keywords Lavrov -Blinken.
            while i < len(rest) and _is_query_word(rest[i], options):
                value += " " + rest[i]
                i += 1
        long_name = next((o for o in action.option_strings if o.startswith("--")), name)
        kept.append(f"{long_name}={value}")
    if command == "search":
        return head + kept + (["--", *words] if words else [])
    return head + kept + words


def _command_index(argv: list[str], parser: argparse.ArgumentParser) -> int | None:
    """Where the command is in argv, skipping the global options before it."""
    takes_value = {
        name for name, action in parser._option_string_actions.items() if action.nargs != 0
    }
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("-"):
            return i
        i += 2 if token in takes_value else 1
    return None


def _short_with_value(token: str, options: dict[str, argparse.Action]) -> bool:
    """`-n3`: a short option with its number attached (and not a word like -nato)."""
    action = options.get(token[:2])
    return (
        action is not None
        and action.nargs != 0
        and len(token) > 2
        and token[2:].lstrip("-").isdigit()
    )


def _is_query_word(token: str, options: dict[str, argparse.Action]) -> bool:
    return (
        token.startswith("-")
        and not token.startswith("--")
        and len(token) > 1
        and token.partition("=")[0] not in options
        and not _short_with_value(token, options)
    )


# --- entry point -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The `livedesk` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(query_words_as_typed(argv, parser))
        except UsageError as error:
            if json_mode:
                emit_error_json(str(error))
            else:
                prog = error.parser.prog  # one line: the usage is one `--help` away
                sys.stderr.write(f"{prog}: {one_line(str(error))} (see {prog} --help)\n")
            return EXIT_BAD_INPUT
        return run_command(args, json_mode=json_mode)
    except KeyboardInterrupt:  # Ctrl-C while starting up, before a command handles it itself
        if json_mode:
            emit_error_json("interrupted")
        else:
            sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


def run_command(args: argparse.Namespace, *, json_mode: bool) -> int:
    """Run the command the parsed arguments name: settings, logging, then the command itself.

    Everything past argparse is imported here, once a command is known to run: `--help`, each
    command's --help and a refused command line cost the interpreter and argparse only."""
    import asyncio

    from pydantic import SecretStr
    from rich.console import Console
    from rich.text import Text

    from bot.config import ConfigError, configured_secrets, load_settings
    from bot.logs import configure_logging
    from storage import variants as search_variants

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        settings = load_settings()
    except ConfigError as error:
        report_error(json_mode, err, str(error))
        return EXIT_BAD_INPUT
    for warning in settings.warnings:
        err.print(Text(one_line(warning), style="yellow"), soft_wrap=True)
    search_variants.use(settings.search.variants)
    database_url, db_path = _store_location(args.db, settings)
    secrets = configured_secrets(settings)
    if database_url is not None:  # perhaps given as --db: its password stays out of logs too
        secrets += [s for s in (database_url, urlsplit(database_url).password) if s]
    configure_logging("DEBUG" if args.verbose else _log_level(settings, args.command), secrets)
    ctx = Ctx(
        settings=settings,
        db_path=db_path,
        json=args.json,
        out=out,
        err=err,
        database_url=database_url,
    )
    if args.command == "run":
        from bot.app import run_app
        from storage.db import check_location

        try:  # before the run lock, which lives in the same folder
            if ctx.database_url is None:
                check_location(ctx.db_path, create=True)
            if (ctx.database_url or ctx.db_path.exists()) and not ctx.json and err.is_terminal:
                asyncio.run(_migrate_with_a_bar(ctx))  # else the app logs a re-index's progress
        except OSError as error:
            if not _store_cannot_serve(error):
                raise
            ctx.error(str(error))
            return EXIT_FAILED
        url = SecretStr(ctx.database_url) if ctx.database_url else None
        return run_app(
            settings.model_copy(update={"db_path": ctx.db_path, "database_url": url}),
            once=args.once,
            loud_without_demo=not args.verbose and _quiet_for_demo(settings),
        )
    handler = COMMANDS[args.command]
    try:
        return asyncio.run(handler(ctx, args))
    except KeyboardInterrupt:
        ctx.error("interrupted")
        return EXIT_INTERRUPTED
    except UserError as error:
        ctx.error(str(error), details=error.details)
        return EXIT_BAD_INPUT
    except Exception as error:
        if _store_cannot_serve(error):
            ctx.error(str(error))
            return EXIT_FAILED
        found = _damage_found(ctx.db_path, error)
        if found is not None:  # e.g. damage met while reading, past the checks of opening
            ctx.error(str(found))
            return EXIT_FAILED
        if _is_expected(error):
            ctx.error(str(error))
            return EXIT_BAD_INPUT
        if args.verbose and not ctx.json:
            raise
        ctx.error(f"unexpected error: {type(error).__name__}: {error} (run with -v for details)")
        return EXIT_FAILED


def _damage_found(db_path: Path, error: Exception) -> Exception | None:
    """The SQLite file's damage an error reveals (one line naming the file), else None."""
    import sqlite3

    from storage.db import classify

    return classify(db_path, error) if isinstance(error, sqlite3.Error) else None


def emit_error_json(message: str, details: Sequence[str] = ()) -> None:
    """An error under --json: one JSON object on stdout, where the caller reads the answer."""
    payload: dict[str, Any] = {"error": one_line(message)}
    if details:
        payload["details"] = [one_line(d) for d in details]
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")


def report_error(json_mode: bool, err: Console, message: str, details: Sequence[str] = ()) -> None:
    from rich.text import Text

    if json_mode:
        emit_error_json(message, details)
        return
    for line in details:
        err.print(Text(one_line(line), style="red"), soft_wrap=True)
    err.print(Text(one_line(message), style="red"), soft_wrap=True)


def _store_cannot_serve(error: Exception) -> bool:
    """Whether the error says the store cannot be used (one line, exit 1). PostgreSQL's errors are
    imported here, not at the top: `livedesk --help` and every command on an SQLite store run
    without loading psycopg, and such an error comes only after its module was loaded."""
    from storage.db import DatabaseUnusable

    if isinstance(error, DatabaseUnusable):
        return True
    if "storage.pg_schema" not in sys.modules:
        return False
    from storage.migrate import MigrateError
    from storage.pg_schema import PostgresUnusable

    return isinstance(error, PostgresUnusable | MigrateError)


def _is_expected(error: Exception) -> bool:
    from bot.config import ConfigError

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
    if _quiet_for_demo(settings):
        return "WARNING"  # until the app knows whether the demo runs
    return settings.log_level


def _quiet_for_demo(settings: Settings) -> bool:
    return settings.demo_mode and "log_level" not in settings.model_fields_set


class MigrationBar:
    """A migration's progress (e.g. re-indexing every post for search) as a bar on a terminal;
    elsewhere, or under --json, the store logs it instead."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: Any = None

    def __call__(self, what: str, done: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(what, total=total)
        self._progress.update(self._task, description=what, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _store_location(given: str | None, settings: Settings) -> tuple[str | None, Path]:
    """(PostgreSQL URL or None, SQLite path): --db wins, then LIVEDESK_DATABASE_URL, then
    LIVEDESK_DB_PATH."""
    from storage.store import is_postgres_url

    if given is not None and is_postgres_url(given):
        return given.strip(), settings.db_path
    if given is not None:
        return None, Path(given)
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), settings.db_path
    return None, settings.db_path


async def _migrate_with_a_bar(ctx: Ctx) -> None:
    """Bring an existing store to this version's schema, showing a re-index as a bar."""
    async with open_db(ctx):
        pass


@asynccontextmanager
async def open_db(ctx: Ctx, *, create: bool = False) -> AsyncIterator[Store]:
    """The store; only commands that add to it (`import`, `subscribe`) may create its folder."""
    from storage.store import open_sqlite

    interactive = not ctx.json and ctx.err.is_terminal
    bar = MigrationBar(ctx.err) if interactive else None
    store: Store
    try:
        if ctx.database_url is not None:
            from storage.pg_store import open_postgres

            store = await open_postgres(ctx.database_url, progress=bar)
        else:
            store = await open_sqlite(ctx.db_path, create=create, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    try:
        yield store
    finally:
        await store.close()


async def resolve_source(posts: Posts, text: str | None) -> str | None:
    """The id of the blog `--source TEXT` names: its number, id, or a unique word of its title."""
    if text is None:
        return None
    found = await posts.find_sources(text)
    if not found:
        raise UserError(f"no blog matches {text!r}; `livedesk sources` lists them")
    if len(found) > 1:
        shown = "; ".join(f"#{s.number} {s.source.title} ({s.source.id})" for s in found[:5])
        more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
        raise UserError(
            f"{text!r} matches {len(found)} blogs: {shown}{more}. Give its number or id"
        )
    return found[0].source.id


# --- import --------------------------------------------------------------------------------------------


MAX_LATEST = 1000  # posts `latest` shows at most (the store's own limit)
BIG_DOCUMENT = 5_000  # posts: a feed this big gets its own progress bar while it is stored


async def cmd_import(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bot.models import EventKind
    from bot.sources import SourceError, load
    from storage.values import FetchState, SourceConflict

    locations: list[str] = args.locations
    reports: list[dict[str, Any]] = []
    async with open_db(ctx, create=True) as store:
        posts = store.posts
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
                    fetched = await load(location, deferred=True)  # read as it is stored
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

                        events = await store.ingest(
                            fetched.result,
                            location=location,
                            fetch_state=FetchState(fetched.etag, fetched.last_modified),
                            on_progress=stored,
                            new_source_deliveries=ctx.settings.new_source_backfill,
                        )
                        if storing is not None:
                            progress.remove_task(storing)
                        settled = await posts.source_at(location)
                        report.update(
                            source=settled.id if settled else fetched.result.source.id,
                            posts=len(fetched.result.posts),
                            created=sum(e.kind is EventKind.CREATED for e in events),
                            updated=sum(e.kind is EventKind.UPDATED for e in events),
                            warnings=list(fetched.result.warnings),
                        )
                except (SourceError, SourceConflict) as error:
                    report["error"] = one_line(str(error))
                reports.append(report)
                if not ctx.json:
                    _print_import_report(ctx, progress.console, report)
                progress.advance(task)
    if ctx.json:
        ctx.emit_json(reports)
    return EXIT_FAILED if any("error" in r for r in reports) else EXIT_OK


def _print_import_report(ctx: Ctx, console: Console, report: dict[str, Any]) -> None:
    from rich.text import Text

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
    from rich.table import Table
    from rich.text import Text

    if args.limit < 1:
        raise UserError("-n/--limit must be at least 1")
    if args.limit > MAX_LATEST:
        ctx.warn(f"showing the latest {MAX_LATEST} posts: -n/--limit is at most {MAX_LATEST}")
    async with open_db(ctx) as store:
        posts = store.posts
        source_id = await resolve_source(posts, args.source)
        found = await posts.latest(min(args.limit, MAX_LATEST), source_id=source_id)
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
        row: list[str | Text] = [
            post_ref(post),
            ctx.when(post.published_at, about=post.time_estimated),
            Text(post.title),
        ]
        if several:
            row.append(Text(titles.get(post.source_id, post.source_id)))
        table.add_row(*row)
    ctx.out.print(table)
    return EXIT_OK


def highlighted_text(value: Highlighted, *, flat: bool = False) -> Text:
    """Search highlights in rich; `flat` folds paragraph breaks into one running line."""
    from rich.text import Text

    text = Text()
    if value.label:  # a snippet from a caption or the background
        text.append(value.label + " ", style="dim italic")
    for run, hit in value.segments:
        text.append(" ".join(run.split("\n")) if flat else run, style=HIGHLIGHT if hit else None)
    return text


async def cmd_search(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.text import Text

    query = " ".join(args.query)
    if args.page < 1 or args.limit < 1:
        raise UserError("--page and -n/--limit start at 1")
    if args.limit > MAX_PER_PAGE:
        ctx.warn(f"showing {MAX_PER_PAGE} results per page: -n/--limit is at most {MAX_PER_PAGE}")
    async with open_db(ctx) as store:
        posts = store.posts
        source_id = await resolve_source(posts, args.source)
        page = await store.search(query, page=args.page, per_page=args.limit, source_id=source_id)
    if page.total and not page.hits:
        pages = -(-page.total // page.per_page)
        raise UserError(
            f"page {page.page} is past the end: {page.total_label} "
            f"result{'s' if page.total != 1 else ''} for “{query}” fill "
            f"{pages} page{'s' if pages != 1 else ''} of {page.per_page}"
        )
    if ctx.json:
        ctx.emit_json(
            {
                "query": page.query,
                "page": page.page,
                "per_page": page.per_page,
                "total": page.total,
                "total_is_estimate": page.total_is_estimate,
                "has_more": page.has_more,
                "notice": page.notice,
                "hits": [
                    {
                        "post": post_json(hit.post),
                        "title": hit.title.plain,
                        "snippet": hit.snippet.plain,
                        "snippet_from": hit.snippet.where,
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
        Text(f"{page.total_label} result{'s' if page.total != 1 else ''} for “{query}”")
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
    import difflib

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
    async with open_db(ctx) as store:
        posts = store.posts
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
    from rich.text import Text

    out = ctx.out
    out.print(Text(post.title, style="bold"))
    when = ctx.when(post.published_at, about=post.time_estimated)
    meta = f"{when} · {source_title} · #{post_ref(post)} · {post.id}"
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
    from rich.text import Text

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
    """`livedesk sources [add|set|pause|resume|remove|import|export]`: the blogs to follow."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from storage.values import SourceInfo

    action = getattr(args, "action", None)
    if action is not None:
        return await SOURCE_ACTIONS[action](ctx, args)
    async with open_db(ctx) as store:
        infos = await store.posts.sources()
        failing = await store.posts.failing_locations()
        feeds = await store.feeds.list()
    feed_of: dict[int, Feed] = {}  # id() of a blog row or failure → its feed
    posts_of: dict[int, int] = {}  # feed id → its blog's posts
    for feed, paired in _feed_rows(feeds, infos, failing):
        feed_of[id(paired)] = feed
        if isinstance(paired, SourceInfo):
            posts_of[feed.id] = paired.posts
    fed = {feed.id for feed in feed_of.values()}
    if ctx.json:
        ctx.emit_json(
            [
                {
                    "number": info.number,
                    **info.source.model_dump(mode="json"),
                    "location": info.location,
                    "posts": info.posts,
                    "newest": info.newest.isoformat() if info.newest else None,
                    "imported_at": info.imported_at.isoformat() if info.imported_at else None,
                    "last_error": info.last_error,
                    "feed": _feed_json(feed_of.get(id(info)), posts_of),
                }
                for info in infos
            ]
            + [
                {
                    "number": None,
                    "id": None,
                    "title": None,
                    "location": failure.location,
                    "posts": 0,
                    "newest": None,
                    "imported_at": None,
                    "last_error": failure.error,
                    "failed_at": failure.at.isoformat(),
                    "feed": _feed_json(feed_of.get(id(failure)), posts_of),
                }
                for failure in failing
            ]
            + [
                {
                    "number": None,
                    "id": None,
                    "title": feed.title,
                    "location": shown_location(feed.location),
                    "posts": 0,
                    "newest": None,
                    "imported_at": None,
                    "last_error": feed.last_error,
                    "feed": _feed_json(feed, posts_of),
                }
                for feed in feeds
                if feed.id not in fed
            ]
        )
        return EXIT_OK
    if not infos and not failing and not feeds:
        ctx.out.print(
            "No blogs yet. Follow one with `livedesk sources add PATH_OR_URL`, "
            "or import one with `livedesk import PATH_OR_URL`."
        )
        return EXIT_OK
    if feeds:
        ctx.out.print(_feeds_table(ctx, feeds, posts_of))
    if not infos and not failing:
        return EXIT_OK
    errors = bool(failing) or any(info.last_error for info in infos)
    # Fits 80 columns: no side borders, the two times stacked in one column, and the title and the
    # error wrap in the room that is left.
    table = Table(title="Blogs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("blog · id · format", overflow="fold", ratio=3, min_width=20)
    table.add_column("posts", justify="right", no_wrap=True)
    table.add_column("newest post\nimported", no_wrap=True)
    if errors:
        table.add_column("last error", overflow="fold", ratio=2, min_width=12)
    for info in infos:
        row: list[str | Text] = [
            str(info.number),
            Text(info.source.title)
            + Text(f"\n{info.source.id} · {info.source.kind.value}", style="dim"),
            str(info.posts),
            Text(ctx.when(info.newest)) + Text(f"\n{ctx.when(info.imported_at)}", style="dim"),
        ]
        if errors:
            row.append(Text(printable(info.last_error or ""), style="red"))
        table.add_row(*row)
    for failure in failing:
        table.add_row(
            "",
            Text(failure.location) + Text("\nnot imported yet", style="dim"),
            "0",
            Text("–") + Text(f"\n{ctx.when(failure.at)}", style="dim"),
            Text(printable(failure.error), style="red"),
        )
    # Too wide for the terminal: share the width out by the columns' ratios, so that the title and
    # the error wrap instead of the table running off the edge.
    table.expand = ctx.out.measure(table).maximum > ctx.out.width
    ctx.out.print(table)
    return EXIT_OK


def shown_location(location: str) -> str:
    """A feed's location as it may be printed: tokens in its query string and a URL's password
    masked, no control characters."""
    from bot.redact import redact

    return one_line(redact(location))


def _feed_rows(
    feeds: Sequence[Feed], infos: Sequence[SourceInfo], failing: Sequence[FetchFailure]
) -> list[tuple[Feed, SourceInfo | FetchFailure]]:
    """Each feed with the blog it imported (by blog id, else by location), or with the failure
    recorded for its location before it ever imported."""
    by_source = {info.source.id: info for info in infos}
    by_location: dict[str, SourceInfo | FetchFailure] = {
        info.location: info for info in infos if info.location
    }
    for failure in failing:
        by_location.setdefault(failure.location, failure)
    pairs: list[tuple[Feed, SourceInfo | FetchFailure]] = []
    taken: set[int] = set()
    for feed in feeds:
        row = by_source.get(feed.source_id or "") or by_location.get(feed.location)
        if row is not None and id(row) not in taken:
            taken.add(id(row))
            pairs.append((feed, row))
    return pairs


def _feed_json(feed: Feed | None, posts_of: dict[int, int]) -> dict[str, Any] | None:
    from storage.values import feed_state

    if feed is None:
        return None
    return {
        "id": feed.id,
        "location": shown_location(feed.location),
        "title": feed.title,
        "state": feed_state(feed),
        "interval": feed.interval,
        "enabled": feed.enabled,
        "origin": feed.origin,
        "added_at": feed.added_at.isoformat(),
        "last_fetch_at": feed.last_fetch_at.isoformat() if feed.last_fetch_at else None,
        "next_attempt_at": feed.next_attempt_at.isoformat() if feed.next_attempt_at else None,
        "last_error": feed.last_error,
        "failures": feed.failures,
        "source_id": feed.source_id,
        "posts": posts_of.get(feed.id, 0),
    }


STATE_STYLES = {"active": "green", "paused": "yellow", "failing": "red"}


def _feeds_table(ctx: Ctx, feeds: Sequence[Feed], posts_of: dict[int, int]) -> Table:
    """The followed blogs: what `sources pause|resume|remove ID` takes, and how each one fares."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from storage.values import feed_state

    errors = any(feed.last_error for feed in feeds)
    table = Table(
        title="Followed (ID for `sources pause|resume|remove|set`)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("location · title", overflow="fold", ratio=3, min_width=20)
    table.add_column("state\nevery", no_wrap=True)
    table.add_column("last fetch\nnext attempt", no_wrap=True)
    table.add_column("posts", justify="right", no_wrap=True)
    if errors:
        table.add_column("last error", overflow="fold", ratio=2, min_width=12)
    for feed in feeds:
        state = feed_state(feed)
        if not feed.enabled:
            upcoming = "paused"
        elif feed.next_attempt_at is None:
            upcoming = "now"
        else:
            upcoming = ctx.when(feed.next_attempt_at, seconds=True)
        where = Text(shown_location(feed.location))
        if feed.title:
            where += Text(f"\n{one_line(feed.title)}", style="dim")
        row: list[str | Text] = [
            str(feed.id),
            where,
            Text(state, style=STATE_STYLES[state]) + Text(f"\n{feed.interval:g} s", style="dim"),
            Text(ctx.when(feed.last_fetch_at, seconds=True)) + Text(f"\n{upcoming}", style="dim"),
            str(posts_of.get(feed.id, 0)),
        ]
        if errors:
            row.append(Text(one_line(feed.last_error or ""), style="red"))
        table.add_row(*row)
    table.expand = ctx.out.measure(table).maximum > ctx.out.width
    return table


DEFAULT_INTERVAL = 60.0
"""Seconds between polls of a feed added without --interval (LIVEDESK_SOURCES' default too)."""


def interval_seconds(text: str) -> float:
    """--interval as typed: a number of seconds, at least MIN_FEED_INTERVAL."""
    from storage.values import FeedError, check_interval

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    try:
        return check_interval(seconds)
    except FeedError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def checked_feed_location(text: str) -> str:
    """What `sources add` follows: an http(s) URL as typed, a file as an absolute path; UserError
    for anything else (another scheme, an empty location)."""
    location = text.strip()
    if not location:
        raise UserError("give a file path or an http(s) URL to follow")
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    if scheme in ("http", "https"):
        if not urlsplit(location).hostname:
            raise UserError(f"{shown_location(location)} has no host name")
        return location
    if scheme not in ("", "file"):
        raise UserError(
            f"{shown_location(location)} is not a file path or an http(s) URL "
            f"({scheme}:// cannot be followed)"
        )
    from bot.poller import feed_location

    return feed_location(location)


async def _feed_or_fail(ctx: Ctx, store: Store, feed_id: int) -> Feed | None:
    feed = await store.feeds.get(feed_id)
    if feed is None:
        ctx.error(f"no followed blog #{feed_id}; `livedesk sources` lists them with their ids")
    return feed


def _said(ctx: Ctx, payload: dict[str, Any], line: str) -> int:
    from rich.text import Text

    if ctx.json:
        ctx.emit_json(payload)
    else:
        ctx.out.print(Text(line), soft_wrap=True)
    return EXIT_OK


async def sources_add(ctx: Ctx, args: argparse.Namespace) -> int:
    import asyncio

    from bot.sources.text import is_http_url
    from storage.values import FeedError, FeedExists

    location = checked_feed_location(args.location)
    async with open_db(ctx, create=True) as store:
        try:
            feed = await store.feeds.add(location, args.interval, origin="cli")
        except FeedExists as exists:
            ctx.error(
                f"{shown_location(exists.feed.location)} is already followed "
                f"(#{exists.feed.id}, every {exists.feed.interval:g} s)"
            )
            return EXIT_FAILED
        except FeedError as error:
            raise UserError(str(error)) from None
    if not is_http_url(location) and not await asyncio.to_thread(Path(location).exists):
        ctx.warn(f"{location} does not exist (yet): polling it fails until it does")
    return _said(
        ctx,
        _feed_json(feed, {}) or {},
        f"Following #{feed.id} {shown_location(feed.location)} every {feed.interval:g} s "
        "(a running `livedesk run` starts polling it within seconds).",
    )


async def sources_set(ctx: Ctx, args: argparse.Namespace) -> int:
    async with open_db(ctx) as store:
        if await _feed_or_fail(ctx, store, args.feed_id) is None:
            return EXIT_FAILED
        feed = await store.feeds.update(args.feed_id, interval=args.interval)
    if feed is None:
        ctx.error(f"no followed blog #{args.feed_id}")
        return EXIT_FAILED
    return _said(
        ctx,
        _feed_json(feed, {}) or {},
        f"#{feed.id} {shown_location(feed.location)}: polled every {feed.interval:g} s now.",
    )


async def _sources_enable(ctx: Ctx, feed_id: int, *, enabled: bool) -> int:
    async with open_db(ctx) as store:
        before = await _feed_or_fail(ctx, store, feed_id)
        if before is None:
            return EXIT_FAILED
        feed = await store.feeds.update(feed_id, enabled=enabled)
    if feed is None:
        ctx.error(f"no followed blog #{feed_id}")
        return EXIT_FAILED
    shown = f"#{feed.id} {shown_location(feed.location)}"
    if before.enabled == enabled:
        line = f"{shown} is already {'active' if enabled else 'paused'}."
    elif enabled:
        line = f"Resumed {shown}: polled again every {feed.interval:g} s, first at once."
    else:
        line = f"Paused {shown}: not polled until `livedesk sources resume {feed.id}`."
    return _said(ctx, {**(_feed_json(feed, {}) or {}), "changed": before.enabled != enabled}, line)


async def sources_pause(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _sources_enable(ctx, args.feed_id, enabled=False)


async def sources_resume(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _sources_enable(ctx, args.feed_id, enabled=True)


async def sources_remove(ctx: Ctx, args: argparse.Namespace) -> int:
    from bot.poller import SETTINGS_ORIGIN

    async with open_db(ctx) as store:
        feed = await _feed_or_fail(ctx, store, args.feed_id)
        if feed is None:
            return EXIT_FAILED
        await store.feeds.remove(feed.id)
    line = f"Stopped following #{feed.id} {shown_location(feed.location)}; its posts stay in the store."
    if feed.origin == SETTINGS_ORIGIN:
        line += " It is in LIVEDESK_SOURCES: the next `livedesk run` follows it again."
    return _said(ctx, {"removed": feed.id, "location": shown_location(feed.location)}, line)


async def sources_import(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.text import Text

    from bot import opml
    from storage.values import FeedError, FeedExists

    try:
        document = opml.read(args.file)
    except opml.OpmlError as error:
        ctx.error(str(error))
        return EXIT_FAILED
    added: list[Feed] = []
    already: list[Feed] = []
    skipped = list(document.skipped)
    async with open_db(ctx, create=True) as store:
        for outline in document.outlines:
            interval = args.interval
            if outline.interval is not None and outline.interval >= MIN_FEED_INTERVAL:
                interval = outline.interval
            try:
                feed = await store.feeds.add(
                    outline.location, interval, origin="opml", title=outline.title
                )
            except FeedExists as exists:
                already.append(exists.feed)
                continue
            except FeedError as error:
                skipped.append(f"outline {shown_location(outline.location)}: skipped, {error}")
                continue
            if outline.paused:
                feed = await store.feeds.update(feed.id, enabled=False) or feed
            added.append(feed)
    if ctx.json:
        ctx.emit_json(
            {
                "added": [_feed_json(feed, {}) for feed in added],
                "already_followed": [_feed_json(feed, {}) for feed in already],
                "skipped": [one_line(line) for line in skipped],
            }
        )
        return EXIT_OK
    for line in skipped:
        ctx.warn(line)
    for feed in added:
        ctx.out.print(
            Text(f"+ #{feed.id} {shown_location(feed.location)} every {feed.interval:g} s"),
            soft_wrap=True,
        )
    ctx.out.print(
        f"{args.file}: {len(added)} new, {len(already)} already followed, {len(skipped)} skipped.",
        soft_wrap=True,
        markup=False,
    )
    return EXIT_OK


async def sources_export(ctx: Ctx, args: argparse.Namespace) -> int:
    from bot import opml
    from bot.redact import redact

    async with open_db(ctx) as store:
        feeds = await store.feeds.list()
    text = opml.render(feeds)
    tokened = sum(redact(feed.location) != feed.location for feed in feeds)
    if tokened:
        ctx.warn(
            f"the export holds {tokened} URL{'s' if tokened != 1 else ''} with secret parts "
            "(tokens, passwords) as they are, for a reader to follow: keep it private"
        )
    if args.file is None or str(args.file) == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.file.write_text(text, encoding="utf-8")
    except OSError as error:
        ctx.error(f"cannot write {args.file}: {error.strerror or error}")
        return EXIT_FAILED
    return _said(
        ctx,
        {"exported": len(feeds), "file": str(args.file)},
        f"Exported {len(feeds)} followed blog{'s' if len(feeds) != 1 else ''} to {args.file}.",
    )


SOURCE_ACTIONS: dict[str, Callable[[Ctx, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "add": sources_add,
    "set": sources_set,
    "pause": sources_pause,
    "resume": sources_resume,
    "remove": sources_remove,
    "import": sources_import,
    "export": sources_export,
}


# --- subscriptions -----------------------------------------------------------------------------------


def read_target_file(
    path: Path, platform: str, *, flavor: str | None, thread: str | None
) -> list[tuple[Any, str | None]]:
    """(target, keywords) for each line of FILE: `TARGET [KEYWORDS] [# comment]`.

    A `#` at the start of a line or after a space starts a comment. Every bad line is reported
    (UserError with one detail per line), and then nothing is subscribed."""
    from bot.platforms import operator_target
    from storage.query import QueryError, compile_query

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    entries: list[tuple[Any, str | None]] = []
    problems: list[str] = []
    readable: set[str] = set()  # keywords already compiled: a file repeats a few many times
    for number, raw in enumerate(lines, start=1):
        line = _INLINE_COMMENT.sub("", raw).strip() if "#" in raw else raw.strip()
        if not line:
            continue
        address, _, rest = line.replace("\t", " ").partition(" ")
        keywords = rest.strip() or None
        try:
            target = operator_target(platform, address, thread=thread, flavor=flavor)
            if keywords is not None and keywords not in readable:
                compile_query(keywords)
                readable.add(keywords)
        except (QueryError, ValueError) as error:
            problems.append(f"{path} line {number}: {one_line(str(error))}")
            continue
        entries.append((target, keywords))
    if problems:
        count = f"{len(problems)} bad line{'s' if len(problems) != 1 else ''}"
        raise UserError(f"{path}: {count}, nothing subscribed", details=problems)
    if not entries:
        raise UserError(f"{path}: no targets in it (one per line, # for comments)")
    return entries


_INLINE_COMMENT = re.compile(r"(?:^|\s)#.*$")


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off while a bulk command builds its values: it re-walks every live
    object each time enough new ones pile up, and 100k targets with their subscriptions (values
    without reference cycles, kept until the command ends) spent ~40% of `subscribe --from-file`
    in it. Reference counting still frees everything else at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _describe(sub: Subscription) -> str:
    from bot.platforms import mask_address, masked_webhook

    parts = [f"#{sub.id} {sub.target.platform} {mask_address(sub.target)}"]
    if (webhook := masked_webhook(sub.target)) is not None:
        parts[0] += f" via webhook {webhook}"
    if sub.target.thread:
        parts.append(f"thread {sub.target.thread}")
    parts.append(f"keywords {sub.query!r}" if sub.query else "every post")
    if sub.source_id:
        parts.append(f"blog {sub.source_id}")
    return ", ".join(parts)


async def cmd_subscribe(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.text import Text

    from bot.platforms import operator_target, platform, subscription_json
    from storage.query import compile_query
    from storage.values import NewSubscription

    policy = platform(args.platform).edit_policy(args.edit_policy)
    backfill = ctx.settings.backfill if args.backfill is None else args.backfill
    if not 0 <= backfill <= 50:
        raise UserError("--backfill is between 0 and 50")
    if args.from_file is not None and args.target is not None:
        raise UserError("give either a TARGET or --from-file, not both")
    if args.from_file is None and args.target is None:
        raise UserError("give a TARGET (chat id, @channel, webhook URL) or --from-file FILE")
    if args.from_file is not None and args.keywords is not None:
        raise UserError("with --from-file, keywords go on each line after the target")
    async with open_db(ctx, create=True) as store:
        posts = store.posts
        subscriptions = store.subscriptions
        source_id = await resolve_source(posts, args.source)
        with cyclic_gc_paused():  # a file may name 100k targets
            if args.from_file is not None:
                entries = read_target_file(
                    args.from_file, args.platform, flavor=args.flavor, thread=args.thread
                )
            else:
                target = operator_target(
                    args.platform,
                    args.target,
                    thread=args.thread,
                    flavor=args.flavor,
                    webhook=args.webhook,
                )
                entries = [(target, args.keywords)]
            results = await subscriptions.put(
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
    for keywords in dict.fromkeys(keywords for _, keywords in entries if keywords):
        notice = compile_query(keywords).notice
        if notice:  # e.g. a lowercase "or": the operator may have meant OR
            ctx.warn(f"keywords {keywords!r}: {notice}")
    created = [r for r in results if r.created]
    existing = [r for r in results if not r.created]
    if ctx.json:
        ctx.emit_json(
            {
                "created": [subscription_json(r.subscription) for r in created],
                "existing": [
                    {**subscription_json(r.subscription), "changed": list(r.changed)}
                    for r in existing
                ],
            }
        )
        return EXIT_OK
    for added in created[:LISTED]:
        ctx.out.print(
            Text("Subscribed ", style="green") + Text(_describe(added.subscription)),
            soft_wrap=True,
        )
    _say_how_many_more(ctx, created, "subscribed")
    for added in existing[:LISTED]:
        line = Text("Already subscribed ") + Text(_describe(added.subscription))
        if added.changed:
            line += Text("; changed: ", style="yellow") + Text(", ".join(added.changed))
        ctx.out.print(line, soft_wrap=True)
    _say_how_many_more(ctx, existing, "already subscribed")
    return EXIT_OK


LISTED = 20
"""Subscriptions `subscribe` names one line each (of the new ones, and of those already there);
beyond, one line says how many more. A file of 100k targets printed line by line took longer
than subscribing them (~0.2 ms a line through rich); --json lists every one."""


def _say_how_many_more(ctx: Ctx, results: Sequence[Added], what: str) -> None:
    rest = results[LISTED:]
    if not rest:
        return
    ids = [added.subscription.id for added in rest]
    changed = sum(1 for added in rest if added.changed)
    line = f"… and {len(rest):,} more {what}, #{min(ids)} to #{max(ids)}"
    if changed:
        line += f" ({changed:,} of them changed)"
    ctx.out.print(f"{line}; `livedesk subscriptions` lists them", soft_wrap=True)


async def cmd_subscriptions(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from bot.models import SubscriptionState
    from bot.platforms import mask_address, masked_webhook, subscription_json, waiting_lines

    async with open_db(ctx) as store:
        subs = await store.subscriptions.list(platform=args.platform)
    active = Counter(s.target.platform for s in subs if s.state is SubscriptionState.ACTIVE)
    for line in waiting_lines(ctx.settings, active):
        ctx.warn(line)
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
            state.append(f" ({printable(sub.reason)})", style="dim")
        flavor = sub.target.options.get("flavor")
        platform = f"{sub.target.platform}/{flavor}" if flavor and flavor != "slack" else ""
        target = Text(mask_address(sub.target))
        if (webhook := masked_webhook(sub.target)) is not None:
            target.append(f" via webhook {webhook}", style="dim")
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

    async with open_db(ctx) as store:
        removed = await store.subscriptions.remove(args.subscription_id)
    if not removed:
        raise UserError(f"no subscription #{args.subscription_id}")
    if ctx.json:
        ctx.emit_json({"removed": args.subscription_id})
    else:
        ctx.out.print(f"Removed subscription #{args.subscription_id}.")
    return EXIT_OK


async def _set_state(ctx: Ctx, subscription_id: int, state_name: str, verb: str) -> int:
    from bot.models import SubscriptionState

    async with open_db(ctx) as store:
        changed = await store.subscriptions.set_state(
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


DEAD_LISTED = 100_000  # dead deliveries `deliveries --dead` lists (and `retry ID` looks among)


async def cmd_deliveries(ctx: Ctx, args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from bot.platforms import mask_address

    async with open_db(ctx) as store:
        outbox = store.outbox
        if args.action == "retry":
            if args.ids:
                dead_ids = {item.id for item in await outbox.dead(limit=DEAD_LISTED)}
                unknown = [i for i in dict.fromkeys(args.ids) if i not in dead_ids]
                if unknown:
                    raise UserError(
                        f"no dead deliver{'y' if len(unknown) == 1 else 'ies'} "
                        f"{', '.join(f'#{i}' for i in unknown)}; nothing queued "
                        "(`livedesk deliveries --dead` lists them)"
                    )
            count = await outbox.retry_dead(ids=args.ids or None)
            if ctx.json:
                ctx.emit_json({"retried": count})
            else:
                ctx.out.print(f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again.")
            return EXIT_OK
        counts = await outbox.counts()
        dead = await outbox.dead(limit=DEAD_LISTED) if args.dead else []
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
                Text(printable(item.last_error or ""), style="red"),
            )
        ctx.out.print(listing)
        ctx.out.print("Queue them again with `livedesk deliveries retry [ID...]`.")
    return EXIT_OK


def _dead_json(item: DeadDelivery) -> dict[str, Any]:
    """A dead delivery as plain data; webhook URLs masked."""
    from bot.platforms import mask_address

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


async def cmd_migrate(ctx: Ctx, args: argparse.Namespace) -> int:
    """Copy the SQLite store into PostgreSQL (storage.migrate: idempotent, all or nothing)."""
    from rich.table import Table

    from storage.migrate import run_migrate
    from storage.pg_db import masked
    from storage.store import is_postgres_url

    url = str(args.url).strip()
    if not is_postgres_url(url):
        raise UserError(f"{masked(url)} is not a postgresql:// URL")
    if ctx.database_url is not None:
        raise UserError("migrate copies an SQLite file: give it with --db PATH, not a URL")
    interactive = not ctx.json and ctx.err.is_terminal
    bar = MigrationBar(ctx.err) if interactive else None
    try:
        report = await run_migrate(ctx.db_path, url, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if ctx.json:
        ctx.emit_json(
            {
                "from": str(report.source),
                "to": report.target,
                "tables": {
                    name: {
                        "copied": t.copied,
                        "already_there": t.already_there,
                        "updated": t.updated,
                    }
                    for name, t in report.tables.items()
                },
            }
        )
        return EXIT_OK
    table = Table(box=None, pad_edge=False)
    for column in ("table", "copied", "already there", "updated"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, t in report.tables.items():
        table.add_row(name, f"{t.copied:,}", f"{t.already_there:,}", f"{t.updated:,}")
    ctx.out.print(table)
    what = f"{report.copied:,} rows copied" if report.copied else "nothing new to copy"
    ctx.out.print(f"{report.source} → {report.target}: {what}", soft_wrap=True)
    return EXIT_OK


# --- workers --------------------------------------------------------------------------------------


async def cmd_workers(ctx: Ctx, args: argparse.Namespace) -> int:
    """The fleet's workers (storage.pg_fleet): who runs, how recently it beat, what it leads."""
    from datetime import UTC, datetime

    from rich.table import Table
    from rich.text import Text

    from bot.fleet import STALE_AFTER
    from storage.pg_db import PgDatabase
    from storage.pg_fleet import Fleet
    from storage.pg_schema import PostgresUnusable

    def ago(seconds: float) -> str:
        """A heartbeat's age as an operator reads it: `3 s ago`, `5 min ago`, `2 h ago`."""
        whole = int(seconds)
        if whole < 120:
            return f"{whole} s ago"
        if whole < 2 * 3600:
            return f"{whole // 60} min ago"
        if whole < 2 * 86400:
            return f"{whole // 3600} h ago"
        return f"{whole // 86400} days ago"

    if ctx.database_url is None:
        if ctx.json:
            ctx.emit_json([])
        else:
            ctx.out.print(
                f"{ctx.shown_store} is an SQLite store: one `livedesk run` serves it, "
                "so there is no fleet of workers to list.",
                soft_wrap=True,
            )
        return EXIT_OK
    db = await PgDatabase.open(ctx.database_url)
    try:
        workers = await Fleet(db).workers(STALE_AFTER)
    except ConnectionError as error:
        raise PostgresUnusable(str(error)) from None
    finally:
        await db.close()
    if ctx.json:
        ctx.emit_json(
            [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "started_at": w.started_at.isoformat(),
                    "heartbeat_at": datetime.fromtimestamp(w.heartbeat_at, UTC).isoformat(),
                    "heartbeat_age": round(w.heartbeat_age, 1),
                    "live": w.live,
                    "leases": w.leases,
                    "roles": list(w.roles),
                }
                for w in workers
            ]
        )
        return EXIT_OK
    if not workers:
        ctx.out.print(f"No worker runs on {ctx.shown_store}.", soft_wrap=True)
        return EXIT_OK
    table = Table(title="Workers", title_justify="left")
    for column in ("id", "host", "pid", "started", "heartbeat", "state", "leases", "roles"):
        table.add_column(column, justify="right" if column in ("pid", "leases") else "left")
    for w in workers:
        table.add_row(
            Text(printable(w.id)),
            Text(printable(w.host)),
            str(w.pid),
            ctx.when(w.started_at, seconds=True),
            ago(w.heartbeat_age),
            Text("live", style="green") if w.live else Text("stale", style="yellow"),
            str(w.leases),
            Text(printable(", ".join(w.roles)) or "–"),
        )
    ctx.out.print(table)
    live = sum(w.live for w in workers)
    ctx.out.print(f"{live} live, {len(workers) - live} stale (no heartbeat for {STALE_AFTER:g} s).")
    return EXIT_OK


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
    "migrate": cmd_migrate,
    "workers": cmd_workers,
}


if __name__ == "__main__":
    raise SystemExit(main())
