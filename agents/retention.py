"""Retention of seen command ids, on the processor's clock.

A command id is remembered for `command_retention_s` from when the processor first decided it (the
`x/<decided_at_ms>/<id>` index, tables/wallet_store.py), whatever the producer's `timestamp_ms` says; see
app/identity.py. The sweep runs at most every `retention_sweep_interval_s` and forgets at most
`RETENTION_SWEEP_COMMANDS_MAX` ids per store, staged into the next batch's write.
"""

from __future__ import annotations

from typing import Iterable

from app import identity, metrics
from tables.wallet_store import PartitionStore

# Ids one sweep forgets per store at most, so a sweep never makes a batch's store write large.
RETENTION_SWEEP_COMMANDS_MAX = 10_000


class RetentionSweep:
    def __init__(self, retention_s: int, interval_s: float) -> None:
        self.retention_s = retention_s
        self.interval_s = interval_s
        self._next_sweep_s = 0.0

    def maybe_sweep(self, stores: Iterable[PartitionStore], now_ms: int, monotonic_s: float) -> int:
        """Stage the removal of ids first decided more than `retention_s` before `now_ms`; the number staged."""
        if monotonic_s < self._next_sweep_s:
            return 0
        self._next_sweep_s = monotonic_s + self.interval_s
        forgotten = sweep(stores, now_ms, self.retention_s)
        metrics.retention_sweeps_total.inc()
        metrics.command_ids_forgotten_total.inc(forgotten)
        return forgotten


def sweep(stores: Iterable[PartitionStore], now_ms: int, retention_s: int) -> int:
    """Stage the removal of ids first decided before `now_ms - retention_s` in every store; the number staged."""
    before_ms = identity.retention_start_ms(now_ms, retention_s)
    return sum(store.expire_commands(before_ms, RETENTION_SWEEP_COMMANDS_MAX) for store in stores)
