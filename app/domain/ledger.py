"""The decision module: `decide` what a command does to a wallet, `evolve` the wallet by an event.

Both are pure: no clock (`now_ms` is the command's time), no randomness, no I/O. Replaying the same events
gives the same states and the same hashes on every machine.

Decisions where the rules needed a choice (each reachable code is listed in `rejections.py`):
- Checks run in this order and the first failing one names the code: wallet exists → status → self
  transfer → amount (INVALID_AMOUNT, then CURRENCY_MISMATCH, then LIMIT_EXCEEDED) → hold checks → funds.
  CaptureHold finds its hold (HOLD_NOT_FOUND, HOLD_EXPIRED) before checking the amount, which defaults to
  the hold's; an amount above the per-command maximum is LIMIT_EXCEEDED before HOLD_EXCEEDED.
- A refund (`TransferRefund`) is applied whatever the wallet's status and whatever the per-command and
  balance maxima: it returns money that already left this wallet, and refusing it would strand it in transit.
  A CLOSED wallet can therefore hold a non-zero balance after a refund; nothing can move it out (every
  command but refunds is WALLET_CLOSED), so that money needs an operator. A refund is refused only when it is
  malformed (INVALID_AMOUNT, CURRENCY_MISMATCH), addressed to a missing wallet, or when the resulting
  balance would not fit an Avro long (LIMIT_EXCEEDED; unreachable while balance_max_minor is 2**62).
- A credit leg (`TransferCredit`) that is refused yields `TransferCreditRejected`, never `CommandRejected`,
  so that the relay always refunds it; a credit whose source is the destination is SELF_TRANSFER.
- Unfreeze of an ACTIVE wallet is DUPLICATE_COMMAND ("wallet is not frozen"): the wallet is already in the
  state the command asks for. Unfreeze of a CLOSED wallet is WALLET_CLOSED.
- Freeze of a FROZEN wallet is WALLET_FROZEN; Close of a FROZEN wallet at zero is allowed.
- CaptureHold and PlaceHold on a FROZEN wallet are WALLET_FROZEN; ReleaseHold is allowed there (it gives
  money back to the owner's available balance and is what the expiry timer sends).
- An expired hold keeps its money held until a ReleaseHold (normally the timer's) closes it; it cannot be
  captured once `now_ms >= expires_at_ms`.
- `decide` checks numbers (amounts, overdraft, expiry) because a malformed number is a business rejection;
  the types of text fields are the codec's job (the Avro schema).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeVar

from app.domain import rejections as codes
from app.domain.effects import money_effect
from app.domain.commands import (
    CaptureHold,
    Close,
    Command,
    CommandBase,
    Deposit,
    EXPIRED_REASON,
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
from app.domain.errors import ChainBroken, DomainError, EventNotApplicable, UnknownCommand, WalletMismatch
from app.domain.events import (
    EVENT_TYPES,
    CommandRejected,
    Deposited,
    Event,
    EventBase,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    TransferCredited,
    TransferCreditRejected,
    TransferDebited,
    TransferRefunded,
    WalletClosed,
    WalletFrozen,
    WalletOpened,
    WalletUnfrozen,
    Withdrawn,
    is_applied,
)
from app.domain.frozen import builder
from app.domain.hashing import GENESIS_HASH, chain_hash, chain_hash_of
from app.domain.invariants import check_transition
from app.domain.limits import DEFAULT_LIMITS, Limits
from app.domain.money import AMOUNT_MINOR_MAX, is_known_currency
from app.domain.state import STATUS_ACTIVE, STATUS_CLOSED, STATUS_FROZEN, Hold, WalletState, build_hold, build_state

__all__ = ["decide", "evolve", "replay", "verify_chain"]

# (code, detail) of a refusal; None when the check passes.
_Refusal = tuple[str, str]
_EventT = TypeVar("_EventT", bound=EventBase)


# --- building events ---------------------------------------------------------------------------------------


def _reject(state: WalletState | None, command: CommandBase, now_ms: int, refusal: _Refusal) -> Event:
    """The outcome-only event refusing `command`: it carries the wallet's current position, changes nothing."""
    code, detail = refusal
    if state is None:
        position: dict[str, Any] = {
            "version": 0,
            "balance_after_minor": 0,
            "available_after_minor": 0,
            "held_after_minor": 0,
            "hash": GENESIS_HASH,
        }
    else:
        position = {
            "version": state.version,
            "balance_after_minor": state.balance_minor,
            "available_after_minor": state.available_minor,
            "held_after_minor": state.held_minor,
            "hash": state.last_hash,
        }
    common = {"wallet_id": command.wallet_id, "command_id": command.command_id, "timestamp_ms": now_ms, **position}
    if isinstance(command, TransferCredit):
        # The relay refunds every refused credit leg: it must see a TransferCreditRejected, whatever the code.
        return TransferCreditRejected(
            **common,
            transfer_id=command.transfer_id,
            source_wallet_id=command.source_wallet_id,
            amount_minor=command.amount_minor,
            currency=command.currency,
            code=code,
            detail=detail,
        )
    return CommandRejected(**common, command_kind=type(command).__name__, code=code, detail=detail)


