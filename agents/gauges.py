"""The processor's business gauges: money in transit and open holds, per partition."""

from __future__ import annotations

from typing import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import metrics
from app.domain import events as e
from app.domain.effects import money_effect
from tables.wallet_store import PartitionStore


def gauge_deltas(event: e.EventBase) -> tuple[int, int]:
    """(money in transit change in minor units, open holds change) that `event` makes in its partition."""
    effect = money_effect(event)
    return effect.in_transit_minor, effect.holds_open


def forget_gauges(partition: int, store: PartitionStore) -> None:
    """Stop exporting a partition's figures (it moved: its new owner exports them, never both)."""
    for currency in store.gauges()["in_transit"]:
        try:
            metrics.money_in_transit_minor.remove(str(partition), currency)
        except KeyError:
            pass
    try:
        metrics.holds_open.remove(str(partition))
    except KeyError:
        pass


def publish_gauges(stores: Iterable[tuple[int, PartitionStore]]) -> None:
    for partition, store in stores:
        figures = store.gauges()
        for currency, amount_minor in figures["in_transit"].items():
            metrics.money_in_transit_minor.labels(str(partition), currency).set(amount_minor)
        metrics.holds_open.labels(str(partition)).set(figures["holds_open"])


def report_lag(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int],
               offsets: dict[TopicPartition, int]) -> None:
    """Lag = last stable offset seen by the last fetch minus our next offset, per owned input partition."""
    positions.update(offsets)
    assigned = consumer.assignment()
    for tp in [tp for tp in positions if tp not in assigned]:
        del positions[tp]  # moved to another worker: its lag is reported there
        try:
            metrics.processor_consumer_lag.remove(tp.topic, str(tp.partition))
        except KeyError:
            pass
    for tp, position in positions.items():
        end = consumer.last_stable_offset(tp)
        if end is not None:
            metrics.processor_consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
