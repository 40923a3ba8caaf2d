"""Copy this database to another PostgreSQL server, verified (`manage.py move_data`).

The source is the database Django's default connection points at (DATABASE_URL,
or the embedded server). It is only ever read, in one REPEATABLE READ READ ONLY
transaction on a connection whose every transaction is read-only, so the copy
and the source's digests see one consistent state and a bug here cannot write
to it.

The target is migrated with this code's migrations, then every table is copied
in one transaction, each after the tables its foreign keys point to: rows
stream from the source's `COPY ... TO STDOUT` into a temporary table on the
target (`COPY ... FROM STDIN`), then `INSERT ... SELECT ... ON CONFLICT DO
NOTHING`, in batches (straight into the table when it is empty). Rows already
on the target are left alone, so a run can be repeated; an interrupted run
(Ctrl-C, SIGTERM, a lost connection) commits nothing. Last, both sides are
read back in primary-key order and each table's rows (COPY's text form, under
the same session settings on both servers) are hashed with SHA-256: equal row
counts and digests prove the target holds the source's rows, byte for byte.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import environ
import psycopg
from django.apps import apps
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from psycopg import sql

from config.hotpath.db import LIBPQ_KEYS

TARGET_ALIAS = "move_target"
BATCH_ROWS = 50_000
READ_ONLY_OPTION = "-c default_transaction_read_only=on"

# Session settings that fix the text form of every value in COPY's output, so
# that both servers print the same row as the same bytes whatever their
# configuration (postgresql.conf, the role's or the database's defaults).
CANONICAL_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}

# Tables with a model that are deliberately not copied, and why.
SKIPPED = {
    Session._meta.db_table: (
        "not copied: sign-in tokens, signed with SECRET_KEY (which production "
        "sets anew); users sign in again"
    ),
}
# Tables without a model that migrations create. django_migrations is written by
# `migrate` on the target; the two sides are compared as sets of (app, name).
MIGRATIONS_TABLE = MigrationRecorder.Migration._meta.db_table
# Rows that `migrate` creates itself (post_migrate), with ids in the order it
# met the models: a database migrated step by step over releases has other ids
# than a new one. Admin log entries and granted permissions refer to these ids,
# so the target must have the source's.
GENERATED_TABLES = (Permission._meta.db_table, ContentType._meta.db_table)

Output = Callable[[str], None]


class MoveError(Exception):
    """The move cannot start or did not produce an identical copy."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...]
    # Text-like key columns sort with the "C" collation: the two servers may
    # have other default collations, and the digests need one row order.
    key_collatable: tuple[bool, ...]

    @property
    def signature(self) -> dict[str, str]:
        return dict(zip(self.columns, self.types, strict=True))


@dataclass
class TableResult:
    name: str
    source_rows: int = 0
    source_digest: str = ""
    target_rows: int | None = None  # None: the table is not on the target (dry run)
    target_digest: str | None = None
    copied: int = 0

    @property
    def matches(self) -> bool:
        return (self.source_rows, self.source_digest) == (self.target_rows, self.target_digest)


@dataclass
class MoveReport:
    target: str
    dry_run: bool
    tables: list[TableResult] = field(default_factory=list)
    migrations: int = 0
    pending_migrations: int = 0
    seconds: float = 0.0

    @property
    def mismatches(self) -> list[TableResult]:
        return [t for t in self.tables if not t.matches]

    def lines(self) -> list[str]:
        head = f"{'table':<32} {'source rows':>12} {'target rows':>12} {'copied':>10}  sha256"
        lines = [head, "-" * len(head)]
        for t in self.tables:
            target = "-" if t.target_rows is None else f"{t.target_rows:,}"
            if t.matches:
                digest = f"same {t.source_digest[:16]}"
            elif t.target_rows is None:
                digest = f"{t.source_digest[:16]} (not on the target)"
            else:
                digest = f"DIFFERS {t.source_digest[:16]} / {(t.target_digest or '')[:16]}"
            copied = "-" if self.dry_run else f"{t.copied:,}"
            lines.append(f"{t.name:<32} {t.source_rows:>12,} {target:>12} {copied:>10}  {digest}")
        for name, why in SKIPPED.items():
            lines.append(f"{name:<32} {why}")
        if self.dry_run and self.pending_migrations:
            state = f"{self.pending_migrations} to apply on the target"
        else:
            state = "same on both sides"
        lines.append(f"{MIGRATIONS_TABLE:<32} {self.migrations} migrations, {state}")
        rows = sum(t.source_rows for t in self.tables)
        copied = sum(t.copied for t in self.tables)
        lines.append("")
        if self.dry_run:
            lines.append(
                f"Dry run: {len(self.tables)} tables, {rows:,} rows in the source; "
                f"{len(self.tables) - len(self.mismatches)} tables already identical on "
                f"{self.target}. Nothing was written."
            )
        elif self.mismatches:
            names = ", ".join(t.name for t in self.mismatches)
            lines.append(f"MISMATCH in {len(self.mismatches)} table(s): {names}.")
        else:
            lines.append(
                f"Moved {len(self.tables)} tables, {rows:,} rows ({copied:,} new) to "
                f"{self.target} in {self.seconds:.1f} s; every row count and digest matches."
            )
        return lines


