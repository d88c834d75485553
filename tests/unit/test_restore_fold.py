"""Folding committed events into a store (agents/restore.py `fold_records`, what a catch-up and a standby run)
rebuilds exactly the store the owner wrote while deciding: every key of a real RocksDB store, byte for byte."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agents.deciding import decide_command
from agents.restore import fold_records
from app import identity
from app.codec import EventCodec
from app.domain import commands as c
from app.domain.errors import EventNotApplicable
from app.domain.limits import Limits
from app.intake import FINGERPRINT_HEADER
from app.settings import Settings
from bench.fold_offline import Record, decide_log, store_contents
from bench.workloads import crash_mix
from tables.wallet_store import PartitionStore

COMMANDS = 3_000
WALLETS = 40
OWNER_COMMIT_EVERY = 37  # commands per owner batch: batches and fold slices do not line up


def _owner_log(store: PartitionStore, codec: EventCodec) -> list[Record]:
    """Decide a mix with holds, transfers (some refunded), freezes and a close on `store` as the processor
    does, committing a batch every OWNER_COMMIT_EVERY commands; the committed events as records."""
    rng = random.Random(7)
    wallets, commands = crash_mix(rng, COMMANDS, WALLETS, "fold")
    for i, w in enumerate(wallets[:10]):
        commands.append(c.Freeze(command_id=f"freeze-{i}", wallet_id=w, timestamp_ms=0, reason="test"))
        if i % 2:
            commands.append(c.Unfreeze(command_id=f"unfreeze-{i}", wallet_id=w, timestamp_ms=0))
    empty = "fold-empty"
    commands += [c.OpenWallet(command_id="open-empty", wallet_id=empty, timestamp_ms=0, owner_id="o", currency="EUR"),
                 c.Close(command_id="close-empty", wallet_id=empty, timestamp_ms=0)]
    clock = [int(time.time() * 1000) - 3_600_000]

    def now_ms() -> int:
        clock[0] += rng.randrange(0, 50)
        return clock[0]

    return decide_log(store, commands, codec, now_ms, OWNER_COMMIT_EVERY)


@pytest.mark.parametrize(("slice_events", "own_schema_reader"),
                         [(1, True), (250, True), (1000, True), (100_000, True), (1000, False)])
def test_a_store_folded_from_the_log_equals_the_owners_store_key_for_key(tmp_path: Path, slice_events: int,
                                                                         own_schema_reader: bool) -> None:
    """Both decode paths of the codec (its own schema's reader, fastavro) fold the same store."""
    codec = EventCodec(None, "events")
    if not own_schema_reader:
        codec._own_reader = None
    owner = PartitionStore(tmp_path / "owner")
    log = _owner_log(owner, codec)
    owner.close()
    kinds = {type(codec.decode(record.value)).__name__ for record in log}
    assert {"HoldPlaced", "HoldCaptured", "HoldReleased", "TransferDebited", "TransferCredited", "TransferRefunded",
            "TransferCreditRejected", "WalletFrozen", "WalletUnfrozen", "WalletClosed", "CommandRejected"} <= kinds

    folded = PartitionStore(tmp_path / "folded")
    retention_start_ms = identity.retention_start_ms(int(time.time() * 1000), Settings.command_retention_s)
    for first in range(0, len(log), slice_events):
        fold_records(folded, codec, log[first:first + slice_events], retention_start_ms)
        folded.apply()
    folded.close()

    owner_keys, folded_keys = store_contents(tmp_path / "owner"), store_contents(tmp_path / "folded")
    different = sorted(key for key in owner_keys.keys() | folded_keys.keys()
                       if owner_keys.get(key) != folded_keys.get(key))
    assert not different, different[:10]
    assert owner_keys[b"m/events_offset"] == str(len(log)).encode()
    assert any(key.startswith(b"h/") for key in owner_keys), "open holds are indexed"


def test_a_log_with_a_missing_event_stops_the_fold(tmp_path: Path) -> None:
    codec = EventCodec(None, "events")
    owner = PartitionStore(tmp_path / "owner")
    log = _owner_log(owner, codec)
    owner.close()
    second_of_a_wallet = next(i for i, record in enumerate(log) if codec.decode(record.value).version == 2)
    folded = PartitionStore(tmp_path / "folded")
    with pytest.raises(EventNotApplicable):
        fold_records(folded, codec, log[:second_of_a_wallet] + log[second_of_a_wallet + 1:], 0)
    folded.close()


def test_a_transfer_settled_within_one_slice_leaves_the_same_figures_as_the_owner(tmp_path: Path) -> None:
    """Debit and credit in one slice sum to zero in transit: the owner still wrote the figure (at zero)."""
    codec = EventCodec(None, "events")
    owner = PartitionStore(tmp_path / "owner")
    log: list[Record] = []
    queue: list[c.CommandBase] = [
        *(c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=0, owner_id="o", currency="EUR")
          for w in ("a", "b")),
        c.Deposit(command_id="fund-a", wallet_id="a", timestamp_ms=0, amount_minor=500, currency="EUR"),
        c.Transfer(command_id="t-1", wallet_id="a", timestamp_ms=0, destination_wallet_id="b", amount_minor=200,
                   currency="EUR")]
    now_ms = int(time.time() * 1000)
    for command in queue:
        decision = decide_command(owner, command, now_ms, Limits(), codec.encode)
        log += [Record(len(log), value, ((FINGERPRINT_HEADER, decision.digest.encode()),))
                for value in decision.values]
        queue.extend(decision.legs)
    owner.changes.events_offset = len(log)
    owner.apply()
    owner.close()
    folded = PartitionStore(tmp_path / "folded")
    fold_records(folded, codec, log, 0)
    folded.apply()
    folded.close()

    owner_keys = store_contents(tmp_path / "owner")
    assert owner_keys[b"m/gauges"] == b'{"in_transit":{"EUR":0},"holds_open":0}'
    assert store_contents(tmp_path / "folded") == owner_keys
