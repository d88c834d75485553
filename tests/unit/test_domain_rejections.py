"""Rejections: every code is reachable, refusals change nothing, and the status rules hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from app.domain import rejections as codes
from app.domain.commands import (
    CaptureHold,
    Close,
    CommandBase,
    Deposit,
    Freeze,
    OpenWallet,
    PlaceHold,
    ReleaseHold,
    Transfer,
    TransferCredit,
    TransferRefund,
    Unfreeze,
    Withdraw,
)
from app.domain.errors import UnknownCommand, WalletMismatch
from app.domain.events import CommandRejected, EventBase, TransferCreditRejected, TransferRefunded, is_applied
from app.domain.hashing import GENESIS_HASH
from app.domain.ledger import decide, evolve
from app.domain.limits import DEFAULT_LIMITS, Limits
from app.domain.state import WalletState

NOW_MS = 1_700_000_000_000
LATER_MS = NOW_MS + 60_000


class Ledger:
    """Decides and evolves commands against in-memory wallets, like the processor does, for tests."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.states: dict[str, WalletState] = {}
        self.limits = limits
        self.now_ms = NOW_MS
        self._commands_sent = 0

    def send(self, command_type: type[CommandBase], wallet_id: str, **fields: Any) -> EventBase:
        self._commands_sent += 1
        command = command_type(
            command_id=f"cmd-{self._commands_sent}", wallet_id=wallet_id, timestamp_ms=self.now_ms, **fields
        )
        [event] = decide(self.states.get(wallet_id), command, self.now_ms, self.limits)  # type: ignore[arg-type]
        after = evolve(self.states.get(wallet_id), event)
        if after is not None:
            self.states[wallet_id] = after
        return event

    def open(self, wallet_id: str = "w1", currency: str = "EUR", balance_minor: int = 0) -> Ledger:
        self.send(OpenWallet, wallet_id, owner_id="o", currency=currency)
        if balance_minor:
            self.send(Deposit, wallet_id, amount_minor=balance_minor, currency=currency)
        return self


def credit_leg(amount_minor: int = 100, currency: str = "EUR", source_wallet_id: str = "w0") -> dict[str, Any]:
    return {
        "transfer_id": "t-1",
        "source_wallet_id": source_wallet_id,
        "amount_minor": amount_minor,
        "currency": currency,
    }


def refund_leg(amount_minor: int = 100, currency: str = "EUR") -> dict[str, Any]:
    return {
        "transfer_id": "t-1",
        "destination_wallet_id": "w2",
        "amount_minor": amount_minor,
        "currency": currency,
        "reason_code": "WALLET_FROZEN",
    }


def hold(hold_id: str = "h", amount_minor: int = 100, expires_at_ms: int = LATER_MS) -> dict[str, Any]:
    return {"hold_id": hold_id, "amount_minor": amount_minor, "currency": "EUR", "expires_at_ms": expires_at_ms}


def _wallet_not_found() -> EventBase:
    return Ledger().send(Deposit, "nobody", amount_minor=1, currency="EUR")


def _wallet_exists() -> EventBase:
    return Ledger().open().send(OpenWallet, "w1", owner_id="o", currency="EUR")


def _wallet_frozen() -> EventBase:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(Freeze, "w1")
    return ledger.send(Withdraw, "w1", amount_minor=1, currency="EUR")


def _wallet_closed() -> EventBase:
    ledger = Ledger().open()
    ledger.send(Close, "w1")
    return ledger.send(Deposit, "w1", amount_minor=1, currency="EUR")


def _insufficient_funds() -> EventBase:
    return Ledger().open(balance_minor=100).send(Withdraw, "w1", amount_minor=101, currency="EUR")


def _currency_mismatch() -> EventBase:
    return Ledger().open().send(Deposit, "w1", amount_minor=100, currency="USD")


def _invalid_amount() -> EventBase:
    return Ledger().open().send(Deposit, "w1", amount_minor=0, currency="EUR")


def _self_transfer() -> EventBase:
    return (
        Ledger()
        .open(balance_minor=100)
        .send(Transfer, "w1", destination_wallet_id="w1", amount_minor=1, currency="EUR")
    )


def _hold_not_found() -> EventBase:
    return Ledger().open().send(CaptureHold, "w1", hold_id="nope")


def _hold_expired() -> EventBase:
    return Ledger().open(balance_minor=100).send(PlaceHold, "w1", **hold(expires_at_ms=NOW_MS))


def _hold_not_expired() -> EventBase:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold(expires_at_ms=NOW_MS + 10))
    return ledger.send(ReleaseHold, "w1", hold_id="h", reason="EXPIRED")


