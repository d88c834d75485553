"""The producer examples (examples/) on the real stack: what an upstream team writes with its own client works.

Each example runs as its own process, as a team would run it, against an isolated topic set with a processor
worker. Every wallet it names must be opened and funded (outcomes on the events topic, keyed by wallet, with
the command's fingerprint header) and nothing may land in the DLQ. docs/PRODUCERS.md is the contract they
follow; the confluent-kafka example keeps librdkafka's default (CRC32) partitioner, which used to send most
commands to the DLQ as WRONG_PARTITION.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.domain import events as e
from app.intake import FINGERPRINT_HEADER
from app.kafka import partition_for
from tests.conftest import prepare_topics
from tests.harness import Ledger, WorkerProcess, dlq_reasons, isolated_settings, new_id, wait_for, wait_for_async
from wallet.bootstrap import register_schemas

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WALLETS = 20
AMOUNT_MINOR = 1_500
REFERENCE = "initial"  # the examples' default deposit reference, part of each deposit's command id
# An example run: start the interpreter, fetch the schema, send 40 records, wait for the acknowledgements.
EXAMPLE_TIMEOUT_S = 120
WAIT_S = 90
# The ledger's own packages: an example shows what an outside team writes, so it imports none of them.
PROJECT_PACKAGES = frozenset({"app", "agents", "tables", "web", "wallet", "readside", "ops", "bench", "tests"})


@pytest.fixture(scope="module")
def worker(stack):
    settings = prepare_topics(isolated_settings(stack, "producers"))
    register_schemas(settings)  # what `wallet init` does: the examples only read the schema, never register it
    worker = WorkerProcess(settings, ["processor"]).start()
    yield worker
    worker.stop()


@pytest.fixture
def settings(worker):
    return worker.settings


@pytest.fixture
async def ledger(settings):
    async with Ledger(settings) as ledger:
        yield ledger


def run_example(script: str, settings, wallet_prefix: str, *options: str) -> str:
    """Run `examples/<script>` for WALLETS wallets named `<wallet_prefix>-<n>`; return its output."""
    argv = [sys.executable, str(EXAMPLES / script), "--bootstrap", settings.kafka_bootstrap,
            "--registry", settings.registry_url, "--topic", settings.commands_topic,
            "--wallets", str(WALLETS), "--wallet-prefix", wallet_prefix, *options]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S, cwd=EXAMPLES)
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert f"{2 * WALLETS} of {2 * WALLETS} commands acknowledged" in done.stdout, done.stdout
    return done.stdout


def wallet_ids(prefix: str) -> list[str]:
    return [f"{prefix}-{index}" for index in range(1, WALLETS + 1)]


async def wait_funded(ledger: Ledger, prefix: str) -> dict[str, list]:
    """Wait until every wallet of `prefix` has its two outcomes; return the event records by wallet."""
    wanted = set(wallet_ids(prefix))

    async def settled():
        records = await ledger.read_all(ledger.settings.events_topic, decode=False)
        by_wallet: dict[str, list] = {}
        for record in records:
            event = ledger.events.decode(record.value)
            if event.wallet_id in wanted:
                by_wallet.setdefault(event.wallet_id, []).append((record, event))
        done = len(by_wallet) == len(wanted) and all(len(found) >= 2 for found in by_wallet.values())
        return by_wallet if done else None
    return await wait_for_async(settled, WAIT_S, f"outcomes for every wallet of {prefix}", interval_s=0.5)


def assert_opened_and_funded(settings, by_wallet: dict[str, list]) -> None:
    for wallet_id, found in by_wallet.items():
        events = [event for _, event in found]
        assert [type(event) for event in events] == [e.WalletOpened, e.Deposited], (wallet_id, events)
        opened, deposited = events
        assert opened.command_id == f"example:open:{wallet_id}" and opened.currency == "EUR"
        assert deposited.command_id == f"example:deposit:{wallet_id}:{REFERENCE}"
        assert (deposited.amount_minor, deposited.balance_after_minor, deposited.version) == (AMOUNT_MINOR,
                                                                                              AMOUNT_MINOR, 2)
        for record, _ in found:  # where docs/PRODUCERS.md says outcomes appear, and how they are marked
            assert record.key == wallet_id.encode()
            assert record.partition == partition_for(wallet_id.encode(), settings.partitions)
            assert FINGERPRINT_HEADER in dict(record.headers or ())


async def dead_letters_of(ledger: Ledger, prefix: str) -> list[tuple[str, str]]:
    """(reason, detail) of every DLQ record whose command names a wallet of `prefix`."""
    records = await ledger.read_all(ledger.settings.dlq_topic, decode=False)
    ours = [record for record in records if ledger.commands.decode(record.value).wallet_id.startswith(f"{prefix}-")]
    return dlq_reasons(ours)


def worker_metric(worker: WorkerProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.worker_web_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name)


@pytest.mark.parametrize("script", ["produce_confluent.py", "produce_aiokafka.py"])
def test_examples_import_nothing_of_the_ledger(script):
    tree = ast.parse((EXAMPLES / script).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not imported & PROJECT_PACKAGES


async def test_confluent_example_with_the_default_partitioner_opens_and_funds_every_wallet(ledger, settings):
    prefix = new_id("cfk")
    run_example("produce_confluent.py", settings, prefix)

    assert_opened_and_funded(settings, await wait_funded(ledger, prefix))
    assert await dead_letters_of(ledger, prefix) == []
    # The example really used a partitioner other than the ledger's: some commands arrived off their wallet's
    # partition (and were forwarded to it). CRC32 and murmur2 agree on all 20 wallets with odds of 4**-20.
    commands = await ledger.read_all(settings.commands_topic, decode=False)
    ours = [r for r in commands if r.key is not None and r.key.decode().startswith(f"{prefix}-")]
    assert any(r.partition != partition_for(r.key, settings.partitions) for r in ours)


async def test_confluent_example_without_keys_opens_and_funds_every_wallet(ledger, settings):
    prefix = new_id("cfknokey")
    run_example("produce_confluent.py", settings, prefix, "--no-key")

    assert_opened_and_funded(settings, await wait_funded(ledger, prefix))
    assert await dead_letters_of(ledger, prefix) == []
    commands = await ledger.read_all(settings.commands_topic, decode=False)
    unkeyed = [r for r in commands if r.key is None and ledger.commands.decode(r.value).wallet_id.startswith(prefix)]
    assert len(unkeyed) == 2 * WALLETS, "the example sent every command without a key"


async def test_aiokafka_example_opens_and_funds_every_wallet(ledger, settings):
    prefix = new_id("aio")
    output = run_example("produce_aiokafka.py", settings, prefix)

    assert "schema id" in output
    assert_opened_and_funded(settings, await wait_funded(ledger, prefix))
    assert await dead_letters_of(ledger, prefix) == []


async def test_running_an_example_again_is_a_resend_and_another_amount_under_the_same_ids_is_refused(
        worker, ledger, settings):
    prefix = new_id("again")
    run_example("produce_aiokafka.py", settings, prefix)
    await wait_funded(ledger, prefix)

    # Same ids, same bodies (only timestamp_ms differs): each repeat gets the first outcome, no new event.
    duplicates = worker_metric(worker, "wallet_commands_duplicate_total")
    run_example("produce_confluent.py", settings, prefix)
    wait_for(lambda: worker_metric(worker, "wallet_commands_duplicate_total") >= duplicates + 2 * WALLETS, WAIT_S,
             "every resent command recognised as a duplicate")

    # Same ids, another deposit amount: the opens are still duplicates, the deposits are conflicts (DLQ).
    run_example("produce_aiokafka.py", settings, prefix, "--amount-minor", str(AMOUNT_MINOR + 1))

    async def refused():
        reasons = await dead_letters_of(ledger, prefix)
        return reasons if len(reasons) >= WALLETS else None
    reasons = await wait_for_async(refused, WAIT_S, "the conflicting deposits in the DLQ", interval_s=0.5)
    assert sorted({code for code, _ in reasons}) == ["DUPLICATE_COMMAND"] and len(reasons) == WALLETS
    assert_opened_and_funded(settings, await wait_funded(ledger, prefix))
