"""Every command kind, applied: the event it yields and the wallet after it."""

from __future__ import annotations

from typing import Any

from app.identity import credit_command_id, expiry_command_id, refund_command_id
from app.domain import events as ev
from app.domain.commands import (
    COMMAND_TYPES,
    INTERNAL_COMMAND_TYPES,
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
from app.domain.hashing import GENESIS_HASH
from app.domain.ledger import decide, evolve
from app.domain.state import Hold, WalletState

NOW_MS = 1_700_000_000_000


class Ledger:
    """Decides and evolves commands against in-memory wallets, like the processor does, for tests."""

    def __init__(self) -> None:
        self.states: dict[str, WalletState] = {}
        self.events: list[ev.EventBase] = []
        self.now_ms = NOW_MS
        self._commands_sent = 0

    def send(self, command_type: type[CommandBase], wallet_id: str, **fields: Any) -> ev.EventBase:
        self._commands_sent += 1
        fields.setdefault("command_id", f"cmd-{self._commands_sent}")
        command = command_type(wallet_id=wallet_id, timestamp_ms=self.now_ms, **fields)
        [event] = decide(self.states.get(wallet_id), command, self.now_ms)  # type: ignore[arg-type]
        after = evolve(self.states.get(wallet_id), event)
        if after is not None:
            self.states[wallet_id] = after
        self.events.append(event)
        return event


def opened(currency: str = "EUR", overdraft_limit_minor: int = 0, balance_minor: int = 0) -> Ledger:
    ledger = Ledger()
    ledger.send(OpenWallet, "w1", owner_id="alice", currency=currency, overdraft_limit_minor=overdraft_limit_minor)
    if balance_minor:
        ledger.send(Deposit, "w1", amount_minor=balance_minor, currency=currency)
    return ledger


def test_open_wallet_creates_an_active_wallet_at_zero_chained_to_genesis() -> None:
    ledger = Ledger()
    event = ledger.send(OpenWallet, "w1", owner_id="alice", currency="JPY", overdraft_limit_minor=500)
    assert isinstance(event, ev.WalletOpened)
    assert (event.version, event.balance_after_minor, event.available_after_minor, event.held_after_minor) == (
        1,
        0,
        500,
        0,
    )
    assert event.owner_id == "alice" and event.currency == "JPY" and event.overdraft_limit_minor == 500
    assert event.hash != GENESIS_HASH and len(event.hash) == 64
    assert ledger.states["w1"] == WalletState(
        wallet_id="w1",
        owner_id="alice",
        status="ACTIVE",
        currency="JPY",
        balance_minor=0,
        held_minor=0,
        overdraft_limit_minor=500,
        version=1,
        last_hash=event.hash,
        holds=(),
    )


def test_deposit_increases_balance_and_available() -> None:
    ledger = opened()
    event = ledger.send(Deposit, "w1", amount_minor=15075, currency="EUR", reference="r-1", description="salary")
    assert isinstance(event, ev.Deposited)
    assert (event.amount_minor, event.reference, event.description) == (15075, "r-1", "salary")
    assert (event.version, event.balance_after_minor, event.available_after_minor) == (2, 15075, 15075)
    assert ledger.states["w1"].balance_minor == 15075


def test_withdraw_decreases_balance_and_may_use_the_overdraft() -> None:
    ledger = opened(overdraft_limit_minor=1_000, balance_minor=500)
    event = ledger.send(Withdraw, "w1", amount_minor=1_500, currency="EUR", reference="atm")
    assert isinstance(event, ev.Withdrawn)
    assert (event.balance_after_minor, event.available_after_minor) == (-1_000, 0)
    assert ledger.states["w1"].balance_minor == -1_000


def test_transfer_debits_the_source_with_the_command_id_as_transfer_id() -> None:
    ledger = opened(balance_minor=1_000)
    event = ledger.send(
        Transfer, "w1", command_id="t-1", destination_wallet_id="w2", amount_minor=300, currency="EUR", reference="rent"
    )
    assert isinstance(event, ev.TransferDebited)
    assert (event.transfer_id, event.destination_wallet_id, event.amount_minor, event.reference) == (
        "t-1",
        "w2",
        300,
        "rent",
    )
    assert event.balance_after_minor == 700


def test_transfer_credit_credits_the_destination() -> None:
    ledger = opened()
    event = ledger.send(
        TransferCredit,
        "w1",
        command_id=credit_command_id("w0", "t-1", 1_700_000_000_000),
        transfer_id="t-1",
        source_wallet_id="w0",
        amount_minor=300,
        currency="EUR",
    )
    assert isinstance(event, ev.TransferCredited)
    assert (event.transfer_id, event.source_wallet_id) == ("t-1", "w0")
    assert event.command_id == "~credit/w0/t-1:1700000000000"
    assert event.balance_after_minor == 300


def test_transfer_refund_gives_the_amount_back_to_the_source() -> None:
    ledger = opened(balance_minor=1_000)
    ledger.send(Transfer, "w1", command_id="t-1", destination_wallet_id="w2", amount_minor=300, currency="EUR")
    event = ledger.send(
        TransferRefund,
        "w1",
        command_id=refund_command_id("w1", "t-1", 1_700_000_000_000),
        transfer_id="t-1",
        destination_wallet_id="w2",
        amount_minor=300,
        currency="EUR",
        reason_code="WALLET_NOT_FOUND",
    )
    assert isinstance(event, ev.TransferRefunded)
    assert (event.reason_code, event.balance_after_minor) == ("WALLET_NOT_FOUND", 1_000)
    assert event.command_id == "~refund/w1/t-1:1700000000000"


def test_place_hold_moves_money_from_available_to_held_keeping_the_balance() -> None:
    ledger = opened(balance_minor=1_000)
    event = ledger.send(PlaceHold, "w1", hold_id="h-b", amount_minor=400, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    ledger.send(PlaceHold, "w1", hold_id="h-a", amount_minor=100, currency="EUR", expires_at_ms=NOW_MS + 1)
    assert isinstance(event, ev.HoldPlaced)
    assert (event.balance_after_minor, event.available_after_minor, event.held_after_minor) == (1_000, 600, 400)
    assert event.expires_at_ms == NOW_MS + 60_000
    # holds are kept sorted by hold_id, whatever the order of placement
    assert ledger.states["w1"].holds == (
        Hold(hold_id="h-a", amount_minor=100, expires_at_ms=NOW_MS + 1),
        Hold(hold_id="h-b", amount_minor=400, expires_at_ms=NOW_MS + 60_000),
    )
    assert ledger.states["w1"].held_minor == 500


def test_capture_hold_without_amount_captures_the_whole_hold() -> None:
    ledger = opened(balance_minor=1_000)
    ledger.send(PlaceHold, "w1", hold_id="h", amount_minor=400, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    event = ledger.send(CaptureHold, "w1", hold_id="h")
    assert isinstance(event, ev.HoldCaptured)
    assert (event.amount_minor, event.released_minor, event.currency) == (400, 0, "EUR")
    assert (event.balance_after_minor, event.available_after_minor, event.held_after_minor) == (600, 600, 0)
    assert ledger.states["w1"].holds == ()


def test_partial_capture_releases_the_rest_and_closes_the_hold() -> None:
    ledger = opened(balance_minor=1_000)
    ledger.send(PlaceHold, "w1", hold_id="h", amount_minor=400, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    event = ledger.send(CaptureHold, "w1", hold_id="h", amount_minor=150)
    assert isinstance(event, ev.HoldCaptured)
    assert (event.amount_minor, event.released_minor) == (150, 250)
    assert (event.balance_after_minor, event.available_after_minor, event.held_after_minor) == (850, 850, 0)
    assert ledger.states["w1"].find_hold("h") is None


def test_release_hold_makes_the_money_available_again() -> None:
    ledger = opened(balance_minor=1_000)
    ledger.send(PlaceHold, "w1", hold_id="h", amount_minor=400, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    event = ledger.send(ReleaseHold, "w1", command_id="c-release", hold_id="h", reason="no longer needed")
    assert isinstance(event, ev.HoldReleased)
    assert (event.amount_minor, event.reason, event.command_id) == (400, "no longer needed", "c-release")
    assert (event.balance_after_minor, event.available_after_minor, event.held_after_minor) == (1_000, 1_000, 0)


def test_freeze_unfreeze_and_close_change_the_status() -> None:
    ledger = opened()
    assert isinstance(ledger.send(Freeze, "w1", reason="fraud check"), ev.WalletFrozen)
    assert ledger.states["w1"].status == "FROZEN"
    assert isinstance(ledger.send(Unfreeze, "w1"), ev.WalletUnfrozen)
    assert ledger.states["w1"].status == "ACTIVE"
    assert isinstance(ledger.send(Close, "w1"), ev.WalletClosed)
    assert ledger.states["w1"].status == "CLOSED"
    assert [event.version for event in ledger.events] == [1, 2, 3, 4]


def test_a_frozen_wallet_at_zero_can_be_closed() -> None:
    ledger = opened()
    ledger.send(Freeze, "w1")
    assert isinstance(ledger.send(Close, "w1"), ev.WalletClosed)


def test_events_carry_the_command_id_wallet_and_command_time() -> None:
    ledger = opened()
    event = ledger.send(Deposit, "w1", command_id="dep-42", amount_minor=1, currency="EUR")
    assert (event.command_id, event.wallet_id, event.timestamp_ms) == ("dep-42", "w1", NOW_MS)


def test_command_catalogue_lists_every_kind_and_the_internal_legs() -> None:
    assert len(COMMAND_TYPES) == 12 and len(set(COMMAND_TYPES)) == 12
    assert INTERNAL_COMMAND_TYPES == (TransferCredit, TransferRefund)
    assert set(ev.EVENT_TYPES) == set(ev.APPLIED_EVENT_TYPES) | set(ev.OUTCOME_ONLY_EVENT_TYPES)
    assert not set(ev.APPLIED_EVENT_TYPES) & set(ev.OUTCOME_ONLY_EVENT_TYPES)
    assert ev.OUTCOME_ONLY_EVENT_TYPES == (ev.CommandRejected, ev.TransferCreditRejected)


def test_leg_command_ids_are_derived_deterministically() -> None:
    assert credit_command_id("w0", "t-1", 1_700_000_000_000) == "~credit/w0/t-1:1700000000000"
    assert refund_command_id("w0", "t-1", 1_700_000_000_001) == "~refund/w0/t-1:1700000000001"
    assert expiry_command_id("w1", "h-1", 1_700_000_000_000) == "~expire/w1/h-1:1700000000000"
    assert (
        Transfer(
            command_id="t-1", wallet_id="w1", timestamp_ms=0, destination_wallet_id="w2", amount_minor=1, currency="EUR"
        ).transfer_id
        == "t-1"
    )