def _hold_exceeded() -> EventBase:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold(amount_minor=50))
    return ledger.send(CaptureHold, "w1", hold_id="h", amount_minor=51)


def _too_many_holds() -> EventBase:
    ledger = Ledger(Limits(holds_open_max=2)).open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h1", 1))
    ledger.send(PlaceHold, "w1", **hold("h2", 1))
    return ledger.send(PlaceHold, "w1", **hold("h3", 1))


def _balance_not_zero() -> EventBase:
    return Ledger().open(balance_minor=1).send(Close, "w1")


def _limit_exceeded() -> EventBase:
    return Ledger().open().send(Deposit, "w1", amount_minor=100_000_001, currency="EUR")


def _duplicate_command() -> EventBase:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 10))
    return ledger.send(PlaceHold, "w1", **hold("h", 10))


SCENARIOS: dict[str, Callable[[], EventBase]] = {
    codes.WALLET_NOT_FOUND: _wallet_not_found,
    codes.WALLET_EXISTS: _wallet_exists,
    codes.WALLET_FROZEN: _wallet_frozen,
    codes.WALLET_CLOSED: _wallet_closed,
    codes.INSUFFICIENT_FUNDS: _insufficient_funds,
    codes.CURRENCY_MISMATCH: _currency_mismatch,
    codes.INVALID_AMOUNT: _invalid_amount,
    codes.SELF_TRANSFER: _self_transfer,
    codes.HOLD_NOT_FOUND: _hold_not_found,
    codes.HOLD_EXPIRED: _hold_expired,
    codes.HOLD_NOT_EXPIRED: _hold_not_expired,
    codes.HOLD_EXCEEDED: _hold_exceeded,
    codes.TOO_MANY_HOLDS: _too_many_holds,
    codes.BALANCE_NOT_ZERO: _balance_not_zero,
    codes.LIMIT_EXCEEDED: _limit_exceeded,
    codes.DUPLICATE_COMMAND: _duplicate_command,
}


def test_every_rejection_code_has_a_scenario() -> None:
    assert set(SCENARIOS) == codes.REJECTION_CODES
    assert len(codes.REJECTION_CODES) == 16


@pytest.mark.parametrize("code", sorted(codes.REJECTION_CODES))
def test_every_rejection_code_is_reachable(code: str) -> None:
    event = SCENARIOS[code]()
    assert isinstance(event, CommandRejected)
    assert event.code == code
    assert event.detail


def test_rejection_carries_the_current_position_and_changes_nothing() -> None:
    ledger = Ledger().open(balance_minor=100)
    before = ledger.states["w1"]
    event = ledger.send(Withdraw, "w1", amount_minor=101, currency="EUR")
    assert isinstance(event, CommandRejected) and event.command_kind == "Withdraw"
    assert (
        event.version,
        event.balance_after_minor,
        event.available_after_minor,
        event.held_after_minor,
        event.hash,
    ) == (
        before.version,
        100,
        100,
        0,
        before.last_hash,
    )
    assert ledger.states["w1"] is before


def test_rejection_for_a_missing_wallet_carries_version_zero_and_the_genesis_hash() -> None:
    event = _wallet_not_found()
    assert (
        event.version,
        event.balance_after_minor,
        event.available_after_minor,
        event.held_after_minor,
        event.hash,
    ) == (0, 0, 0, 0, GENESIS_HASH)


@pytest.mark.parametrize(
    ("command_type", "fields"),
    [
        (Deposit, {"amount_minor": 1, "currency": "EUR"}),
        (Withdraw, {"amount_minor": 1, "currency": "EUR"}),
        (Transfer, {"destination_wallet_id": "w2", "amount_minor": 1, "currency": "EUR"}),
        (TransferRefund, refund_leg()),
        (PlaceHold, hold()),
        (CaptureHold, {"hold_id": "h"}),
        (ReleaseHold, {"hold_id": "h"}),
        (Freeze, {}),
        (Unfreeze, {}),
        (Close, {}),
    ],
)
def test_every_command_but_open_and_credit_on_a_missing_wallet_is_wallet_not_found(
    command_type: type[CommandBase], fields: dict[str, Any]
) -> None:
    event = Ledger().send(command_type, "nobody", **fields)
    assert isinstance(event, CommandRejected) and event.code == codes.WALLET_NOT_FOUND


def test_credit_to_a_missing_wallet_is_a_credit_rejection_for_the_relay_to_refund() -> None:
    event = Ledger().send(TransferCredit, "nobody", **credit_leg())
    assert isinstance(event, TransferCreditRejected)
    assert (event.code, event.transfer_id, event.source_wallet_id, event.amount_minor, event.currency) == (
        codes.WALLET_NOT_FOUND,
        "t-1",
        "w0",
        100,
        "EUR",
    )


