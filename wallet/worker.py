"""`wallet worker`: one process running some roles (processor, sinks, web) until a signal or a fault.

Roles run as tasks of one `asyncio.TaskGroup`: when any of them fails, the others are cancelled and
the process exits non-zero, so a supervisor sees the fault and restarts it. A live process with a
dead agent cannot happen.

Failure domains: a process fails as a whole, so the deployments run each role in a process of its own
(`make run`, docker-compose.yml): a sink that cannot reach its store, or crashes, never stops the processor
from deciding commands, and the processor's faults never stop the API from answering reads. One event a
store refuses does not fail the sinks either: it goes to the sink DLQ (agents/projection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import signal
import socket
from pathlib import Path
from typing import IO

from prometheus_client import REGISTRY

from app import metrics
from app.compiled import compiled_modules
from readside.in_transit import monitor_in_transit
from app.metrics import ReconcileResult
from wallet.errors import EntryPointError
from wallet.reconcile import RESULT_FILE

from app.settings import Settings

log = logging.getLogger("wallet.worker")
ROLES = ("processor", "sinks", "web")


class WorkerFailed(EntryPointError):
    """A role of the worker stopped with an error; the process exits with status 1."""


async def run_worker(settings: Settings, roles: set[str], *, instance: int = 0, api_keys=None,
                     ready: asyncio.Event | None = None) -> None:
    from agents import mysql_sink, redis_sink
    from agents.processor import Processor
    from agents.projection import run_projection
    from app.codec import SchemaRegistry, ledger_schemas
    from readside.mysql import monitor_replica_lag

    report_compiled()
    registry = await asyncio.to_thread(SchemaRegistry.for_settings, settings)
    # A worker started during a registry outage waits here (cancellably) instead of exiting: the codecs the
    # roles build next find their schema ids registered.
    await registry.register_waiting(ledger_schemas(settings))
    readiness: list[asyncio.Event] = []

    def ready_event() -> asyncio.Event:
        readiness.append(asyncio.Event())
        return readiness[-1]

    processor = None
    held = contextlib.ExitStack()  # a claimed member slot's lock, released when the roles end
    with held:
        async with asyncio.TaskGroup() as group:
            if "processor" in roles:
                name = member_name(settings, instance)
                if settings.processor_claim_member_slot and not settings.processor_member_name:
                    name, slot_lock = claim_member_slot(settings.state_dir)
                    held.enter_context(slot_lock)
                    log.info("member slot claimed", extra={"member": name})
                processor = await asyncio.to_thread(Processor, settings, member_name=name,
                                                    table_port=settings.worker_web_port + instance, registry=registry)
                readiness.append(processor.ready)
                group.create_task(processor.run(), name="processor")
            if "sinks" in roles:
                group.create_task(run_projection(settings, "mysql", await mysql_sink.create_writer(settings),
                                                 registry=registry, ready=ready_event()), name="mysql-sink")
                group.create_task(run_projection(settings, "redis", await redis_sink.create_writer(settings),
                                                 registry=registry, ready=ready_event()), name="redis-sink")
                group.create_task(monitor_replica_lag(settings), name="replica-lag")
                # The sinks process also reports the last `wallet reconcile` verdict (one process, no duplicates).
                REGISTRY.register(ReconcileResult(settings.state_dir / RESULT_FILE))
                # ... and the transfers in transit (how many, the oldest's age), read from MySQL.
                group.create_task(monitor_in_transit(settings), name="in-transit")
                REGISTRY.register(metrics.transfer_in_transit_oldest_seconds)
                REGISTRY.register(metrics.transfers_in_transit)
            if "web" in roles:
                from web.app import serve

                group.create_task(serve(settings, api_keys, ready_event(), registry), name="web")
            if roles & {"processor", "sinks"}:
                from agents import table_view

                # Metrics for Prometheus, and the table reads the API routes strong reads to.
                group.create_task(table_view.serve(settings, view_port(settings, roles, instance), processor),
                                  name="worker-view")
            if ready is not None:
                group.create_task(_signal_ready(readiness, ready), name="readiness")


def report_compiled() -> None:
    """Export which modules run compiled, and warn of each that runs interpreted (app/compiled.py)."""
    for name, compiled in compiled_modules().items():
        metrics.compiled_module.labels(name).set(1 if compiled else 0)
        if not compiled:
            log.warning("module runs interpreted (slower): the install built no compiled module; a C compiler "
                        "at install time builds it (setup.py)", extra={"python_module": name})


async def _signal_ready(events: list[asyncio.Event], ready: asyncio.Event) -> None:
    for event in events:
        await event.wait()
    # What start-up built (restored states, codecs, clients) lives as long as the process: move it out of
    # the collector's sight, so full collections stay short and do not stall requests and batches.
    gc.freeze()
    log.info("worker ready")
    ready.set()


def view_port(settings: Settings, roles: set[str], instance: int) -> int:
    """The port of this process's metrics (and, with the processor, its table reads): processor slots count
    up from `worker_web_port`, a process of sinks alone from `sinks_web_port`, so both fit on one host."""
    return (settings.worker_web_port if "processor" in roles else settings.sinks_web_port) + instance


def member_name(settings: Settings, instance: int) -> str:
    """This processor worker's name in the group: stable across restarts of the same slot."""
    return settings.processor_member_name or f"{socket.gethostname()}-{instance}"


# Slots `claim_member_slot` tries: far more than partitions, since more workers than partitions sit idle.
MEMBER_SLOTS_MAX = 1_000


def claim_member_slot(state_dir: Path) -> tuple[str, IO[str]]:
    """The name `slot-<k>` of the first slot k whose lock file under `state_dir/processor/` this process can
    lock exclusively, and the open lock file: the slot is this process's until the file is closed or the
    process ends (the kernel releases the lock then, even on SIGKILL). Workers sharing the folder never get the
    same slot."""
    folder = state_dir / "processor"
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(MEMBER_SLOTS_MAX):
        handle = open(folder / f"slot-{slot}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return f"slot-{slot}", handle
    raise WorkerFailed(f"every member slot 0-{MEMBER_SLOTS_MAX - 1} under {folder} is held by a live worker")


def main(settings: Settings, roles: set[str], *, instance: int, api_keys=None,
         on_ready=None) -> int:
    """Run the worker in the foreground; 0 on SIGINT/SIGTERM, 1 when a role failed."""

    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        ready = asyncio.Event()
        if on_ready is not None:
            loop.create_task(_call_when(ready, on_ready))
        await run_worker(settings, roles, instance=instance, api_keys=api_keys, ready=ready)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as loop_runner:
            loop_runner.run(runner())
    except asyncio.CancelledError:
        log.info("worker stopped by signal")
        return 0
    except BaseExceptionGroup as group:  # every role failure ends the process loudly
        for exc in group.exceptions:
            log.critical("worker role failed; exiting", exc_info=exc)
        return 1
    except Exception:
        log.critical("worker failed; exiting", exc_info=True)
        return 1
    return 0


def event_loop_factory(settings: Settings):
    """The event loop of a worker process: uvloop (libuv; sockets, timers and callbacks in C) or asyncio's own."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's default loop


async def _call_when(event: asyncio.Event, callback) -> None:
    await event.wait()
    callback()
