"""The standby's fold (agents/standby.py `StandbyTailer._fold`) in chunks of `processor_standby_fold_chunk_events`:
the event loop turns between chunks (the processor's batches run), each chunk is written before it turns, and a
partition released between two chunks (promoted to owner) is not folded any further."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from agents.standby import StandbyTailer
from app.codec import EventCodec
from app.settings import Settings
from bench.fold_offline import Record, decide_log, store_contents
from bench.workloads import open_and_fund
from tables.wallet_store import PartitionStore

CHUNK_EVENTS = Settings.processor_standby_fold_chunk_events
# Turns of the event loop a watching task takes at most (a fold of 300 events yields 3 times): the bound of
# each loop below, which waits for no time, only for the fold to yield (`asyncio.sleep(0)` is one turn).
TURNS_MAX = 10_000


async def _on_each_turn(step: Callable[[], bool]) -> None:
    """Run `step()` once per turn of the event loop until it returns True; fail after TURNS_MAX turns."""
    for _ in range(TURNS_MAX):
        if step():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"no result in {TURNS_MAX} turns of the event loop")

PARTITION = 2


class _TopicPartition:
    partition = PARTITION


def _log(path: Path, codec: EventCodec) -> list[Record]:
    """The events of 150 wallets opened and funded on the owner's store at `path` (300 events)."""
    owner = PartitionStore(path)
    try:
        clock = itertools.count(int(time.time() * 1000))  # decided now: inside the retention window
        return decide_log(owner, open_and_fund([f"w{i}" for i in range(150)]), codec, clock.__next__, 500)
    finally:
        owner.close()


def _tailer(tmp_path: Path, codec: EventCodec) -> tuple[StandbyTailer, PartitionStore]:
    stores: dict[int, PartitionStore] = {}
    tailer = StandbyTailer(Settings(), codec, stores)

    def open_store(partition: int) -> PartitionStore:
        if partition not in stores:
            stores[partition] = PartitionStore(tmp_path / "standby")
        return stores[partition]

    tailer.bind(open_store)
    tailer.follow({PARTITION})
    tailer._changed.clear()  # as the run loop does once it has seeked
    return tailer, open_store(PARTITION)


def test_a_batch_is_folded_chunk_by_chunk_with_the_loop_turning_between(tmp_path: Path) -> None:
    codec = EventCodec(None, "events")
    log = _log(tmp_path / "owner", codec)
    assert len(log) > 2 * CHUNK_EVENTS
    tailer, store = _tailer(tmp_path, codec)
    offsets_seen: list[int] = []

    async def fold_while_watching() -> None:
        def watch() -> bool:
            offsets_seen.append(store.events_offset)
            return store.events_offset == len(log)

        watcher = asyncio.create_task(_on_each_turn(watch))
        await tailer._fold({_TopicPartition(): log})
        await watcher

    asyncio.run(fold_while_watching())
    store.close()
    # Between chunks the store has been written up to a chunk's end; the last write is the whole batch.
    chunk_ends = sorted(set(offsets_seen) - {0})
    assert chunk_ends[:2] == [CHUNK_EVENTS, 2 * CHUNK_EVENTS]
    assert store_contents(tmp_path / "standby") == store_contents(tmp_path / "owner")


def test_a_partition_released_between_chunks_is_folded_no_further(tmp_path: Path) -> None:
    codec = EventCodec(None, "events")
    log = _log(tmp_path / "owner", codec)
    tailer, store = _tailer(tmp_path, codec)

    async def fold_and_release() -> None:
        def promote_after_the_first_chunk() -> bool:
            if store.events_offset == 0:
                return False
            tailer.release(PARTITION)
            return True

        promoter = asyncio.create_task(_on_each_turn(promote_after_the_first_chunk))
        await tailer._fold({_TopicPartition(): log})
        await promoter

    asyncio.run(fold_and_release())
    assert store.events_offset == CHUNK_EVENTS
    store.close()