# Per event kind, its instance built without the frozen dataclass's __init__ (one object.__setattr__ per field
# was about a twentieth of a decision's CPU): the same object (app/domain/frozen.py).
_BUILD_EVENT: Final = {event_type: builder(event_type) for event_type in EVENT_TYPES}


def _applied(
    event_type: type[_EventT],
    state: WalletState | None,
    command: CommandBase,
    now_ms: int,
    *,
    balance_after_minor: int,
    held_after_minor: int,
    **fields: Any,
) -> _EventT:
    """An applied event: next version, the balances after it (minor units) and the next hash of the chain."""
    if state is None:
        # Only WalletOpened applies to a missing wallet; its own field sets the overdraft limit.
        overdraft_limit_minor = fields["overdraft_limit_minor"]
        version_before, hash_before = 0, GENESIS_HASH
    else:
        overdraft_limit_minor = state.overdraft_limit_minor
        version_before, hash_before = state.version, state.last_hash
    values = {
        "wallet_id": command.wallet_id,
        "command_id": command.command_id,
        "timestamp_ms": now_ms,
        "version": version_before + 1,
        "balance_after_minor": balance_after_minor,
        "available_after_minor": balance_after_minor - held_after_minor + overdraft_limit_minor,
        "held_after_minor": held_after_minor,
        **fields,
    }
    # Hash the values, then build the event once (a second build via `replace` cost a tenth of decide).
    return _BUILD_EVENT[event_type](**values, hash=chain_hash_of(hash_before, event_type.__name__, values))


# --- checks shared by the deciders ------------------------------------------------------------------------

_STATUS_REFUSALS: Final[dict[str, _Refusal]] = {
    STATUS_FROZEN: (codes.WALLET_FROZEN, "wallet is frozen"),
    STATUS_CLOSED: (codes.WALLET_CLOSED, "wallet is closed"),
}


def _require_active(state: WalletState) -> _Refusal | None:
    return _STATUS_REFUSALS.get(state.status)


def _require_not_closed(state: WalletState) -> _Refusal | None:
    if state.status == STATUS_CLOSED:
        return _STATUS_REFUSALS[STATUS_CLOSED]
    return None


def _is_representable_positive(amount_minor: object) -> bool:
    """Whether the amount is a positive int (not a bool, not a float) that fits an Avro long."""
    return type(amount_minor) is int and 0 < amount_minor <= AMOUNT_MINOR_MAX


def _check_amount(
    amount_minor: object, currency: object, state: WalletState, limits: Limits, *, per_command_max: bool = True
) -> _Refusal | None:
    """INVALID_AMOUNT, CURRENCY_MISMATCH or LIMIT_EXCEEDED for an amount of `currency` moved on `state`."""
    if not _is_representable_positive(amount_minor):
        return (
            codes.INVALID_AMOUNT,
            f"amount_minor must be a positive integer at most {AMOUNT_MINOR_MAX}, got {amount_minor!r}",
        )
    if currency != state.currency:
        return codes.CURRENCY_MISMATCH, f"command currency {currency!r} is not the wallet currency {state.currency!r}"
    if per_command_max:
        amount_max_minor = limits.amount_max_minor(state.currency)
        if amount_minor > amount_max_minor:  # type: ignore[operator]  # int, checked above
            return (
                codes.LIMIT_EXCEEDED,
                f"amount_minor {amount_minor} exceeds the per-command maximum {amount_max_minor}",
            )
    return None