@pytest.mark.parametrize("status_command", [None, Freeze, Close])
def test_open_wallet_on_an_existing_wallet_of_any_status_is_wallet_exists(
    status_command: type[CommandBase] | None,
) -> None:
    ledger = Ledger().open()
    if status_command is not None:
        ledger.send(status_command, "w1")
    event = ledger.send(OpenWallet, "w1", owner_id="o", currency="EUR")
    assert isinstance(event, CommandRejected) and event.code == codes.WALLET_EXISTS


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"currency": "XXX"}, codes.CURRENCY_MISMATCH),
        ({"currency": "EUR", "overdraft_limit_minor": -1}, codes.INVALID_AMOUNT),
        ({"currency": "EUR", "overdraft_limit_minor": 100_000_001}, codes.LIMIT_EXCEEDED),
        ({"currency": "EUR", "overdraft_limit_minor": 2**63}, codes.INVALID_AMOUNT),
    ],
)
def test_open_wallet_with_bad_currency_or_overdraft_is_rejected(fields: dict[str, Any], code: str) -> None:
    event = Ledger().send(OpenWallet, "w1", owner_id="o", **fields)
    assert isinstance(event, CommandRejected) and event.code == code


def test_open_wallet_with_unknown_currency_says_so() -> None:
    event = Ledger().send(OpenWallet, "w1", owner_id="o", currency="XXX")
    assert isinstance(event, CommandRejected) and "unknown currency" in event.detail


def closed_wallet() -> Ledger:
    ledger = Ledger().open()
    ledger.send(Close, "w1")
    return ledger


def frozen_wallet_with_a_hold() -> Ledger:
    ledger = Ledger().open(balance_minor=1_000)
    ledger.send(PlaceHold, "w1", **hold("h", 100))
    ledger.send(Freeze, "w1")
    return ledger


STATUS_RULES = [
    # (wallet, command, fields, expected code or None when applied)
    (frozen_wallet_with_a_hold, Deposit, {"amount_minor": 1, "currency": "EUR"}, codes.WALLET_FROZEN),
    (frozen_wallet_with_a_hold, Withdraw, {"amount_minor": 1, "currency": "EUR"}, codes.WALLET_FROZEN),
    (
        frozen_wallet_with_a_hold,
        Transfer,
        {"destination_wallet_id": "w2", "amount_minor": 1, "currency": "EUR"},
        codes.WALLET_FROZEN,
    ),
    (frozen_wallet_with_a_hold, PlaceHold, hold("h2", 1), codes.WALLET_FROZEN),
    (frozen_wallet_with_a_hold, CaptureHold, {"hold_id": "h"}, codes.WALLET_FROZEN),
    (frozen_wallet_with_a_hold, Freeze, {}, codes.WALLET_FROZEN),
    (frozen_wallet_with_a_hold, ReleaseHold, {"hold_id": "h"}, None),
    (frozen_wallet_with_a_hold, Unfreeze, {}, None),
    (frozen_wallet_with_a_hold, Close, {}, codes.BALANCE_NOT_ZERO),
    (frozen_wallet_with_a_hold, TransferRefund, refund_leg(), None),
    (closed_wallet, Deposit, {"amount_minor": 1, "currency": "EUR"}, codes.WALLET_CLOSED),
    (closed_wallet, Withdraw, {"amount_minor": 1, "currency": "EUR"}, codes.WALLET_CLOSED),
    (
        closed_wallet,
        Transfer,
        {"destination_wallet_id": "w2", "amount_minor": 1, "currency": "EUR"},
        codes.WALLET_CLOSED,
    ),
    (closed_wallet, PlaceHold, hold(), codes.WALLET_CLOSED),
    (closed_wallet, CaptureHold, {"hold_id": "h"}, codes.WALLET_CLOSED),
    (closed_wallet, ReleaseHold, {"hold_id": "h"}, codes.WALLET_CLOSED),
    (closed_wallet, Freeze, {}, codes.WALLET_CLOSED),
    (closed_wallet, Unfreeze, {}, codes.WALLET_CLOSED),
    (closed_wallet, Close, {}, codes.WALLET_CLOSED),
    (closed_wallet, TransferRefund, refund_leg(), None),
]


