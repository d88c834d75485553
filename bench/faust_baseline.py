"""The processor's decisions on faust-streaming: the Faust baseline of `wallet bench processor`.

Users who asked for Faust ask how our aiokafka processor compares (docs/DESIGN.md section 1). This is
the idiomatic Faust version of it, laid out as ARCHITECTURE.md lays out the Faust design:

- `ledger` app, `processing_guarantee="exactly_once"`: the agent `decide_wallet_commands` reads
  `wallet.commands` and `wallet.transfer-legs` (co-partitioned) one event at a time, keeps two RocksDB
  tables (`wallets`: wallet id -> state, `command_ids`: command id -> fingerprint), decides each command
  with the same domain (`decide_and_evolve`) and codecs as the processor, and sends its outcome event.
  Poison and conflicting ids go to the DLQ with the processor's reason codes. No `stream.take()`: Faust
  refuses table writes inside it (faust issue 497).
- `relay` app, at-least-once: the agent `relay_transfer_legs` reads `wallet.events` and sends the credit
  and refund legs (`agents.transfer_relay.leg_for`). It cannot live in the ledger app: under exactly_once
  Faust sends each record with the transactional producer of its destination partition and refuses a
  partition the worker does not own.

The tables' values are the processor's own state encoding (`tables.wallet_store.encode_state`).
`python -m bench.faust_baseline ledger|relay <instance>` runs one worker with WALLET_* settings; the state of
worker <instance> lives in `<state_dir>/faust/<role>-<instance>/` and survives restarts. This is benchmark
code: faust-streaming is the optional `bench` extra (pyproject.toml), never imported by the ledger itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faust
from faust.utils.agent_stopper import agent_stopper

from agents.transfer_relay import leg_for
from app.codec import CodecError, CommandCodec, EventCodec, SchemaRegistry
from app.domain.ledger import decide_and_evolve
from app.domain.limits import Limits
from app.intake import DUPLICATE_COMMAND_CONFLICT, FINGERPRINT_HEADER, accept, fingerprint
from app.settings import Settings
from tables.wallet_store import decode_state, encode_state

LEDGER = "ledger"
RELAY = "relay"
ROLES = (LEDGER, RELAY)
WALLETS_TABLE = "wallets"
COMMAND_IDS_TABLE = "command_ids"
# Faust's default (60 s) keeps a killed member in the group for a minute, and every restart waits for it;
# the processor's own bound (processor_session_timeout_ms) is 6 s. 10 s is the lowest Faust's 3 s
# heartbeat leaves room for.
SESSION_TIMEOUT_S = 10.0


def app_id(settings: Settings, role: str) -> str:
    """The Faust app id (= consumer group, prefix of its changelog topics and transactional ids) of `role`."""
    return f"{settings.app_id}-faust-{role}"


def datadir(settings: Settings, role: str, instance: int) -> Path:
    """Where worker `instance` of `role` keeps its RocksDB tables (one folder per worker, like one host each)."""
    return settings.state_dir / "faust" / f"{role}-{instance}"


def _app(settings: Settings, role: str, instance: int, guarantee: str) -> faust.App:
    return faust.App(
        app_id(settings, role),
        broker=f"kafka://{settings.kafka_bootstrap}",
        # rocksdict is the RocksDB binding here; faust-streaming 0.15 names the store "rocksdb" whichever
        # binding it finds (the tables pick rocksdict explicitly below).
        store="rocksdb://",
        processing_guarantee=guarantee,
        datadir=str(datadir(settings, role, instance)),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # No web server (`--without-web` below): it would take the same port in every worker on this host.
        # Faust's assignor still tells its members apart by this URL.
        web_enabled=False,
        canonical_url=f"http://127.0.0.1/{role}-{instance}",
        broker_session_timeout=SESSION_TIMEOUT_S,
        # Static membership, as the processor's crash test runs: a restarted worker takes its old place.
        consumer_group_instance_id=f"{app_id(settings, role)}-{instance}",
    )


def ledger_app(settings: Settings, instance: int) -> faust.App:
    """The exactly-once Faust app that decides commands (see the module docstring)."""
    app = _app(settings, LEDGER, instance, "exactly_once")
    registry = SchemaRegistry.for_settings(settings)
    public_commands = CommandCodec(registry, settings.commands_topic)
    leg_commands = CommandCodec(registry, settings.transfer_legs_topic)
    outcomes = EventCodec(registry, settings.events_topic)
    limits = Limits(amount_max_major=settings.amount_max_major, holds_open_max=settings.holds_open_max)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    commands_topic = app.topic(settings.commands_topic, settings.transfer_legs_topic, **raw)
    events_topic = app.topic(settings.events_topic, **raw)
    dlq_topic = app.topic(settings.dlq_topic, **raw)
    # One dict per table: Faust's RocksDB store pops "driver" from the options it is given.
    table_options = {"driver": "rocksdict"}
    # bytes keys and values: Faust's "raw" serializer for the changelog, no JSON over our own encoding.
    wallets = app.Table(WALLETS_TABLE, default=None, partitions=settings.partitions, key_type=bytes,
                        value_type=bytes, options=table_options)
    command_ids = app.Table(COMMAND_IDS_TABLE, default=None, partitions=settings.partitions, key_type=bytes,
                            value_type=bytes, options=dict(table_options))

    async def dead_letter(message, error: CodecError) -> None:
        await dlq_topic.send(key=message.key, value=message.value, headers=[
            ("error.code", error.code.encode()), ("error.detail", error.detail.encode()),
            ("source.topic", message.topic.encode()), ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode())])

    @app.agent(commands_topic, name="decide_wallet_commands")
    async def decide_wallet_commands(commands):
        async for event in commands.events():
            message = event.message
            try:
                public = message.topic == settings.commands_topic
                codec = public_commands if public else leg_commands
                await codec.ensure([message.value])  # schema ids resolved before decoding (app/codec.py)
                command = accept(codec, message.key, message.value, public=public)
                digest = fingerprint(command)
                seen = command_ids.get(command.command_id.encode())
                if seen is not None:
                    if seen.decode() != digest:
                        raise CodecError(DUPLICATE_COMMAND_CONFLICT,
                                         f"command id {command.command_id} was used before with another body")
                    continue  # a resend of a decided command: its outcome is already out
                key = command.wallet_id.encode()
                stored = wallets.get(key)
                before = decode_state(command.wallet_id, stored) if stored is not None else None
                decided, after = decide_and_evolve(before, command, int(time.time() * 1000), limits)
                if after is not before and after is not None:
                    wallets[key] = encode_state(after)
                command_ids[command.command_id.encode()] = digest.encode()
                for outcome in decided:
                    await events_topic.send(key=outcome.wallet_id.encode(), value=outcomes.encode(outcome),
                                            headers=[(FINGERPRINT_HEADER, digest.encode())])
            except CodecError as error:
                await dead_letter(message, error)
            except Exception:
                # The default supervisor would restart the agent in a live worker: crash the worker instead.
                await agent_stopper(app)
                raise

    return app


def relay_app(settings: Settings, instance: int) -> faust.App:
    """The at-least-once Faust app that turns transfer outcomes into legs (see the module docstring)."""
    app = _app(settings, RELAY, instance, "at_least_once")
    registry = SchemaRegistry.for_settings(settings)
    outcomes = EventCodec(registry, settings.events_topic)
    legs = CommandCodec(registry, settings.transfer_legs_topic)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    legs_topic = app.topic(settings.transfer_legs_topic, **raw)

    @app.agent(app.topic(settings.events_topic, **raw), name="relay_transfer_legs")
    async def relay_transfer_legs(events):
        async for value in events:
            try:
                await outcomes.ensure([value])
                leg = leg_for(outcomes.decode(value))
                if leg is not None:
                    await legs_topic.send(key=leg.wallet_id.encode(), value=legs.encode(leg))
            except Exception:
                await agent_stopper(app)
                raise

    return app


# Faust's worker takes its own names for the levels of WALLET_LOG_LEVEL.
_FAUST_LOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "crit"}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in ROLES or not argv[1].isdigit():
        raise SystemExit(f"usage: python -m bench.faust_baseline {'|'.join(ROLES)} <instance>")
    settings = Settings.from_env()
    role, instance = argv[0], int(argv[1])
    datadir(settings, role, instance).mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = (ledger_app if role == LEDGER else relay_app)(settings, instance)
    # Faust's own command line runs the worker; it exits non-zero when the worker crashed.
    sys.argv = [f"bench.faust_baseline {role}", "worker", "--without-web",
                "--loglevel", _FAUST_LOG_LEVELS.get(settings.log_level, "info")]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1:])
