"""One command against one partition's store: deduplicate by command id, decide, stage. No Kafka here.

The processor (agents/processor.py) calls `decide_command` for every accepted command of a batch, in
order, and commits what it returns in one transaction; the store's staged changes are written after the
commit. Tests drive this module directly with a real store (tests/unit/test_identity_stateful.py).
"""

from __future__ import annotations

import gc
from typing import Callable, NamedTuple

from app.codec import CodecError
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide_and_evolve
from app.domain.limits import Limits
from app.intake import DUPLICATE_COMMAND_CONFLICT, fingerprint
from agents.gauges import gauge_deltas
from agents.transfer_relay import leg_for
from app.settings import Settings
from tables.wallet_store import PartitionStore


class Decision(NamedTuple):
    """What deciding one command produced.

    A duplicate (the id was decided before with the same body) has no events and carries the first
    outcome's wire bytes (None when not kept); a new command has its events, their wire bytes and the
    transfer legs they call for. A named tuple: one per command, a third of the cost of a frozen dataclass.
    """

    command: c.CommandBase
    digest: str
    duplicate: bool
    first_outcome: bytes | None = None
    events: tuple[e.EventBase, ...] = ()
    values: tuple[bytes, ...] = ()
    legs: tuple[c.CommandBase, ...] = ()


def decide_command(store: PartitionStore, command: c.CommandBase, now_ms: int, limits: Limits,
                   encode: Callable[[e.EventBase], bytes]) -> Decision:
    """Decide `command` at `now_ms` (the processor's clock, ms) on `store`, staging its effects.

    Raises CodecError(DUPLICATE_COMMAND) when the id was decided before with another body.
    """
    digest = fingerprint(command)
    seen = store.seen_command(command.command_id)
    if seen is not None:
        if seen.split(":", 1)[1] != digest:
            raise CodecError(DUPLICATE_COMMAND_CONFLICT,
                             f"command id {command.command_id} was used before with another body")
        return Decision(command, digest, True, store.first_outcome(command.command_id))
    before = store.wallet(command.wallet_id)
    events, after = decide_and_evolve(before, command, now_ms, limits)
    values = tuple(encode(event) for event in events)
    legs = []
    for event in events:
        store.track(event, *gauge_deltas(event))
        leg = leg_for(event)
        if leg is not None:
            legs.append(leg)
    store.stage(before, after, command.command_id, now_ms, digest, values[-1])
    return Decision(command, digest, False, None, tuple(events), values, tuple(legs))


def young_collections(settings: Settings) -> None:
    """Collect the young generation every `processor_gc_young_objects_max` allocations (for this process).

    Deciding allocates a few dozen short-lived objects per command; at Python's default threshold (700) the
    collector ran every few commands and, at most every hundredth run, scanned the whole decoded-state cache.
    The older generations keep their default ratios.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(settings.processor_gc_young_objects_max, middle, old)
