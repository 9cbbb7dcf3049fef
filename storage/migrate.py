"""The copy of an SQLite store into PostgreSQL (`livedesk migrate postgresql://…`).

Every table is copied with its keys as they are (post rowids, subscription and delivery ids, and
SQLite's implicit rowid of `sources` as the blog's `number`), so the versions and deliveries that
point at them and the numbers people type stay right; then the identity sequences are moved past the
highest id copied, so new rows never collide with copied ones. The copy holds the post store's
ingest lock (storage.pg_posts.INGEST_LOCK) from its first statement to its commit: a Livedesk
ingesting into the same database meanwhile waits, rather than numbering a post or a blog with a
number the copy is writing. Rows travel in batches by
`COPY` into a temporary table, and from there into the real one: the copy is one transaction in
PostgreSQL (all of it or nothing) over one read snapshot of the SQLite file (a Livedesk running on it
meanwhile changes nothing in what is copied).

Running it again is safe: a row whose key PostgreSQL already has is not copied twice ("already
there"), so a second run copies nothing, and a run after the SQLite store grew copies only the new
rows. A row already there is left as PostgreSQL has it (once Livedesk runs on PostgreSQL, it is the
live store: an older SQLite state must not undo what it did), except where SQLite is plainly ahead,
which a copy taken while the SQLite Livedesk was still running leaves behind:
- a post edited since (SQLite's version is higher): its row is brought to SQLite's (the versions
  its edits replaced are new rows in post_versions anyway: both stores keep only those there, the
  current text being the posts row, since SQLite schema 9 and PostgreSQL migration 7);
- a delivery still pending in PostgreSQL that SQLite has since sent, killed or skipped: its state,
  attempts, error and message reference are SQLite's (otherwise it would be sent twice);
- a blog imported since (SQLite's `imported_at` is later): its title, fetch state and error;
- a fetch error seen since (SQLite's `at` is later);
- a followed blog fetched since (SQLite's `last_fetch_at` is later): its schedule, error and blog.
Those rows are counted as `updated`; nothing else in a row already there is changed.

A *different* store is refused, before anything is committed (MigrateError, one line): a row under
the same key whose identity differs (what never changes in a Livedesk row once written: a blog's
`added_at`; a post's id and blog; a version's time and content hash; a subscription's platform,
creator and creation time; a delivery's post, event and creation time, as its version follows
edits until it is sent and its subscription moves with a merged target), or a unique name held by
another key (a post id under another rowid; a blog number under another blog; a subscription's
target under another id). Rows PostgreSQL has and SQLite has not are left alone: they are what Livedesk did on
PostgreSQL after an earlier copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
from psycopg import sql

from storage.db import Database, DatabaseUnusable, MigrationProgress
from storage.pg_db import Connection, PgDatabase
from storage.pg_posts import INGEST_LOCK

BATCH = 5000
"""Rows per COPY batch (and per progress report)."""


class MigrateError(Exception):
    """The copy cannot be made (a different store in PostgreSQL, a row PostgreSQL cannot hold);
    the message is one line for the operator, naming the database without its password."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    """What a copy did with one table's rows."""

    copied: int = 0
    """Rows PostgreSQL did not have, now copied."""
    already_there: int = 0
    """Rows PostgreSQL had already (under the same key, with the same identity)."""
    updated: int = 0
    """Of those already there, rows brought to SQLite's state where SQLite was ahead."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """Counts per table, in the order the tables are copied."""

    source: Path
    target: str
    """The PostgreSQL database, password masked."""
    tables: dict[str, TableCopy] = field(default_factory=dict)

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables.values())

    @property
    def updated(self) -> int:
        return sum(t.updated for t in self.tables.values())


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    identity: tuple[str, ...] = ()
    """Columns that never change once a row is written: a difference is another store."""
    unique: tuple[str, ...] = ()
    """Expressions over a row (`{}` for the table alias) that are unique in the table besides the key."""
    unique_what: str = ""
    """What those expressions are, in words, for the refusal."""
    advance: str | None = None
    """The condition (over `b`, SQLite's row, and `t`, PostgreSQL's) under which SQLite is ahead."""
    advancing: tuple[str, ...] = ()
    """The columns brought to SQLite's values when it is ahead."""
    sequence: str | None = None
    """The identity column whose sequence is moved past the copied ids."""
    read_as: tuple[tuple[str, str], ...] = ()
    """(column, SQLite expression) for the columns SQLite holds under another name."""

    @property
    def sqlite_columns(self) -> str:
        """The SELECT list that reads `columns` from SQLite's table, in their order."""
        expressions = dict(self.read_as)
        return ", ".join(
            f"{expressions[c]} AS {c}" if c in expressions else c for c in self.columns
        )


