"""The MySQL sink: projects `wallet.events` into the read model, one DB transaction per batch.

Idempotent by key: ledger entries by `(wallet_id, version)` and outcomes by `command_id` are inserted with a
no-op `ON DUPLICATE KEY UPDATE` (not `INSERT IGNORE`, which would also turn a value the column cannot hold
into a silent truncation); a wallet row only moves to a newer version; a transfer's status only moves forward,
on the row of its transfer id, source wallet and debit time (a refund finds its debit: LegsOnLatestDebit).

How values reach the server. The rows are rendered into multi-row statements here (one per table per batch,
see MultiRowStatement for why), with the driver's own escaping (`pymysql.converters`), which is correct for
a session whose `sql_mode` lacks NO_BACKSLASH_ESCAPES. So the writer's connections pin that: each one is
opened with `SESSION_SQL_MODE` and a utf8mb4 client character set, checked once when it connects, and the
server's NO_BACKSLASH_ESCAPES status flag (sent with every reply) is checked before every statement; a
session that differs is refused (StoreUnavailable: nothing is written, the sink retries and says why). The
connections also do not ask for multi-statements, so no text can carry a second statement.
"""

from __future__ import annotations

import operator
import re

import aiomysql
import pymysql
from pymysql.constants import CLIENT, SERVER_STATUS
from pymysql.converters import escape_item, escape_string
from sqlalchemy import func, literal_column
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents.errors import AgentError
from agents.projection import ProjectedEvent, StoreRefused
from app.domain.events import is_applied
from app.settings import Settings
from readside.errors import StoreUnavailable
from readside.mysql import CONNECT_TIMEOUT_S, POOL_SIZE
from readside.readmodel import (DEBITED_AT_UNKNOWN_MS, command_outcomes, fold_wallets, ledger_entries, ledger_row,
                                outcome_row, transfer_row, transfers, wallets)

# The session the rendered statements are escaped for: backslash escapes on (no NO_BACKSLASH_ESCAPES), and
# strict, so a value a column cannot hold is an error (the event goes to the sink DLQ), never a truncation.
SESSION_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
# Every Unicode text fits, and no character's encoding contains a quote or backslash byte.
SESSION_CHARSET = "utf8mb4"


def _wallet_upsert():
    stmt = insert(wallets)
    new, old = stmt.inserted, wallets.c
    newer = new.version > old.version

    def keep_unless(column: str, blank_keeps: bool = False):
        value = getattr(new, column)
        # A literal, not a bound parameter: the statement is rendered once with its VALUES repeated per row,
        # so ON DUPLICATE KEY UPDATE must hold no placeholder.
        condition = newer & (value != literal_column("''")) if blank_keeps else newer
        return func.if_(condition, value, getattr(old, column))

    # MySQL applies these left to right: `version` must come last so the others compare the old one.
    return stmt.on_duplicate_key_update([
        ("owner_id", keep_unless("owner_id", True)),
        ("currency", keep_unless("currency", True)),
        ("status", keep_unless("status", True)),
        ("balance_minor", keep_unless("balance_minor")),
        ("available_minor", keep_unless("available_minor")),
        ("held_minor", keep_unless("held_minor")),
        ("last_hash", keep_unless("last_hash")),
        ("updated_at_ms", keep_unless("updated_at_ms")),
        ("version", func.greatest(new.version, old.version)),
    ])


def _transfer_upsert():
    stmt = insert(transfers)
    new, old = stmt.inserted, transfers.c
    return stmt.on_duplicate_key_update([
        ("status", func.if_(new.status != literal_column("'pending'"), new.status, old.status)),
        ("reason_code", func.coalesce(new.reason_code, old.reason_code)),
        ("created_at_ms", func.coalesce(old.created_at_ms, new.created_at_ms)),
        ("completed_at_ms", func.coalesce(old.completed_at_ms, new.completed_at_ms)),
        ("refunded_at_ms", func.coalesce(old.refunded_at_ms, new.refunded_at_ms)),
    ])


def _insert_once(table, key_column: str):
    """INSERT that leaves an existing row with the same key as it is (a replayed event) and fails on a
    value the table cannot hold (INSERT IGNORE would truncate it with a warning)."""
    return insert(table).on_duplicate_key_update({key_column: table.c[key_column]})


# One multi-row statement carries at most this much SQL text (MariaDB's max_allowed_packet is 16 MiB).
STATEMENT_BYTES_MAX = 4 * 1024 * 1024
_LITERAL_TYPES = (str, int, bool, type(None))
# The characters the driver's escape_string changes, asked of the driver itself (it escapes by an ASCII
# table and leaves every other character as it is; tests/unit/test_mysql_sink_render.py holds it to that).
# A text column none of whose values holds one is rendered without calling it per value: same result.
_DRIVER_ESCAPED = "".join(ch for ch in map(chr, range(128)) if escape_string(ch) != ch)
_NEEDS_ESCAPE = re.compile("[" + re.escape(_DRIVER_ESCAPED) + "]")


