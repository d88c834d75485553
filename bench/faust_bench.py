"""The Faust baseline's figure in `wallet bench processor`: the same backlog drained by faust-streaming.

The processor figure's steps (bench/processor_bench.py), in a namespace of its own: `instances`
exactly-once Faust ledger workers plus one at-least-once relay worker for the transfer legs
(bench/faust_baseline.py says why the relay is a worker of its own) start and join their group; every
wallet is opened and funded (not timed); then the backlog is produced and drained by the same workers,
warm, where the processor's is drained after a restart (see measure_faust). commands/s = commands /
(last outcome's broker timestamp - first's), credit legs processed inside that span as for the processor.
Commands with more than one outcome are counted (no crash happens here, but Faust rebalances). No latency
figure: at the processor's latency rate (2,000/s) Faust on this machine falls behind, and its queue, not
its latency, would be measured.

faust-streaming is the optional `bench` extra (pyproject.toml). `ensure_installed` installs it into the
running interpreter's environment when it is missing: it needs aiokafka >= 0.10 without an upper pin, and
runs with the aiokafka 0.14 the ledger uses, so no separate environment is needed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import subprocess
import sys
import time
import tomllib
from collections import Counter

from app.codec import CommandCodec, EventCodec, SchemaRegistry
from app.domain import commands as c
from app.settings import REPO_ROOT, Settings
from bench.faust_checks import read_records
from bench.processes import stop as stop_processes
from bench.processor_bench import _drain, _produce, _spawn
from bench.workloads import open_and_fund

BENCH_EXTRA = "bench"
# pip resolving and installing faust-streaming and its few dependencies from PyPI.
PIP_INSTALL_TIMEOUT_S = 600
# Faust drains an order of magnitude slower than the processor: the processor's 900 s is not enough for
# the default backlog.
FAUST_DRAIN_TIMEOUT_S = 3600
# Faust commits every broker_commit_interval (2.8 s): idle this long, it has nothing left to commit.
IDLE_BEFORE_STOP_S = 6.0
# Faust workers starting on a busy machine (imports, group join, table recovery) until their group is stable.
GROUP_STABLE_TIMEOUT_S = 300
GROUP_POLL_INTERVAL_S = 1.0
# Bound of the broker's answers when Faust's own topics are listed and deleted.
TOPICS_TIMEOUT_S = 30.0


def bench_requirements() -> list[str]:
    """The `bench` optional dependencies of pyproject.toml (one place names the versions)."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return list(pyproject["project"]["optional-dependencies"][BENCH_EXTRA])


def ensure_installed() -> None:
    """Install the `bench` extra into this interpreter's environment unless faust is importable."""
    if importlib.util.find_spec("faust") is not None:
        return
    requirements = bench_requirements()
    print(f"installing the '{BENCH_EXTRA}' extra into {sys.prefix}: {' '.join(requirements)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *requirements], check=True,
                   timeout=PIP_INSTALL_TIMEOUT_S)
    importlib.invalidate_caches()


def start_workers(settings: Settings, instances: int) -> list[subprocess.Popen]:
    """`instances` Faust ledger workers and one relay worker, logging under settings.state_dir."""
    # The roles of bench/faust_baseline.py, named here as strings: importing it needs faust installed.
    ledgers = [_spawn(["bench.faust_baseline", "ledger", str(i)], settings, f"faust-ledger-{i}")
               for i in range(instances)]
    return ledgers + [_spawn(["bench.faust_baseline", "relay", "0"], settings, "faust-relay-0")]


async def wait_for_ledger_group(settings: Settings, instances: int, procs: list[subprocess.Popen]) -> None:
    """Return once the ledger workers' consumer group is Stable with `instances` members.

    A Faust worker deciding while its group rebalances ends its transaction with changelog writes still
    buffered, and crashes ("Can't send messages while not in transaction"; docs/DESIGN.md section 1): the
    workers must all be in before the first command arrives.
    """
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    group = f"{settings.app_id}-faust-ledger"  # bench/faust_baseline.py app_id(settings, "ledger")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    deadline = time.monotonic() + GROUP_STABLE_TIMEOUT_S
    while True:
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"a Faust worker exited; see the logs under {settings.state_dir}")
        futures = await asyncio.to_thread(admin.describe_consumer_groups, [group], request_timeout=TOPICS_TIMEOUT_S)
        description = await asyncio.to_thread(futures[group].result)
        if description.state == ConsumerGroupState.STABLE and len(description.members) == instances:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Faust group {group}: {description.state}, {len(description.members)} of "
                               f"{instances} members after {GROUP_STABLE_TIMEOUT_S} s")
        await asyncio.sleep(GROUP_POLL_INTERVAL_S)


def delete_faust_topics(settings: Settings) -> None:
    """Delete the topics Faust created for itself in this namespace (changelogs, its assignor's topic), which
    wallet/isolation.py does not know; the namespace's own topics are deleted by `isolation.discard`."""
    from confluent_kafka.admin import AdminClient

    prefix = f"{settings.app_id}-faust-"
    if not settings.app_id.startswith("bench-"):
        raise ValueError(f"refusing to delete the Faust topics of {settings.app_id}: not a bench namespace")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [name for name in admin.list_topics(timeout=TOPICS_TIMEOUT_S).topics if name.startswith(prefix)]
    for future in (admin.delete_topics(names, operation_timeout=TOPICS_TIMEOUT_S).values() if names else ()):
        future.result()


async def measure_faust(settings: Settings, instances: int, wallets: list[str], commands: list[c.CommandBase],
                        registry: SchemaRegistry, *, keep: bool = False) -> dict:
    """The Faust baseline's commands/s on `commands` (see the module docstring); keys start with `faust_`.

    `settings` is a prepared namespace (wallet/isolation.py); Faust's own topics are deleted unless `keep`."""
    codec = CommandCodec(registry, settings.commands_topic)
    events = EventCodec(registry, settings.events_topic)
    setup = open_and_fund(wallets)
    procs = start_workers(settings, instances)
    try:
        await wait_for_ledger_group(settings, instances, procs)
        await _produce(settings, codec, setup)
        await _drain(settings, settings.events_topic, events, "fund-", len(wallets), FAUST_DRAIN_TIMEOUT_S, procs)
        # The timed backlog goes to the same, warm workers (the processor's is drained after a restart): in
        # this run's first version, two Faust workers stopped and started again crashed, once on the stop
        # (changelog writes still buffered) and once in table recovery (ConsistencyError).
        await _produce(settings, codec, commands)
        tally = await _drain(settings, settings.events_topic, events, "bc-", len(commands), FAUST_DRAIN_TIMEOUT_S,
                             procs)
    finally:
        stop_processes(procs)
        if not keep:
            delete_faust_topics(settings)
    span_s = max(0.001, (tally.last_ms - tally.first_ms) / 1000)
    # Counted, not asserted: a command decided twice without any crash (e.g. across a rebalance) is part of
    # what the baseline is.
    values = [record.value for record in await read_records(settings, settings.events_topic)]
    await events.ensure(values)
    outcomes = Counter(events.decode(value).command_id for value in values)
    return {"faust_legs": tally.legs, "faust_span_s": span_s, "faust_commands_per_s": len(commands) / span_s,
            "faust_outcomes_per_s": (len(commands) + tally.legs) / span_s,
            "faust_commands_with_several_outcomes": sum(1 for n in outcomes.values() if n > 1)}
