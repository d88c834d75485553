"""The money effect of every event kind agrees with what `evolve` does to the wallet."""

from __future__ import annotations

from app.domain import events as ev
from app.domain.effects import NO_EFFECT, money_effect
from app.domain.ledger import evolve
from tests.unit.test_codec import one_event_of_each_kind


def test_every_event_kind_moves_balance_and_held_money_exactly_as_evolve_does() -> None:
    states = {}
    seen = set()
    for event in one_event_of_each_kind():
        before = states.get(event.wallet_id)
        after = evolve(before, event)
        effect = money_effect(event)
        seen.add(type(event))
        if before is not None and after is not None and after is not before:
            assert after.balance_minor - before.balance_minor == effect.balance_minor, event
            assert after.held_minor - before.held_minor == effect.held_minor, event
            assert len(after.holds) - len(before.holds) == effect.holds_open, event
        if after is not None:
            states[event.wallet_id] = after
    assert seen == set(ev.EVENT_TYPES)


def test_only_transfers_move_money_in_transit_and_only_deposits_withdrawals_and_captures_cross_the_edge() -> None:
    for event in one_event_of_each_kind():
        effect = money_effect(event)
        if effect.in_transit_minor:
            assert isinstance(event, (ev.TransferDebited, ev.TransferCredited, ev.TransferRefunded))
            assert effect.in_transit_minor == -effect.balance_minor
        if effect.external_minor:
            assert isinstance(event, (ev.Deposited, ev.Withdrawn, ev.HoldCaptured))
        if isinstance(event, (ev.CommandRejected, ev.TransferCreditRejected, ev.WalletFrozen)):
            assert effect == NO_EFFECT