_POST_TEXTS = (
    "updated_at",
    "title",
    "byline",
    "authors",
    "location",
    "body",
    "images",
    "background",
    "permalink",
    "content_hash",
)
_DELIVERY_OUTCOME = (
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "message_ref",
    "sent_at",
)

TABLES: tuple[_Table, ...] = (
    _Table(
        "sources",
        (
            "id",
            "number",
            "title",
            "url",
            "kind",
            "location",
            "etag",
            "last_modified",
            "added_at",
            "imported_at",
            "last_error",
        ),
        key=("id",),
        identity=("added_at",),
        unique=("{}.number",),
        unique_what="blog number",
        advance="coalesce(b.imported_at, '') > coalesce(t.imported_at, '')",
        advancing=(
            "title",
            "url",
            "kind",
            "location",
            "etag",
            "last_modified",
            "imported_at",
            "last_error",
        ),
        sequence="number",
        read_as=(("number", "rowid"),),
    ),
    _Table(
        "posts",
        (
            "rowid",
            "id",
            "source_id",
            "published_at",
            *_POST_TEXTS,
            "version",
            "recorded_at",
            "joined_words",
            "time_estimated",
        ),
        key=("rowid",),
        identity=("id", "source_id"),
        unique=("{}.id",),
        unique_what="post id",
        advance="b.version > t.version",
        advancing=(
            "published_at",
            *_POST_TEXTS,
            "version",
            "recorded_at",
            "joined_words",
            "time_estimated",
        ),
        sequence="rowid",
    ),
    _Table(
        "post_versions",
        ("post_rowid", "version", "recorded_at", *_POST_TEXTS),
        key=("post_rowid", "version"),
        identity=("recorded_at", "content_hash"),
    ),
    _Table(
        "subscriptions",
        (
            "id",
            "platform",
            "address",
            "thread",
            "target_kind",
            "options",
            "source_id",
            "query",
            "edit_policy",
            "created_by",
            "created_at",
            "state",
            "reason",
        ),
        key=("id",),
        identity=("platform", "created_by", "created_at"),
        unique=(  # the subscriptions_unique index
            "{}.platform",
            "{}.address",
            "coalesce({}.thread, '')",
            "coalesce({}.source_id, '')",
            "coalesce({}.query, '')",
        ),
        unique_what="target, blog and keywords",
        sequence="id",
    ),
    _Table(
        "deliveries",
        (
            "id",
            "subscription_id",
            "post_rowid",
            "version",
            "event",
            "order_key",
            *_DELIVERY_OUTCOME,
            "created_at",
        ),
        key=("id",),
        identity=("post_rowid", "event", "created_at"),
        advance="t.state = 'pending' AND b.state <> 'pending'",
        advancing=("version", *_DELIVERY_OUTCOME),
        sequence="id",
    ),
    _Table(
        "fetch_errors",
        ("location", "error", "at"),
        key=("location",),
        advance="b.at > t.at",
        advancing=("error", "at"),
    ),
    _Table("slack_replays", ("signature", "seen_at"), key=("signature",)),
    _Table(
        "feeds",
        (
            "id",
            "location",
            "poll_seconds",
            "enabled",
            "origin",
            "title",
            "added_at",
            "last_fetch_at",
            "last_error",
            "next_attempt_at",
            "failures",
            "source_id",
        ),
        key=("id",),
        identity=("added_at",),
        unique=("{}.location",),
        unique_what="feed location",
        advance="coalesce(b.last_fetch_at, '') > coalesce(t.last_fetch_at, '')",
        advancing=("last_fetch_at", "last_error", "next_attempt_at", "failures", "source_id"),
        sequence="id",
    ),
)
"""Every table of the store, parents before the rows that point at them."""


