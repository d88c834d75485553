"""DLQ routing and answers to the web: the records a batch writes for a command it does not decide.

A poison message goes to `wallet.commands.dlq` with its reason in headers (`error.code`, `error.detail`) and
where it came from (`source.topic`, `source.partition`, `source.offset`), in the same transaction that moves
the partition past it: a bad message never stalls a partition and is never lost. A web request gets its
answer on the reply partition it asked for (app/replies.py).
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition

from app import metrics
from app.codec import CodecError
from app.replies import REPLY_RESULT_HEADER, REPLY_TOKEN_HEADER
from agents.transactions import Send

log = logging.getLogger("wallet.processor")


def dead_letter(dlq_topic: str, tp: TopicPartition, record, error: CodecError, command) -> Send:
    """The DLQ record of a poison message (logged, counted by reason)."""
    metrics.dlq_messages_total.labels(error.code).inc()
    log.warning("poison message to DLQ", extra={
        "reason": error.code, "topic": tp.topic, "partition": tp.partition, "offset": record.offset,
        "wallet_id": record.key.decode(errors="replace") if record.key is not None else None,
        "command_id": command.command_id if command is not None else None})
    headers = [("error.code", error.code.encode()), ("error.detail", error.detail.encode()),
               ("source.topic", tp.topic.encode()), ("source.partition", str(tp.partition).encode()),
               ("source.offset", str(record.offset).encode())]
    return Send(dlq_topic, record.key, record.value, None, headers)


def reply(reply_topic: str, reply_to: tuple[int, bytes], command_id: str, result: str, outcome: bytes | None,
          headers: list[tuple[str, bytes]] = ()) -> Send:
    """The answer to a web request: the outcome event's wire bytes (or None) on the asker's partition."""
    partition, token = reply_to
    return Send(reply_topic, command_id.encode(), outcome, partition,
                [(REPLY_RESULT_HEADER, result.encode()), (REPLY_TOKEN_HEADER, token), *headers])
