"""Stateful property test: random command sequences over four wallets in two currencies, with the transfer
relay and the hold-expiry timer simulated, keep every ledger invariant after every step."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.identity import credit_command_id, expiry_command_id, refund_command_id
from app.domain import rejections as codes
from app.domain.commands import (
    EXPIRED_REASON,
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
from app.domain.events import (
    CommandRejected,
    Deposited,
    EventBase,
    HoldCaptured,
    HoldReleased,
    TransferCredited,
    TransferCreditRejected,
    TransferDebited,
    TransferRefunded,
    Withdrawn,
    is_applied,
)
from app.domain.invariants import check_wallet
from app.domain.ledger import decide, evolve, replay, verify_chain
from app.domain.limits import Limits
from app.domain.state import WalletState

# Four wallets opened at the start, two per currency, and one ("w4") that only the open_wallet rule may
# open, so that commands to a missing wallet (and credits refused for it) happen too.
CURRENCY_BY_WALLET = {"w0": "EUR", "w1": "EUR", "w2": "JPY", "w3": "JPY"}
WALLET_IDS = (*CURRENCY_BY_WALLET, "w4")
CURRENCIES = ("EUR", "JPY")
HOLD_IDS = ("h0", "h1", "h2")
START_MS = 1_700_000_000_000
# Small limits so that the per-command, balance and open-holds maxima are reached in short runs:
# 1,000 major units per command (100_000 EUR cents, 1_000 JPY), 2 open holds, balances up to 300_000 minor.
LIMITS = Limits(amount_max_major=1_000, holds_open_max=2, balance_max_minor=300_000)

# Strategies repeated inside one_of weigh the common case: mostly opened wallets, the wallet's own currency
# and amounts small enough to succeed, with edges often enough to be rejected now and then.
opened_wallet_ids = st.sampled_from(tuple(CURRENCY_BY_WALLET))
wallet_ids = st.one_of(opened_wallet_ids, opened_wallet_ids, opened_wallet_ids, st.sampled_from(WALLET_IDS))
currencies = st.sampled_from(CURRENCIES)
currency_choices = st.one_of(st.none(), st.none(), st.none(), currencies)  # None: the wallet's own currency
hold_ids = st.sampled_from(HOLD_IDS)
# Mostly act on an open hold (picked by index), sometimes on a random, probably unknown one.
open_hold_choices = st.one_of(
    st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6), st.none()
)
small_amounts_minor = st.integers(min_value=1, max_value=1_000)
amounts_minor = st.one_of(
    small_amounts_minor,
    small_amounts_minor,
    small_amounts_minor,
    st.integers(min_value=-2, max_value=120_000),
    st.sampled_from([0, 1_000, 1_001, 100_000, 100_001, 2**63 - 1, 2**63]),
)
# Status changes are rare next to money movements, or most runs end with every wallet frozen or closed.
status_changes = st.sampled_from(
    ["freeze", "unfreeze", "unfreeze", "close", "empty-and-close", "nothing", "nothing", "nothing"]
)


class WalletLedgerMachine(RuleBasedStateMachine):
    """The ledger as the processor, the relay and the timer run it, compressed into one process."""

    def __init__(self) -> None:
        super().__init__()
        self.now_ms = START_MS
        self.commands_sent = 0
        self.states: dict[str, WalletState] = {}
        self.events: list[EventBase] = []
        self.applied_count_by_wallet: Counter[str] = Counter()
        # Debited transfers whose credit leg is not delivered yet, and refused credits awaiting their refund:
        # both are money in transit.
        self.credits_pending: list[TransferDebited] = []
        self.refunds_pending: list[tuple[TransferDebited, str]] = []

    # --- plumbing -----------------------------------------------------------------------------------------

    def send(
        self, command_type: type[CommandBase], wallet_id: str, *, command_id: str | None = None, **fields: Any
    ) -> EventBase:
        """Decide and evolve one command as the processor would, recording its event."""
        self.commands_sent += 1
        command = command_type(
            command_id=command_id or f"cmd-{self.commands_sent}",
            wallet_id=wallet_id,
            timestamp_ms=self.now_ms,
            **fields,
        )
        before = self.states.get(wallet_id)
        events = decide(before, command, self.now_ms, LIMITS)  # type: ignore[arg-type]
        assert len(events) == 1
        [event] = events
        after = evolve(before, event)
        if is_applied(event):
            assert after is not None
            self.states[wallet_id] = after
            self.applied_count_by_wallet[wallet_id] += 1
        else:
            assert after is before
        self.events.append(event)
        return event

    def currency_of(self, wallet_id: str, choice: str | None) -> str:
        """The chosen currency, or the wallet's own (EUR for a missing wallet) when the choice is None."""
        if choice is not None:
            return choice
        state = self.states.get(wallet_id)
        return "EUR" if state is None else state.currency

    def is_active_with_valid_amount(self, wallet_id: str, amount_minor: int, currency: str) -> bool:
        state = self.states.get(wallet_id)
        return (
            state is not None
            and state.status == "ACTIVE"
            and currency == state.currency
            and 0 < amount_minor <= LIMITS.amount_max_minor(currency)
        )

    @initialize(
        overdrafts_minor=st.lists(st.sampled_from([0, 0, 500]), min_size=4, max_size=4),
        # Fractions of the per-command maximum (1_000 major units) deposited up front.
        deposit_per_mille=st.lists(st.integers(min_value=0, max_value=1_000), min_size=4, max_size=4),
    )
    def open_and_fund_wallets(self, overdrafts_minor: list[int], deposit_per_mille: list[int]) -> None:
        for (wallet_id, currency), overdraft_minor, per_mille in zip(
            CURRENCY_BY_WALLET.items(), overdrafts_minor, deposit_per_mille, strict=True
        ):
            opened = self.send(
                OpenWallet,
                wallet_id,
                owner_id=f"owner-{wallet_id}",
                currency=currency,
                overdraft_limit_minor=overdraft_minor,
            )
            assert is_applied(opened)
            deposit_minor = LIMITS.amount_max_minor(currency) * per_mille // 1_000
            if deposit_minor:
                assert is_applied(self.send(Deposit, wallet_id, amount_minor=deposit_minor, currency=currency))

    # --- commands from producers --------------------------------------------------------------------------

    @rule(wallet_id=st.sampled_from(WALLET_IDS), currency=currencies, overdraft_limit_minor=st.sampled_from([0, 500]))
    def open_wallet(self, wallet_id: str, currency: str, overdraft_limit_minor: int) -> None:
        existed = wallet_id in self.states
        event = self.send(
            OpenWallet,
            wallet_id,
            owner_id=f"owner-{wallet_id}",
            currency=currency,
            overdraft_limit_minor=overdraft_limit_minor,
        )
        assert is_applied(event) != existed

    @rule(wallet_id=wallet_ids, amount_minor=amounts_minor, currency_choice=currency_choices)
    def deposit(self, wallet_id: str, amount_minor: int, currency_choice: str | None) -> None:
        currency = self.currency_of(wallet_id, currency_choice)
        before = self.states.get(wallet_id)
        event = self.send(Deposit, wallet_id, amount_minor=amount_minor, currency=currency)
        if before is not None and self.is_active_with_valid_amount(wallet_id, amount_minor, currency):
            if before.balance_minor + amount_minor <= LIMITS.balance_max_minor:
                assert isinstance(event, Deposited)
            else:
                assert isinstance(event, CommandRejected) and event.code == codes.LIMIT_EXCEEDED

    @rule(wallet_id=wallet_ids, amount_minor=amounts_minor, currency_choice=currency_choices)
    def withdraw(self, wallet_id: str, amount_minor: int, currency_choice: str | None) -> None:
        currency = self.currency_of(wallet_id, currency_choice)
        before = self.states.get(wallet_id)
        event = self.send(Withdraw, wallet_id, amount_minor=amount_minor, currency=currency)
        if before is not None and self.is_active_with_valid_amount(wallet_id, amount_minor, currency):
            if amount_minor <= before.available_minor:
                assert isinstance(event, Withdrawn)
            else:
                assert isinstance(event, CommandRejected) and event.code == codes.INSUFFICIENT_FUNDS

    @rule(source=wallet_ids, destination=wallet_ids, amount_minor=amounts_minor, currency_choice=currency_choices)
    def transfer(self, source: str, destination: str, amount_minor: int, currency_choice: str | None) -> None:
        currency = self.currency_of(source, currency_choice)
        before = self.states.get(source)
        event = self.send(
            Transfer, source, destination_wallet_id=destination, amount_minor=amount_minor, currency=currency
        )
        if isinstance(event, TransferDebited):
            assert source != destination
            self.credits_pending.append(event)
        elif (
            before is not None
            and source != destination
            and self.is_active_with_valid_amount(source, amount_minor, currency)
        ):
            assert isinstance(event, CommandRejected) and event.code == codes.INSUFFICIENT_FUNDS
            assert amount_minor > before.available_minor

    @rule(
        wallet_id=wallet_ids,
        hold_id=hold_ids,
        amount_minor=amounts_minor,
        currency_choice=currency_choices,
        time_to_live_ms=st.sampled_from([-1, 0, 1, 500, 5_000, 60_000]),
    )
    def place_hold(
        self, wallet_id: str, hold_id: str, amount_minor: int, currency_choice: str | None, time_to_live_ms: int
    ) -> None:
        currency = self.currency_of(wallet_id, currency_choice)
        self.send(
            PlaceHold,
            wallet_id,
            hold_id=hold_id,
            amount_minor=amount_minor,
            currency=currency,
            expires_at_ms=self.now_ms + time_to_live_ms,
        )

    def target_hold(self, wallet_id: str, hold_id: str, open_hold_choice: int | None) -> tuple[str, str]:
        """An open hold picked by `open_hold_choice` when there is one, else the given (maybe unknown) hold."""
        open_holds = [(w, hold.hold_id) for w, state in sorted(self.states.items()) for hold in state.holds]
        if open_hold_choice is None or not open_holds:
            return wallet_id, hold_id
        return open_holds[open_hold_choice % len(open_holds)]

    @rule(
        wallet_id=wallet_ids,
        hold_id=hold_ids,
        open_hold_choice=open_hold_choices,
        amount_minor=st.one_of(st.none(), st.none(), small_amounts_minor, amounts_minor),
    )
    def capture_hold(
        self, wallet_id: str, hold_id: str, open_hold_choice: int | None, amount_minor: int | None
    ) -> None:
        wallet_id, hold_id = self.target_hold(wallet_id, hold_id, open_hold_choice)
        before = self.states.get(wallet_id)
        event = self.send(CaptureHold, wallet_id, hold_id=hold_id, amount_minor=amount_minor)
        hold = None if before is None else before.find_hold(hold_id)
        if before is not None and before.status == "ACTIVE" and hold is not None and hold.expires_at_ms > self.now_ms:
            if amount_minor is None:
                assert (
                    isinstance(event, HoldCaptured)
                    and event.amount_minor == hold.amount_minor
                    and event.released_minor == 0
                )
            elif 0 < amount_minor <= hold.amount_minor:
                assert isinstance(event, HoldCaptured) and event.released_minor == hold.amount_minor - amount_minor

    @rule(wallet_id=wallet_ids, hold_id=hold_ids, open_hold_choice=open_hold_choices)
    def release_hold(self, wallet_id: str, hold_id: str, open_hold_choice: int | None) -> None:
        wallet_id, hold_id = self.target_hold(wallet_id, hold_id, open_hold_choice)
        self.send(ReleaseHold, wallet_id, hold_id=hold_id, reason="customer")

    @rule(wallet_id=wallet_ids, change=status_changes)
    def change_status(self, wallet_id: str, change: str) -> None:
        if change == "freeze":
            self.send(Freeze, wallet_id, reason="review")
        elif change == "unfreeze":
            self.send(Unfreeze, wallet_id)
        elif change == "close":
            self.send(Close, wallet_id)
        elif change == "empty-and-close":
            # Emptying a wallet first lets Close succeed now and then instead of being BALANCE_NOT_ZERO.
            state = self.states.get(wallet_id)
            if state is not None and state.balance_minor > 0:
                self.send(Withdraw, wallet_id, amount_minor=state.balance_minor, currency=state.currency)
            self.send(Close, wallet_id)

    # --- the clock, the transfer relay and the hold-expiry timer ------------------------------------------

    @rule(elapsed_ms=st.integers(min_value=1, max_value=3_000))
    def advance_time(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms

    @precondition(lambda self: self.credits_pending)
    @rule(choice=st.integers(min_value=0, max_value=10**6), legs_max=st.integers(min_value=1, max_value=4))
    def relay_delivers_credit_legs(self, choice: int, legs_max: int) -> None:
        # The relay works in batches, in any order across transfers.
        for _ in range(min(legs_max, len(self.credits_pending))):
            self.deliver_credit_leg(self.credits_pending.pop(choice % len(self.credits_pending)))

    @precondition(lambda self: self.credits_pending or self.refunds_pending)
    @rule()
    def relay_catches_up(self) -> None:
        # Deliver every pending credit leg, then every refund those credits caused: nothing left in transit.
        while self.credits_pending:
            self.deliver_credit_leg(self.credits_pending.pop(0))
        while self.refunds_pending:
            self.deliver_refund_leg(*self.refunds_pending.pop(0))
        assert not self.credits_pending and not self.refunds_pending

    def deliver_credit_leg(self, debited: TransferDebited) -> None:
        event = self.send(
            TransferCredit,
            debited.destination_wallet_id,
            command_id=credit_command_id(debited.wallet_id, debited.transfer_id, debited.timestamp_ms),
            transfer_id=debited.transfer_id,
            source_wallet_id=debited.wallet_id,
            amount_minor=debited.amount_minor,
            currency=debited.currency,
        )
        if isinstance(event, TransferCreditRejected):
            self.refunds_pending.append((debited, event.code))
        else:
            assert isinstance(event, TransferCredited)

    @precondition(lambda self: self.refunds_pending)
    @rule(choice=st.integers(min_value=0, max_value=10**6), legs_max=st.integers(min_value=1, max_value=4))
    def relay_delivers_refund_legs(self, choice: int, legs_max: int) -> None:
        for _ in range(min(legs_max, len(self.refunds_pending))):
            self.deliver_refund_leg(*self.refunds_pending.pop(choice % len(self.refunds_pending)))

    def deliver_refund_leg(self, debited: TransferDebited, reason_code: str) -> None:
        event = self.send(
            TransferRefund,
            debited.wallet_id,
            command_id=refund_command_id(debited.wallet_id, debited.transfer_id, debited.timestamp_ms),
            transfer_id=debited.transfer_id,
            destination_wallet_id=debited.destination_wallet_id,
            amount_minor=debited.amount_minor,
            currency=debited.currency,
            reason_code=reason_code,
        )
        # Money coming back is never refused, whatever became of the source wallet meanwhile.
        assert isinstance(event, TransferRefunded), event

    @rule()
    def timer_releases_expired_holds(self) -> None:
        expired = [
            (wallet_id, hold.hold_id, hold.expires_at_ms)
            for wallet_id, state in sorted(self.states.items())
            for hold in state.holds
            if hold.expires_at_ms <= self.now_ms
        ]
        for wallet_id, hold_id, expires_at_ms in expired:
            command_id = expiry_command_id(wallet_id, hold_id, expires_at_ms)
            event = self.send(ReleaseHold, wallet_id, command_id=command_id, hold_id=hold_id, reason=EXPIRED_REASON)
            assert isinstance(event, HoldReleased)
            # A timer firing twice for the same hold is harmless.
            again = self.send(ReleaseHold, wallet_id, hold_id=hold_id, reason=EXPIRED_REASON)
            assert isinstance(again, CommandRejected) and again.code == codes.HOLD_NOT_FOUND

    # --- invariants, after every step -----------------------------------------------------------------------

    @invariant()
    def every_wallet_is_consistent(self) -> None:
        for wallet_id, state in self.states.items():
            check_wallet(state)
            assert state.available_minor >= 0
            assert state.held_minor == sum(hold.amount_minor for hold in state.holds)
            assert len(state.holds) <= LIMITS.holds_open_max
            assert state.version == self.applied_count_by_wallet[wallet_id]

    @invariant()
    def money_is_conserved_per_currency(self) -> None:
        for currency in CURRENCIES:
            balances_minor = sum(s.balance_minor for s in self.states.values() if s.currency == currency)
            in_transit_minor = sum(d.amount_minor for d in self.credits_pending if d.currency == currency) + sum(
                d.amount_minor for d, _ in self.refunds_pending if d.currency == currency
            )
            deposits_minor = sum(
                e.amount_minor for e in self.events if isinstance(e, Deposited) and e.currency == currency
            )
            withdrawals_minor = sum(
                e.amount_minor for e in self.events if isinstance(e, Withdrawn) and e.currency == currency
            )
            captures_minor = sum(
                e.amount_minor for e in self.events if isinstance(e, HoldCaptured) and e.currency == currency
            )
            assert balances_minor + in_transit_minor == deposits_minor - withdrawals_minor - captures_minor

    @invariant()
    def replaying_the_log_reproduces_every_wallet_and_every_chain_verifies(self) -> None:
        assert replay(self.events) == self.states
        for wallet_id in WALLET_IDS:
            verify_chain([event for event in self.events if event.wallet_id == wallet_id])


WalletLedgerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,  # the run is bounded by its step count, not by wall time per example
    database=None,  # write no .hypothesis directory into the repository
)
TestWalletLedger = WalletLedgerMachine.TestCase