@pytest.mark.parametrize(
    ("make_wallet", "command_type", "fields", "code"),
    STATUS_RULES,
    ids=[f"{make.__name__}-{command.__name__}" for make, command, _, _ in STATUS_RULES],
)
def test_status_rules_of_frozen_and_closed_wallets(
    make_wallet: Callable[[], Ledger], command_type: type[CommandBase], fields: dict[str, Any], code: str | None
) -> None:
    event = make_wallet().send(command_type, "w1", **fields)
    if code is None:
        assert is_applied(event), event
    else:
        assert isinstance(event, CommandRejected) and event.code == code


@pytest.mark.parametrize(
    ("make_wallet", "code"), [(frozen_wallet_with_a_hold, codes.WALLET_FROZEN), (closed_wallet, codes.WALLET_CLOSED)]
)
def test_credit_to_a_frozen_or_closed_wallet_is_a_credit_rejection(
    make_wallet: Callable[[], Ledger], code: str
) -> None:
    event = make_wallet().send(TransferCredit, "w1", **credit_leg())
    assert isinstance(event, TransferCreditRejected) and event.code == code


@pytest.mark.parametrize(
    ("leg", "code"),
    [
        (credit_leg(currency="USD"), codes.CURRENCY_MISMATCH),
        (credit_leg(amount_minor=0), codes.INVALID_AMOUNT),
        (credit_leg(amount_minor=100_000_001), codes.LIMIT_EXCEEDED),
        (credit_leg(source_wallet_id="w1"), codes.SELF_TRANSFER),
    ],
)
def test_credit_refused_by_an_active_destination_is_a_credit_rejection(leg: dict[str, Any], code: str) -> None:
    event = Ledger().open().send(TransferCredit, "w1", **leg)
    assert isinstance(event, TransferCreditRejected) and event.code == code


def test_credit_above_the_balance_maximum_is_a_credit_rejection() -> None:
    ledger = Ledger(Limits(balance_max_minor=1_000)).open(balance_minor=950)
    event = ledger.send(TransferCredit, "w1", **credit_leg(amount_minor=51))
    assert isinstance(event, TransferCreditRejected) and event.code == codes.LIMIT_EXCEEDED


def test_refund_to_a_closed_wallet_is_applied_and_leaves_a_balance_there() -> None:
    ledger = closed_wallet()
    event = ledger.send(TransferRefund, "w1", **refund_leg(amount_minor=250))
    assert isinstance(event, TransferRefunded)
    assert ledger.states["w1"].status == "CLOSED" and ledger.states["w1"].balance_minor == 250


def test_refund_ignores_the_per_command_and_balance_maxima() -> None:
    ledger = Ledger(Limits(amount_max_major=10, balance_max_minor=1_000)).open(balance_minor=1_000)
    assert is_applied(ledger.send(Transfer, "w1", destination_wallet_id="w2", amount_minor=1_000, currency="EUR"))
    ledger.send(Deposit, "w1", amount_minor=1_000, currency="EUR")
    # the per-command maximum is 1_000 minor and the balance maximum 1_000 minor: the refund exceeds both
    event = ledger.send(TransferRefund, "w1", **refund_leg(amount_minor=5_000))
    assert isinstance(event, TransferRefunded) and event.balance_after_minor == 6_000


@pytest.mark.parametrize(
    ("leg", "code"),
    [
        (refund_leg(amount_minor=0), codes.INVALID_AMOUNT),
        (refund_leg(amount_minor=2**63), codes.INVALID_AMOUNT),
        (refund_leg(currency="USD"), codes.CURRENCY_MISMATCH),
    ],
)
def test_malformed_refund_is_rejected(leg: dict[str, Any], code: str) -> None:
    event = Ledger().open().send(TransferRefund, "w1", **leg)
    assert isinstance(event, CommandRejected) and event.code == code


def test_refund_that_would_not_fit_an_avro_long_is_rejected() -> None:
    ledger = Ledger().open()
    # A balance at the Avro long bound cannot be reached with the default limits; build it directly.
    ledger.states["w1"] = replace(ledger.states["w1"], balance_minor=2**63 - 1)
    event = ledger.send(TransferRefund, "w1", **refund_leg(amount_minor=1))
    assert isinstance(event, CommandRejected) and event.code == codes.LIMIT_EXCEEDED


def test_unfreeze_of_an_active_wallet_is_a_duplicate_command() -> None:
    event = Ledger().open().send(Unfreeze, "w1")
    assert isinstance(event, CommandRejected) and event.code == codes.DUPLICATE_COMMAND
    assert event.detail == "wallet is not frozen"


def test_transfer_over_available_is_insufficient_funds() -> None:
    event = (
        Ledger()
        .open(balance_minor=100)
        .send(Transfer, "w1", destination_wallet_id="w2", amount_minor=101, currency="EUR")
    )
    assert isinstance(event, CommandRejected) and event.code == codes.INSUFFICIENT_FUNDS


