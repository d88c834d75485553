"""The crash test's checks, counted instead of asserted, for what the Faust baseline wrote.

tests/system/ledger_checks.py asserts these on the processor's output and stops at the first failure. A
baseline is expected to fail some of them, so here each check is a count: how many commands have no
outcome or several, how many poison messages and legs are missing or doubled, how many wallets' hash chains
break or whose table state differs from a replay of their events, and how much money appeared or vanished.
Reads are read_committed, from the beginning of each topic to its end at the time of reading.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Rdict

from app import identity
from app.domain import events as e
from app.domain.errors import DomainError
from app.domain.events import is_applied
from app.domain.ledger import replay, verify_chain
from app.domain.state import WalletState
from app.kafka import read_to_end
from app.kafka import consumer_options
from app.settings import Settings
from tables.wallet_store import decode_state, open_read_only
from wallet.reconcile import in_transit

# Reading one topic to its end (a few hundred thousand records at most here).
READ_TIMEOUT_S = 120
# Faust's RocksDB stores hold this key beside the table's keys: the changelog offset they reflect.
FAUST_OFFSET_KEY = b"__faust\0offset__"


async def read_records(settings: Settings, topic: str) -> list:
    """Every committed record of `topic`, from its beginning to its current end, in partition order."""
    return await read_to_end(settings, topic, timeout_s=READ_TIMEOUT_S)


async def end_offset_total(settings: Settings, topic: str) -> int:
    """The sum of `topic`'s end offsets: its committed records plus transaction markers and aborted records."""
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await consumer.stop()


def table_from_changelog(records: list) -> dict[str, WalletState]:
    """The committed Faust `wallets` table: the last changelog value of each key."""
    latest = {record.key: record.value for record in records}
    return {key.decode(): decode_state(key.decode(), value) for key, value in latest.items() if value is not None}


def keys_from_changelog(records: list) -> set[str]:
    """The keys a committed changelog holds a value for (e.g. the Faust `command_ids` dedupe table)."""
    latest = {record.key: record.value for record in records}
    return {key.decode() for key, value in latest.items() if value is not None}


def table_from_rocksdb(paths: list[Path]) -> dict[str, WalletState]:
    """The Faust `wallets` table as its RocksDB stores on disk hold it (stores closed)."""
    table: dict[str, WalletState] = {}
    for path in paths:
        db: Rdict = open_read_only(path)
        try:
            for key, value in db.items():
                if key != FAUST_OFFSET_KEY:
                    table[key.decode()] = decode_state(key.decode(), value)
        finally:
            db.close()
    return table


def count_violations(events: list[e.EventBase], sent_ids: set[str], dlq_values: list[bytes], poison: list[bytes],
                     leg_ids: list[str], tables: dict[str, dict[str, WalletState]],
                     remembered_ids: set[str]) -> dict:
    """Each check of the crash test as a count (0 everywhere = the test would pass). Money in minor units.

    `tables` names the copies of the wallet table to compare with a replay of the events (e.g. the committed
    changelog and the stores on disk). `remembered_ids` are the command ids the committed dedupe table holds:
    a decided command missing from it would be decided again by a worker that recovers from the changelog.
    """
    outcomes = Counter(ev.command_id for ev in events)
    dlq = Counter(dlq_values)
    poison_values = set(poison)
    legs = Counter(leg_ids)
    expected_legs = {identity.credit_command_id(ev.wallet_id, ev.transfer_id, ev.timestamp_ms) for ev in events
                     if isinstance(ev, e.TransferDebited)}
    expected_legs |= {identity.refund_command_id(ev.source_wallet_id, ev.transfer_id, ev.timestamp_ms) for ev in events
                      if isinstance(ev, e.TransferCreditRejected)}
    by_wallet: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in events:
        by_wallet[event.wallet_id].append(event)
    replayed: dict[str, WalletState] = {}
    chains_broken = 0
    for wallet_id, wallet_events in by_wallet.items():
        try:
            verify_chain(wallet_events)
            replayed.update(replay(wallet_events))
        except DomainError:
            chains_broken += 1
    versions = Counter((ev.wallet_id, ev.version) for ev in events if is_applied(ev))
    stuck = in_transit(events)  # by source, transfer id and debit time, as reconcile matches legs to debits
    in_transit_minor = sum(debit.amount_minor for debit in stuck)
    flows_minor = (sum(ev.amount_minor for ev in events if isinstance(ev, e.Deposited))
                   - sum(ev.amount_minor for ev in events if isinstance(ev, e.Withdrawn))
                   - sum(ev.amount_minor for ev in events if isinstance(ev, e.HoldCaptured)))
    counts = {
        "commands_sent": len(sent_ids),
        "outcome_events": len(events),
        "commands_without_outcome": len(sent_ids - set(outcomes)),
        "commands_with_several_outcomes": sum(1 for n in outcomes.values() if n > 1),
        "extra_outcome_events": sum(n - 1 for n in outcomes.values() if n > 1),
        "poison_sent": len(poison),
        "poison_missing_from_dlq": len(poison_values - set(dlq)),
        "poison_in_dlq_twice_or_more": sum(1 for value in poison if dlq[value] > 1),
        "dlq_records_not_poison": sum(n for value, n in dlq.items() if value not in poison_values),
        "legs_expected": len(expected_legs),
        "legs_missing": len(expected_legs - set(legs)),
        "legs_published_twice_or_more": sum(1 for n in legs.values() if n > 1),
        "transfers_stuck_in_transit": len(stuck),
        "decided_ids_missing_from_committed_dedupe_table": len(set(outcomes) - remembered_ids),
        "wallets": len(by_wallet),
        "wallets_with_broken_hash_chain": chains_broken,
        # Two applied events of one wallet with one version: the second was decided on a state that had lost
        # the first (the money it moved is in the log and no longer in the table).
        "applied_events_decided_on_a_stale_state": sum(n - 1 for n in versions.values() if n > 1),
    }
    for name, table in tables.items():
        counts[f"wallets_where_{name}_differs_from_replay"] = sum(
            1 for wallet_id in by_wallet if wallet_id in replayed and table.get(wallet_id) != replayed[wallet_id])
        # Conservation over what the table believes: Σ balances + Σ in transit = Σ deposits − withdrawals − captures.
        counts[f"money_created_by_{name}_minor"] = (sum(state.balance_minor for state in table.values())
                                                    + in_transit_minor - flows_minor)
    return counts
