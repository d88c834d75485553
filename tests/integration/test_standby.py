"""A standby gives way to deciding, on the real stack (agents/standby.py).

While its worker has a backlog of its own, a standby store does not fold, unless it is
`processor_standby_defer_lag_max_events` behind; without a backlog it follows the log as it grows.
The events are written the way the processor writes them (tests/integration/test_handover.py).
"""

from __future__ import annotations

import asyncio

from agents.standby import StandbyTailer
from app import metrics
from tables.wallet_store import PartitionStore
from tests.conftest import prepare_topics
from tests.harness import Ledger, isolated_settings, wait_for_async
from tests.integration.test_handover import _wallets_on, _write_history

WAIT_S = 60
PARTITION = 1
DEFER_LAG_MAX_EVENTS = 300
BUSY = 1_000_000  # records waiting on the worker's own partitions: far more than a batch


def _deferred_s() -> float:
    return metrics.processor_standby_deferred_seconds._value.get()


async def test_a_standby_defers_to_the_backlog_until_it_is_too_far_behind(stack, tmp_path):
    settings = prepare_topics(isolated_settings(stack, "standby-defer",
                                                processor_standby_defer_lag_max_events=DEFER_LAG_MAX_EVENTS))
    ledger = Ledger(settings)
    backlog = [BUSY]
    stores: dict[int, PartitionStore] = {}

    def open_store(partition: int) -> PartitionStore:
        if partition not in stores:
            stores[partition] = PartitionStore(tmp_path / f"p{partition}")
        return stores[partition]

    tailer = StandbyTailer(settings, ledger.events, stores)
    tailer.bind(open_store, lambda: backlog[0])

    def folded(count: int):
        async def check() -> bool:
            return open_store(PARTITION).events_offset >= count
        return check

    async def deferred_since(start_s: float) -> bool:
        return _deferred_s() >= start_s + 1.0

    # Past the bound from the start: it folds although the worker is busy.
    history = _wallets_on(PARTITION, 1_000, settings.partitions, "sb")
    await _write_history(settings, ledger, history)
    tailer.follow({PARTITION})
    running = asyncio.create_task(tailer.run())
    try:
        await wait_for_async(folded(len(history)), WAIT_S, "the standby past its bound folds")
        caught_up = open_store(PARTITION).events_offset

        # Below the bound and busy: it waits, however long the backlog lasts.
        await _write_history(settings, ledger, _wallets_on(PARTITION, 200, settings.partitions, "sc"))
        deferred_before = _deferred_s()
        await wait_for_async(lambda: deferred_since(deferred_before), WAIT_S, "the standby deferring for a second")
        assert open_store(PARTITION).events_offset == caught_up

        # The backlog decided: it catches up.
        backlog[0] = 0
        await wait_for_async(folded(caught_up + 200), WAIT_S, "the standby catching up after the backlog")

        # Busy again, and the log grows past the bound: it folds anyway.
        backlog[0] = BUSY
        await _write_history(settings, ledger, _wallets_on(PARTITION, 400, settings.partitions, "sd"))
        await wait_for_async(folded(caught_up + 600), WAIT_S, "the standby past its bound while busy")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for store in stores.values():
            store.close()
