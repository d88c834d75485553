"""The MySQL sink: projects `wallet.events` into the read model, one DB transaction per batch.

Idempotent by key: ledger entries by `(wallet_id, version)` and outcomes by `command_id` are
`INSERT IGNORE`d; a wallet row only moves to a newer version; a transfer's status only moves forward.
"""

from __future__ import annotations

import operator
import re

import pymysql
from sqlalchemy import func, literal_column
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.projection import ProjectedEvent, StoreUnavailable
from app.domain.events import is_applied
from readside.readmodel import (command_outcomes, fold_wallets, ledger_entries, ledger_row, outcome_row,
                           transfer_row, transfers, wallets)
from app.settings import Settings
from readside.mysql import make_engine

def _wallet_upsert():
    stmt = insert(wallets)
    new, old = stmt.inserted, wallets.c
    newer = new.version > old.version

    def keep_unless(column: str, blank_keeps: bool = False):
        value = getattr(new, column)
        # A literal, not a bound parameter: the driver's multi-row executemany rewrites only the VALUES
        # part, so a placeholder in ON DUPLICATE KEY UPDATE fails any batch of more than one wallet.
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


# One multi-row statement carries at most this much SQL text (MariaDB's max_allowed_packet is 16 MiB).
STATEMENT_BYTES_MAX = 4 * 1024 * 1024
_ESCAPES = {0: "\\0", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", 26: "\\Z",
                 ord("'"): "\\'", ord('"'): '\\"'}


_NEEDS_ESCAPE = re.compile("[\x00\n\r\x1a'\"\\\\]")


def _literal(value: object) -> str:
    """A SQL literal for the values the read model holds (str, int, None), escaped as the driver does
    (pymysql.converters.escape_string; the server runs without NO_BACKSLASH_ESCAPES)."""
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return "'" + value.translate(_ESCAPES) + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


_INT_TYPES = frozenset({int, bool})


class MultiRowStatement:
    """`INSERT ... VALUES (...), (...) [ON DUPLICATE KEY UPDATE ...]` rendered as text in few statements.

    Why not `executemany`: the driver escapes every value through a generic per-type dispatch, which cost
    half of the sink's time at 20,000 events/s (profiled; docs/BENCHMARKS.md, Sink). The rows here hold
    only str, int and None, so they are rendered here, with the driver's escaping, a column at a time:
    a NOT NULL integer column is checked to hold ints only, a NOT NULL text column to hold str only and
    is escaped only when one of its values needs it (one regex scan per column), and each row is then
    one `%` format in C. A batch that breaks the column types is rendered value by value (`_literal`)."""

    def __init__(self, statement, table) -> None:
        from sqlalchemy.dialects import mysql

        compiled = str(statement.compile(dialect=mysql.dialect(paramstyle="format")))
        head, rest = compiled.split(" VALUES (", 1)
        if "%s" in rest.split(")", 1)[1]:
            raise ValueError("a bound parameter outside VALUES cannot be rendered per row")
        self.head = head + " VALUES "
        self.tail = rest.split(")", 1)[1]
        self.columns = [column.name for column in table.columns]
        # Per column: int (NOT NULL integer), str (NOT NULL text) or None (nullable: any literal).
        self.kinds = [None if column.nullable else column.type.python_type for column in table.columns]
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
                    columns[index] = [value.translate(_ESCAPES) for value in column]
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


# One round trip carries at most this much SQL: several statements joined with ";" (the driver connects
# with CLIENT_MULTI_STATEMENTS), well below MariaDB's max_allowed_packet of 16 MiB.
ROUND_TRIP_BYTES_MAX = 2 * STATEMENT_BYTES_MAX
# Batches written at once by default, each in a transaction on a connection of its own (see MySqlWriter;
# Settings.sink_writes_in_flight_max sets it).
WRITES_IN_FLIGHT_MAX = 2
_WALLET_ID = operator.attrgetter("wallet_id")


