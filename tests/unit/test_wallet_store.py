"""The processor's RocksDB table of one partition: a staged overlay, applied atomically after the commit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.hashing import GENESIS_HASH
from app.domain.state import WALLET_STATUSES, Hold, WalletState, WalletStatus
from tables.wallet_store import PartitionStore, decode_state, encode_state

NOW_MS = 1_700_000_000_000
HASH = "ab" * 32


def due(store: PartitionStore, now_ms: int, limit: int) -> list[tuple[str, str]]:
    """(wallet_id, hold_id) of the due holds, without the placing command id."""
    return [(wallet_id, hold_id) for wallet_id, hold_id, _, _ in store.due_holds(now_ms, limit)]


def wallet(wallet_id: str = "w1", *, balance_minor: int = 0, holds: tuple[Hold, ...] = (), version: int = 1,
           status: WalletStatus = "ACTIVE") -> WalletState:
    """A EUR wallet whose held_minor is the sum of `holds`."""
    return WalletState(
        wallet_id=wallet_id, owner_id="alice", status=status, currency="EUR", balance_minor=balance_minor,
        held_minor=sum(h.amount_minor for h in holds), overdraft_limit_minor=0, version=version, last_hash=HASH,
        holds=holds,
    )


def hold(hold_id: str, expires_at_ms: int, amount_minor: int = 10) -> Hold:
    return Hold(hold_id=hold_id, amount_minor=amount_minor, expires_at_ms=expires_at_ms)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "partition-0"


class OpenStores:
    """Opens partition stores and closes whichever is still open at teardown."""

    def __init__(self) -> None:
        self.open: list[PartitionStore] = []

    def open_at(self, path: Path) -> PartitionStore:
        opened = PartitionStore(path)
        self.open.append(opened)
        return opened

    def reopen(self, store: PartitionStore, path: Path) -> PartitionStore:
        """Close `store` (as a stopped processor would) and open its files again."""
        self.open.remove(store)
        store.close()
        return self.open_at(path)


@pytest.fixture
def stores() -> Iterator[OpenStores]:
    opened = OpenStores()
    yield opened
    for store in opened.open:
        store.close()


@pytest.fixture
def store(stores: OpenStores, store_path: Path) -> PartitionStore:
    return stores.open_at(store_path)


def with_holds(store: PartitionStore, holds_by_wallet: dict[str, list[Hold]]) -> None:
    """Place `holds_by_wallet` through stage/apply, one command per hold, like the processor does."""
    for wallet_id, holds in holds_by_wallet.items():
        state = store.wallet(wallet_id)
        for position, placed in enumerate(holds):
            after = wallet(wallet_id, holds=(*(state.holds if state else ()), placed), version=position + 2)
            store.stage(state, after, f"{wallet_id}-place-{placed.hold_id}", NOW_MS, "fp")
            state = after
    store.apply()


# --- stage, apply, read -----------------------------------------------------------------------------------


def test_new_store_has_no_wallets_no_commands_and_offset_zero(store: PartitionStore) -> None:
    assert store.wallet("w1") is None
    assert store.seen_command("c1") is None
    assert store.events_offset == 0
    assert list(store.wallets()) == []
    assert due(store, NOW_MS, 10) == []


def test_staged_wallet_and_command_are_visible_before_apply(store: PartitionStore) -> None:
    opened = wallet()
    store.stage(None, opened, "c1", NOW_MS, "fp1")
    assert store.wallet("w1") == opened
    assert store.seen_command("c1") == f"{NOW_MS}:fp1"


def test_applied_wallet_and_command_are_persisted_and_survive_reopen(stores: OpenStores, store: PartitionStore,
                                                                      store_path: Path) -> None:
    opened = wallet(holds=(hold("h1", NOW_MS + 5),))
    store.stage(None, opened, "c1", NOW_MS, "fp1")
    store.apply()
    assert not store.changes
    assert store.wallet("w1") == opened
    assert store.seen_command("c1") == f"{NOW_MS}:fp1"
    again = stores.reopen(store, store_path)
    assert again.wallet("w1") == opened
    assert again.seen_command("c1") == f"{NOW_MS}:fp1"
    assert list(again.wallets()) == [opened]
    assert due(again, NOW_MS + 5, 10) == [("w1", "h1")]


def test_staged_state_overrides_the_persisted_one_until_discarded(store: PartitionStore) -> None:
    first = wallet(balance_minor=0)
    store.stage(None, first, "c1", NOW_MS, "fp1")
    store.apply()
    second = replace(first, balance_minor=500, version=2)
    store.stage(first, second, "c2", NOW_MS + 1, "fp2")
    assert store.wallet("w1") == second
    store.discard()
    assert store.wallet("w1") == first
    assert store.seen_command("c2") is None


def test_discarded_batch_is_never_written(stores: OpenStores, store: PartitionStore, store_path: Path) -> None:
    store.stage(None, wallet(holds=(hold("h1", NOW_MS),)), "c1", NOW_MS, "fp1")
    store.changes.events_offset = 42
    store.discard()
    store.apply()
    again = stores.reopen(store, store_path)
    assert again.wallet("w1") is None
    assert again.seen_command("c1") is None
    assert again.events_offset == 0
    assert due(again, NOW_MS, 10) == []


def test_rejected_command_stages_only_its_seen_marker(store: PartitionStore) -> None:
    opened = wallet()
    store.stage(None, opened, "c1", NOW_MS, "fp1")
    store.apply()
    store.stage(opened, opened, "c2", NOW_MS + 1, "fp2")  # outcome-only: the state is the same object
    store.stage(None, None, "c3", NOW_MS + 2, "fp3")  # refused on a missing wallet
    assert store.changes.wallets == {}
    store.apply()
    assert store.seen_command("c2") == f"{NOW_MS + 1}:fp2"
    assert store.seen_command("c3") == f"{NOW_MS + 2}:fp3"
    assert store.wallet("w1") == opened


def test_several_commands_on_one_wallet_in_a_batch_write_its_last_state(store: PartitionStore) -> None:
    states = [wallet(balance_minor=balance, version=version) for version, balance in enumerate([0, 10, 30], start=1)]
    before = None
    for position, state in enumerate(states):
        store.stage(before, state, f"c{position}", NOW_MS, "fp")
        before = state
    store.apply()
    assert store.wallet("w1") == states[-1]
    assert [store.seen_command(f"c{position}") for position in range(3)] == [f"{NOW_MS}:fp"] * 3


def test_wallets_lists_every_wallet_of_the_partition(store: PartitionStore) -> None:
    states = [wallet(wallet_id) for wallet_id in ("a", "b", "w1", "z-9")]
    for state in states:
        store.stage(None, state, f"open-{state.wallet_id}", NOW_MS, "fp")
    store.apply()
    assert sorted(store.wallets(), key=lambda s: s.wallet_id) == states


# --- the events offset marker -----------------------------------------------------------------------------


def test_events_offset_is_written_with_the_batch_and_survives_reopen(stores: OpenStores, store: PartitionStore,
                                                                    store_path: Path) -> None:
    store.stage(None, wallet(), "c1", NOW_MS, "fp1")
    store.changes.events_offset = 17
    assert store.events_offset == 0  # the marker moves only when the batch is applied
    store.apply()
    assert store.events_offset == 17
    assert stores.reopen(store, store_path).events_offset == 17


def test_events_offset_alone_is_a_batch_worth_applying(store: PartitionStore) -> None:
    store.changes.events_offset = 5
    assert store.changes
    store.apply()
    assert store.events_offset == 5
    store.changes.events_offset = 9
    store.apply()
    assert store.events_offset == 9


# --- the hold expiry index --------------------------------------------------------------------------------


def test_due_holds_are_the_expired_ones_oldest_first_across_wallets(store: PartitionStore) -> None:
    with_holds(store, {
        "w1": [hold("late", NOW_MS + 300), hold("first", NOW_MS + 100)],
        "w2": [hold("middle", NOW_MS + 200), hold("future", NOW_MS + 10_000)],
    })
    assert due(store, NOW_MS + 99, 10) == []
    assert due(store, NOW_MS + 100, 10) == [("w1", "first")]  # expires_at_ms == now is due
    assert due(store, NOW_MS + 1_000, 10) == [("w1", "first"), ("w2", "middle"), ("w1", "late")]


def test_due_holds_returns_at_most_limit_oldest_first(store: PartitionStore) -> None:
    with_holds(store, {"w1": [hold(f"h{n}", NOW_MS + n) for n in range(5, 0, -1)]})
    assert due(store, NOW_MS + 100, 2) == [("w1", "h1"), ("w1", "h2")]
    assert due(store, NOW_MS + 100, 0) == []


def test_hold_index_is_unaffected_by_wallet_and_command_keys(store: PartitionStore) -> None:
    # Keys of other families ("c/", "m/", "w/", "x/") sort around "h/": the scan must stop at its prefix.
    with_holds(store, {"w1": [hold("h1", NOW_MS)]})
    store.changes.events_offset = 3
    store.apply()
    assert due(store, 2**62, 100) == [("w1", "h1")]


def test_hold_placed_and_removed_in_one_batch_is_absent_after_apply(store: PartitionStore) -> None:
    opened = wallet()
    store.stage(None, opened, "open", NOW_MS, "fp")
    store.apply()
    placed = wallet(holds=(hold("h1", NOW_MS + 10),), version=2)
    captured = wallet(version=3)
    store.stage(opened, placed, "place", NOW_MS, "fp")
    store.stage(placed, captured, "capture", NOW_MS, "fp")
    store.apply()
    assert due(store, NOW_MS + 10, 10) == []
    assert store.wallet("w1") == captured


def test_hold_removed_then_placed_again_with_the_same_id_in_one_batch_is_indexed_once(store: PartitionStore) -> None:
    first = wallet(holds=(hold("h1", NOW_MS + 10),))
    store.stage(None, first, "open-and-place", NOW_MS, "fp")
    store.apply()
    released = wallet(version=2)
    placed_again = wallet(holds=(hold("h1", NOW_MS + 20),), version=3)
    store.stage(first, released, "release", NOW_MS, "fp")
    store.stage(released, placed_again, "place-again", NOW_MS, "fp")
    store.apply()
    assert due(store, NOW_MS + 100, 10) == [("w1", "h1")]
    assert due(store, NOW_MS + 15, 10) == []


def test_hold_closed_in_a_later_batch_leaves_the_index(store: PartitionStore) -> None:
    with_holds(store, {"w1": [hold("h1", NOW_MS + 10), hold("h2", NOW_MS + 20)]})
    before = store.wallet("w1")
    assert before is not None
    after = replace(before, holds=tuple(h for h in before.holds if h.hold_id != "h1"), version=before.version + 1)
    store.stage(before, after, "release-h1", NOW_MS, "fp")
    store.apply()
    assert due(store, NOW_MS + 100, 10) == [("w1", "h2")]


def test_hold_expiring_centuries_ahead_does_not_hide_the_holds_due_now(store: PartitionStore) -> None:
    with_holds(store, {"w1": [hold("due", NOW_MS + 10)], "w2": [hold("far", 10**13)]})
    assert due(store, NOW_MS + 100, 10) == [("w1", "due")]


# --- seen-command retention -------------------------------------------------------------------------------


def test_expire_commands_removes_only_markers_older_than_the_cutoff(store: PartitionStore) -> None:
    opened = wallet()
    store.stage(None, opened, "old-1", NOW_MS - 3_000, "fp")
    store.stage(opened, opened, "old-2", NOW_MS - 2_000, "fp")
    store.stage(opened, opened, "at-cutoff", NOW_MS, "fp")
    store.stage(opened, opened, "new", NOW_MS + 1_000, "fp")
    store.apply()
    assert store.expire_commands(NOW_MS, 100) == 2
    assert store.seen_command("old-1") is not None  # staged only: removed when the batch is applied
    store.apply()
    assert store.seen_command("old-1") is None
    assert store.seen_command("old-2") is None
    assert store.seen_command("at-cutoff") == f"{NOW_MS}:fp"
    assert store.seen_command("new") == f"{NOW_MS + 1_000}:fp"
    assert store.wallet("w1") == opened
    assert store.expire_commands(NOW_MS, 100) == 0


def test_expire_commands_removes_at_most_limit_oldest_first(store: PartitionStore) -> None:
    for n in range(5):
        store.stage(None, None, f"c{n}", NOW_MS + n, "fp")
    store.apply()
    assert store.expire_commands(NOW_MS + 100, 2) == 2
    store.apply()
    assert [store.seen_command(f"c{n}") is None for n in range(5)] == [True, True, False, False, False]


def test_command_seen_again_in_the_batch_that_expires_it_keeps_its_new_marker(store: PartitionStore) -> None:
    store.stage(None, None, "c1", NOW_MS - 10_000, "fp-old")
    store.apply()
    assert store.expire_commands(NOW_MS, 10) == 1
    store.stage(None, None, "c1", NOW_MS + 5, "fp-new")
    store.apply()
    assert store.seen_command("c1") == f"{NOW_MS + 5}:fp-new"
    assert store.expire_commands(NOW_MS + 6, 10) == 1  # its new index entry is there too


def test_command_stamped_centuries_ahead_does_not_stop_retention_of_old_markers(store: PartitionStore) -> None:
    store.stage(None, None, "old", NOW_MS - 10_000, "fp")
    store.stage(None, None, "far-future", 10**13, "fp")
    store.apply()
    assert store.expire_commands(NOW_MS, 10) == 1


# --- the state record -------------------------------------------------------------------------------------


def test_state_with_holds_round_trips_through_its_record() -> None:
    state = wallet("w-1", balance_minor=-250, holds=(hold("a", NOW_MS, 5), hold("b:2", NOW_MS + 1, 7)),
                   version=9, status="FROZEN")
    assert decode_state("w-1", encode_state(state)) == state


def test_state_record_does_not_repeat_the_wallet_id_of_its_key() -> None:
    state = wallet("wallet-id-in-key-only")
    assert b"wallet-id-in-key-only" not in encode_state(state)
    assert decode_state("other", encode_state(state)) == replace(state, wallet_id="other")


_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-:.", min_size=1, max_size=16)
_longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def wallet_states(draw: st.DrawFn) -> WalletState:
    holds = draw(st.lists(st.builds(Hold, hold_id=_ids, amount_minor=_longs, expires_at_ms=_longs),
                          max_size=5, unique_by=lambda h: h.hold_id))
    return WalletState(
        wallet_id=draw(_ids), owner_id=draw(st.text(max_size=20)),
        status=draw(st.sampled_from(sorted(WALLET_STATUSES))),
        currency=draw(st.sampled_from(["EUR", "JPY", "BHD"])), balance_minor=draw(_longs), held_minor=draw(_longs),
        overdraft_limit_minor=draw(_longs), version=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        last_hash=draw(st.sampled_from([GENESIS_HASH, HASH])), holds=tuple(sorted(holds, key=lambda h: h.hold_id)),
    )


@settings(max_examples=200, deadline=None)
@given(state=wallet_states())
def test_any_state_round_trips_through_its_record(state: WalletState) -> None:
    assert decode_state(state.wallet_id, encode_state(state)) == state


@settings(max_examples=300, deadline=None)
@given(state=wallet_states(), hold_ids=st.lists(st.text(max_size=12), max_size=3, unique=True))
def test_any_state_record_is_the_compact_json_of_its_fields(state: WalletState, hold_ids: list[str]) -> None:
    """The record is formatted by hand; it must stay what `json.dumps` wrote (stores written before, and readers)."""
    state = replace(state, holds=tuple(replace(h, hold_id=i) for h, i in zip(state.holds, hold_ids)))
    fields = [state.owner_id, state.status, state.currency, state.balance_minor, state.held_minor,
              state.overdraft_limit_minor, state.version, state.last_hash,
              [[h.hold_id, h.amount_minor, h.expires_at_ms] for h in state.holds]]
    assert encode_state(state) == json.dumps(fields, separators=(",", ":")).encode()


def test_due_hold_names_its_expiry_and_the_command_that_placed_it(store: PartitionStore) -> None:
    first = wallet(holds=(hold("h1", NOW_MS),))
    store.stage(None, first, "place-1", NOW_MS, "fp")
    store.apply()
    assert list(store.due_holds(NOW_MS, 10)) == [("w1", "h1", NOW_MS, "place-1")]
    released = wallet(holds=())
    store.stage(first, released, "release", NOW_MS, "fp")
    placed_again = wallet(holds=(hold("h1", NOW_MS),))
    store.stage(released, placed_again, "place-2", NOW_MS, "fp")
    store.apply()
    assert list(store.due_holds(NOW_MS, 10)) == [("w1", "h1", NOW_MS, "place-2")]
