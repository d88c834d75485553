"""Faults stop the worker loudly: a partition-count mismatch, a crashing agent. No zombie workers."""

from __future__ import annotations


from confluent_kafka.admin import AdminClient, NewTopic

from app.topics import topic_specs
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, isolated_settings, wait_for

EXIT_TIMEOUT_S = 90


def test_partition_count_mismatch_stops_the_worker_with_a_clear_message(stack):
    settings = isolated_settings(stack, "mismatch")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = admin.create_topics([
        NewTopic(spec.name, 3 if spec.name == settings.transfer_legs_topic else settings.partitions, 1)
        for spec in topic_specs(settings)])
    for future in futures.values():
        future.result(15)
    worker = WorkerProcess(settings, ["processor"]).start(wait_ready=False)
    wait_for(lambda: not worker.alive(), EXIT_TIMEOUT_S, "the worker to exit")
    assert worker.proc.returncode == 1
    log = "\n".join(worker.log_lines())
    assert "PartitionCountMismatch" in log
    assert f"{settings.transfer_legs_topic}=3" in log


async def test_a_crashing_sink_takes_the_whole_worker_down_with_a_non_zero_exit(stack):
    settings = prepare_topics(isolated_settings(stack, "crash-agent"))
    worker = WorkerProcess(settings, ["processor", "sinks"]).start()
    async with Ledger(settings) as ledger:
        # Bytes on the events topic that are not an event: the sinks cannot project them.
        await ledger.send_raw(b"w-broken", b"\x00\x00\x00\x00\x00not an event", topic=settings.events_topic)
    wait_for(lambda: not worker.alive(), EXIT_TIMEOUT_S, "the worker to exit after its sink crashed")
    assert worker.proc.returncode == 1
    assert any("worker role failed" in line for line in worker.log_lines())


def test_a_worker_without_its_topics_refuses_to_start(stack):
    settings = isolated_settings(stack, "no-topics")
    worker = WorkerProcess(settings, ["processor"]).start(wait_ready=False)
    wait_for(lambda: not worker.alive(), EXIT_TIMEOUT_S, "the worker to exit")
    assert worker.proc.returncode == 1
    assert any("TopicMissing" in line for line in worker.log_lines())
