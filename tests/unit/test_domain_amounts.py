"""Amount edges of every money command, per currency: 0, 1, the per-command maximum, just above, and
values beyond the Avro long (2**63 and more), plus values that are not integers at all."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from app.domain import rejections as codes
from app.domain.commands import (
    CaptureHold,
    CommandBase,
    Deposit,
    OpenWallet,
    PlaceHold,
    Transfer,
    TransferCredit,
    TransferRefund,
    Withdraw,
)
from app.domain.events import CommandRejected, TransferCreditRejected, is_applied
from app.domain.ledger import decide, evolve
from app.domain.limits import DEFAULT_LIMITS, Limits
from app.domain.state import WalletState

NOW_MS = 1_700_000_000_000
CURRENCIES = ["EUR", "JPY", "BHD"]
APPLIED = "applied"


def wallet(
    currency: str, *, funded_minor: int = 0, hold_minor: int = 0, limits: Limits = DEFAULT_LIMITS
) -> WalletState:
    """An ACTIVE wallet in `currency` holding `funded_minor` (deposited in per-command-maximum steps)."""
    commands: list[CommandBase] = [
        OpenWallet(command_id="open", wallet_id="w1", timestamp_ms=NOW_MS, owner_id="o", currency=currency)
    ]
    step_minor = limits.amount_max_minor(currency)
    remaining_minor = funded_minor
    while remaining_minor > 0:
        amount_minor = min(step_minor, remaining_minor)
        commands.append(
            Deposit(
                command_id=f"dep-{remaining_minor}",
                wallet_id="w1",
                timestamp_ms=NOW_MS,
                amount_minor=amount_minor,
                currency=currency,
            )
        )
        remaining_minor -= amount_minor
    if hold_minor:
        commands.append(
            PlaceHold(
                command_id="hold",
                wallet_id="w1",
                timestamp_ms=NOW_MS,
                hold_id="h",
                amount_minor=hold_minor,
                currency=currency,
                expires_at_ms=NOW_MS + 1,
            )
        )
    state: WalletState | None = None
    for command in commands:
        [event] = decide(state, command, NOW_MS, limits)  # type: ignore[arg-type]
        assert is_applied(event), event
        state = evolve(state, event)
    assert state is not None
    return state


def outcome(state: WalletState, command: CommandBase, limits: Limits = DEFAULT_LIMITS) -> str:
    [event] = decide(state, command, NOW_MS, limits)  # type: ignore[arg-type]
    if is_applied(event):
        return APPLIED
    assert isinstance(event, (CommandRejected, TransferCreditRejected))
    return event.code


def maximum(currency: str) -> int:
    return DEFAULT_LIMITS.amount_max_minor(currency)


# (amount as a function of the currency's per-command maximum, expected outcome)
EDGES: list[tuple[str, Callable[[int], Any], str]] = [
    ("zero", lambda m: 0, codes.INVALID_AMOUNT),
    ("negative", lambda m: -1, codes.INVALID_AMOUNT),
    ("one", lambda m: 1, APPLIED),
    ("max", lambda m: m, APPLIED),
    ("max+1", lambda m: m + 1, codes.LIMIT_EXCEEDED),
    ("avro-long-max", lambda m: 2**63 - 1, codes.LIMIT_EXCEEDED),
    ("2**63", lambda m: 2**63, codes.INVALID_AMOUNT),
    ("2**64", lambda m: 2**64, codes.INVALID_AMOUNT),
    ("10**40", lambda m: 10**40, codes.INVALID_AMOUNT),
    ("float", lambda m: 1.0, codes.INVALID_AMOUNT),
    ("bool", lambda m: True, codes.INVALID_AMOUNT),
    ("decimal", lambda m: Decimal("1"), codes.INVALID_AMOUNT),
    ("string", lambda m: "1", codes.INVALID_AMOUNT),
]


def _deposit(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    return wallet(currency), Deposit(
        command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=amount, currency=currency
    )


def _withdraw(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    return wallet(currency, funded_minor=maximum(currency) * 2), Withdraw(
        command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=amount, currency=currency
    )


def _transfer(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    command = Transfer(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        destination_wallet_id="w2",
        amount_minor=amount,
        currency=currency,
    )
    return wallet(currency, funded_minor=maximum(currency) * 2), command


def _place_hold(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    command = PlaceHold(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        hold_id="h2",
        amount_minor=amount,
        currency=currency,
        expires_at_ms=NOW_MS + 1,
    )
    return wallet(currency, funded_minor=maximum(currency) * 2), command


def _capture_hold(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    state = wallet(currency, funded_minor=maximum(currency), hold_minor=maximum(currency))
    return state, CaptureHold(command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, hold_id="h", amount_minor=amount)


def _transfer_credit(currency: str, amount: Any) -> tuple[WalletState, CommandBase]:
    command = TransferCredit(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        transfer_id="t",
        source_wallet_id="w0",
        amount_minor=amount,
        currency=currency,
    )
    return wallet(currency), command


MONEY_COMMANDS = [_deposit, _withdraw, _transfer, _place_hold, _capture_hold, _transfer_credit]


@pytest.mark.parametrize("make", MONEY_COMMANDS, ids=[make.__name__.lstrip("_") for make in MONEY_COMMANDS])
@pytest.mark.parametrize("currency", CURRENCIES)
@pytest.mark.parametrize(("edge", "amount_of", "expected"), EDGES, ids=[edge for edge, _, _ in EDGES])
def test_amount_edges_of_every_money_command_per_currency(
    make: Callable[[str, Any], tuple[WalletState, CommandBase]],
    currency: str,
    edge: str,
    amount_of: Callable[[int], Any],
    expected: str,
) -> None:
    state, command = make(currency, amount_of(maximum(currency)))
    assert outcome(state, command) == expected


@pytest.mark.parametrize(
    ("currency", "amount_max_minor"), [("EUR", 100_000_000), ("JPY", 1_000_000), ("BHD", 1_000_000_000)]
)
def test_per_command_maximum_is_one_million_in_major_units_of_each_currency(
    currency: str, amount_max_minor: int
) -> None:
    state = wallet(currency)
    deposit = Deposit(
        command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=amount_max_minor, currency=currency
    )
    assert outcome(state, deposit) == APPLIED
    assert (
        outcome(
            state,
            Deposit(
                command_id="c",
                wallet_id="w1",
                timestamp_ms=NOW_MS,
                amount_minor=amount_max_minor + 1,
                currency=currency,
            ),
        )
        == codes.LIMIT_EXCEEDED
    )


@pytest.mark.parametrize("currency", CURRENCIES)
@pytest.mark.parametrize(
    ("amount_of", "expected"),
    [
        (lambda m: 0, codes.INVALID_AMOUNT),
        (lambda m: 1, APPLIED),
        (lambda m: m + 1, APPLIED),  # refunds are exempt from the per-command maximum: money must come back
        (lambda m: 2**63 - 1, APPLIED),
        (lambda m: 2**63, codes.INVALID_AMOUNT),
        (lambda m: 1.5, codes.INVALID_AMOUNT),
    ],
    ids=["zero", "one", "max+1", "avro-long-max", "2**63", "float"],
)
def test_refund_amount_edges(currency: str, amount_of: Callable[[int], Any], expected: str) -> None:
    command = TransferRefund(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        transfer_id="t",
        destination_wallet_id="w2",
        amount_minor=amount_of(maximum(currency)),
        currency=currency,
        reason_code="WALLET_CLOSED",
    )
    assert outcome(wallet(currency), command) == expected


@pytest.mark.parametrize("currency", CURRENCIES)
def test_deposit_up_to_the_balance_maximum_is_applied_and_beyond_is_limit_exceeded(currency: str) -> None:
    limits = Limits(balance_max_minor=maximum(currency) + 10)
    state = wallet(currency, funded_minor=maximum(currency), limits=limits)

    def deposit(amount_minor: int) -> Deposit:
        return Deposit(
            command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=amount_minor, currency=currency
        )

    assert outcome(state, deposit(10), limits) == APPLIED
    assert outcome(state, deposit(11), limits) == codes.LIMIT_EXCEEDED


@pytest.mark.parametrize("currency", CURRENCIES)
def test_withdraw_of_exactly_the_available_balance_is_applied_and_one_more_is_refused(currency: str) -> None:
    state = wallet(currency, funded_minor=12_345)

    def withdraw(amount_minor: int) -> Withdraw:
        return Withdraw(
            command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=amount_minor, currency=currency
        )

    assert outcome(state, withdraw(12_345)) == APPLIED
    assert outcome(state, withdraw(12_346)) == codes.INSUFFICIENT_FUNDS


@pytest.mark.parametrize(
    ("expires_at_ms", "expected"),
    [
        (NOW_MS - 1, codes.HOLD_EXPIRED),
        (NOW_MS, codes.HOLD_EXPIRED),
        (NOW_MS + 1, APPLIED),
        (2**63 - 1, APPLIED),
        (2**63, codes.INVALID_AMOUNT),
        (1.5e12, codes.INVALID_AMOUNT),
    ],
)
def test_hold_expiry_must_be_a_future_integer_time_fitting_an_avro_long(expires_at_ms: Any, expected: str) -> None:
    command = PlaceHold(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        hold_id="h",
        amount_minor=1,
        currency="EUR",
        expires_at_ms=expires_at_ms,
    )
    assert outcome(wallet("EUR", funded_minor=1), command) == expected


@pytest.mark.parametrize(
    ("overdraft", "expected"),
    [
        (0, APPLIED),
        (100_000_000, APPLIED),
        (100_000_001, codes.LIMIT_EXCEEDED),
        (-1, codes.INVALID_AMOUNT),
        (2**63, codes.INVALID_AMOUNT),
        (0.0, codes.INVALID_AMOUNT),
    ],
)
def test_overdraft_limit_edges(overdraft: Any, expected: str) -> None:
    command = OpenWallet(
        command_id="c",
        wallet_id="w1",
        timestamp_ms=NOW_MS,
        owner_id="o",
        currency="EUR",
        overdraft_limit_minor=overdraft,
    )
    [event] = decide(None, command, NOW_MS)
    assert (APPLIED if is_applied(event) else event.code) == expected  # type: ignore[attr-defined]
