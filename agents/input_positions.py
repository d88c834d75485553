"""The processor's input positions, kept as a record of its own transactions instead of the group's offsets.

Each partition's transaction writes one record to `processor_offsets_topic` (same partition; key the
partition number; value the next offset of each input topic of that partition, JSON). It commits or aborts
with the outcomes it accounts for, like `send_offsets_to_transaction` did, at one produced record instead of
two round trips to the group coordinator (AddOffsetsToTxn, TxnOffsetCommit): half of a transaction's time
here (docs/BENCHMARKS.md, Processor, seventh session). A partition's new owner reads the last committed
record back once it holds the partition's fence (`read_positions`): the fence settles the previous owner's
open transaction, so that record is the last word.

The group's committed offsets are still written, after each transaction and outside it (`GroupOffsets`), for
lag tools (`kafka-consumer-groups`, `wallet bench failover`), and flushed when partitions are revoked. A new
owner takes them where they are later than the record: a worker of the release before this one committed
through the group (a rolling upgrade), or an operator skipped commands. They are never later than what
was decided, since they are committed only after the transactions. The at-least-once demonstration mode
keeps committing through the group (agents/transactions.py, AtLeastOnce).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.errors import AgentError

log = logging.getLogger("wallet.processor")

# Offsets read back from the end of a partition of the positions topic at first; each committed transaction
# takes two (its record and its commit marker). Widened fourfold while only aborted records are found.
READ_BACK_WINDOW_FIRST = 64
# Bound of one fetch while reading positions back.
READ_BACK_FETCH_WAIT_MS = 200
# How long a revoke waits for the group's offsets to be committed before it lets the partitions go anyway
# (a rebalance callback must stay short; the offsets only matter to a worker of the release before).
GROUP_OFFSETS_FLUSH_TIMEOUT_S = 5.0


class PositionsRecordUnreadable(AgentError, ValueError):
    """The last committed record of a partition of the positions topic is not `{"<topic>": <offset>, ...}`.

    Operator action: a record written by hand (docs/OPERATIONS.md) is malformed; write a correct one for that
    partition (key the partition number, value JSON of each input topic's next offset) and restart the worker.
    """


def position_key(partition: int) -> bytes:
    return str(partition).encode()


def encode_positions(positions: dict[TopicPartition, int]) -> bytes:
    """The record's value: `{"<topic>": next offset, ...}` of one partition's input topics."""
    return json.dumps({tp.topic: offset for tp, offset in sorted(positions.items())},
                      separators=(",", ":")).encode()


def decode_positions(raw: bytes | None, partition: int) -> dict[TopicPartition, int]:
    """The positions a record's value holds; PositionsRecordUnreadable for anything else."""
    try:
        positions = {TopicPartition(topic, partition): offset for topic, offset in json.loads(raw).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise PositionsRecordUnreadable(f"positions record of partition {partition}: {raw!r:.200}") from exc
    if not all(isinstance(tp.topic, str) and type(offset) is int and offset >= 0 for tp, offset in positions.items()):
        raise PositionsRecordUnreadable(f"positions record of partition {partition}: {raw!r:.200}")
    return positions


async def read_positions(consumer: AIOKafkaConsumer, topic: str, partitions: set[int]) -> dict[TopicPartition, int]:
    """The input positions of the last committed transaction of each of `partitions` (none for a partition
    whose topic partition holds no committed record). `consumer` is an unassigned read_committed consumer
    without a group; the caller holds the partitions' fences, so nothing is written to them meanwhile."""
    tps = {TopicPartition(topic, p): p for p in sorted(partitions)}
    found: dict[TopicPartition, int] = {}
    consumer.assign(list(tps))
    try:
        ends = await consumer.end_offsets(list(tps))
        begins = await consumer.beginning_offsets(list(tps))
        for tp, partition in tps.items():
            window = READ_BACK_WINDOW_FIRST
            while True:
                start = max(begins[tp], ends[tp] - window)
                last = await _last_record(consumer, tp, start, ends[tp])
                if last is not None:
                    found.update(decode_positions(last, partition))
                    break
                if start <= begins[tp]:
                    break  # nothing committed here yet
                window *= 4
    finally:
        consumer.unsubscribe()
    return found


async def _last_record(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> bytes | None:
    """The value of the last committed record of `tp` in offsets [start, end), or None."""
    if start >= end:
        return None
    consumer.seek(tp, start)
    last = None
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=READ_BACK_FETCH_WAIT_MS)
        for record in batch.get(tp, ()):
            if record.offset < end:
                last = record.value
    return last


class GroupOffsets:
    """Commits the processor's input positions to its consumer group after each transaction, outside it, for
    lag tools: one commit in flight at a time, the newest positions next. A commit the group refuses (a
    rebalance, a member no longer in the group) is dropped; the next transaction's positions follow."""

    def __init__(self, consumer: AIOKafkaConsumer, spawn: Callable[[Coroutine], asyncio.Task]) -> None:
        """`spawn` starts the committing task where a fault other than Kafka's ends the worker (a task group)."""
        self._consumer = consumer
        self._spawn = spawn
        self._waiting: dict[TopicPartition, int] = {}
        self._task: asyncio.Task | None = None

    def note(self, positions: dict[TopicPartition, int]) -> None:
        self._waiting.update(positions)
        if self._task is None or self._task.done():
            self._task = self._spawn(self._commit())

    async def flush(self) -> None:
        """Wait (at most GROUP_OFFSETS_FLUSH_TIMEOUT_S) until the positions noted so far were committed or
        refused."""
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), GROUP_OFFSETS_FLUSH_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("group offsets not committed before the revoke", extra={
                    "timeout_s": GROUP_OFFSETS_FLUSH_TIMEOUT_S})

    async def _commit(self) -> None:
        while self._waiting:
            assigned = self._consumer.assignment()
            positions = {tp: offset for tp, offset in self._waiting.items() if tp in assigned}
            self._waiting = {}
            if not positions:
                continue
            try:
                await self._consumer.commit(positions)
            except KafkaError as exc:
                log.debug("group offsets not committed", extra={"error": repr(exc)})
