"""The `transfers` read model on the real stack: one row per transfer, keyed by its id, its source wallet and its
debit's time (readside/readmodel.py), and migration 0004 that gave it that key.

A transfer id is unique per source wallet's partition, not globally: two Kafka producers may pick the same id
for two source wallets. Sent on `wallet.commands` to a real worker (processor, sinks, API), they are two
transfers, each with its own row and outcome: `GET /v1/transfers/{id}?source_wallet_id=` answers each, and
`GET /v1/transfers/{id}` the one debited last. The MySQL sink, on the real server, puts a refund (its id names
the refusal, not the debit) and a credit leg of the earlier id form (no time) on the latest debit of their
source and id.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text

from agents import mysql_sink
from agents.projection import ProjectedEvent
from app import identity
from app.domain import commands as c
from app.domain import events as e
from ops.local import stack as local_stack
from readside import readmodel
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, http_json, isolated_settings, new_id, now_ms, wait_for
from tests.integration.test_read_models import wallet_on_partition
from wallet import bootstrap, isolation

WAIT_S = 60
READ_KEY = "test-read"  # isolated_settings' read-only key


@pytest.fixture(scope="module")
def worker(stack):
    settings = prepare_topics(isolated_settings(stack, "transfers"))
    worker = WorkerProcess(settings, ["all"]).start()
    yield settings
    assert worker.stop() == 0


def get_transfer(settings, transfer_id: str, source_wallet_id: str | None = None) -> tuple[int, dict]:
    query = "" if source_wallet_id is None else f"?source_wallet_id={source_wallet_id}"
    status, _, body = http_json("GET", f"http://127.0.0.1:{settings.http_port}/v1/transfers/{transfer_id}{query}",
                                key=READ_KEY)
    return status, body


def transfer_is(settings, transfer_id: str, source_wallet_id: str, status: str) -> dict | None:
    code, body = get_transfer(settings, transfer_id, source_wallet_id)
    return body if code == 200 and (body["source_wallet_id"], body["status"]) == (source_wallet_id, status) else None


def _sync_engine(settings):
    return create_engine(settings.mysql_dsn.replace("+aiomysql", "+pymysql"))


async def test_one_transfer_id_from_two_sources_on_two_partitions_is_two_transfers_each_read_by_its_source(worker):
    settings = worker
    alice, carol = wallet_on_partition(0, settings.partitions), wallet_on_partition(1, settings.partitions)
    bob, frozen = wallet_on_partition(2, settings.partitions), wallet_on_partition(3, settings.partitions)
    transfer_id = new_id("order")

    def command(cls, wallet_id: str, **fields):
        return cls(command_id=fields.pop("command_id", None) or new_id(cls.__name__), wallet_id=wallet_id,
                   timestamp_ms=now_ms(), **fields)

    async with Ledger(settings) as ledger:
        await ledger.send(*(command(c.OpenWallet, wallet_id, owner_id="o", currency="EUR")
                            for wallet_id in (alice, carol, bob, frozen)))
        await ledger.send(command(c.Deposit, alice, amount_minor=10_000, currency="EUR"),
                          command(c.Deposit, carol, amount_minor=10_000, currency="EUR"),
                          command(c.Freeze, frozen, reason="kyc"))
        # Alice's transfer completes; then carol's, under the same id, is refused by its frozen destination.
        await ledger.send(command(c.Transfer, alice, command_id=transfer_id, destination_wallet_id=bob,
                                  amount_minor=1_500, currency="EUR"))
        completed = wait_for(lambda: transfer_is(settings, transfer_id, alice, "completed"), WAIT_S,
                             "alice's transfer to complete")
        await ledger.send(command(c.Transfer, carol, command_id=transfer_id, destination_wallet_id=frozen,
                                  amount_minor=2_500, currency="EUR"))
        refunded = wait_for(lambda: transfer_is(settings, transfer_id, carol, "refunded"), WAIT_S,
                            "carol's transfer to be refunded")

    assert (completed["destination_wallet_id"], completed["amount"], completed["reason_code"]) == (bob, "15.00", None)
    assert (refunded["destination_wallet_id"], refunded["amount"], refunded["reason_code"]) == (
        frozen, "25.00", "WALLET_FROZEN")
    assert refunded["created_at"] and refunded["refunded_at"] and refunded["completed_at"] is None
    # Each source's transfer is still its own, and the id alone answers the one debited last: carol's.
    assert get_transfer(settings, transfer_id, alice) == (200, completed)
    assert get_transfer(settings, transfer_id) == (200, refunded)
    engine = _sync_engine(settings)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT source_wallet_id, status, debited_at_ms FROM transfers "
                                     "WHERE transfer_id = :t ORDER BY debited_at_ms"), {"t": transfer_id}).all()
    finally:
        engine.dispose()
    assert [row[:2] for row in rows] == [(alice, "completed"), (carol, "refunded")]
    assert rows[0][2] < rows[1][2]

    status, body = get_transfer(settings, transfer_id, bob)  # bob sent nothing under this id
    assert (status, body["code"]) == (404, "TRANSFER_NOT_FOUND")
    status, body = get_transfer(settings, transfer_id, "not%20a%20wallet")
    assert (status, body["code"]) == (400, "INVALID_WALLET_ID")


# ---------------------------------------------------------------- the MySQL sink's legs without a debit time


class Events:
    """Transfer events as the processor writes them, with each wallet's versions counted."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.offset = 0

    def __call__(self, cls, wallet_id: str, command_id: str, timestamp_ms: int, **fields) -> ProjectedEvent:
        self.versions[wallet_id] = self.versions.get(wallet_id, 0) + 1
        self.offset += 1
        event = cls(wallet_id=wallet_id, command_id=command_id, timestamp_ms=timestamp_ms,
                    version=self.versions[wallet_id], balance_after_minor=0, available_after_minor=0,
                    held_after_minor=0, hash="a" * 64, amount_minor=100, currency="EUR", transfer_id=fields.pop(
                        "transfer_id"), **fields)
        return ProjectedEvent(event, "f" * 32, 0, self.offset)

    def debit(self, source: str, transfer_id: str, at_ms: int) -> ProjectedEvent:
        return self(e.TransferDebited, source, transfer_id, at_ms, transfer_id=transfer_id,
                    destination_wallet_id="bob", reference="")

    def credit(self, source: str, transfer_id: str, command_id: str, at_ms: int) -> ProjectedEvent:
        return self(e.TransferCredited, "bob", command_id, at_ms, transfer_id=transfer_id, source_wallet_id=source)

    def refund(self, source: str, transfer_id: str, refused_at_ms: int, at_ms: int) -> ProjectedEvent:
        return self(e.TransferRefunded, source, identity.refund_command_id(source, transfer_id, refused_at_ms), at_ms,
                    transfer_id=transfer_id, destination_wallet_id="bob", reason_code="WALLET_FROZEN")