async def copy_to_postgres(
    sqlite_path: Path, pg: PgDatabase, *, progress: MigrationProgress | None = None
) -> CopyReport:
    """Copy the SQLite store at `sqlite_path` into `pg` (see the module doc for the rules) and say
    what was copied; MigrateError when PostgreSQL holds a different store or refuses a row,
    DatabaseUnusable when the file is not a usable Livedesk store. `progress` is told
    (what, done, total) per table, and about a migration of an older SQLite file first."""
    sqlite_path = Path(sqlite_path)
    if not sqlite_path.is_file():
        raise DatabaseUnusable(f"{sqlite_path}: no such Livedesk database file")
    report = CopyReport(source=sqlite_path, target=pg.shown_as)
    async with await Database.open(sqlite_path, create=False, progress=progress) as sqlite:
        reader = sqlite.reader
        await reader.execute("BEGIN")  # one snapshot for every table
        doing = "connecting"
        try:
            async with pg.write() as conn:
                doing = "waiting for an import into PostgreSQL to finish"
                # Held until the commit: no post or blog is numbered by an ingest meanwhile.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK,))
                for table in TABLES:
                    doing = f"copying {table.name}"
                    report.tables[table.name] = await _copy_table(
                        reader, conn, table, report, progress
                    )
                doing = "moving the id sequences"
                for table in TABLES:
                    if table.sequence is not None:
                        await _move_sequence(conn, table.name, table.sequence)
                doing = "committing"
        except psycopg.Error as error:
            raise MigrateError(
                f"cannot copy {sqlite_path} into {pg.shown_as} ({doing}; nothing was copied): "
                f"{_one_line(error)}"
            ) from None
        finally:
            await reader.execute("ROLLBACK")
    return report


async def run_migrate(
    sqlite_path: Path, url: str, *, progress: MigrationProgress | None = None
) -> CopyReport:
    """What `livedesk migrate URL` does: open (and migrate) the PostgreSQL database at `url`, copy
    the SQLite store into it, close it. Prints nothing; errors are one line (MigrateError,
    PostgresUnusable, DatabaseUnusable)."""
    pg = await PgDatabase.open(url, progress=progress)
    try:
        return await copy_to_postgres(sqlite_path, pg, progress=progress)
    finally:
        await pg.close()


async def _copy_table(
    reader: aiosqlite.Connection,
    conn: Connection,
    table: _Table,
    report: CopyReport,
    progress: MigrationProgress | None,
) -> TableCopy:
    what = f"copying {table.name}"
    key = ", ".join(table.key)
    async with reader.execute(f"SELECT count(*) FROM {table.name}") as cur:
        counted = await cur.fetchone()
    total = int(counted[0]) if counted is not None else 0
    if progress is not None:
        progress(what, 0, total)
    staging = sql.Identifier(f"migrate_{table.name}")
    await conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
            staging, sql.Identifier(table.name)
        )
    )
    copied = already = updated = done = 0
    last: Sequence[Any] | None = None
    while True:
        after = "" if last is None else f"WHERE ({key}) > ({', '.join('?' * len(table.key))})"
        async with reader.execute(
            f"SELECT {table.sqlite_columns} FROM {table.name} {after} ORDER BY {key} LIMIT {BATCH}",
            () if last is None else tuple(last),
        ) as cur:
            rows = [tuple(row) for row in await cur.fetchall()]
        if not rows:
            break
        key_at = [table.columns.index(k) for k in table.key]
        last = [rows[-1][i] for i in key_at]
        await conn.execute(sql.SQL("TRUNCATE {}").format(staging))
        async with conn.cursor() as cursor:
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                staging, sql.SQL(", ").join(map(sql.Identifier, table.columns))
            )
            async with cursor.copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
        await _refuse_another_store(conn, table, report)
        if table.advance is not None:
            updated += await _bring_forward(conn, table)
        inserted = await _insert_new(conn, table)
        copied += inserted
        already += len(rows) - inserted
        done += len(rows)
        if progress is not None:
            progress(what, done, total)
    return TableCopy(copied=copied, already_there=already, updated=updated)


def _same_key(table: _Table) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("t.{0} = b.{0}").format(sql.Identifier(k)) for k in table.key
    )


