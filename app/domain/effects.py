"""What an event does to money: the one place that classifies events by their money effect.

`evolve`, the read model's ledger rows, the processor's gauges, reconcile's conservation check and stuck-money
search all ask `money_effect` instead of classifying event kinds themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain import events as e
from app.domain.frozen import builder


@dataclass(frozen=True, slots=True)
class MoneyEffect:
    """Changes an event makes, in minor units of its currency (counts for holds).

    balance_minor:    the wallet's balance
    held_minor:       the wallet's held money
    in_transit_minor: money between two wallets (debited at the source, not yet credited or refunded)
    external_minor:   money entering (+) or leaving (-) the ledger: deposits, withdrawals, captured holds
    holds_open:       the wallet's open holds
    """

    balance_minor: int = 0
    held_minor: int = 0
    in_transit_minor: int = 0
    external_minor: int = 0
    holds_open: int = 0


NO_EFFECT = MoneyEffect()
# `MoneyEffect(...)` without the frozen dataclass __init__ (one per event folded, decided, projected).
_effect = builder(MoneyEffect)


def money_effect(event: e.EventBase) -> MoneyEffect:
    """The money effect of `event`; NO_EFFECT for events that move no money (rejections, status changes)."""
    kind = type(event)
    if kind is e.Deposited:
        return _effect(balance_minor=event.amount_minor, external_minor=event.amount_minor)
    if kind is e.Withdrawn:
        return _effect(balance_minor=-event.amount_minor, external_minor=-event.amount_minor)
    if kind is e.TransferDebited:
        return _effect(balance_minor=-event.amount_minor, in_transit_minor=event.amount_minor)
    if kind is e.TransferCredited or kind is e.TransferRefunded:
        return _effect(balance_minor=event.amount_minor, in_transit_minor=-event.amount_minor)
    if kind is e.HoldPlaced:
        return _effect(held_minor=event.amount_minor, holds_open=1)
    if kind is e.HoldCaptured:
        return _effect(balance_minor=-event.amount_minor, held_minor=-(event.amount_minor + event.released_minor),
                       external_minor=-event.amount_minor, holds_open=-1)
    if kind is e.HoldReleased:
        return _effect(held_minor=-event.amount_minor, holds_open=-1)
    return NO_EFFECT