def _literal(value: object) -> str:
    """A SQL literal for the values the read model holds (str, int, None), by the driver's escaping."""
    if not isinstance(value, _LITERAL_TYPES):
        raise TypeError(f"no SQL literal for {type(value).__name__}")
    return escape_item(value, SESSION_CHARSET)


_INT_TYPES = frozenset({int, bool})


class MultiRowStatement:
    """`INSERT ... VALUES (...), (...) [ON DUPLICATE KEY UPDATE ...]` rendered as text in few statements.

    Why not the driver's parameters (`cursor.execute(sql, args)`): it escapes every value through a generic
    per-type dispatch on the event loop, which cost half of the sink's time at 20,000 events/s (profiled;
    docs/BENCHMARKS.md, Sink). The rows here hold only str, int and None, so they are rendered here, on the
    projection's decode thread, with the driver's escaping, a column at a time: a NOT NULL integer column
    is checked to hold ints only, a NOT NULL text column to hold str only and is escaped (escape_string)
    only when one of its values holds a character the driver escapes (one regex scan per column), and each
    row is then one `%` format in C. A batch that breaks the column types is rendered value by value
    (`_literal`). The text is right only for the pinned session (see the module docstring)."""

    def __init__(self, statement, table, row_columns=None) -> None:
        from sqlalchemy.dialects import mysql

        compiled = str(statement.compile(dialect=mysql.dialect(paramstyle="format")))
        head, rest = compiled.split(" VALUES (", 1)
        if "%s" in rest.split(")", 1)[1]:
            raise ValueError("a bound parameter outside VALUES cannot be rendered per row")
        self.head = head + " VALUES "
        self.tail = rest.split(")", 1)[1]
        row_columns = list(table.columns) if row_columns is None else row_columns
        self.columns = [column.name for column in row_columns]
        # Per column: int (NOT NULL integer), str (NOT NULL text) or None (nullable: any literal).
        self.kinds = [None if column.nullable else column.type.python_type for column in row_columns]
        if not set(self.kinds) <= {int, str, None}:
            raise ValueError(f"{table.name} has a column type the sink cannot render")
        self.template = "(" + ",".join({int: "%d", str: "'%s'", None: "%s"}[kind] for kind in self.kinds) + ")"
        self._values = operator.itemgetter(*self.columns)

    def render(self, rows: list[dict]) -> list[str]:
        """Statements for `rows` (dicts by column name)."""
        return self.render_values(list(map(self._values, rows)))

    def render_values(self, rows: list[tuple]) -> list[str]:
        """Statements for `rows` (tuples in the table's column order)."""
        if not rows:
            return []
        columns: list = list(zip(*rows))
        for index, kind in enumerate(self.kinds):
            column = columns[index]
            if kind is int:
                if not set(map(type, column)) <= _INT_TYPES:
                    return self._render_value_by_value(rows)
            elif kind is str:
                try:
                    joined = ",".join(column)
                except TypeError:  # a value that is not a str
                    return self._render_value_by_value(rows)
                if _NEEDS_ESCAPE.search(joined) is not None:
                    columns[index] = list(map(escape_string, column))
            else:
                columns[index] = ["NULL" if value is None else _literal(value) for value in column]
        template = self.template
        return self._statements([template % row for row in zip(*columns)])

    def _render_value_by_value(self, rows: list[tuple]) -> list[str]:
        return self._statements(["(" + ",".join(map(_literal, row)) + ")" for row in rows])

    def _statements(self, rendered: list[str]) -> list[str]:
        room = STATEMENT_BYTES_MAX - len(self.head) - len(self.tail)
        if sum(map(len, rendered)) + len(rendered) <= room:
            return [self.head + ",".join(rendered) + self.tail]
        statements: list[str] = []
        chunk: list[str] = []
        size = 0
        for values in rendered:
            if chunk and size + len(values) + 1 > room:
                statements.append(self.head + ",".join(chunk) + self.tail)
                chunk, size = [], 0
            chunk.append(values)
            size += len(values) + 1
        statements.append(self.head + ",".join(chunk) + self.tail)
        return statements