def _transfer_rows(settings) -> list[tuple]:
    engine = _sync_engine(settings)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(
                "SELECT transfer_id, source_wallet_id, debited_at_ms, status, created_at_ms, completed_at_ms, "
                "refunded_at_ms FROM transfers ORDER BY transfer_id, source_wallet_id, debited_at_ms"))]
    finally:
        engine.dispose()


async def test_the_sink_puts_refunds_and_earlier_form_credits_on_the_latest_debit_of_their_source_and_id(stack):
    settings = isolation.with_database(isolated_settings(stack, "sink-legs"))
    writer = await mysql_sink.create_writer(settings)
    events = Events()
    try:
        # t-reused: a first transfer completed by a credit leg of the earlier id form (no time in its id) ...
        await writer([events.debit("alice", "t-reused", 1_000)])
        await writer([events.credit("alice", "t-reused", "~credit/alice/t-reused", 1_050)])
        # ... then the id again, after the retention, refused by its destination: the refund names the refusal.
        await writer([events.debit("alice", "t-reused", 9_000)])
        refund = events.refund("alice", "t-reused", 9_040, 9_080)
        await writer([refund])
        await writer([refund])  # a replayed batch changes nothing
        # t-one-batch: the debit and its refund in one batch (the upsert runs before the legs' statement).
        await writer([events.debit("carol", "t-one-batch", 2_000), events.refund("carol", "t-one-batch", 2_040, 2_080)])
        # t-orphan: an earlier-form credit whose debit is not projected: a row of its own under debit time 0.
        await writer([events.credit("dave", "t-orphan", "~credit/dave/t-orphan", 3_050)])
    finally:
        await writer.engine.dispose()
    try:
        assert _transfer_rows(settings) == [
            ("t-one-batch", "carol", 2_000, "refunded", 2_000, None, 2_080),
            ("t-orphan", "dave", readmodel.DEBITED_AT_UNKNOWN_MS, "completed", None, 3_050, None),
            ("t-reused", "alice", 1_000, "completed", 1_000, 1_050, None),
            ("t-reused", "alice", 9_000, "refunded", 9_000, None, 9_080),
        ]
    finally:
        isolation.drop_database(settings)


# ---------------------------------------------------------------- migration 0004 on the real MariaDB


def _ledger_credit(wallet_id: str, version: int, command_id: str, transfer_id: str, source: str) -> dict:
    return {"wallet_id": wallet_id, "version": version, "command_id": command_id, "kind": "TransferCredited",
            "amount_minor": 100, "currency": "EUR", "balance_after_minor": 100, "available_after_minor": 100,
            "held_after_minor": 0, "counterparty_wallet_id": source, "transfer_id": transfer_id, "hold_id": None,
            "reference": "", "hash": "a" * 64, "event_time_ms": 9_000}


