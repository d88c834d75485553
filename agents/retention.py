"""Retention of seen command ids, on the processor's clock.

A command id is remembered for `command_retention_s` from when the processor first decided it (the
`x/<decided_at_ms>/<id>` index, tables/wallet_store.py), whatever the producer's `timestamp_ms` says; see
app/identity.py. The sweep runs at most every `RETENTION_SWEEP_INTERVAL_S` and forgets at most
`RETENTION_SWEEP_COMMANDS_MAX` ids per store, staged into the next batch's write.
"""

from __future__ import annotations

from typing import Iterable

from app import identity
from tables.wallet_store import PartitionStore

RETENTION_SWEEP_INTERVAL_S = 60.0
RETENTION_SWEEP_COMMANDS_MAX = 10_000


class RetentionSweep:
    def __init__(self, retention_s: int) -> None:
        self.retention_s = retention_s
        self._next_sweep_s = 0.0

    def maybe_sweep(self, stores: Iterable[PartitionStore], now_ms: int, monotonic_s: float) -> int:
        """Stage the removal of ids first decided more than `retention_s` before `now_ms`; the number staged."""
        if monotonic_s < self._next_sweep_s:
            return 0
        self._next_sweep_s = monotonic_s + RETENTION_SWEEP_INTERVAL_S
        return sweep(stores, now_ms, self.retention_s)


def sweep(stores: Iterable[PartitionStore], now_ms: int, retention_s: int) -> int:
    before_ms = identity.retention_start_ms(now_ms, retention_s)
    return sum(store.expire_commands(before_ms, RETENTION_SWEEP_COMMANDS_MAX) for store in stores)