# --- What to copy, in which order ---------------------------------------------------------


def copy_order() -> list[str]:
    """Every model's table (auto-created many-to-many tables too), each after the
    tables its foreign keys point to, from the app registry: a new model is
    copied without anyone editing a list here."""
    models = [
        m
        for m in apps.get_models(include_auto_created=True)
        if m._meta.managed and not m._meta.proxy and not m._meta.swapped
    ]
    tables = [m._meta.db_table for m in models]
    needs: dict[str, set[str]] = {}
    for model in models:
        own = model._meta.db_table
        needs[own] = {
            f.related_model._meta.db_table
            for f in model._meta.concrete_fields
            if f.is_relation and f.related_model is not None
        } & set(tables) - {own}
    order: list[str] = []
    placed: set[str] = set()
    pending = list(dict.fromkeys(tables))
    while pending:
        ready = [t for t in pending if needs[t] <= placed]
        if not ready:
            # A cycle of foreign keys. Django creates them DEFERRABLE INITIALLY
            # DEFERRED and the copy is one transaction, so any order commits.
            ready = pending[:1]
        order.extend(ready)
        placed.update(ready)
        pending = [t for t in pending if t not in placed]
    return order


def check_coverage(existing: set[str], order: list[str]) -> None:
    """Fail on a table that no model, skip rule or known migration table covers:
    it would silently stay behind."""
    uncovered = sorted(existing - set(order) - {MIGRATIONS_TABLE})
    if uncovered:
        raise MoveError(
            f"The source has table(s) that move_data does not know how to copy: "
            f"{', '.join(uncovered)}. Give each a model, or handle it in config/move.py."
        )


# --- Connections ------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or the query) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = urlencode(
        [
            (k, "***" if k.lower() == "password" else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def target_config(url: str) -> dict[str, Any]:
    if urlsplit(url).scheme not in ("postgres", "postgresql", "pgsql"):
        raise MoveError(f"--to must be a postgresql:// URL, not {mask_url(url)!r}.")
    config = environ.Env.db_url_config(url)
    if not config.get("NAME"):
        raise MoveError(f"--to names no database: {mask_url(url)}.")
    return config


def _register_target(url: str, *, read_only: bool) -> None:
    """A Django database alias for the target, so `migrate` can run on it."""
    config = target_config(url)
    if read_only:
        options = config.setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} {READ_ONLY_OPTION}".strip()
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: {}, TARGET_ALIAS: config})
    connections.settings[TARGET_ALIAS] = configured[TARGET_ALIAS]


def _unregister_target() -> None:
    if TARGET_ALIAS in connections.settings:
        connections[TARGET_ALIAS].close()
        del connections[TARGET_ALIAS]
        del connections.settings[TARGET_ALIAS]


def _libpq_params(alias: str) -> dict[str, Any]:
    params = connections[alias].get_connection_params()
    kwargs = {k: v for k, v in params.items() if k in LIBPQ_KEYS and v not in ("", None)}
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "tollgate-move-data")
    kwargs["client_encoding"] = "UTF8"
    return kwargs


def _connect(params: dict[str, Any], what: str) -> psycopg.Connection:
    try:
        return psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        message = str(exc).strip()
        if params.get("password"):
            message = message.replace(str(params["password"]), "***")
        raise MoveError(f"Cannot connect to the {what}: {message}") from None


