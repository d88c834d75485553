"""The MySQL sink's writer against hostile texts on a real MariaDB, under both sql_modes.

The sink renders its statements itself (agents/mysql_sink.py), escaped for a session without
NO_BACKSLASH_ESCAPES. Under that mode a backslash is an ordinary character, so a value escaped for the
default mode can end its literal early: with multi-statements on, a `reference` ran SQL of its own (it set
another wallet's balance). Proved here, at the writer (the 64 KiB texts are above what the API takes):
- under the server's default sql_mode and with NO_BACKSLASH_ESCAPES set globally, texts full of quotes,
  backslashes, NUL, \\x1a, U+2028, 4-byte emoji and 64 KiB long round-trip byte for byte, and no other
  row changes;
- a value longer than its column is refused whole (strict mode, no INSERT IGNORE truncation);
- a session that gets NO_BACKSLASH_ESCAPES after it connected is refused: nothing is written;
- the sink's connections run one statement per text (no multi-statements).

The global sql_mode is the server's: the module runs a MariaDB of its own (started by the stack's own `up`
on a free port under the module's state directory), so no other test sees the mode it sets.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import replace

import pymysql
import pytest

from agents import mysql_sink
from agents.projection import ProjectedEvent
from app.domain import events as e
from ops.local import stack as local_stack
from tests.harness import free_port, isolated_settings
from wallet import isolation

# The exploit of the reproduction, a ledger entry's `reference`: escaped for the default mode, `x\'` becomes
# `x\\\'`, whose last quote ends the literal under NO_BACKSLASH_ESCAPES; the row's two last values follow
# (hash, event_time_ms), then a statement of its own (no quote in it: hex literals), then a comment that
# swallows the rest of the text, its COMMIT included (the connection's own commit comes after).
EXPLOIT = "x\\', 0x68, 1); UPDATE wallets SET balance_minor = 999999 WHERE wallet_id = 0x76696374696d; -- "
HOSTILE = [
    "it's", "''", 'say "hi"', "back\\slash", "\\", "\\'", "ends with \\", "nul\x00nul", "ctrl-z\x1a", "nl\nand\rcr",
    "tab\tbs\b", "line\u2028sep\u2029para", "emoji \U0001F4B8\U0001F600", "yen \u00a5 won \u20a9 fullwidth \uff07\uff3c",
    "50% off %s %d", "'); DROP TABLE wallets; --", "\\'); DELETE FROM wallets; -- ", EXPLOIT,
]
# 64 KiB of the worst characters, as large as a TEXT column holds (65,535 bytes).
TEXT_BYTES_MAX = 65_535
_UNIT = "\\'\x00\x1a\u2028\U0001F4B8\"\n"
LONG = _UNIT * (TEXT_BYTES_MAX // len(_UNIT.encode())) + "x" * (TEXT_BYTES_MAX % len(_UNIT.encode()))
SERVER_STORE = "mariadb"  # this module's own server (ops/local/stack.py names its state folder so)


@pytest.fixture(scope="module")
async def server(stack):
    """This module's own MariaDB (its global sql_mode is changed here)."""
    settings = isolated_settings(stack, "txt")
    settings = replace(settings, mysql_dsn=f"mysql+aiomysql://wallet:wallet@127.0.0.1:{free_port()}/wallet",
                       mysql_replica_dsn="", mysql_replica_port=0)
    await asyncio.to_thread(local_stack.up, settings, [SERVER_STORE])
    try:
        default_mode = local_stack._mysql_root(settings, "SELECT @@GLOBAL.sql_mode").strip()
        assert "NO_BACKSLASH_ESCAPES" not in default_mode
        yield settings, default_mode
    finally:
        await asyncio.to_thread(local_stack.down, settings, [SERVER_STORE])
        shutil.rmtree(settings.state_dir, ignore_errors=True)


@pytest.fixture(params=["default", "no_backslash_escapes"])
async def database(request, server):
    """A fresh migrated database, the server's global sql_mode set to the parameter's."""
    settings, default_mode = server
    settings = isolation.with_database(settings, f"_{uuid.uuid4().hex[:6]}")
    mode = default_mode + (",NO_BACKSLASH_ESCAPES" if request.param == "no_backslash_escapes" else "")
    assert local_stack._mysql_root(settings, f"SET GLOBAL sql_mode = '{mode}'") is not None
    try:
        yield settings, request.param
    finally:
        local_stack._mysql_root(settings, f"SET GLOBAL sql_mode = '{default_mode}'")
        isolation.drop_database(settings)