def test_place_hold_over_available_is_insufficient_funds() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h1", 60))
    event = ledger.send(PlaceHold, "w1", **hold("h2", 41))
    assert isinstance(event, CommandRejected) and event.code == codes.INSUFFICIENT_FUNDS


def test_withdraw_of_held_money_is_insufficient_funds() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 60))
    event = ledger.send(Withdraw, "w1", amount_minor=41, currency="EUR")
    assert isinstance(event, CommandRejected) and event.code == codes.INSUFFICIENT_FUNDS


def test_capture_at_or_after_expiry_is_hold_expired() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 60, expires_at_ms=NOW_MS + 10))
    ledger.now_ms = NOW_MS + 10
    event = ledger.send(CaptureHold, "w1", hold_id="h")
    assert isinstance(event, CommandRejected) and event.code == codes.HOLD_EXPIRED


def test_capture_one_ms_before_expiry_is_applied() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 60, expires_at_ms=NOW_MS + 10))
    ledger.now_ms = NOW_MS + 9
    assert is_applied(ledger.send(CaptureHold, "w1", hold_id="h"))


def test_second_expiry_release_of_a_hold_is_harmless_hold_not_found() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 60, expires_at_ms=NOW_MS + 10))
    ledger.now_ms = NOW_MS + 10
    assert is_applied(ledger.send(ReleaseHold, "w1", hold_id="h", reason="EXPIRED"))
    state = ledger.states["w1"]
    event = ledger.send(ReleaseHold, "w1", hold_id="h", reason="EXPIRED")
    assert isinstance(event, CommandRejected) and event.code == codes.HOLD_NOT_FOUND
    assert ledger.states["w1"] is state


def test_expiry_release_of_a_hold_placed_again_is_refused_until_the_new_placement_expires() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 60, expires_at_ms=NOW_MS + 10))
    ledger.send(ReleaseHold, "w1", hold_id="h", reason="by the client")
    ledger.send(PlaceHold, "w1", **hold("h", 60, expires_at_ms=NOW_MS + 1_000))
    ledger.now_ms = NOW_MS + 10  # the first placement's expiry release arrives late
    event = ledger.send(ReleaseHold, "w1", hold_id="h", reason="EXPIRED")
    assert isinstance(event, CommandRejected) and event.code == codes.HOLD_NOT_EXPIRED
    assert ledger.states["w1"].held_minor == 60
    ledger.now_ms = NOW_MS + 1_000
    assert is_applied(ledger.send(ReleaseHold, "w1", hold_id="h", reason="EXPIRED"))


def test_a_captured_hold_id_can_be_placed_again() -> None:
    ledger = Ledger().open(balance_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 10))
    ledger.send(CaptureHold, "w1", hold_id="h")
    assert is_applied(ledger.send(PlaceHold, "w1", **hold("h", 10)))


def test_close_with_open_holds_at_zero_balance_is_balance_not_zero() -> None:
    ledger = Ledger()
    ledger.send(OpenWallet, "w1", owner_id="o", currency="EUR", overdraft_limit_minor=100)
    ledger.send(PlaceHold, "w1", **hold("h", 10))
    event = ledger.send(Close, "w1")
    assert isinstance(event, CommandRejected) and event.code == codes.BALANCE_NOT_ZERO


def test_close_with_a_negative_balance_is_balance_not_zero() -> None:
    ledger = Ledger()
    ledger.send(OpenWallet, "w1", owner_id="o", currency="EUR", overdraft_limit_minor=100)
    ledger.send(Withdraw, "w1", amount_minor=10, currency="EUR")
    event = ledger.send(Close, "w1")
    assert isinstance(event, CommandRejected) and event.code == codes.BALANCE_NOT_ZERO


def test_decide_refuses_a_non_command_as_a_fault() -> None:
    with pytest.raises(UnknownCommand):
        decide(None, object(), NOW_MS)  # type: ignore[arg-type]
    state = Ledger().open("w1").states["w1"]
    with pytest.raises(UnknownCommand):
        decide(state, object(), NOW_MS)  # type: ignore[arg-type]


def test_decide_refuses_another_wallets_state_as_a_fault() -> None:
    ledger = Ledger().open("w1")
    command = Deposit(command_id="c", wallet_id="w2", timestamp_ms=NOW_MS, amount_minor=1, currency="EUR")
    with pytest.raises(WalletMismatch):
        decide(ledger.states["w1"], command, NOW_MS)
