"""One transfer, one key: (transfer id, source wallet, debit time). The debit carries its time, a credit leg's id
names it (app/identity.py), and a refund or a leg under the earlier id form is put on its latest debit by the
MySQL sink (readside/readmodel.py transfer_row, agents/mysql_sink.py LegsOnLatestDebit)."""

from __future__ import annotations

import pytest

from agents.mysql_sink import MySqlWriter
from agents.projection import ProjectedEvent
from agents.transfer_relay import leg_for
from app import identity
from app.domain import events as e
from readside.readmodel import transfer_row

DEBITED_AT_MS = 1_800_000_000_123
_CHAIN = {"version": 2, "balance_after_minor": 0, "available_after_minor": 0, "held_after_minor": 0, "hash": "0" * 64}


def debit(transfer_id: str = "order:7", source: str = "alice", at_ms: int = DEBITED_AT_MS) -> e.TransferDebited:
    return e.TransferDebited(wallet_id=source, command_id=transfer_id, timestamp_ms=at_ms, transfer_id=transfer_id,
                             destination_wallet_id="bob", amount_minor=500, currency="EUR", reference="", **_CHAIN)


def credited(command_id: str, transfer_id: str = "order:7") -> e.TransferCredited:
    return e.TransferCredited(wallet_id="bob", command_id=command_id, timestamp_ms=DEBITED_AT_MS + 40,
                              transfer_id=transfer_id, source_wallet_id="alice", amount_minor=500, currency="EUR",
                              **_CHAIN)


def refunded(command_id: str) -> e.TransferRefunded:
    return e.TransferRefunded(wallet_id="alice", command_id=command_id, timestamp_ms=DEBITED_AT_MS + 90,
                              transfer_id="order:7", destination_wallet_id="bob", amount_minor=500, currency="EUR",
                              reason_code="WALLET_CLOSED", **_CHAIN)


def _key(row: dict) -> tuple:
    return row["transfer_id"], row["source_wallet_id"], row["debited_at_ms"]


def test_the_credit_leg_the_relay_publishes_names_the_debit_time_its_credit_row_is_keyed_by():
    leg = leg_for(debit())
    assert identity.leg_decided_at_ms(leg.command_id, identity.CREDIT, "alice", "order:7") == DEBITED_AT_MS
    assert _key(transfer_row(credited(leg.command_id))) == _key(transfer_row(debit())) == (
        "order:7", "alice", DEBITED_AT_MS)


@pytest.mark.parametrize("command_id", [
    "~credit/alice/order:7",  # the earlier form: no time
    "~credit/alice/order",  # another transfer's id (its id is a prefix of this one's)
    "~credit/carol/order:7:1800000000123",  # another source
    "~refund/alice/order:7:1800000000123",  # another cause
    "~credit/alice/order:7:18000000001230000000",  # 20 digits: no Avro long
    "~credit/alice/order:7:-5",
    "order:7:credit",  # not a leg's id at all
])
def test_a_leg_id_that_names_no_debit_time_of_this_transfer_gives_none(command_id):
    assert identity.leg_decided_at_ms(command_id, identity.CREDIT, "alice", "order:7") is None


def test_a_refund_and_an_earlier_form_credit_leave_the_debit_time_to_the_sink():
    refused = e.TransferCreditRejected(wallet_id="bob", command_id=leg_for(debit()).command_id,
                                       timestamp_ms=DEBITED_AT_MS + 50, transfer_id="order:7",
                                       source_wallet_id="alice", amount_minor=500, currency="EUR",
                                       code="WALLET_CLOSED", detail="", **_CHAIN)
    refund = leg_for(refused)
    # A refund's id names the refusal's time, not the debit's.
    assert identity.leg_decided_at_ms(refund.command_id, identity.REFUND, "alice", "order:7") == DEBITED_AT_MS + 50
    assert transfer_row(refunded(refund.command_id))["debited_at_ms"] is None
    assert transfer_row(credited("~credit/alice/order:7"))["debited_at_ms"] is None


def test_a_batch_with_a_refund_writes_it_after_the_transfer_upsert_on_the_latest_debit_of_its_source_and_id():
    batch = [debit(), credited(leg_for(debit()).command_id), refunded("~refund/alice/order:7:1800000000173")]
    statements = MySqlWriter(engine=None).prepare([ProjectedEvent(ev, "", 0, n) for n, ev in enumerate(batch)])
    assert [sql.split()[2] for sql in statements] == [
        "ledger_entries", "command_outcomes", "transfers", "transfers", "wallets"]
    upsert, legs = statements[2], statements[3]
    assert upsert.count("'order:7','alice',1800000000123,") == 2  # the debit and its credit: one key
    assert "'refunded'" not in upsert
    assert " WITH leg (transfer_id, source_wallet_id, destination_wallet_id," in legs
    assert "('order:7','alice','bob',500,'EUR','refunded','WALLET_CLOSED',NULL,NULL,1800000000213)" in legs
    assert ("COALESCE((SELECT MAX(debit.debited_at_ms) FROM transfers AS debit WHERE debit.transfer_id = "
            "leg.transfer_id AND debit.source_wallet_id = leg.source_wallet_id), 0)") in legs
