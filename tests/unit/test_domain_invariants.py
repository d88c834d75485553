"""Invariants and the fold: broken wallets and transitions raise faults, never pass silently."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.domain.commands import Deposit, OpenWallet, PlaceHold, Withdraw
from app.domain.errors import DomainError, EventNotApplicable, InvariantViolation, WalletMismatch
from app.domain.events import CommandRejected, EventBase, HoldCaptured, HoldReleased
from app.domain.invariants import check_transition, check_wallet
from app.domain.ledger import decide, evolve, replay
from app.domain.state import Hold, WalletState

NOW_MS = 1_700_000_000_000


def run(*commands: Any) -> tuple[WalletState, list[EventBase]]:
    state: WalletState | None = None
    events: list[EventBase] = []
    for command in commands:
        [event] = decide(state, command, NOW_MS)
        state = evolve(state, event)
        events.append(event)
    assert state is not None
    return state, events


def opened_with_hold() -> tuple[WalletState, list[EventBase]]:
    return run(
        OpenWallet(command_id="c1", wallet_id="w1", timestamp_ms=NOW_MS, owner_id="o", currency="EUR"),
        Deposit(command_id="c2", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=1_000, currency="EUR"),
        PlaceHold(
            command_id="c3",
            wallet_id="w1",
            timestamp_ms=NOW_MS,
            hold_id="h",
            amount_minor=400,
            currency="EUR",
            expires_at_ms=NOW_MS + 1,
        ),
    )


def test_a_decided_wallet_satisfies_the_invariants() -> None:
    check_wallet(opened_with_hold()[0])


def test_invariant_violation_is_a_domain_error() -> None:
    assert issubclass(InvariantViolation, DomainError)


@pytest.mark.parametrize(
    "broken",
    [
        {"status": "DELETED"},
        {"currency": "XXX"},
        {"version": 0},
        {"held_minor": 399},
        {"overdraft_limit_minor": -1},
        {"balance_minor": 2**63},
        {"balance_minor": 1.5},
        {"balance_minor": 399},  # available = 399 - 400 < 0
        {
            "holds": (
                Hold(hold_id="h", amount_minor=400, expires_at_ms=1),
                Hold(hold_id="h", amount_minor=0, expires_at_ms=1),
            )
        },
        {
            "holds": (
                Hold(hold_id="b", amount_minor=200, expires_at_ms=1),
                Hold(hold_id="a", amount_minor=200, expires_at_ms=1),
            )
        },
        {"status": "CLOSED"},  # closed with an open hold
        {"last_hash": "xyz"},
    ],
)
def test_check_wallet_rejects_inconsistent_wallets(broken: dict[str, Any]) -> None:
    with pytest.raises(InvariantViolation):
        check_wallet(replace(opened_with_hold()[0], **broken))


def test_check_transition_rejects_a_skipped_version() -> None:
    state, events = opened_with_hold()
    before = evolve(None, events[0])
    with pytest.raises(InvariantViolation):
        check_transition(before, events[1], replace(state, version=5))


def test_check_transition_rejects_carried_balances_that_differ_from_the_fold() -> None:
    state, events = opened_with_hold()
    with pytest.raises(InvariantViolation):
        check_transition(
            evolve(evolve(None, events[0]), events[1]), replace(events[2], available_after_minor=1_000), state
        )


def test_check_transition_rejects_an_outcome_only_event_that_changed_the_wallet() -> None:
    state, _ = opened_with_hold()
    [rejected] = decide(
        state,
        Withdraw(command_id="c4", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=10**6, currency="EUR"),
        NOW_MS,
    )
    assert isinstance(rejected, CommandRejected)
    with pytest.raises(InvariantViolation):
        check_transition(state, rejected, replace(state, balance_minor=0))


def test_evolve_returns_the_same_state_for_an_outcome_only_event() -> None:
    state, _ = opened_with_hold()
    [rejected] = decide(
        state,
        Withdraw(command_id="c4", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=10**6, currency="EUR"),
        NOW_MS,
    )
    assert evolve(state, rejected) is state
    assert evolve(None, replace(rejected, version=0)) is None


def test_evolve_refuses_a_version_gap_or_repeat() -> None:
    state, events = opened_with_hold()
    with pytest.raises(EventNotApplicable):
        evolve(state, events[2])  # already applied
    with pytest.raises(EventNotApplicable):
        evolve(state, replace(events[2], version=5))


def test_evolve_refuses_events_before_the_wallet_opened_and_a_second_opening() -> None:
    state, events = opened_with_hold()
    with pytest.raises(EventNotApplicable):
        evolve(None, replace(events[1], version=1))
    with pytest.raises(EventNotApplicable):
        evolve(state, replace(events[0], version=4))


def test_evolve_refuses_a_capture_or_release_of_an_unknown_or_different_hold() -> None:
    state, events = opened_with_hold()
    common = {
        field: getattr(events[2], field)
        for field in (
            "wallet_id",
            "command_id",
            "timestamp_ms",
            "balance_after_minor",
            "available_after_minor",
            "held_after_minor",
            "hash",
        )
    }
    with pytest.raises(EventNotApplicable):
        evolve(state, HoldReleased(**common, version=4, hold_id="other", amount_minor=400, currency="EUR", reason=""))
    with pytest.raises(EventNotApplicable):
        evolve(state, HoldReleased(**common, version=4, hold_id="h", amount_minor=300, currency="EUR", reason=""))
    with pytest.raises(EventNotApplicable):
        evolve(
            state, HoldCaptured(**common, version=4, hold_id="h", amount_minor=300, currency="EUR", released_minor=0)
        )


def test_evolve_refuses_another_wallets_event() -> None:
    state, events = opened_with_hold()
    with pytest.raises(WalletMismatch):
        evolve(state, replace(events[2], wallet_id="w2", version=4))


def test_replay_folds_interleaved_wallets_independently() -> None:
    _, events_1 = opened_with_hold()
    _, events_2 = run(
        OpenWallet(command_id="d1", wallet_id="w2", timestamp_ms=NOW_MS, owner_id="o", currency="JPY"),
        Deposit(command_id="d2", wallet_id="w2", timestamp_ms=NOW_MS, amount_minor=7, currency="JPY"),
    )
    interleaved = [events_1[0], events_2[0], events_1[1], events_2[1], events_1[2]]
    states = replay(interleaved)
    assert set(states) == {"w1", "w2"}
    assert (states["w1"].balance_minor, states["w1"].held_minor, states["w2"].balance_minor) == (1_000, 400, 7)


def test_replay_refuses_a_log_with_a_gap() -> None:
    _, events = opened_with_hold()
    with pytest.raises(EventNotApplicable):
        replay([events[0], events[2]])


def _many_holds(count: int, **overrides: Any) -> tuple[Hold, ...]:
    """`count` holds of 10 minor units with sorted ids; `overrides` maps an index to the fields it changes."""
    return tuple(replace(Hold(hold_id=f"h{i:04d}", amount_minor=10, expires_at_ms=1), **overrides.get(f"i{i}", {}))
                 for i in range(count))


def _with_holds(holds: tuple[Hold, ...]) -> WalletState:
    held_minor = sum(hold.amount_minor for hold in holds if type(hold.amount_minor) is int and hold.amount_minor < 2**62)
    return replace(opened_with_hold()[0], holds=holds, held_minor=held_minor, balance_minor=held_minor + 1_000)


def test_check_wallet_accepts_a_wallet_at_the_hold_limit() -> None:
    check_wallet(_with_holds(_many_holds(100)))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"i57": {"amount_minor": 0}}, "hold 'h0057' amount 0 is not positive"),
        ({"i57": {"amount_minor": True}}, "hold 'h0057' amount True is not positive"),
        ({"i57": {"amount_minor": 2**63}}, "is not positive"),
        ({"i57": {"hold_id": "h0056"}}, "not unique and sorted by hold_id at 'h0056'"),
        ({"i99": {"hold_id": "h0000"}}, "not unique and sorted by hold_id at 'h0000'"),
    ],
)
def test_check_wallet_names_the_broken_hold_among_many(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(InvariantViolation, match=named.replace("(", r"\(")):
        check_wallet(_with_holds(_many_holds(100, **overrides)))