class LegsOnLatestDebit(MultiRowStatement):
    """The `transfers` rows of legs whose debit time is not known (transfer_row gives None: a refund, whose id
    names the refusal; a credit leg under the earlier id form), each put on the latest debit of its transfer
    id and source wallet, in one statement:

        INSERT INTO transfers (...) WITH leg (...) AS (VALUES (...), ...)
        SELECT ..., COALESCE((SELECT MAX(debited_at_ms) ... same id and source), DEBITED_AT_UNKNOWN_MS), ...
        FROM leg ON DUPLICATE KEY UPDATE <the transfer upsert's>

    A refund's debit was decided before it on the same wallet, so it is written in an earlier batch or by
    the batch's upsert that runs before this statement (batches with a wallet in common are never written at
    once). "Latest" is wrong only when a source reused a transfer id (after command_retention_s) while the
    first transfer's leg was still on its way; a leg with no debit found gets a row of its own under
    DEBITED_AT_UNKNOWN_MS (docs/DESIGN.md section 7)."""

    def __init__(self) -> None:
        key = transfers.c.debited_at_ms
        super().__init__(_transfer_upsert(), transfers, [column for column in transfers.columns if column is not key])
        debited_at = (f"COALESCE((SELECT MAX(debit.debited_at_ms) FROM transfers AS debit WHERE debit.transfer_id = "
                      f"leg.transfer_id AND debit.source_wallet_id = leg.source_wallet_id), {DEBITED_AT_UNKNOWN_MS})")
        selected = ", ".join(debited_at if column is key else f"leg.{column.name}" for column in transfers.columns)
        self.head = (f"INSERT INTO transfers ({', '.join(column.name for column in transfers.columns)}) "
                     f"WITH leg ({', '.join(self.columns)}) AS (VALUES ")
        self.tail = f") SELECT {selected} FROM leg" + self.tail


def _transfer_key(row: dict) -> tuple:
    return row["transfer_id"], row["source_wallet_id"], row["debited_at_ms"] or 0


# Batches written at once by default, each in a transaction on a connection of its own (see MySqlWriter;
# Settings.sink_writes_in_flight_max sets it).
WRITES_IN_FLIGHT_MAX = 2
_WALLET_ID = operator.attrgetter("wallet_id")


class SessionRefused(AgentError, StoreUnavailable):
    """A connection's session is not the one the sink's statements are escaped for (sql_mode, character
    set): the sink writes nothing through it and retries.

    Operator action: find what changes the session (the server's `init_connect`, a proxy, a `SET` in a
    shared pool) and remove it; the sink resumes by itself.
    """


class _SingleStatementConnection(aiomysql.Connection):
    """aiomysql asks every server for multi-statements (it sets CLIENT_MULTI_STATEMENTS in its constructor,
    whatever `client_flag` says); the sink's connections do not, so the server runs one statement per text.
    tests/integration/test_mysql_sink_text.py proves it on the real server."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client_flag &= ~CLIENT.MULTI_STATEMENTS


async def _connect_pinned(**kwargs) -> aiomysql.Connection:
    """A sink connection: single statements, SESSION_SQL_MODE, checked before it is used. Any failure here
    is the store's (StoreUnavailable), never the data's: no event has been sent yet."""
    connection = _SingleStatementConnection(**kwargs)
    try:
        await connection._connect()
        async with connection.cursor() as cursor:
            await cursor.execute(f"SET SESSION sql_mode = '{SESSION_SQL_MODE}'")
            await cursor.execute("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, "
                                 "@@SESSION.character_set_connection")
            session = await cursor.fetchone()
    except (pymysql.err.MySQLError, OSError) as exc:
        connection.close()
        raise StoreUnavailable(f"MySQL: could not open a sink session: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    if session != (SESSION_SQL_MODE, SESSION_CHARSET, SESSION_CHARSET):
        connection.close()
        raise SessionRefused(f"MySQL session is {session!r}, the sink writes only with sql_mode "
                             f"{SESSION_SQL_MODE!r} and character set {SESSION_CHARSET}")
    return connection


def make_writer_engine(dsn: str, pool_size: int = POOL_SIZE) -> AsyncEngine:
    """The sink's engine: connections by `_connect_pinned` (see the module docstring)."""
    return create_async_engine(dsn, pool_size=pool_size, pool_pre_ping=True, pool_recycle=3600, connect_args={
        "connect_timeout": CONNECT_TIMEOUT_S, "charset": SESSION_CHARSET, "async_creator_fn": _connect_pinned})


# Server errors that are about the data a statement carries (a value too long or out of range, an invalid
# string, a NULL, a duplicate or missing key, a CHECK constraint or trigger that refuses the row, or SQL
# text a value broke): writing the same events again fails the same way. Any other error (connection,
# deadlock, lock wait, a missing table or column, access denied) is the store's state, retried.
REFUSED_ERRNOS = frozenset({
    1048, 1062, 1064, 1149, 1216, 1217, 1263, 1264, 1265, 1292, 1300, 1364, 1366, 1367, 1406, 1451, 1452,
    1644, 1690, 3819, 4025,
})