def _check_balance_max(balance_after_minor: int, limits: Limits) -> _Refusal | None:
    if balance_after_minor > limits.balance_max_minor:
        return (
            codes.LIMIT_EXCEEDED,
            f"balance would be {balance_after_minor}, above the maximum {limits.balance_max_minor}",
        )
    return None


def _check_funds(state: WalletState, amount_minor: int) -> _Refusal | None:
    if amount_minor > state.available_minor:
        return codes.INSUFFICIENT_FUNDS, f"amount_minor {amount_minor} exceeds available {state.available_minor}"
    return None


# --- one decider per command kind -------------------------------------------------------------------------


def _decide_open_wallet(state: WalletState | None, command: OpenWallet, now_ms: int, limits: Limits) -> Event:
    if state is not None:
        return _reject(
            state,
            command,
            now_ms,
            (codes.WALLET_EXISTS, f"wallet {command.wallet_id!r} already exists ({state.status})"),
        )
    if not is_known_currency(command.currency):
        return _reject(state, command, now_ms, (codes.CURRENCY_MISMATCH, f"unknown currency {command.currency!r}"))
    overdraft = command.overdraft_limit_minor
    if type(overdraft) is not int or not 0 <= overdraft <= AMOUNT_MINOR_MAX:
        return _reject(
            state,
            command,
            now_ms,
            (
                codes.INVALID_AMOUNT,
                f"overdraft_limit_minor must be an integer from 0 to {AMOUNT_MINOR_MAX}, got {overdraft!r}",
            ),
        )
    amount_max_minor = limits.amount_max_minor(command.currency)
    if overdraft > amount_max_minor:
        return _reject(
            state,
            command,
            now_ms,
            (
                codes.LIMIT_EXCEEDED,
                f"overdraft_limit_minor {overdraft} exceeds the per-command maximum {amount_max_minor}",
            ),
        )
    return _applied(
        WalletOpened,
        None,
        command,
        now_ms,
        balance_after_minor=0,
        held_after_minor=0,
        owner_id=command.owner_id,
        currency=command.currency,
        overdraft_limit_minor=overdraft,
    )


def _decide_deposit(state: WalletState, command: Deposit, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_active(state) or _check_amount(command.amount_minor, command.currency, state, limits):
        return _reject(state, command, now_ms, refusal)
    balance_after_minor = state.balance_minor + command.amount_minor
    if refusal := _check_balance_max(balance_after_minor, limits):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        Deposited,
        state,
        command,
        now_ms,
        balance_after_minor=balance_after_minor,
        held_after_minor=state.held_minor,
        amount_minor=command.amount_minor,
        currency=state.currency,
        reference=command.reference,
        description=command.description,
    )


def _decide_withdraw(state: WalletState, command: Withdraw, now_ms: int, limits: Limits) -> Event:
    if refusal := (
        _require_active(state)
        or _check_amount(command.amount_minor, command.currency, state, limits)
        or _check_funds(state, command.amount_minor)
    ):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        Withdrawn,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor - command.amount_minor,
        held_after_minor=state.held_minor,
        amount_minor=command.amount_minor,
        currency=state.currency,
        reference=command.reference,
        description=command.description,
    )


def _decide_transfer(state: WalletState, command: Transfer, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_active(state):
        return _reject(state, command, now_ms, refusal)
    if command.destination_wallet_id == state.wallet_id:
        return _reject(state, command, now_ms, (codes.SELF_TRANSFER, "destination_wallet_id is the source wallet"))
    if refusal := _check_amount(command.amount_minor, command.currency, state, limits) or _check_funds(
        state, command.amount_minor
    ):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        TransferDebited,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor - command.amount_minor,
        held_after_minor=state.held_minor,
        transfer_id=command.transfer_id,
        destination_wallet_id=command.destination_wallet_id,
        amount_minor=command.amount_minor,
        currency=state.currency,
        reference=command.reference,
    )


