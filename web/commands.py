"""The API's write path: publish a command to `wallet.commands`, wait for the processor's answer.

Request/reply over Kafka (see `app.replies`): each command carries this process's reply partition and a
random token; the processor answers inside the transaction that decides the command, so an answer is
only ever seen for a committed outcome (the reply consumer reads `read_committed`). This process reads
only its own reply partition, from its end at start-up.

A request that times out leaves nothing behind here: the command is in Kafka and will be decided; the
client polls `/v1/commands/{id}` or retries with the same `Idempotency-Key`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge, Histogram

from app.codec import CodecError, CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.domain import events as e
from app.kafka import consumer_options, partition_for, producer_options
from app.replies import REPLY_PARTITION_HEADER, REPLY_RESULT_HEADER, REPLY_TOKEN_HEADER
from app.settings import Settings
from app.topics import ADMIN_TIMEOUT_S, TopicMissing
from web.errors import WebError

log = logging.getLogger("wallet.web.commands")

# Bound of handing one command to Kafka (acks from all replicas); past it the request is a 503.
PUBLISH_TIMEOUT_S = 10.0
# Replies taken from the reply partition per poll.
REPLY_BATCH_MAX = 1000


commands_in_flight = Gauge("wallet_http_commands_in_flight",
                           "Writes of this web process waiting for their outcome.")
command_wait_seconds = Histogram(
    "wallet_http_command_wait_seconds", "From publishing a command to its answer arriving, seconds.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))


class GatewayUnavailable(WebError):
    """The command could not be handed to Kafka (broker down or overloaded). The client may retry with the
    same Idempotency-Key: the command is applied at most once whether or not it reached Kafka."""


class GatewayBusy(WebError):
    """Too many writes are waiting in this process (`Settings.commands_in_flight_max`)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The processor's answer to one request: `result` is an `app.replies.REPLY_*` value."""

    result: str
    event: e.EventBase | None = None
    error_code: str = ""
    error_detail: str = ""


class CommandGateway:
    def __init__(self, settings: Settings, registry: SchemaRegistry) -> None:
        """Blocking (registers the schemas): build it in a thread."""
        self.settings = settings
        self.codec = CommandCodec(registry, settings.commands_topic)
        self.events = EventCodec(registry, settings.events_topic)
        self.reply_partition = settings.web_instance % settings.reply_partitions
        self._waiting: dict[bytes, asyncio.Future[Answer]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.listening: asyncio.Task | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**producer_options(self.settings,
                                                              linger_ms=self.settings.command_publish_linger_ms))
        self._consumer = AIOKafkaConsumer(**consumer_options(self.settings, None))
        await self._producer.start()
        await self._consumer.start()
        try:
            partitions = await asyncio.wait_for(self._producer.partitions_for(self.settings.reply_topic),
                                                ADMIN_TIMEOUT_S)
        except (KafkaError, asyncio.TimeoutError):
            partitions = set()
        if self.reply_partition not in partitions:
            raise TopicMissing(f"topic {self.settings.reply_topic} has no partition {self.reply_partition}; "
                               f"run `wallet init` (it creates {self.settings.reply_partitions} partitions)")
        tp = TopicPartition(self.settings.reply_topic, self.reply_partition)
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolved before the first command goes out
        self.listening = asyncio.create_task(self._listen(), name="reply-listener")

    async def stop(self) -> None:
        if self.listening is not None:
            self.listening.cancel()
            await asyncio.gather(self.listening, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _listen(self) -> None:
        """Hand each reply to the request waiting for it; runs until cancelled, a fault ends the process."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000, max_records=REPLY_BATCH_MAX)
            await self.events.ensure(r.value for records in batch.values() for r in records)
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers or ())
                    future = self._waiting.pop(headers.get(REPLY_TOKEN_HEADER, b""), None)
                    if future is not None and not future.done():
                        future.set_result(self._answer(record.value, headers))

    def _answer(self, value: bytes | None, headers: dict[str, bytes]) -> Answer:
        result = headers.get(REPLY_RESULT_HEADER, b"").decode()
        event = None
        if value:
            try:
                event = self.events.decode(value)
            except CodecError:
                log.error("undecodable reply", extra={"result": result})
        return Answer(result, event, headers.get("error.code", b"").decode(),
                      headers.get("error.detail", b"").decode())

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def submit(self, command: c.CommandBase, wait_ms: int) -> Answer | None:
        """Publish `command` and wait up to `wait_ms` for its answer; None when none came in time.

        Raises GatewayBusy or GatewayUnavailable (the command may or may not have reached Kafka).
        """
        if len(self._waiting) >= self.settings.commands_in_flight_max:
            raise GatewayBusy(f"{len(self._waiting)} writes are waiting in this process")
        token = secrets.token_hex(12).encode()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        commands_in_flight.set(len(self._waiting))
        started = time.perf_counter()
        try:
            key = command.wallet_id.encode()
            headers = [(REPLY_PARTITION_HEADER, str(self.reply_partition).encode()), (REPLY_TOKEN_HEADER, token)]
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self._producer.send_and_wait(
                        self.settings.commands_topic, self.codec.encode(command), key=key,
                        partition=partition_for(key, self.settings.partitions), headers=headers)
            except (KafkaError, TimeoutError) as exc:
                raise GatewayUnavailable(f"Kafka did not take the command: {type(exc).__name__}") from exc
            try:
                async with asyncio.timeout(wait_ms / 1000):
                    answer = await future
            except TimeoutError:
                return None
            command_wait_seconds.observe(time.perf_counter() - started)
            return answer
        finally:
            self._waiting.pop(token, None)
            commands_in_flight.set(len(self._waiting))
