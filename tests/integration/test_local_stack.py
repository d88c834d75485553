"""Each local service is real and reachable: Kafka transactions, MariaDB, Redis, the schema registry."""

from __future__ import annotations

import json
import urllib.request
import uuid

import redis
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from app.kafka import producer_options
from tests.harness import create_topic, read_topic



async def test_kafka_read_committed_sees_committed_transaction_and_not_aborted_one(base_settings):
    topic = create_topic(base_settings, 't-stack')
    producer = AIOKafkaProducer(**producer_options(base_settings, transactional_id=f"t-{uuid.uuid4().hex}"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, key=b"k", value=b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, key=b"k", value=b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, key=b"k", value=b"committed-2")
    finally:
        await producer.stop()
    records = await read_topic(base_settings, topic)
    assert [r.value for r in records] == [b"committed", b"committed-2"]


def test_mariadb_answers_queries_as_the_wallet_user(base_settings):
    engine = create_engine(base_settings.mysql_dsn.replace("+aiomysql", "+pymysql"))
    with engine.connect() as conn:
        version = conn.execute(text("SELECT VERSION()")).scalar_one()
        tables = set(conn.execute(text("SHOW TABLES")).scalars())
    engine.dispose()
    assert "MariaDB" in version
    assert {"wallets", "ledger_entries", "transfers", "command_outcomes"} <= tables


def test_redis_round_trip(base_settings):
    client = redis.Redis.from_url(base_settings.redis_url, socket_timeout=5)
    key = f"t-stack-{uuid.uuid4().hex}"
    client.set(key, "42", ex=60)
    assert client.get(key) == b"42"
    client.delete(key)
    assert client.get(key) is None


def test_registry_registers_a_schema_and_serves_it_by_id(base_settings):
    from app.codec import SchemaRegistry

    registry = SchemaRegistry(base_settings.registry_url)
    schema = {"type": "record", "name": f"Probe{uuid.uuid4().hex[:8]}", "namespace": "t",
              "fields": [{"name": "amount_minor", "type": "long"}]}
    schema_id = registry.register(f"t-probe-{uuid.uuid4().hex[:8]}-value", schema)
    with urllib.request.urlopen(f"{base_settings.registry_url}/schemas/ids/{schema_id}", timeout=10) as resp:
        served = json.loads(json.loads(resp.read())["schema"])
    assert served["name"] == schema["name"]
    assert served["fields"] == schema["fields"]