def _decide_transfer_credit(state: WalletState | None, command: TransferCredit, now_ms: int, limits: Limits) -> Event:
    # Every refusal here becomes TransferCreditRejected (see _reject), which the relay refunds.
    if state is None:
        return _reject(
            state,
            command,
            now_ms,
            (codes.WALLET_NOT_FOUND, f"destination wallet {command.wallet_id!r} not found"),
        )
    if refusal := _require_active(state):
        return _reject(state, command, now_ms, refusal)
    if command.source_wallet_id == state.wallet_id:
        return _reject(state, command, now_ms, (codes.SELF_TRANSFER, "source_wallet_id is the destination wallet"))
    if refusal := _check_amount(command.amount_minor, command.currency, state, limits):
        return _reject(state, command, now_ms, refusal)
    balance_after_minor = state.balance_minor + command.amount_minor
    if refusal := _check_balance_max(balance_after_minor, limits):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        TransferCredited,
        state,
        command,
        now_ms,
        balance_after_minor=balance_after_minor,
        held_after_minor=state.held_minor,
        transfer_id=command.transfer_id,
        source_wallet_id=command.source_wallet_id,
        amount_minor=command.amount_minor,
        currency=state.currency,
    )


def _decide_transfer_refund(state: WalletState, command: TransferRefund, now_ms: int, limits: Limits) -> Event:
    # No status check and no business maxima: the money already left this wallet and must come back
    # (module docstring). Only a malformed leg or an unrepresentable balance is refused.
    if refusal := _check_amount(command.amount_minor, command.currency, state, limits, per_command_max=False):
        return _reject(state, command, now_ms, refusal)
    balance_after_minor = state.balance_minor + command.amount_minor
    if balance_after_minor > AMOUNT_MINOR_MAX:
        return _reject(
            state,
            command,
            now_ms,
            (codes.LIMIT_EXCEEDED, f"balance would be {balance_after_minor}, above {AMOUNT_MINOR_MAX} (Avro long)"),
        )
    return _applied(
        TransferRefunded,
        state,
        command,
        now_ms,
        balance_after_minor=balance_after_minor,
        held_after_minor=state.held_minor,
        transfer_id=command.transfer_id,
        destination_wallet_id=command.destination_wallet_id,
        amount_minor=command.amount_minor,
        currency=state.currency,
        reason_code=command.reason_code,
    )


def _decide_place_hold(state: WalletState, command: PlaceHold, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_active(state) or _check_amount(command.amount_minor, command.currency, state, limits):
        return _reject(state, command, now_ms, refusal)
    expires_at_ms = command.expires_at_ms
    if type(expires_at_ms) is not int or not -AMOUNT_MINOR_MAX - 1 <= expires_at_ms <= AMOUNT_MINOR_MAX:
        return _reject(
            state,
            command,
            now_ms,
            (
                codes.INVALID_AMOUNT,
                f"expires_at_ms must be an integer time in ms fitting an Avro long, got {expires_at_ms!r}",
            ),
        )
    if expires_at_ms <= now_ms:
        return _reject(
            state,
            command,
            now_ms,
            (codes.HOLD_EXPIRED, f"expires_at_ms {expires_at_ms} is not after now {now_ms}"),
        )
    if state.find_hold(command.hold_id) is not None:
        return _reject(state, command, now_ms, (codes.DUPLICATE_COMMAND, f"hold {command.hold_id!r} is already open"))
    if len(state.holds) >= limits.holds_open_max:
        return _reject(
            state,
            command,
            now_ms,
            (
                codes.TOO_MANY_HOLDS,
                f"wallet already has {len(state.holds)} open holds (maximum {limits.holds_open_max})",
            ),
        )
    if refusal := _check_funds(state, command.amount_minor):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        HoldPlaced,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor,
        held_after_minor=state.held_minor + command.amount_minor,
        hold_id=command.hold_id,
        amount_minor=command.amount_minor,
        currency=state.currency,
        expires_at_ms=expires_at_ms,
    )