def _server_identity(conn: psycopg.Connection) -> tuple[Any, ...]:
    database = conn.execute("SELECT current_database()").fetchone()[0]
    try:
        system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        info = conn.info
        system = (info.host, info.port)
    return (system, database)


def canonical_text(conn: psycopg.Connection) -> None:
    """Fix the text form of values for the current transaction (SET LOCAL, so it
    works through a transaction-mode pooler too)."""
    for name, value in CANONICAL_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])


# --- Catalog ------------------------------------------------------------------------------


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchall()
    return {r[0] for r in rows}


def describe_table(conn: psycopg.Connection, name: str) -> Table:
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(quote_ident(%s)) AND a.attnum > 0"
        " AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        [name],
    ).fetchall()
    key = conn.execute(
        "SELECT a.attname, a.attcollation <> 0 FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = to_regclass(quote_ident(%s)) AND i.indisprimary"
        " ORDER BY array_position(i.indkey::int2[], a.attnum)",
        [name],
    ).fetchall()
    if not key:
        raise MoveError(f"Table {name} has no primary key: its rows have no order to digest.")
    return Table(
        name=name,
        columns=tuple(c[0] for c in columns),
        types=tuple(c[1] for c in columns),
        key=tuple(k[0] for k in key),
        key_collatable=tuple(k[1] for k in key),
    )


def _applied_migrations(conn: psycopg.Connection, existing: set[str]) -> set[tuple[str, str]]:
    if MIGRATIONS_TABLE not in existing:
        return set()
    query = sql.SQL("SELECT app, name FROM {}").format(sql.Identifier(MIGRATIONS_TABLE))
    return {(app, name) for app, name in conn.execute(query).fetchall()}


def _code_migrations() -> set[tuple[str, str]]:
    return set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)


# --- Reading and writing rows -----------------------------------------------------------


def _select(table: Table) -> sql.Composed:
    order = sql.SQL(", ").join(
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c)) if collatable else sql.Identifier(c)
        for c, collatable in zip(table.key, table.key_collatable, strict=True)
    )
    return sql.SQL("COPY (SELECT {columns} FROM {table} ORDER BY {order}) TO STDOUT").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, table.columns)),
        table=sql.Identifier(table.name),
        order=order,
    )


def table_digest(conn: psycopg.Connection, table: Table) -> tuple[int, str]:
    """(rows, SHA-256 of the rows' COPY text in key order). libpq hands out COPY
    data one row at a time, so chunks are rows."""
    digest = hashlib.sha256()
    rows = 0
    with conn.cursor().copy(_select(table)) as copy:
        for row in copy:
            digest.update(row)
            rows += 1
    return rows, digest.hexdigest()


def _read(
    conn: psycopg.Connection, table: Table, side: str, batch_rows: int, out: Output
) -> tuple[int, str]:
    """table_digest, reporting long tables."""
    started = time.monotonic()
    rows, digest = table_digest(conn, table)
    if rows >= batch_rows:
        seconds = time.monotonic() - started
        out(f"  {table.name:<32} {rows:>12,} rows read on the {side} ({seconds:.1f} s)")
    return rows, digest


def _count(conn: psycopg.Connection, name: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
    return conn.execute(query).fetchone()[0]


def _copy_table(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    table: Table,
    *,
    batch_rows: int,
    out: Output,
) -> TableResult:
    """Stream the table's rows from the source into the target in batches.

    A table that already holds rows gets them through a temporary table and
    `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (2-2.5x as fast as
    `executemany`, docs/benchmarks/move.md). An empty one, the usual case on a
    first run, takes `COPY` straight into the table, which skips writing and
    reading every row twice (1.03-1.5x faster in three noisy runs): it cannot
    hold a conflicting row, since the source satisfies the same unique
    constraints and the lock keeps other writers out until the commit.
    """
    result = TableResult(name=table.name)
    total = _count(src, table.name)
    target = sql.Identifier(table.name)
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    tgt.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
    empty = tgt.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(target)).fetchone()[0]
    batch_table = sql.Identifier("tollgate_move_batch")
    if empty:
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)
    else:
        tgt.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(batch_table, target))
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(batch_table, columns)
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
        target, columns, columns, batch_table
    )
    digest = hashlib.sha256()
    batch: list[Any] = []
    started = time.monotonic()

    def flush() -> None:
        with tgt.cursor().copy(copy_in) as copy:
            copy.write(b"".join(batch))
        if empty:
            result.copied += len(batch)
        else:
            result.copied += tgt.execute(insert).rowcount
            tgt.execute(sql.SQL("TRUNCATE {}").format(batch_table))
        batch.clear()

    with src.cursor().copy(_select(table)) as source_rows:
        for row in source_rows:  # one row per chunk (libpq)
            digest.update(row)
            batch.append(row)
            result.source_rows += 1
            if len(batch) >= batch_rows:
                flush()
                elapsed = time.monotonic() - started
                out(
                    f"  {table.name:<32} {result.source_rows:>12,} / {total:,} rows"
                    f"  {result.source_rows / elapsed:>9,.0f} rows/s"
                )
    if batch:
        flush()
    if not empty:
        tgt.execute(sql.SQL("DROP TABLE {}").format(batch_table))
    result.source_digest = digest.hexdigest()
    elapsed = time.monotonic() - started
    out(
        f"  {table.name:<32} {result.source_rows:>12,} rows, {result.copied:,} new"
        f"  ({elapsed:.1f} s)"
    )
    return result


