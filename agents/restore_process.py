"""Catching a store up in a child process: a long restore gets a core of its own.

A worker that takes over a partition whose store is far behind `wallet.events` (a cold takeover, no standby)
replays the partition's history. In the worker's own process that replay shares one core (Python runs one
thread at a time) with every partition the worker decides, and a worker of its own is a core of its own: on
a machine with cores to spare (the member that died freed one), the replay is what should use them.

So, when `restore_processes_max` > 0 (off by default: on a 2-core host it was slower than the worker's own
catch-up, docs/BENCHMARKS.md, Failover), the catch-up (agents/handover.py) first hands each partition at least
`restore_process_min_events` behind
to a child process, `python -m agents.restore_process <partition> <store folder>`, up to
`restore_processes_max` at a time. The child runs the same `catch_up` (agents/restore.py) on the store's
folder to the end of the partition (the parent holds the partition's fence, so that end is the end) and
exits. The parent keeps the store closed meanwhile (RocksDB allows one process per store folder), then opens
it and finishes with its usual in-process catch-up, which finds nothing or little left to replay.

Failure domains:
- The child writes each slice of events with its offset marker in one atomic RocksDB write batch, like the
  in-process fold: a child killed anywhere leaves a store that is behind, never torn; the next catch-up goes
  on from its marker.
- A child that fails (exit status other than 0) fails the catch-up, which ends the worker loudly (as an
  in-process catch-up failure does).
- A cancelled catch-up (a rebalance, a SIGTERM of the worker) kills its children and waits for them before
  anything opens the store again.
- A child whose parent dies (SIGKILL) is killed by the kernel (PR_SET_PDEATHSIG): no orphan keeps replaying
  or holds the store's lock against the restarted worker. The child runs in a session of its own and ignores
  SIGTERM and SIGINT: signals meant for the worker are the worker's to act on.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.errors import AgentError
from agents.restore import catch_up
from app import logs
from app.codec import EventCodec, SchemaRegistry
from app.kafka import consumer_options
from app.settings import Settings
from tables.wallet_store import PartitionStore

log = logging.getLogger("wallet.processor")

_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent thread dies
PARENT_PID_VARIABLE = "RESTORE_PARENT_PID"  # the worker's pid, set for the child: was it gone before prctl?


class RestoreProcessFailed(AgentError):
    """A child restore process exited with a status other than 0 (its own log says why)."""


async def restore_far_behind(settings: Settings, consumer: AIOKafkaConsumer, partitions: set[int],
                             local: dict[int, PartitionStore], open_store: Callable[[int], PartitionStore],
                             folder: Callable[[int], Path]) -> set[int]:
    """Catch up, each in a child process, the stores of `partitions` at least `restore_process_min_events`
    behind the end of `wallet.events`; returns those partitions. `local` holds the worker's open stores (a
    store is closed and taken out of it while its child runs, and opened again by `open_store` after).
    The caller holds each partition's fence."""
    if settings.restore_processes_max == 0 or not partitions:
        return set()
    tps = {TopicPartition(settings.events_topic, p): p for p in sorted(partitions)}
    ends = await consumer.end_offsets(list(tps))
    far = {p for tp, p in tps.items() if ends[tp] - open_store(p).events_offset >= settings.restore_process_min_events}
    if not far:
        return far
    for partition in far:
        local.pop(partition).close()
    slots = asyncio.Semaphore(settings.restore_processes_max)
    async with asyncio.TaskGroup() as children:
        for partition in sorted(far):
            children.create_task(_restore_in_child(settings, partition, folder(partition), slots))
    for partition in far:
        open_store(partition)
    return far


async def _restore_in_child(settings: Settings, partition: int, folder: Path, slots: asyncio.Semaphore) -> None:
    async with slots:
        started = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agents.restore_process", str(partition), str(folder),
            env={**os.environ, **settings.to_env(), PARENT_PID_VARIABLE: str(os.getpid())},
            start_new_session=True)  # its life is the worker's to end: no signal meant for the worker's group
        log.info("restore process started", extra={"partition": partition, "pid": child.pid})
        try:
            status = await child.wait()
        except BaseException:  # cancelled (a rebalance, the worker stopping): the store must be free again
            if child.returncode is None:  # (it may have ended as the cancellation came)
                child.kill()
            await asyncio.shield(child.wait())
            log.info("restore process stopped", extra={"partition": partition, "pid": child.pid})
            raise
        if status != 0:
            raise RestoreProcessFailed(f"the restore process of partition {partition} (pid {child.pid}) "
                                       f"exited with status {status}")
        log.info("restore process finished", extra={"partition": partition, "pid": child.pid,
                                                    "seconds": round(time.perf_counter() - started, 3)})


# ---------------------------------------------------------------- the child


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if it already has. Signals that stop a
    worker (SIGTERM from an orchestrator that signals every process, SIGINT) are the worker's: it kills its
    children itself when it stops, so the child ignores them rather than die with a status the worker would
    have to tell apart from a failure."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        raise SystemExit("the worker that started this restore is gone")


async def _restore(settings: Settings, partition: int, folder: Path) -> None:
    """Replay the partition into the store at `folder`, close the store, and end the process."""
    registry = await asyncio.to_thread(SchemaRegistry.for_settings, settings)
    codec = await asyncio.to_thread(EventCodec, registry, settings.events_topic)  # registered by the worker
    consumer = AIOKafkaConsumer(**consumer_options(settings, None))
    await consumer.start()
    store = PartitionStore(folder)
    try:
        await catch_up(consumer, settings.events_topic, codec, {partition: store}, settings.command_retention_s,
                       _nothing)
    finally:
        store.close()
    # Done: the store is closed and written. The consumer holds no group and no offsets, so nothing is lost by
    # not stopping it, and stopping an aiokafka consumer right after a catch-up has taken seconds to minutes
    # (docs/BENCHMARKS.md, Failover, "the fold"): the process ends here instead.
    logging.shutdown()
    os._exit(0)


async def _nothing(partition: int) -> None:
    pass


def main(argv: list[str]) -> int:
    """`python -m agents.restore_process <partition> <store folder>`, settings from `WALLET_*`."""
    partition, folder = int(argv[0]), Path(argv[1])
    _die_with_parent(int(os.environ[PARENT_PID_VARIABLE]))
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    asyncio.run(_restore(settings, partition, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
