"""Ledger invariants, checked on every decision and every replayed event.

A violation raises `InvariantViolation` (never `assert`, which `python -O` removes): it is a bug in the
domain core and the worker must stop instead of recording a wrong outcome.
"""

from __future__ import annotations

import operator
import re

from app.domain.errors import InvariantViolation
from app.domain.events import EventBase, is_applied
from app.domain.hashing import GENESIS_HASH
from app.domain.money import AMOUNT_MINOR_MAX, is_known_currency
from app.domain.state import STATUS_CLOSED, WALLET_STATUSES, WalletState

_HASH_RE = re.compile(r"[0-9a-f]{64}")  # sha256 (32 bytes) as lowercase hex


def _is_long(value: object) -> bool:
    """Whether `value` is an int (not a bool) that fits an Avro long."""
    return type(value) is int and -AMOUNT_MINOR_MAX - 1 <= value <= AMOUNT_MINOR_MAX


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH_RE.fullmatch(value) is not None


def check_wallet(state: WalletState) -> None:
    """Raise `InvariantViolation` unless `state` is a consistent wallet.

    Checks: known status and currency; version >= 1; balance, held and overdraft limit are Avro longs
    (minor units) with overdraft limit >= 0; held == sum of the open holds; holds have positive amounts and
    unique ids in `hold_id` order; available (balance - held + overdraft) >= 0; a closed wallet has no holds;
    the last hash is 64 lowercase hex digits.
    """
    wallet = state.wallet_id
    if state.status not in WALLET_STATUSES:
        raise InvariantViolation(f"{wallet}: unknown status {state.status!r}")
    if not is_known_currency(state.currency):
        raise InvariantViolation(f"{wallet}: unknown currency {state.currency!r}")
    if type(state.version) is not int or state.version < 1:
        raise InvariantViolation(f"{wallet}: version {state.version!r} is not a positive int")
    if not (_is_long(state.balance_minor) and _is_long(state.held_minor) and _is_long(state.overdraft_limit_minor)):
        for name in ("balance_minor", "held_minor", "overdraft_limit_minor"):
            if not _is_long(getattr(state, name)):
                raise InvariantViolation(f"{wallet}: {name} = {getattr(state, name)!r} is not an Avro long")
    if state.overdraft_limit_minor < 0:
        raise InvariantViolation(f"{wallet}: negative overdraft limit {state.overdraft_limit_minor}")
    holds_sum_minor = _checked_holds_sum(state) if state.holds else 0
    if state.held_minor != holds_sum_minor:
        raise InvariantViolation(f"{wallet}: held {state.held_minor} != sum of open holds {holds_sum_minor}")
    if state.available_minor < 0:
        raise InvariantViolation(f"{wallet}: available {state.available_minor} < 0")
    if state.status == STATUS_CLOSED and state.holds:
        raise InvariantViolation(f"{wallet}: closed with {len(state.holds)} open holds")
    if not _is_hash(state.last_hash):
        raise InvariantViolation(f"{wallet}: last_hash {state.last_hash!r} is not 64 lowercase hex digits")


def _checked_holds_sum(state: WalletState) -> int:
    """The sum of the open holds (minor units), after checking each amount is a positive Avro long and the hold
    ids are unique and sorted. A wallet may carry `holds_open_max` holds and is checked on every decision: the
    usual case runs in builtins (min, max, sum, zip), the loop below only finds the hold to name."""
    amounts = [hold.amount_minor for hold in state.holds]
    ids = [hold.hold_id for hold in state.holds]
    if (all(type(amount) is int for amount in amounts) and min(amounts) > 0 and max(amounts) <= AMOUNT_MINOR_MAX
            and all(map(operator.lt, ids, ids[1:]))):
        return sum(amounts)
    previous_hold_id: str | None = None
    for hold in state.holds:
        if not _is_long(hold.amount_minor) or hold.amount_minor <= 0:
            raise InvariantViolation(f"{state.wallet_id}: hold {hold.hold_id!r} amount {hold.amount_minor!r} is not positive")
        if previous_hold_id is not None and not previous_hold_id < hold.hold_id:
            raise InvariantViolation(f"{state.wallet_id}: holds not unique and sorted by hold_id at {hold.hold_id!r}")
        previous_hold_id = hold.hold_id
    raise InvariantViolation(f"{state.wallet_id}: holds failed their check")  # unreachable: the loop names it


def _check_carried_position(
    event: EventBase, version: int, balance_minor: int, available_minor: int, held_minor: int, hash_: str
) -> None:
    """The event must carry exactly this wallet position (version, money in minor units, chain value)."""
    carried = (
        event.version,
        event.balance_after_minor,
        event.available_after_minor,
        event.held_after_minor,
        event.hash,
    )
    expected = (version, balance_minor, available_minor, held_minor, hash_)
    if carried != expected:
        raise InvariantViolation(
            f"{event.wallet_id}: {type(event).__name__} {event.command_id!r} carries "
            f"(version, balance, available, held, hash) = {carried}, the wallet is at {expected}"
        )


def check_transition(before: WalletState | None, event: EventBase, after: WalletState | None) -> None:
    """Raise `InvariantViolation` unless `after` is a valid result of `event` on `before` (None: no wallet).

    Applied event: version is before's + 1 (1 for the first); the event carries after's version, balance,
    available, held (minor units) and hash; `after` satisfies `check_wallet`. Outcome-only event: nothing
    changed and the event carries before's position (version 0, zeros and the genesis hash when no wallet).
    The hash value itself is recomputed by `verify_chain`, not here.
    """
    for state in (before, after):
        if state is not None and state.wallet_id != event.wallet_id:
            raise InvariantViolation(f"event for {event.wallet_id!r} paired with wallet {state.wallet_id!r}")
    if not is_applied(event):
        if after != before:
            raise InvariantViolation(f"{event.wallet_id}: outcome-only {type(event).__name__} changed the wallet")
        if before is None:
            _check_carried_position(event, 0, 0, 0, 0, GENESIS_HASH)
        else:
            _check_carried_position(
                event, before.version, before.balance_minor, before.available_minor, before.held_minor, before.last_hash
            )
        return
    if after is None:
        raise InvariantViolation(f"{event.wallet_id}: applied {type(event).__name__} left no wallet")
    version_expected = (0 if before is None else before.version) + 1
    if after.version != version_expected:
        raise InvariantViolation(
            f"{event.wallet_id}: version {after.version} after an applied event, expected {version_expected}"
        )
    _check_carried_position(
        event, after.version, after.balance_minor, after.available_minor, after.held_minor, after.last_hash
    )
    check_wallet(after)