def _replace_generated_rows(src: psycopg.Connection, tgt: psycopg.Connection, out: Output) -> None:
    """Give the target the source's content types and permissions.

    `migrate` created its own on the target, with ids that may differ from the
    source's. If nothing on the target uses them yet (no admin log, no granted
    permission), they are replaced; otherwise the move refuses, because rows
    copied from the source would point at the wrong ones.
    """

    def rows(conn: psycopg.Connection, name: str) -> set[tuple[Any, ...]]:
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(name))
        return set(conn.execute(query).fetchall())

    differing = [n for n in GENERATED_TABLES if not rows(tgt, n) <= rows(src, n)]
    if not differing:
        return
    users = tgt.execute(
        "SELECT DISTINCT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
        " AND confrelid IN (to_regclass(quote_ident(%s)), to_regclass(quote_ident(%s)))",
        list(GENERATED_TABLES),
    ).fetchall()
    in_use = [
        name
        for (name,) in users
        if name not in GENERATED_TABLES and _count(tgt, name.strip('"')) > 0
    ]
    if in_use:
        raise MoveError(
            f"The target's {' and '.join(differing)} differ from the source's and are "
            f"already referenced ({', '.join(sorted(in_use))} have rows). "
            "Move into a new, empty database."
        )
    replaced = []
    for name in GENERATED_TABLES:  # permissions first: they point at content types
        deleted = tgt.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name))).rowcount
        replaced.append(f"{deleted} rows of {name}")
    out(
        f"  Replacing what migrate created on the target ({', '.join(replaced)}) "
        "with the source's rows (same natural keys, the source's ids)."
    )


def _reset_sequences(tgt: psycopg.Connection, tables: list[Table]) -> None:
    """Move each identity/serial sequence past the largest copied id, so the next
    row inserted on the target gets a new one."""
    names = [t.name for t in tables]
    owned = tgt.execute(
        "SELECT c.relname, a.attname, pg_get_serial_sequence(quote_ident(c.relname), a.attname)"
        " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE c.relname = ANY (%s) AND c.relnamespace = current_schema()::regnamespace"
        " AND a.attnum > 0 AND NOT a.attisdropped"
        " AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL",
        [names],
    ).fetchall()
    for table, column, sequence in owned:
        tgt.execute(
            sql.SQL(
                "SELECT setval(%s::regclass, COALESCE(max({column}), 1), max({column}) IS NOT NULL)"
                " FROM {table}"
            ).format(column=sql.Identifier(column), table=sql.Identifier(table)),
            [sequence],
        )


# --- The move -----------------------------------------------------------------------------