def _decide_capture_hold(state: WalletState, command: CaptureHold, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_active(state):
        return _reject(state, command, now_ms, refusal)
    hold = state.find_hold(command.hold_id)
    if hold is None:
        return _reject(state, command, now_ms, (codes.HOLD_NOT_FOUND, f"no open hold {command.hold_id!r}"))
    if now_ms >= hold.expires_at_ms:
        return _reject(
            state,
            command,
            now_ms,
            (codes.HOLD_EXPIRED, f"hold {hold.hold_id!r} expired at {hold.expires_at_ms}, now is {now_ms}"),
        )
    amount_minor = hold.amount_minor if command.amount_minor is None else command.amount_minor
    # The capture is in the wallet's currency by construction: the hold was placed in it.
    if refusal := _check_amount(amount_minor, state.currency, state, limits):
        return _reject(state, command, now_ms, refusal)
    if amount_minor > hold.amount_minor:
        return _reject(
            state,
            command,
            now_ms,
            (codes.HOLD_EXCEEDED, f"amount_minor {amount_minor} exceeds hold {hold.hold_id!r} of {hold.amount_minor}"),
        )
    return _applied(
        HoldCaptured,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor - amount_minor,
        held_after_minor=state.held_minor - hold.amount_minor,
        hold_id=hold.hold_id,
        amount_minor=amount_minor,
        currency=state.currency,
        released_minor=hold.amount_minor - amount_minor,
    )


def _decide_release_hold(state: WalletState, command: ReleaseHold, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_not_closed(state):
        return _reject(state, command, now_ms, refusal)
    hold = state.find_hold(command.hold_id)
    if hold is None:
        # Also the answer to a second expiry release: the first one closed the hold.
        return _reject(state, command, now_ms, (codes.HOLD_NOT_FOUND, f"no open hold {command.hold_id!r}"))
    if command.reason == EXPIRED_REASON and now_ms < hold.expires_at_ms:
        # An expiry release for an earlier placement of this hold id, arriving after the id was placed again.
        return _reject(state, command, now_ms, (
            codes.HOLD_NOT_EXPIRED, f"hold {hold.hold_id!r} expires at {hold.expires_at_ms}, now is {now_ms}"))
    return _applied(
        HoldReleased,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor,
        held_after_minor=state.held_minor - hold.amount_minor,
        hold_id=hold.hold_id,
        amount_minor=hold.amount_minor,
        currency=state.currency,
        reason=command.reason,
    )


def _decide_freeze(state: WalletState, command: Freeze, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_active(state):
        return _reject(state, command, now_ms, refusal)
    return _applied(
        WalletFrozen,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor,
        held_after_minor=state.held_minor,
        reason=command.reason,
    )


def _decide_unfreeze(state: WalletState, command: Unfreeze, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_not_closed(state):
        return _reject(state, command, now_ms, refusal)
    if state.status != STATUS_FROZEN:
        return _reject(state, command, now_ms, (codes.DUPLICATE_COMMAND, "wallet is not frozen"))
    return _applied(
        WalletUnfrozen,
        state,
        command,
        now_ms,
        balance_after_minor=state.balance_minor,
        held_after_minor=state.held_minor,
    )


def _decide_close(state: WalletState, command: Close, now_ms: int, limits: Limits) -> Event:
    if refusal := _require_not_closed(state):
        return _reject(state, command, now_ms, refusal)
    if state.balance_minor != 0 or state.holds:
        return _reject(
            state,
            command,
            now_ms,
            (codes.BALANCE_NOT_ZERO, f"balance is {state.balance_minor} with {len(state.holds)} open holds"),
        )
    return _applied(WalletClosed, state, command, now_ms, balance_after_minor=0, held_after_minor=0)


# Deciders that need an existing wallet; a missing one is WALLET_NOT_FOUND.
_DECIDERS_OF_EXISTING: Final[dict[type[CommandBase], Any]] = {
    Deposit: _decide_deposit,
    Withdraw: _decide_withdraw,
    Transfer: _decide_transfer,
    TransferRefund: _decide_transfer_refund,
    PlaceHold: _decide_place_hold,
    CaptureHold: _decide_capture_hold,
    ReleaseHold: _decide_release_hold,
    Freeze: _decide_freeze,
    Unfreeze: _decide_unfreeze,
    Close: _decide_close,
}
# Deciders that handle a missing wallet themselves.
_DECIDERS_OF_ANY: Final[dict[type[CommandBase], Any]] = {
    OpenWallet: _decide_open_wallet,
    TransferCredit: _decide_transfer_credit,
}


def decide(state: WalletState | None, command: Command, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> list[Event]:
    """The outcome of `command` on `state`; see `decide_and_evolve`, which also returns the state after it."""
    return decide_and_evolve(state, command, now_ms, limits)[0]


def decide_and_evolve(
    state: WalletState | None, command: Command, now_ms: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Event], WalletState | None]:
    """The outcome of `command` on the wallet `state` (None: no such wallet) at `now_ms` (ms since epoch).

    Returns exactly one event today (a list so a command may later yield several): an applied event, or
    `CommandRejected` / `TransferCreditRejected`; and the wallet after it (the same object when the event
    is outcome-only). Amounts are minor units; `limits` bounds them.
    Raises `UnknownCommand` for a non-command, `WalletMismatch` if `state` is another wallet's, and
    `InvariantViolation` if the decision would break an invariant (a bug).
    """
    command_type = type(command)
    if command_type not in _DECIDERS_OF_ANY and command_type not in _DECIDERS_OF_EXISTING:
        raise UnknownCommand(f"not a wallet command: {command_type.__name__}")
    if state is not None and state.wallet_id != command.wallet_id:
        raise WalletMismatch(f"command for {command.wallet_id!r} decided on the state of {state.wallet_id!r}")
    if command_type in _DECIDERS_OF_ANY:
        event = _DECIDERS_OF_ANY[command_type](state, command, now_ms, limits)
    elif state is None:
        event = _reject(None, command, now_ms, (codes.WALLET_NOT_FOUND, f"wallet {command.wallet_id!r} not found"))
    else:
        event = _DECIDERS_OF_EXISTING[command_type](state, command, now_ms, limits)
    # Evolve the decided event through the independent fold and check the result: a decision that would
    # break an invariant is a bug and must stop the worker, not reach the log.
    after = evolve(state, event)
    check_transition(state, event, after)
    return [event], after


# --- evolve -----------------------------------------------------------------------------------------------


def _hold_of(state: WalletState, event: HoldCaptured | HoldReleased) -> Hold:
    hold = state.find_hold(event.hold_id)
    if hold is None:
        raise EventNotApplicable(
            f"{state.wallet_id}: {type(event).__name__} v{event.version} of unknown hold {event.hold_id!r}"
        )
    return hold


def _without_hold(state: WalletState, hold_id: str) -> tuple[Hold, ...]:
    return tuple(hold for hold in state.holds if hold.hold_id != hold_id)


def _stamped(
    state: WalletState,
    event: EventBase,
    *,
    status: str | None = None,
    balance_minor: int | None = None,
    held_minor: int | None = None,
    holds: tuple[Hold, ...] | None = None,
) -> WalletState:
    """`state` with the event's version and hash and the given changes (money in minor units).

    Built directly: `dataclasses.replace` walks the fields of the class on every call, once per decision.
    """
    return build_state(
        wallet_id=state.wallet_id,
        owner_id=state.owner_id,
        status=state.status if status is None else status,  # type: ignore[arg-type]
        currency=state.currency,
        balance_minor=state.balance_minor if balance_minor is None else balance_minor,
        held_minor=state.held_minor if held_minor is None else held_minor,
        overdraft_limit_minor=state.overdraft_limit_minor,
        version=event.version,
        last_hash=event.hash,
        holds=state.holds if holds is None else holds,
    )


_BALANCE_EVENT_TYPES: Final = (Deposited, Withdrawn, TransferCredited, TransferRefunded, TransferDebited)


def _evolve_existing(state: WalletState, event: EventBase) -> WalletState:
    """The wallet after applied `event` (not WalletOpened), stamped with the event's version and hash."""
    event_type = type(event)
    if event_type in _BALANCE_EVENT_TYPES:
        return _stamped(state, event, balance_minor=state.balance_minor + money_effect(event).balance_minor)
    if event_type is HoldPlaced:
        if state.find_hold(event.hold_id) is not None:
            raise EventNotApplicable(
                f"{state.wallet_id}: HoldPlaced v{event.version} of already open hold {event.hold_id!r}"
            )
        hold = build_hold(hold_id=event.hold_id, amount_minor=event.amount_minor, expires_at_ms=event.expires_at_ms)
        holds = tuple(sorted((*state.holds, hold), key=lambda h: h.hold_id))
        return _stamped(state, event, held_minor=state.held_minor + event.amount_minor, holds=holds)
    if event_type is HoldCaptured:
        hold = _hold_of(state, event)
        if event.amount_minor + event.released_minor != hold.amount_minor:
            raise EventNotApplicable(
                f"{state.wallet_id}: HoldCaptured v{event.version} does not add up to hold {hold.hold_id!r}"
            )
        return _stamped(
            state,
            event,
            balance_minor=state.balance_minor - event.amount_minor,
            held_minor=state.held_minor - hold.amount_minor,
            holds=_without_hold(state, hold.hold_id),
        )
    if event_type is HoldReleased:
        hold = _hold_of(state, event)
        if event.amount_minor != hold.amount_minor:
            raise EventNotApplicable(
                f"{state.wallet_id}: HoldReleased v{event.version} amount is not hold {hold.hold_id!r}'s"
            )
        return _stamped(
            state, event, held_minor=state.held_minor - hold.amount_minor, holds=_without_hold(state, hold.hold_id)
        )
    if event_type is WalletFrozen:
        return _stamped(state, event, status=STATUS_FROZEN)
    if event_type is WalletUnfrozen:
        return _stamped(state, event, status=STATUS_ACTIVE)
    if event_type is WalletClosed:
        return _stamped(state, event, status=STATUS_CLOSED)
    raise EventNotApplicable(f"{state.wallet_id}: cannot apply {type(event).__name__} v{event.version}")


def evolve(state: WalletState | None, event: EventBase) -> WalletState | None:
    """The wallet after `event` (None: no wallet). Outcome-only events return `state` itself.

    Raises `EventNotApplicable` when the event does not follow from the state (version gap or repeat, a
    first event that is not WalletOpened, an unknown hold) and `WalletMismatch` for another wallet's event.
    """
    if state is not None and state.wallet_id != event.wallet_id:
        raise WalletMismatch(f"event for {event.wallet_id!r} applied to the state of {state.wallet_id!r}")
    if not is_applied(event):
        return state
    version_expected = (0 if state is None else state.version) + 1
    if event.version != version_expected:
        raise EventNotApplicable(
            f"{event.wallet_id}: {type(event).__name__} has version {event.version}, expected {version_expected}"
        )
    if isinstance(event, WalletOpened):
        if state is not None:
            raise EventNotApplicable(f"{event.wallet_id}: WalletOpened of an existing wallet")
        return build_state(
            wallet_id=event.wallet_id,
            owner_id=event.owner_id,
            status=STATUS_ACTIVE,
            currency=event.currency,
            balance_minor=0,
            held_minor=0,
            overdraft_limit_minor=event.overdraft_limit_minor,
            version=event.version,
            last_hash=event.hash,
            holds=(),
        )
    if state is None:
        raise EventNotApplicable(f"{event.wallet_id}: {type(event).__name__} before WalletOpened")
    return _evolve_existing(state, event)


# --- whole logs -------------------------------------------------------------------------------------------


def replay(events: Iterable[EventBase]) -> dict[str, WalletState]:
    """Every wallet's state after `events` (any wallets, in log order per wallet), by wallet id.

    Each transition is checked (`check_transition`); wallets that never opened are absent.
    Raises `EventNotApplicable` or `InvariantViolation` on a log that does not fold.
    """
    states: dict[str, WalletState] = {}
    for event in events:
        before = states.get(event.wallet_id)
        after = evolve(before, event)
        check_transition(before, event, after)
        if after is not None:
            states[event.wallet_id] = after
    return states


def verify_chain(events: Iterable[EventBase]) -> None:
    """Verify one wallet's complete event stream, from its first event, in order.

    For each applied event: version is the previous + 1, the hash is sha256(previous hash || canonical
    bytes) and the carried balances (minor units) follow from the amounts. Outcome-only events are not chain
    links: they must carry the wallet's position at their place in the stream, but their other fields are not
    protected by the chain. Raises `ChainBroken` with the version where the stream stops verifying.
    """
    state: WalletState | None = None
    wallet_id: str | None = None
    for position, event in enumerate(events):
        version_now = 0 if state is None else state.version
        version_at = version_now + 1 if is_applied(event) else version_now
        if wallet_id is None:
            wallet_id = event.wallet_id
        elif event.wallet_id != wallet_id:
            raise ChainBroken(
                version=version_at,
                position=position,
                detail=f"event of wallet {event.wallet_id!r} in the stream of {wallet_id!r}",
            )
        if is_applied(event):
            if event.version != version_at:
                raise ChainBroken(version=version_at, position=position, detail=f"event has version {event.version!r}")
            hash_before = GENESIS_HASH if state is None else state.last_hash
            try:
                hash_expected = chain_hash(hash_before, event)
            except DomainError as error:
                raise ChainBroken(version=version_at, position=position, detail=str(error)) from error
            if event.hash != hash_expected:
                raise ChainBroken(
                    version=version_at, position=position, detail=f"hash {event.hash!r} is not {hash_expected}"
                )
        try:
            after = evolve(state, event)
            check_transition(state, event, after)
        except DomainError as error:
            raise ChainBroken(version=version_at, position=position, detail=str(error)) from error
        state = after
