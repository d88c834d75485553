"""A wallet's key lands on one partition whichever client produced it (murmur2 everywhere)."""

from __future__ import annotations


from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from tests.harness import create_topic
from app.kafka import confluent_producer_config, partition_for, producer_options

KEYS = [f"wallet-{i}".encode() for i in range(64)]



def _confluent_partitions(config: dict, topic: str) -> dict[bytes, int]:
    producer = Producer(config)
    landed: dict[bytes, int] = {}
    for key in KEYS:
        producer.produce(topic, key=key, value=b"x",
                         on_delivery=lambda err, msg: landed.__setitem__(msg.key(), msg.partition()))
    assert producer.flush(15) == 0
    return landed


async def test_aiokafka_and_confluent_murmur2_put_every_key_on_the_same_partition(base_settings):
    topic = create_topic(base_settings, 't-part', 8)
    producer = AIOKafkaProducer(**producer_options(base_settings))
    await producer.start()
    try:
        aiokafka_landed = {key: (await producer.send_and_wait(topic, key=key, value=b"x")).partition for key in KEYS}
    finally:
        await producer.stop()
    confluent_landed = _confluent_partitions(confluent_producer_config(base_settings), topic)
    assert confluent_landed == aiokafka_landed
    assert aiokafka_landed == {key: partition_for(key, 8) for key in KEYS}


def test_librdkafka_default_partitioner_would_split_wallets_which_is_why_we_set_murmur2(base_settings):
    topic = create_topic(base_settings, 't-part', 8)
    default_config = {k: v for k, v in confluent_producer_config(base_settings).items() if k != "partitioner"}
    landed = _confluent_partitions(default_config, topic)
    assert any(landed[key] != partition_for(key, 8) for key in KEYS)