def move_data(
    *, target_url: str, dry_run: bool = False, batch_rows: int = BATCH_ROWS, out: Output = print
) -> MoveReport:
    """Copy the default database to `target_url` (see the module docstring).

    Returns the report; its `mismatches` are tables whose row counts or
    digests differ after the copy. Raises MoveError when the move cannot run.
    """
    started = time.monotonic()
    report = MoveReport(target=mask_url(target_url), dry_run=dry_run)
    order = copy_order()
    _register_target(target_url, read_only=dry_run)
    try:
        source_params = _libpq_params(DEFAULT_DB_ALIAS)
        source_params["options"] = f"{source_params.get('options', '')} {READ_ONLY_OPTION}".strip()
        target_params = _libpq_params(TARGET_ALIAS)
        with _connect(source_params, "source database") as src:
            with _connect(target_params, f"target {report.target}") as tgt:
                if _server_identity(src) == _server_identity(tgt):
                    raise MoveError("The target is the source database itself.")
                try:
                    _move(src, tgt, report, order=order, batch_rows=batch_rows, out=out)
                except (psycopg.Error, DatabaseError) as exc:
                    raise MoveError(
                        f"The move failed: {str(exc).strip()}. The copy is one transaction, "
                        "committed whole or not at all; run move_data again once the cause "
                        "is fixed."
                    ) from exc
    finally:
        _unregister_target()
    report.seconds = time.monotonic() - started
    return report


def _move(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    report: MoveReport,
    *,
    order: list[str],
    batch_rows: int,
    out: Output,
) -> None:
    existing = _tables(src)
    check_coverage(existing, order)
    code = _code_migrations()
    source_applied = _applied_migrations(src, existing)
    if not code <= source_applied:
        missing = sorted(f"{app}.{name}" for app, name in code - source_applied)
        raise MoveError(
            f"The source is not fully migrated ({len(missing)} migration(s) not applied, "
            f"e.g. {missing[0]}); run `manage.py migrate` on it first."
        )
    report.migrations = len(source_applied)

    if dry_run := report.dry_run:
        report.pending_migrations = len(code - _applied_migrations(tgt, _tables(tgt)))
    else:
        out(f"Migrating {report.target} ...")
        phase = time.monotonic()
        before = _applied_migrations(tgt, _tables(tgt))
        call_command("migrate", database=TARGET_ALIAS, interactive=False, verbosity=0)
        connections[TARGET_ALIAS].close()
        target_applied = _applied_migrations(tgt, _tables(tgt))
        out(f"  {len(target_applied - before)} applied ({time.monotonic() - phase:.1f} s)")
        if target_applied != source_applied:

            def names(migrations: set[tuple[str, str]]) -> str:
                return ", ".join(sorted(f"{a}.{n}" for a, n in migrations)) or "none"

            raise MoveError(
                "The two databases have other migrations applied (only on the source: "
                f"{names(source_applied - target_applied)}; only on the target: "
                f"{names(target_applied - source_applied)}): they belong to other versions "
                "of Tollgate."
            )

    # One snapshot of the source for the copy and its digests.
    src.autocommit = False
    src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    src.read_only = True
    canonical_text(src)
    tables = [describe_table(src, name) for name in order if name not in SKIPPED]
    target_tables = _tables(tgt)
    for table in tables:
        if table.name in target_tables:
            theirs = describe_table(tgt, table.name)
            if theirs.signature != table.signature:
                raise MoveError(
                    f"Table {table.name} has other columns on the target than on the source."
                )

    if dry_run:
        out(f"Dry run: reading {len(tables)} tables on both sides (nothing is written) ...")
        results = []
        for table in tables:
            result = TableResult(name=table.name)
            result.source_rows, result.source_digest = _read(src, table, "source", batch_rows, out)
            results.append(result)
    else:
        out(f"Copying {len(tables)} tables in foreign-key order, in one transaction ...")
        phase = time.monotonic()
        with tgt.transaction():
            canonical_text(tgt)
            _replace_generated_rows(src, tgt, out)
            results = [
                _copy_table(src, tgt, table, batch_rows=batch_rows, out=out) for table in tables
            ]
            _reset_sequences(tgt, tables)
        src.rollback()
        new = sum(r.copied for r in results)
        out(f"  committed {new:,} new rows ({time.monotonic() - phase:.1f} s)")
        for table in tables:  # fresh statistics for the planner
            tgt.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table.name)))
        out("Verifying: row counts and SHA-256 digests of the target ...")
    phase = time.monotonic()

    tgt.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    tgt.read_only = True
    with tgt.transaction():
        canonical_text(tgt)
        for table, result in zip(tables, results, strict=True):
            if table.name in target_tables or not dry_run:
                result.target_rows, result.target_digest = _read(
                    tgt, table, "target", batch_rows, out
                )
    if dry_run:
        src.rollback()
    else:
        out(f"  done ({time.monotonic() - phase:.1f} s)")
    report.tables = results