def store_error(exc: BaseException) -> StoreUnavailable | StoreRefused | None:
    """What a failed write means for the projection: StoreRefused when the server refused the data (see
    REFUSED_ERRNOS; pymysql's DataError and IntegrityError are such by definition), StoreUnavailable for
    a store or connection fault, None for anything else (a bug: it propagates)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, StoreUnavailable | StoreRefused):
        return exc
    message = f"{type(exc).__name__}: {str(exc)[:StoreRefused.DETAIL_CHARS_MAX]}"
    if isinstance(exc, pymysql.err.MySQLError):
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if isinstance(exc, pymysql.err.DataError | pymysql.err.IntegrityError) or errno in REFUSED_ERRNOS:
            return StoreRefused(type(exc).__name__, message)
        return StoreUnavailable(f"MySQL: {message}")
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return StoreUnavailable(f"MySQL: {message}")
    return None


class MySqlWriter:
    """Writes one batch of events in one transaction (see the module docstring).

    Per batch one statement per table (ledger entries, outcomes, transfers, wallets; a table's rows above
    STATEMENT_BYTES_MAX take more; a batch with refunds or earlier-form credit legs has one more for them,
    LegsOnLatestDebit), then the COMMIT, each its own round trip. Two batches may be written at
    once (`writes_in_flight_max`), on two connections, when they have no wallet in common (the projection
    sees to that: a wallet row's owner, currency and status depend on the order of its events). Their
    other rows commute: ledger entries and outcomes are inserted once by key, and a transfer's status only
    moves away from pending, whichever leg comes first. Rows are sorted by key within each statement so
    concurrent transactions lock in one order; a deadlock or a lock wait timeout all the same is a
    StoreUnavailable that the projection retries. Data the server refuses is a StoreRefused, with nothing
    of the batch written: the projection isolates the events at fault."""

    def __init__(self, engine: AsyncEngine, writes_in_flight_max: int = WRITES_IN_FLIGHT_MAX) -> None:
        self.engine = engine
        self.writes_in_flight_max = writes_in_flight_max
        self._wallet_upsert = MultiRowStatement(_wallet_upsert(), wallets)
        self._transfer_upsert = MultiRowStatement(_transfer_upsert(), transfers)
        self._legs_on_latest_debit = LegsOnLatestDebit()
        self._ledger_insert = MultiRowStatement(_insert_once(ledger_entries, "version"), ledger_entries)
        self._outcome_insert = MultiRowStatement(_insert_once(command_outcomes, "command_id"), command_outcomes)
        # A wallet row is its WalletView's fields in the table's column order.
        self._wallet_values = operator.attrgetter(*self._wallet_upsert.columns)

    async def __call__(self, items: list[ProjectedEvent]) -> None:
        await self.execute(self.prepare(items))

    def prepare(self, items: list[ProjectedEvent]) -> list[str]:
        """The batch's statements (CPU only; the projection runs it while earlier batches execute)."""
        events = [item.event for item in items]
        ledger = sorted((ledger_row(event) for event in events if is_applied(event)),
                        key=lambda row: (row["wallet_id"], row["version"]))
        outcomes = sorted((outcome_row(item.event, item.fingerprint) for item in items),
                          key=lambda row: row["command_id"])
        transfer_rows = sorted((row for row in map(transfer_row, events) if row is not None), key=_transfer_key)
        keyed = [row for row in transfer_rows if row["debited_at_ms"] is not None]
        legs = [row for row in transfer_rows if row["debited_at_ms"] is None]
        views = sorted(fold_wallets(events).values(), key=_WALLET_ID)
        # The legs' statement after the upsert: a leg's debit may be in this batch.
        return (self._ledger_insert.render(ledger) + self._outcome_insert.render(outcomes)
                + self._transfer_upsert.render(keyed) + self._legs_on_latest_debit.render(legs)
                + self._wallet_upsert.render_values(list(map(self._wallet_values, views))))

    async def execute(self, statements: list[str]) -> None:
        """Run prepared statements in one transaction and commit it. StoreUnavailable on a connection fault,
        a deadlock, a lock wait timeout or a session that is not the pinned one; StoreRefused when the
        server refuses the data. Either way the transaction is rolled back: nothing of the batch is written."""
        try:
            async with self.engine.begin() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                async with driver.cursor() as cursor:
                    for statement in statements:
                        # The server reports the session's NO_BACKSLASH_ESCAPES with every reply.
                        if driver.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
                            await conn.invalidate()  # never back to the pool
                            raise SessionRefused("MySQL session has NO_BACKSLASH_ESCAPES: the sink's statements "
                                                 f"are escaped for sql_mode {SESSION_SQL_MODE!r}; nothing written")
                        await cursor.execute(statement)
        except Exception as exc:
            error = store_error(exc)
            if error is None:
                raise
            if error is exc:
                raise
            raise error from exc


async def create_writer(settings: Settings) -> MySqlWriter:
    return MySqlWriter(make_writer_engine(settings.mysql_dsn), settings.sink_writes_in_flight_max)
