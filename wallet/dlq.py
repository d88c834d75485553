"""`wallet dlq list|replay`: inspect the dead-letter topic and re-drive its messages, each at most once.

A DLQ record (written by the processor) is the original key and bytes plus headers: `error.code`,
`error.detail`, `source.topic`, `source.partition`, `source.offset`.

Replay re-publishes a record's original key and value to its source topic, on the partition murmur2 gives
its key (so a `WRONG_PARTITION` message lands where its wallet lives). Exactly once, durably:
- every replay writes a marker to the compacted topic `<dlq_topic>.replayed`, keyed by the source
  position `<topic>/<partition>/<offset>` of the message (the value says which DLQ record and when);
- the re-published message and its marker are written in ONE Kafka transaction, so either both are
  visible (read_committed) or neither;
- the transactional id is fixed (`<app_id>-dlq-replay`): a second `wallet dlq replay` started at the same
  time fences the first, whose open transaction is aborted, and only then reads the markers. So two
  operators cannot both re-drive a message; the one fenced fails loudly and re-drives nothing.
A replayed message that is still poison goes back to the DLQ under a new source position (its replayed
offset), so fixing the cause and replaying again is possible; the same DLQ record is never re-driven twice.

`wallet dlq list --sink` lists the sink DLQ instead (`Settings.sink_dlq_topic`): events of wallet.events a
read-model store refused, with the same headers plus `sink`. They are listed only, never replayed: an event
re-published to wallet.events would be in the ledger twice. docs/OPERATIONS.md (WalletSinkDeadLetters) says
what to do with them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from app.kafka import TopicReadIncomplete, partition_for, producer_options, read_to_end
from app.settings import Settings
from wallet.errors import EntryPointError

# Bound of one `list` or `replay`: the DLQ is for exceptions, not a second command topic.
DLQ_READ_RECORDS_MAX = 100_000
# Longest time a read of the DLQ or marker topic may take before it is a fault.
READ_TIMEOUT_S = 60.0
ADMIN_TIMEOUT_S = 15.0
REPLAYED_HEADER = "dlq.replayed-from"


class DlqError(EntryPointError, RuntimeError):
    """The DLQ could not be read or a replay could not be committed.

    Operator action: read the message; a replay that failed re-drove nothing and can be run again.
    """


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    timestamp_ms: int
    sink: str = ""  # sink DLQ records only: the sink whose store refused the event

    @property
    def position(self) -> str:
        """This record's place in the DLQ, `P:O` (what `--offset` takes)."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        """The marker key: where the message was originally read."""
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"


def replayed_topic(settings: Settings) -> str:
    return f"{settings.dlq_topic}.replayed"


def _dead_letter(record) -> DeadLetter:
    headers = {name: value.decode(errors="replace") for name, value in (record.headers or ())}
    return DeadLetter(
        partition=record.partition, offset=record.offset, key=record.key, value=record.value,
        reason=headers.get("error.code", "?"), detail=headers.get("error.detail", ""),
        source_topic=headers.get("source.topic", ""), source_partition=int(headers.get("source.partition", -1)),
        source_offset=int(headers.get("source.offset", -1)), timestamp_ms=record.timestamp,
        sink=headers.get("sink", ""))


async def _read_all(settings: Settings, topic: str) -> list:
    """Every committed record of `topic`, beginning to end, at most DLQ_READ_RECORDS_MAX."""
    try:
        return await read_to_end(settings, topic, timeout_s=READ_TIMEOUT_S, records_max=DLQ_READ_RECORDS_MAX)
    except TopicReadIncomplete as exc:
        raise DlqError(f"{exc}; a DLQ this large is re-driven with a consumer of its own, not the CLI") from exc


async def dead_letters(settings: Settings, topic: str | None = None) -> list[DeadLetter]:
    """The records of the DLQ (`topic`: another DLQ topic, e.g. the sink DLQ), oldest first per partition."""
    return [_dead_letter(record) for record in await _read_all(settings, topic or settings.dlq_topic)]


async def replayed_sources(settings: Settings) -> dict[str, dict]:
    """Marker key (source position) -> marker body, for every message already re-driven."""
    markers = {}
    for record in await _read_all(settings, replayed_topic(settings)):
        markers[record.key.decode()] = json.loads(record.value)
    return markers


