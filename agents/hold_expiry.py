"""The hold-expiry timer: releases for holds past their expiry, put on `wallet.transfer-legs`.

It scans each owned store's expiry index (`h/<expires_at_ms>/...`, tables/wallet_store.py) at most every
`EXPIRY_SCAN_INTERVAL_S` and publishes a `ReleaseHold(reason="EXPIRED")` per due hold in the next
transaction. The release's id names the placement, by hold id and expiry time (app/identity.py
`expiry_command_id`), so a repeated scan is deduplicated by the processor and a hold id placed again later
expires again. Delivery is at-least-once; the domain refuses an expiry release for a hold that has not
expired (`HOLD_NOT_EXPIRED`).
"""

from __future__ import annotations

from typing import Iterable

from app import identity
from app.domain import commands as c
from tables.wallet_store import PartitionStore

# How often the timer looks for due holds, and how many releases one look may publish.
EXPIRY_SCAN_INTERVAL_S = 1.0
EXPIRY_RELEASES_PER_SCAN_MAX = 1000
# Releases remembered as already requested (so one is not re-sent every scan until it is decided).
EXPIRY_REQUESTED_MAX = 100 * EXPIRY_RELEASES_PER_SCAN_MAX


class HoldExpiry:
    """Finds due holds; remembers (bounded) which releases it already requested."""

    def __init__(self) -> None:
        self._requested: set[str] = set()
        self._next_scan_s = 0.0

    def due_releases(self, stores: Iterable[PartitionStore], now_ms: int, monotonic_s: float) -> list[c.ReleaseHold]:
        """Release commands for holds whose expiry is at or before `now_ms` (processor clock, ms)."""
        if monotonic_s < self._next_scan_s:
            return []
        self._next_scan_s = monotonic_s + EXPIRY_SCAN_INTERVAL_S
        releases = []
        for store in stores:
            for wallet_id, hold_id, expires_at_ms, _ in store.due_holds(now_ms, EXPIRY_RELEASES_PER_SCAN_MAX):
                command_id = identity.expiry_command_id(wallet_id, hold_id, expires_at_ms)
                if command_id in self._requested:
                    continue
                self._requested.add(command_id)
                releases.append(c.ReleaseHold(command_id=command_id, wallet_id=wallet_id, timestamp_ms=now_ms,
                                              hold_id=hold_id, reason=c.EXPIRED_REASON))
        if len(self._requested) > EXPIRY_REQUESTED_MAX:
            self._requested.clear()  # bounded memory; a repeated release is deduplicated by its id
        return releases
