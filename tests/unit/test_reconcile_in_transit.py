"""`wallet reconcile` finds money in transit in the event log and reports transfers stuck there longer than the
bound (wallet/reconcile.py `in_transit`, `stuck_in_transit`)."""

from __future__ import annotations

from app import identity
from app.domain import events as e
from wallet.reconcile import in_transit, stuck_in_transit

NOW_MS = 1_700_000_000_000
MAX_S = 300
_CHAIN = {"version": 2, "balance_after_minor": 0, "available_after_minor": 0, "held_after_minor": 0, "hash": "0" * 64}


def debit(transfer_id: str, age_s: float, amount_minor: int = 500) -> e.TransferDebited:
    return e.TransferDebited(wallet_id="alice", command_id=transfer_id, timestamp_ms=NOW_MS - int(age_s * 1000),
                             transfer_id=transfer_id, destination_wallet_id="bob", amount_minor=amount_minor,
                             currency="EUR", reference="", **_CHAIN)


def credit(transfer_id: str) -> e.TransferCredited:
    return e.TransferCredited(wallet_id="bob", command_id=f"{transfer_id}:credit", timestamp_ms=NOW_MS,
                              transfer_id=transfer_id, source_wallet_id="alice", amount_minor=500, currency="EUR",
                              **_CHAIN)


def refund(transfer_id: str) -> e.TransferRefunded:
    return e.TransferRefunded(wallet_id="alice", command_id=f"{transfer_id}:refund", timestamp_ms=NOW_MS,
                              transfer_id=transfer_id, destination_wallet_id="bob", amount_minor=500,
                              currency="EUR", reason_code="WALLET_CLOSED", **_CHAIN)


def test_credited_and_refunded_transfers_are_not_in_transit_whichever_leg_comes_first():
    events = [credit("t-credited-first"), debit("t-credited-first", 900), debit("t-credited", 900),
              credit("t-credited"), debit("t-refunded", 900), refund("t-refunded"), debit("t-open", 900)]
    assert [d.transfer_id for d in in_transit(events)] == ["t-open"]


def test_a_transfer_in_transit_longer_than_the_bound_is_a_difference_naming_it():
    [line] = stuck_in_transit(in_transit([debit("t-stuck", 3600, amount_minor=1234)]), NOW_MS, MAX_S)
    assert line == ("transfer t-stuck: in transit for 3600 s (transfer_in_transit_max_s is 300): 1234 minor units "
                    "of EUR debited from alice, neither credited to bob nor refunded")


def test_transfers_in_transit_within_the_bound_are_not_differences():
    unsettled = in_transit([debit("t-young", 1), debit("t-at-the-bound", MAX_S + 0.999)])
    assert len(unsettled) == 2
    assert stuck_in_transit(unsettled, NOW_MS, MAX_S) == []


def test_every_stuck_transfer_is_reported_oldest_first_and_younger_ones_are_left_out():
    events = [debit("t-young", 10), debit("t-older", 400), debit("t-oldest", 7200), debit("t-settled", 9000),
              credit("t-settled")]
    stuck = stuck_in_transit(in_transit(events), NOW_MS, MAX_S)
    assert [line.split(":")[0] for line in stuck] == ["transfer t-oldest", "transfer t-older"]


def _debit(source: str, transfer_id: str, at_ms: int) -> e.TransferDebited:
    return e.TransferDebited(wallet_id=source, command_id=transfer_id, timestamp_ms=at_ms, transfer_id=transfer_id,
                             destination_wallet_id="bob", amount_minor=500, currency="EUR", reference="", **_CHAIN)


def _credit_leg(source: str, transfer_id: str, debited_at_ms: int) -> e.TransferCredited:
    return e.TransferCredited(wallet_id="bob", timestamp_ms=NOW_MS, transfer_id=transfer_id, source_wallet_id=source,
                              command_id=identity.credit_command_id(source, transfer_id, debited_at_ms),
                              amount_minor=500, currency="EUR", **_CHAIN)


def test_one_transfer_id_from_two_sources_is_two_transfers_each_settled_by_its_own_credit():
    events = [_debit("alice", "t-shared", NOW_MS - 9_000), _debit("carol", "t-shared", NOW_MS - 8_000),
              _credit_leg("carol", "t-shared", NOW_MS - 8_000)]
    assert [(d.wallet_id, d.transfer_id) for d in in_transit(events)] == [("alice", "t-shared")]
    events.append(_credit_leg("alice", "t-shared", NOW_MS - 9_000))
    assert in_transit(events) == []


def test_a_transfer_id_reused_by_its_source_is_a_second_transfer_the_first_credit_does_not_settle():
    first_ms, second_ms = NOW_MS - 8 * 86_400_000, NOW_MS - 1_000
    events = [_debit("alice", "t-again", first_ms), _debit("alice", "t-again", second_ms),
              _credit_leg("alice", "t-again", first_ms)]
    assert [d.timestamp_ms for d in in_transit(events)] == [second_ms]


def test_a_refund_settles_the_debit_whose_refused_credit_named_it_not_the_latest():
    first_ms, second_ms, refused_ms = NOW_MS - 8 * 86_400_000, NOW_MS - 2_000, NOW_MS - 1_000
    refused = e.TransferCreditRejected(
        wallet_id="bob", command_id=identity.credit_command_id("alice", "t-again", first_ms), timestamp_ms=refused_ms,
        transfer_id="t-again", source_wallet_id="alice", amount_minor=500, currency="EUR", code="WALLET_CLOSED",
        detail="", **{**_CHAIN, "version": 0})
    back = e.TransferRefunded(wallet_id="alice", command_id=identity.refund_command_id("alice", "t-again", refused_ms),
                              timestamp_ms=NOW_MS, transfer_id="t-again", destination_wallet_id="bob",
                              amount_minor=500, currency="EUR", reason_code="WALLET_CLOSED", **_CHAIN)
    events = [_debit("alice", "t-again", first_ms), _debit("alice", "t-again", second_ms), back, refused]
    assert [d.timestamp_ms for d in in_transit(events)] == [second_ms]


def test_a_leg_under_the_earlier_id_form_settles_the_latest_debit_of_its_source_and_id():
    events = [credit("t-old"), debit("t-old", 900), debit("t-old", 30)]  # "t-old:credit" names no debit time
    [left] = in_transit(events)
    assert left.timestamp_ms == NOW_MS - 900_000