def _ensure_replayed_topic(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    name = replayed_topic(settings)
    if name in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics:
        return
    # Compacted: one marker per source position is all that must be kept, forever.
    topic = NewTopic(name, 1, settings.topic_replication_factor, config={"cleanup.policy": "compact"})
    try:
        admin.create_topics([topic], operation_timeout=ADMIN_TIMEOUT_S)[name].result()
    except Exception as exc:  # a concurrent replay created it first
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def _describe(letter: DeadLetter, replayed: dict | None) -> str:
    if letter.sink:
        state = f"sink={letter.sink}"
    else:
        state = f"replayed {replayed['at']} -> {replayed['to']}" if replayed else "not replayed"
    key = letter.key.decode(errors="replace") if letter.key is not None else "-"
    return (f"{letter.position:>8}  {letter.reason:<22} {letter.source_topic}[{letter.source_partition}]"
            f"@{letter.source_offset}  key={key}  {state}\n          {letter.detail}")


async def list_dead_letters(settings: Settings, limit: int | None, out, *, sink: bool = False) -> int:
    """Print the DLQ (`sink`: the sink DLQ), the newest `limit` records or all."""
    topic = settings.sink_dlq_topic if sink else settings.dlq_topic
    letters = await dead_letters(settings, topic)
    markers = {} if sink else await replayed_sources(settings)
    shown = letters[-limit:] if limit else letters
    for letter in shown:
        print(_describe(letter, markers.get(letter.source)), file=out)
    replayed = "" if sink else f"; {sum(1 for x in letters if x.source in markers)} replayed"
    print(f"{len(letters)} message(s) in {topic}; showing {len(shown)}{replayed}", file=out)
    return 0


def _target_partition(settings: Settings, letter: DeadLetter) -> int | None:
    copartitioned = {settings.commands_topic, settings.transfer_legs_topic}
    if letter.source_topic in copartitioned and letter.key is not None:
        return partition_for(letter.key, settings.partitions)
    return None  # no key: the producer picks; the processor routes it by its body's wallet_id


async def replay(settings: Settings, positions: list[str] | None, dry_run: bool, out) -> int:
    """Re-drive the chosen DLQ records (`P:O`), or all not yet replayed; 0 on success, 1 if any is unknown."""
    if not dry_run:
        await asyncio.to_thread(_ensure_replayed_topic, settings)
    producer = None
    if not dry_run:
        producer = AIOKafkaProducer(**producer_options(settings, transactional_id=f"{settings.app_id}-dlq-replay"))
        # Fences an earlier replay with the same id (its open transaction is aborted) before we read markers.
        await producer.start()
    try:
        letters = {letter.position: letter for letter in await dead_letters(settings)}
        markers = await replayed_sources(settings)
        unknown = [p for p in positions or [] if p not in letters]
        for position in unknown:
            print(f"{position}: no such record in {settings.dlq_topic}", file=out)
        # dict.fromkeys: a position given twice is still re-driven once.
        chosen = [letters[p] for p in dict.fromkeys(positions) if p in letters] if positions \
            else list(letters.values())
        todo = []
        for letter in chosen:
            if letter.source in markers:
                print(f"{letter.position}: skipped, already replayed {markers[letter.source]['at']} "
                      f"-> {markers[letter.source]['to']}", file=out)
            elif not letter.source_topic:
                print(f"{letter.position}: skipped, no source.topic header", file=out)
            else:
                todo.append(letter)
        if dry_run:
            for letter in todo:
                partition = _target_partition(settings, letter)
                print(f"{letter.position}: would replay {letter.reason} message to {letter.source_topic}"
                      f"[{'producer' if partition is None else partition}] (dry run: nothing published)", file=out)
            return 1 if unknown else 0
        if todo:
            await producer.begin_transaction()
            futures = []
            for letter in todo:
                partition = _target_partition(settings, letter)
                sent = await producer.send(letter.source_topic, key=letter.key, value=letter.value,
                                           partition=partition,
                                           headers=[(REPLAYED_HEADER, f"{settings.dlq_topic}:{letter.position}".encode())])
                futures.append((letter, sent))
            replayed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for letter, _ in futures:
                body = {"dlq": letter.position, "reason": letter.reason, "at": replayed_at}
                # `to` is filled after the commit for the printout; the marker records the DLQ record and time.
                await producer.send(replayed_topic(settings), key=letter.source.encode(),
                                    value=json.dumps({**body, "to": letter.source_topic}).encode())
            await producer.commit_transaction()
            for letter, sent in futures:
                meta = sent.result()
                print(f"{letter.position}: replayed {letter.reason} message to "
                      f"{meta.topic}[{meta.partition}]@{meta.offset}", file=out)
        print(f"{len(todo)} message(s) replayed", file=out)
        return 1 if unknown else 0
    finally:
        if producer is not None:
            await producer.stop()


def main(settings: Settings, action: str, *, limit: int | None = None, positions: list[str] | None = None,
         dry_run: bool = False, sink: bool = False) -> int:
    import sys

    from aiokafka.errors import KafkaError

    if sink and action != "list":
        print(f"dlq {action} --sink: the sink DLQ is listed only; its events are already in "
              f"{settings.events_topic} (docs/OPERATIONS.md, WalletSinkDeadLetters)", file=sys.stderr)
        return 2
    try:
        if action == "list":
            return asyncio.run(list_dead_letters(settings, limit, sys.stdout, sink=sink))
        return asyncio.run(replay(settings, positions, dry_run, sys.stdout))
    except (DlqError, KafkaError) as exc:
        # A failed replay transaction is aborted: nothing of it is visible, and it can be run again.
        print(f"dlq {action} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