def _connect(settings) -> pymysql.Connection:
    """A plain driver connection for reading back (its parameters follow the server's sql_mode)."""
    user_password, rest = settings.mysql_dsn.split("://", 1)[1].split("@", 1)
    host_port, name = rest.split("/", 1)
    user, password = user_password.split(":", 1)
    host, port = host_port.split(":")
    return pymysql.connect(host=host, port=int(port), user=user, password=password, database=name,
                           charset="utf8mb4", autocommit=True)


def _rows(settings) -> dict[str, list[tuple]]:
    """Every row of every read-model table, texts as the bytes stored (HEX), in key order."""
    tables = {"wallets": "wallet_id", "ledger_entries": "wallet_id, version", "command_outcomes": "command_id",
              "transfers": "transfer_id"}
    with _connect(settings) as conn, conn.cursor() as cursor:
        out = {}
        for table, key in tables.items():
            cursor.execute(f"SHOW COLUMNS FROM {table}")
            columns = [f"HEX(`{row[0]}`)" if "char" in row[1] or "text" in row[1] else f"`{row[0]}`"
                       for row in cursor.fetchall()]
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}")
            out[table] = list(cursor.fetchall())
        return out


def _hex(text: str) -> str:
    return text.encode("utf-8").hex().upper()


class Events:
    """Events of a few wallets with consistent versions (the writer trusts the processor's numbers)."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.offset = 0

    def __call__(self, cls, wallet_id: str, balance_minor: int = 0, applied: bool = True, **fields) -> ProjectedEvent:
        if applied:
            self.versions[wallet_id] = self.versions.get(wallet_id, 0) + 1
        event = cls(wallet_id=wallet_id, command_id=fields.pop("command_id", f"c-{uuid.uuid4().hex}"),
                    timestamp_ms=1_700_000_000_000 + self.offset, version=self.versions.get(wallet_id, 0),
                    balance_after_minor=balance_minor, available_after_minor=balance_minor, held_after_minor=0,
                    hash="a" * 64, **fields)
        self.offset += 1
        return ProjectedEvent(event, "f" * 32, 0, self.offset)


async def _write(settings, items: list[ProjectedEvent]) -> None:
    writer = await mysql_sink.create_writer(settings)
    try:
        await writer(items)
    finally:
        await writer.engine.dispose()


async def _victim(settings, events: Events) -> dict[str, list[tuple]]:
    await _write(settings, [
        events(e.WalletOpened, "victim", owner_id="victim-owner", currency="EUR", overdraft_limit_minor=0),
        events(e.Deposited, "victim", balance_minor=1_000, amount_minor=1_000, currency="EUR", reference="salary",
               description="")])
    return _rows(settings)


def _without_victim_changes(before: dict, after: dict) -> dict:
    """`after` less the rows `before` had: what the write added. Fails if a row of `before` changed."""
    added = {}
    for table, rows in after.items():
        missing = [row for row in before[table] if row not in rows]
        assert not missing, f"{table}: rows written before were changed or deleted: {missing}"
        added[table] = [row for row in rows if row not in before[table]]
    return added


async def test_hostile_texts_round_trip_byte_for_byte_and_change_no_other_row(database) -> None:
    settings, mode = database
    events = Events()
    before = await _victim(settings, events)
    batch = []
    for n, text in enumerate(HOSTILE):
        wallet_id = f"w{n}"
        batch += [
            events(e.WalletOpened, wallet_id, owner_id=text, currency="EUR", overdraft_limit_minor=0),
            events(e.Deposited, wallet_id, balance_minor=10, amount_minor=10, currency="EUR", reference=text,
                   description=text),
            events(e.CommandRejected, wallet_id, balance_minor=10, applied=False, command_kind="Withdraw",
                   code="INSUFFICIENT_FUNDS", detail=text),
            events(e.WalletFrozen, wallet_id, balance_minor=10, reason=text),
        ]
    batch.append(events(e.CommandRejected, "w0", balance_minor=10, applied=False, command_kind="Withdraw",
                        code="INSUFFICIENT_FUNDS", detail=LONG, command_id="long-detail"))
    await _write(settings, batch)

    added = _without_victim_changes(before, _rows(settings))
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT wallet_id, HEX(owner_id), status, balance_minor FROM wallets WHERE wallet_id <> 'victim'")
        owners = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute("SELECT wallet_id, HEX(reference) FROM ledger_entries WHERE kind = 'Deposited' "
                       "AND wallet_id <> 'victim'")
        references = dict(cursor.fetchall())
        cursor.execute("SELECT wallet_id, HEX(detail) FROM command_outcomes WHERE outcome = 'rejected' "
                       "AND command_id <> 'long-detail'")
        details = dict(cursor.fetchall())
        cursor.execute("SELECT HEX(detail), LENGTH(detail) FROM command_outcomes WHERE command_id = 'long-detail'")
        long_detail = cursor.fetchone()
    expected = {f"w{n}": text for n, text in enumerate(HOSTILE)}
    assert owners == {wallet_id: (_hex(text), "FROZEN", 10) for wallet_id, text in expected.items()}, mode
    assert references == {wallet_id: _hex(text) for wallet_id, text in expected.items()}, mode
    assert details == {wallet_id: _hex(text) for wallet_id, text in expected.items()}, mode
    assert long_detail == (_hex(LONG), TEXT_BYTES_MAX)
    # Exactly the batch's rows were added: per wallet its row, two ledger entries, three outcomes.
    assert (len(added["wallets"]), len(added["ledger_entries"]), len(added["command_outcomes"])) == (
        len(HOSTILE), 3 * len(HOSTILE), 4 * len(HOSTILE) + 1)


async def test_the_reproductions_reference_cannot_set_another_wallets_balance(database) -> None:
    settings, mode = database
    events = Events()
    before = await _victim(settings, events)
    await _write(settings, [
        events(e.WalletOpened, "attacker", owner_id="o", currency="EUR", overdraft_limit_minor=0),
        events(e.Deposited, "attacker", balance_minor=10, amount_minor=10, currency="EUR", reference=EXPLOIT,
               description="")])
    added = _without_victim_changes(before, _rows(settings))
    assert [row[:2] for row in added["wallets"]] == [(_hex("attacker"), _hex("o"))], mode
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT HEX(reference) FROM ledger_entries WHERE wallet_id = 'attacker' AND version = 2")
        assert cursor.fetchone() == (_hex(EXPLOIT),)


async def test_a_text_longer_than_its_column_is_refused_whole_not_truncated(database) -> None:
    settings, mode = database
    events = Events()
    before = await _victim(settings, events)
    batch = [events(e.WalletOpened, "long", owner_id="o", currency="EUR", overdraft_limit_minor=0),
             events(e.Deposited, "long", balance_minor=10, amount_minor=10, currency="EUR", reference=LONG,
                    description="")]
    with pytest.raises(Exception) as refused:
        await _write(settings, batch)
    assert _rows(settings) == before, f"{mode}: a refused batch wrote rows (or a truncated reference)"
    assert type(refused.value).__name__ == "StoreRefused" and refused.value.reason == "DataError"
    assert "Data too long for column 'reference'" in refused.value.detail


async def test_a_session_that_gets_no_backslash_escapes_after_it_connected_is_refused(stack) -> None:
    from sqlalchemy import event

    settings = isolation.with_database(isolated_settings(stack, "txs"))
    try:
        events = Events()
        before = await _victim(settings, events)
        writer = await mysql_sink.create_writer(settings)

        @event.listens_for(writer.engine.sync_engine, "connect")
        def switch_mode(dbapi_connection, record) -> None:  # after the writer's own connect-time check
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_BACKSLASH_ESCAPES')")
            cursor.close()

        try:
            with pytest.raises(Exception) as refused:
                await writer([events(e.WalletOpened, "attacker", owner_id="o", currency="EUR",
                                     overdraft_limit_minor=0),
                              events(e.Deposited, "attacker", balance_minor=10, amount_minor=10, currency="EUR",
                                     reference=EXPLOIT, description="")])
        finally:
            await writer.engine.dispose()
        assert _rows(settings) == before, "the writer wrote through a session it does not escape for"
        assert type(refused.value).__name__ == "SessionRefused"
        assert "NO_BACKSLASH_ESCAPES" in str(refused.value)
    finally:
        isolation.discard(settings, database=True, topics=False)


async def test_the_sinks_connections_run_one_statement_per_text(stack) -> None:
    writer = await mysql_sink.create_writer(stack)
    try:
        async with writer.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            async with driver.cursor() as cursor:
                await cursor.execute("SELECT 1")
                with pytest.raises(pymysql.err.ProgrammingError) as refused:
                    await cursor.execute("SELECT 1; SELECT 2")
        assert refused.value.args[0] == 1064
    finally:
        await writer.engine.dispose()