def join_round_trips(statements: list[str]) -> list[str]:
    """The statements of one transaction as few multi-statement texts of at most ROUND_TRIP_BYTES_MAX
    (a statement above it goes alone), the last one ending in COMMIT."""
    texts: list[str] = []
    group: list[str] = []
    size = 0
    for statement in [*statements, "COMMIT"]:
        if group and size + len(statement) + 1 > ROUND_TRIP_BYTES_MAX:
            texts.append(";".join(group))
            group, size = [], 0
        group.append(statement)
        size += len(statement) + 1
    texts.append(";".join(group))
    return texts


class MySqlWriter:
    """Writes one batch of events in one transaction (see the module docstring).

    A batch's statements go to the server in as few round trips as fit (usually one), its COMMIT
    included, so the server works through the whole transaction without waiting on this process.
    Two batches may be written at once (`writes_in_flight_max`), on two connections, when they have no
    wallet in common (the projection sees to that: a wallet row's owner, currency and status depend on
    the order of its events). Their other rows commute: ledger entries and outcomes are INSERT IGNOREd by
    key, and a transfer's status only moves away from pending, whichever leg comes first. Rows are
    sorted by key within each statement so concurrent transactions lock in one order; a deadlock or a
    lock wait timeout all the same is a StoreUnavailable that the projection retries."""

    def __init__(self, engine: AsyncEngine, writes_in_flight_max: int = WRITES_IN_FLIGHT_MAX) -> None:
        self.engine = engine
        self.writes_in_flight_max = writes_in_flight_max
        self._wallet_upsert = MultiRowStatement(_wallet_upsert(), wallets)
        self._transfer_upsert = MultiRowStatement(_transfer_upsert(), transfers)
        self._ledger_insert = MultiRowStatement(insert(ledger_entries).prefix_with("IGNORE"), ledger_entries)
        self._outcome_insert = MultiRowStatement(insert(command_outcomes).prefix_with("IGNORE"), command_outcomes)
        # A wallet row is its WalletView's fields in the table's column order.
        self._wallet_values = operator.attrgetter(*self._wallet_upsert.columns)

    async def __call__(self, items: list[ProjectedEvent]) -> None:
        await self.execute(self.prepare(items))

    def prepare(self, items: list[ProjectedEvent]) -> list[str]:
        """The batch's SQL texts (CPU only; the projection runs it while earlier batches execute)."""
        events = [item.event for item in items]
        ledger = sorted((ledger_row(event) for event in events if is_applied(event)),
                        key=lambda row: (row["wallet_id"], row["version"]))
        outcomes = sorted((outcome_row(item.event, item.fingerprint) for item in items),
                          key=lambda row: row["command_id"])
        transfer_rows = sorted((row for row in map(transfer_row, events) if row is not None),
                               key=lambda row: row["transfer_id"])
        views = sorted(fold_wallets(events).values(), key=_WALLET_ID)
        return join_round_trips(
            self._ledger_insert.render(ledger) + self._outcome_insert.render(outcomes)
            + self._transfer_upsert.render(transfer_rows)
            + self._wallet_upsert.render_values(list(map(self._wallet_values, views))))

    async def execute(self, texts: list[str]) -> None:
        """Run prepared texts (their last statement is the COMMIT); StoreUnavailable on a connection
        fault, a deadlock or a lock wait timeout. A failing statement stops the rest of its text, so the
        COMMIT never runs after an error and the transaction is rolled back."""
        try:
            async with self.engine.begin() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                async with driver.cursor() as cursor:
                    for text in texts:
                        await cursor.execute(text)
                        while await cursor.nextset():
                            pass
        except (OperationalError, DBAPIError, OSError, ConnectionError, pymysql.err.OperationalError,
                pymysql.err.InterfaceError) as exc:
            raise StoreUnavailable(f"MySQL: {type(exc).__name__}: {str(exc)[:200]}") from exc


async def create_writer(settings: Settings) -> MySqlWriter:
    return MySqlWriter(make_engine(settings.mysql_dsn), settings.sink_writes_in_flight_max)