async def _refuse_another_store(conn: Connection, table: _Table, report: CopyReport) -> None:
    """MigrateError when a staged row (`b`) has another identity than PostgreSQL's row (`t`) under
    the same key, or a unique name PostgreSQL holds under another key."""
    staging = sql.Identifier(f"migrate_{table.name}")
    target = sql.Identifier(table.name)
    keys = sql.SQL(", ").join(sql.SQL("b.{}").format(sql.Identifier(k)) for k in table.key)
    if table.identity:
        ident = [sql.Identifier(c) for c in table.identity]
        cur = await conn.execute(
            sql.SQL(
                "SELECT {keys}, {theirs}, {ours} FROM {staging} b JOIN {target} t ON {same} "
                "WHERE ({b_ident}) IS DISTINCT FROM ({t_ident}) LIMIT 1"
            ).format(
                keys=keys,
                theirs=sql.SQL(", ").join(
                    sql.SQL("t.{} AS {}").format(c, sql.Identifier(f"there_{i}"))
                    for i, c in enumerate(ident)
                ),
                ours=sql.SQL(", ").join(
                    sql.SQL("b.{} AS {}").format(c, sql.Identifier(f"here_{i}"))
                    for i, c in enumerate(ident)
                ),
                staging=staging,
                target=target,
                same=_same_key(table),
                b_ident=sql.SQL(", ").join(sql.SQL("b.{}").format(c) for c in ident),
                t_ident=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in ident),
            )
        )
        found = await cur.fetchone()
        if found is not None:
            values = list(found.values())
            n, m = len(table.key), len(table.identity)
            shown = ", ".join(
                f"{column}: {there!r} there, {here!r} in the file"
                for column, there, here in zip(
                    table.identity, values[n : n + m], values[n + m :], strict=True
                )
                if there != here
            )
            raise MigrateError(
                f"{report.target} already holds a different Livedesk store than "
                f"{report.source}: {table.name} {_key_text(table, values[:n])} is not the same "
                f"row ({shown}); copy into an empty database"
            )
    if table.unique:
        cur = await conn.execute(
            sql.SQL(
                "SELECT {keys} FROM {staging} b JOIN {target} t ON ({b_unique}) = ({t_unique}) "
                "WHERE NOT ({same}) LIMIT 1"
            ).format(
                keys=keys,
                staging=staging,
                target=target,
                b_unique=sql.SQL(", ").join(sql.SQL(u.format("b")) for u in table.unique),
                t_unique=sql.SQL(", ").join(sql.SQL(u.format("t")) for u in table.unique),
                same=_same_key(table),
            )
        )
        found = await cur.fetchone()
        if found is not None:
            raise MigrateError(
                f"{report.target} already holds a different Livedesk store than "
                f"{report.source}: {table.name} {_key_text(table, list(found.values()))} of the "
                f"file has the same {table.unique_what} as another row there; "
                "copy into an empty database"
            )


def _key_text(table: _Table, values: Sequence[Any]) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in zip(table.key, values, strict=True))


async def _bring_forward(conn: Connection, table: _Table) -> int:
    """Bring the rows already there to SQLite's state where SQLite is ahead; how many were."""
    assert table.advance is not None
    setting = sql.SQL(", ").join(
        sql.SQL("{0} = b.{0}").format(sql.Identifier(c)) for c in table.advancing
    )
    lease = sql.SQL(", lease_owner = NULL, lease_until = NULL")
    cur = await conn.execute(
        sql.SQL(
            "UPDATE {target} t SET {setting}{lease} FROM {staging} b WHERE {same} AND ({when})"
        ).format(
            target=sql.Identifier(table.name),
            setting=setting,
            lease=lease if table.name == "deliveries" else sql.SQL(""),
            staging=sql.Identifier(f"migrate_{table.name}"),
            same=_same_key(table),
            when=sql.SQL(table.advance),  # a constant of this module
        )
    )
    return max(cur.rowcount, 0)


async def _insert_new(conn: Connection, table: _Table) -> int:
    """Insert the staged rows PostgreSQL does not have; how many."""
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {target} ({columns}) SELECT {columns} "
            "FROM {staging} b WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same}) "
            "ORDER BY {key}"
        ).format(
            target=sql.Identifier(table.name),
            columns=columns,
            staging=sql.Identifier(f"migrate_{table.name}"),
            same=_same_key(table),
            key=sql.SQL(", ").join(map(sql.Identifier, table.key)),
        )
    )
    return max(cur.rowcount, 0)


async def _move_sequence(conn: Connection, table: str, column: str) -> None:
    """Move the identity sequence of `table.column` past its highest id (never back)."""
    cur = await conn.execute(
        sql.SQL("SELECT pg_get_serial_sequence(%s, %s) AS seq, max({c}) AS top FROM {t}").format(
            c=sql.Identifier(column), t=sql.Identifier(table)
        ),
        (table, column),
    )
    row = await cur.fetchone()
    if row is None or row["top"] is None:
        return
    cur = await conn.execute(
        "SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname, sequencename) = %s",
        (row["seq"],),
    )
    current = await cur.fetchone()
    last = None if current is None else current["last_value"]
    if last is None or int(last) < int(row["top"]):
        await conn.execute("SELECT setval(%s, %s)", (row["seq"], row["top"]))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