def _transfer(transfer_id: str, source: str, status: str, created_at_ms: int | None, destination: str = "bob") -> dict:
    return {"transfer_id": transfer_id, "source_wallet_id": source, "destination_wallet_id": destination,
            "amount_minor": 100, "currency": "EUR", "status": status, "reason_code": None,
            "created_at_ms": created_at_ms, "completed_at_ms": 9_000 if status == "completed" else None,
            "refunded_at_ms": None}


@pytest.fixture
def database_at_0003(stack):
    settings = isolated_settings(stack, "migration")
    dsn = local_stack.create_database(settings, settings.app_id.replace("-", "_"), drop=True)
    settings = replace(settings, mysql_dsn=dsn, mysql_replica_dsn="")
    bootstrap.migrate(settings, "0003")
    yield settings
    isolation.drop_database(settings)


def test_migration_0004_keeps_every_row_and_keys_transfers_by_id_source_and_debit_time(database_at_0003):
    settings = database_at_0003
    columns = ", ".join(column for column in _transfer("t", "s", "pending", 1))
    engine = _sync_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO transfers ({columns}) VALUES "
                              f"({', '.join(':' + column for column in _transfer('t', 's', 'pending', 1))})"), [
                _transfer("t-pending", "alice", "pending", 1_000),
                _transfer("t-done", "alice", "completed", 2_000),
                # The credit was projected before the debit: its id in ledger_entries names the debit time.
                _transfer("t:colon-credit-first", "alice", "completed", None),
                # ... under the earlier leg-id form, it names none.
                _transfer("t-old-leg", "carol", "completed", None),
            ])
            ledger_columns = list(_ledger_credit("w", 1, "c", "t", "s"))
            conn.execute(text(f"INSERT INTO ledger_entries ({', '.join(ledger_columns)}) VALUES "
                              f"({', '.join(':' + column for column in ledger_columns)})"), [
                _ledger_credit("bob", 2, "~credit/alice/t:colon-credit-first:3000", "t:colon-credit-first", "alice"),
                _ledger_credit("bob", 3, "~credit/carol/t-old-leg", "t-old-leg", "carol"),
            ])
        bootstrap.migrate(settings)

        with engine.connect() as conn:
            rows = conn.execute(text("SELECT transfer_id, source_wallet_id, debited_at_ms, status, created_at_ms "
                                     "FROM transfers ORDER BY transfer_id")).all()
            key = conn.execute(text("SELECT column_name FROM information_schema.statistics WHERE "
                                    "table_schema = DATABASE() AND table_name = 'transfers' AND index_name = 'PRIMARY' "
                                    "ORDER BY seq_in_index")).scalars().all()
            migrated = conn.execute(text("SELECT column_name, is_nullable, column_default FROM "
                                         "information_schema.columns WHERE table_schema = DATABASE() AND "
                                         "table_name = 'transfers' ORDER BY ordinal_position")).all()
        assert [tuple(row) for row in rows] == [
            ("t-done", "alice", 2_000, "completed", 2_000),
            ("t-old-leg", "carol", readmodel.DEBITED_AT_UNKNOWN_MS, "completed", None),
            ("t-pending", "alice", 1_000, "pending", 1_000),
            ("t:colon-credit-first", "alice", 3_000, "completed", None),
        ]
        assert key == ["transfer_id", "source_wallet_id", "debited_at_ms"]
        # The table is what readside/readmodel.py declares, column for column, and debited_at_ms has no default.
        assert [(name, nullable == "YES") for name, nullable, _ in migrated] == [
            (column.name, bool(column.nullable)) for column in readmodel.transfers.columns]
        assert dict((name, default) for name, _, default in migrated)["debited_at_ms"] is None

        # One id from another source is a row of its own now; the downgrade keeps the one debited last.
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO transfers (transfer_id, source_wallet_id, debited_at_ms, "
                              "destination_wallet_id, amount_minor, currency, status, created_at_ms) VALUES "
                              "('t-done', 'dave', 5000, 'bob', 7, 'EUR', 'pending', 5000)"))
        from alembic import command

        command.downgrade(bootstrap.alembic_config(settings), "0003")
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT transfer_id, source_wallet_id FROM transfers "
                                     "ORDER BY transfer_id")).all()
        assert [tuple(row) for row in kept] == [("t-done", "dave"), ("t-old-leg", "carol"), ("t-pending", "alice"),
                                                ("t:colon-credit-first", "alice")]
    finally:
        engine.dispose()
