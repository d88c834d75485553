"""Settings of every process, read once from `WALLET_*` environment variables.

Every limit of the service is a named field here with its unit last and a one-line reason.
`Settings.from_env()` is the only place that reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from app.errors import FoundationError

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESSING_GUARANTEES = frozenset({"exactly_once", "at_least_once"})
EVENT_LOOPS = frozenset({"uvloop", "asyncio"})
# Transactional ids a partition's owner fences (agents/transactions.py): the most processor_transaction_slots
# any version may use, so an owner with fewer slots still fences a zombie that used more.
PROCESSOR_TRANSACTION_SLOTS_MAX = 4
# Limits that only make sense above zero.
_POSITIVE = ("partitions", "http_listen_backlog", "http_accept_burst_max", "topic_replication_factor", "amount_max_major", "holds_open_max", "command_retention_s", "registry_request_timeout_s", "registry_backoff_initial_ms", "registry_backoff_max_ms", "retention_sweep_interval_s",
             "processor_batch_size_max", "processor_batch_wait_ms", "processor_gc_young_objects_max", "transaction_retry_backoff_ms", "consumer_fetch_wait_max_ms",
             "sink_batch_size_max", "sink_batch_wait_ms", "sink_writes_in_flight_max",
             "sink_retry_backoff_max_s", "replica_lag_poll_interval_s", "command_wait_ms_default",
             "transfer_in_transit_max_s", "transfer_in_transit_poll_interval_s",
             "command_wait_ms_max", "reply_partitions", "reply_retention_ms", "processor_session_timeout_ms",
             "processor_heartbeat_interval_ms", "restore_process_min_events",
             "processor_max_poll_interval_ms", "processor_workers", "processor_standby_fetch_wait_ms",
             "processor_standby_fetch_records_max", "processor_standby_fold_chunk_events",
             "rate_limit_per_s", "rate_limit_burst", "hold_expires_in_s_default", "hold_expires_in_s_max",
             "commands_in_flight_max", "table_read_timeout_ms", "redis_connections_max", "wallet_cache_size_max")

# Limits where 0 means "none" (no wait).
_NOT_NEGATIVE = ("processor_batch_fill_ms", "command_publish_linger_ms", "restore_processes_max")


class SettingsError(FoundationError, ValueError):
    """A `WALLET_*` variable has a value that cannot be used.

    Operator action: fix the variable named in the message and restart.
    """


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- where things run (local defaults match ops/local and docker-compose.yml) ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    # False: no local registry is started; an external one is used through registry_url.
    registry_local: bool = True
    mysql_dsn: str = "mysql+aiomysql://wallet:wallet@127.0.0.1:3306/wallet"
    # Reads of history and balance-at-a-time go here when set; else to mysql_dsn. The default is the local
    # stack's replica (`wallet stack up` starts it on mysql_replica_port); set it empty to read the primary.
    mysql_replica_dsn: str = "mysql+aiomysql://wallet:wallet@127.0.0.1:3307/wallet"
    # Port of the local stack's MariaDB replica (ops/local/stack.py); 0 means no local replica is started.
    mysql_replica_port: int = 3307
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The kernel's queue of connections to an HTTP port not yet accepted (aiohttp's default); beyond it the
    # kernel drops connection attempts and the client retries a second later.
    http_listen_backlog: int = 128
    # Connections an HTTP port accepts each time its socket is readable (app/http_listener.py): a burst of new
    # connections is taken in at once rather than one per turn of the event loop (uvloop's own server).
    http_accept_burst_max: int = 128
    # Port of the worker's Prometheus endpoint (and its table-read web view); processor slot N uses it + N.
    worker_web_port: int = 6066
    # Port of the Prometheus endpoint of a process that runs the sinks without the processor (`make run` and
    # compose run them apart); slot N uses it + N. Ten above worker_web_port: room for ten processor slots.
    sinks_web_port: int = 6076
    # Port of the local stack's Prometheus (ops/local/stack.py), which scrapes the two ports above.
    prometheus_port: int = 9090
    # `key=scope+scope,key2=scope`; empty means `make run` generates a development key.
    api_keys: str = ""
    state_dir: Path = field(default_factory=lambda: REPO_ROOT / ".state")

    # --- topics ---
    app_id: str = "wallet"
    commands_topic: str = "wallet.commands"
    transfer_legs_topic: str = "wallet.transfer-legs"
    events_topic: str = "wallet.events"
    # The processor's input positions, one record per partition per transaction (agents/input_positions.py):
    # compacted, co-partitioned with the input topics.
    processor_offsets_topic: str = "wallet.processor-offsets"
    dlq_topic: str = "wallet.commands.dlq"
    # Events of events_topic a sink's store refused to hold (each with the sink and the store's reason).
    sink_dlq_topic: str = "wallet.events.sink-dlq"
    # Outcomes for the HTTP API: the processor writes each answer to the partition the asking web process
    # named, so a web process reads only its own answers, never every event.
    reply_topic: str = "wallet.replies"
    # Partitions of the reply topic: web processes beyond this count share partitions (still correct).
    reply_partitions: int = 8
    # Replies are only useful while a request waits for them.
    reply_retention_ms: int = 3_600_000
    # One partition count for every co-partitioned topic; checked at start-up.
    partitions: int = 4
    # Replicas of every topic `wallet init` creates (1 on the local single broker; 3 in production).
    topic_replication_factor: int = 1
    log_level: str = "INFO"
    # Event loop of `wallet worker` processes: "asyncio" (the standard library's) or "uvloop". Since the API
    # accepts connections in bursts (app/http_listener.py), uvloop serves as many deposits as asyncio, but it
    # did not cost less CPU per request in the same runs (docs/BENCHMARKS.md, HTTP API, seventh session).
    event_loop: str = "asyncio"

    # --- schema registry ---
    # Bound of one registry call; a slower answer counts as the registry being down (retried, never poison).
    registry_request_timeout_s: float = 10.0
    # Backoff between two attempts while the registry does not answer: doubles from the first to the max.
    registry_backoff_initial_ms: int = 100
    registry_backoff_max_ms: int = 5_000

    # --- ledger limits ---
    # Per-command maximum in major units of the currency (1,000,000.00 EUR).
    amount_max_major: int = 1_000_000
    # Open holds per wallet; bounds the size of a wallet's state record.
    holds_open_max: int = 100
    # How long a command id is remembered, from when the processor first decided it (its clock, not the
    # producer's): a repeat inside it returns the first outcome. HTTP Idempotency-Key claims live as long.
    command_retention_s: int = 7 * 24 * 3600
    # How often the processor forgets command ids older than command_retention_s (bounded per sweep).
    retention_sweep_interval_s: int = 60

    # --- processor ---
    # "exactly_once" (transactions; the default and the only production setting) or "at_least_once"
    # (no transactions; exists so the crash test can show what transactions buy).
    processing_guarantee: str = "exactly_once"
    # Failpoint for the crash test: the processor SIGKILLs itself right after this many sends, in the
    # middle of a batch, once its earlier sends reached the broker. 0 (the default) never fires.
    fault_kill_after_sends: int = 0
    # Most commands taken from Kafka into one decide/write batch.
    processor_batch_size_max: int = 2000
    # The processor's back-off before retrying a transaction request the broker is not ready for
    # (CONCURRENT_TRANSACTIONS right after a commit): a few ms, not aiokafka's 100.
    transaction_retry_backoff_ms: int = 5
    # Transactional producers per owned partition, used in turn: a partition's next transaction starts on
    # the next one while the broker still writes the previous one's commit markers, instead of waiting them
    # out (CONCURRENT_TRANSACTIONS). 2 halves a transaction's time; 1 is the one-producer design. Every
    # owner fences all PROCESSOR_TRANSACTION_SLOTS_MAX ids of a partition, whatever this is (agents/transactions.py).
    processor_transaction_slots: int = 2
    # Longest wait for a batch to fill before it is processed anyway.
    processor_batch_wait_ms: int = 20
    # Once a poll returned records, the longest wait for the fetch it starts (the records that arrived while
    # the previous batch ran), so they join this batch instead of waiting for the next one. 0: no wait.
    processor_batch_fill_ms: int = 5
    # Allocations (net of frees) between two young-generation garbage collections in a processor process.
    # Python's 700 ran a collection every few commands, and through them full scans of the decoded-state
    # cache: 12-18% of the decide path's time (docs/BENCHMARKS.md). Few of its objects form cycles; 50,000
    # bounds what waits for the next collection.
    processor_gc_young_objects_max: int = 50_000
    # Longest time the broker holds a fetch open waiting for new committed data. aiokafka's default (500)
    # puts up to half a second on every hop of a command (command, transfer leg, projection).
    consumer_fetch_wait_max_ms: int = 20

    # --- sinks ---
    sink_batch_size_max: int = 5000
    sink_batch_wait_ms: int = 50
    # MySQL batches with no wallet in common written at once, each on its own connection: the second
    # overlaps the first one's round trip and commit (3 was no faster on 2 cores).
    sink_writes_in_flight_max: int = 2
    # Upper bound of the retry backoff while a store is down.
    sink_retry_backoff_max_s: float = 5.0
    # Failpoint for the sink fault test: a sink SIGKILLs its process after this many store writes, after
    # the store committed and before the Kafka offsets did (the at-least-once window). 0 never fires.
    fault_sink_kill_after_writes: int = 0
    # How often the sinks role polls the replica's Seconds_Behind_Master (bounds the staleness of the metric).
    replica_lag_poll_interval_s: float = 5.0
    # A transfer debited and neither credited nor refunded for longer is stuck (its credit leg normally lands
    # within a second; this leaves room for a processor restart): `wallet reconcile` reports it as a difference.
    # ops/prometheus/alerts.yml (WalletTransferStuckInTransit) holds the same number: change both together.
    transfer_in_transit_max_s: int = 300
    # How often the sinks role reads the oldest in-transit transfer from MySQL for its gauge (one scan of the
    # `transfers` table on the replica; bounds how late the gauge sees a transfer settle).
    transfer_in_transit_poll_interval_s: float = 30.0

    # Name of this processor worker in the group (stable across restarts, so its warm stores come back to
    # it); empty: `<hostname>-<worker --instance>`. Its stores live in state_dir/processor/<name>/.
    processor_member_name: str = ""
    # With no processor_member_name: name this worker `slot-<k>` after the first slot k whose lock file
    # (state_dir/processor/slot-<k>.lock) no live worker holds, and hold it while it runs. For replicas that
    # share one state volume and get a new hostname when recreated (docker compose --scale): a replacement
    # takes over a warm store folder instead of rebuilding from the log and leaving the old folder behind.
    processor_claim_member_slot: bool = False
    # Members that keep a warm copy of each partition's store by tailing wallet.events (0: none). A takeover
    # by a warm standby replays the lag, not the partition's history.
    processor_standby_replicas: int = 1
    # How long a standby's fetch of wallet.events waits for new events, and the most events one fetch returns
    # (agents/standby.py): a standby is a background copy, so it asks for what is there rather than for speed.
    processor_standby_fetch_wait_ms: int = 200
    processor_standby_fetch_records_max: int = 500
    # Events a standby folds and writes between two turns of the worker's event loop: a fold holds the loop
    # (this worker's batches, commits and replies wait), about 25-50 us an event here, so 100 is a few ms.
    processor_standby_fold_chunk_events: int = 100
    # A processor silent this long (no heartbeat) leaves the group and its partitions move: the failover
    # bound. The broker's minimum (group.min.session.timeout.ms) is 6 s.
    processor_session_timeout_ms: int = 6_000
    # How often a processor heartbeats to the group: it hears of a rebalance (a member joined, left or
    # timed out) at its next heartbeat, so this bounds that part of a handover. Below the session timeout.
    processor_heartbeat_interval_ms: int = 500
    # Static membership (Kafka's group.instance.id = the member name): a restarted worker takes its old place
    # at once, with no rebalance. The price: a stopped static worker keeps its partitions until the session
    # times out, so scale-in and a worker that will not come back cost processor_session_timeout_ms.
    processor_static_membership: bool = False
    # The longest one batch may take between two polls before the member is considered stuck and its
    # partitions move (a new partition's catch-up runs beside the polls, agents/restore.py).
    processor_max_poll_interval_ms: int = 300_000
    # With restore_processes_max > 0, a partition whose store is at least this many events behind wallet.events
    # when it is assigned (a cold takeover) is caught up in a child process, a core of its own
    # (agents/restore_process.py), before the worker replays what is left itself; below it, a child's start-up
    # (about 3 s) costs more than it saves.
    restore_process_min_events: int = 50_000
    # Child restore processes at a time, one partition each; 0 (the default): every catch-up runs in the worker's
    # process. On a 2-core host the children were slower than the worker's own catch-up (1,000,000 wallets: cold
    # takeover 84 s against 60 s, docs/BENCHMARKS.md, Failover); set it on hosts with a free core per partition.
    restore_processes_max: int = 0
    # Processor workers `make run` / `wallet run` starts (each a group member with its own store folder).
    processor_workers: int = 1

    # --- HTTP ---
    # Default and largest `wait_ms` of a write: how long a request waits for its command's outcome.
    command_wait_ms_default: int = 5000
    command_wait_ms_max: int = 30_000
    # Index of this web process: it asks for replies on reply partition `web_instance % reply_partitions`.
    web_instance: int = 0
    # Writes one web process waits on at once; beyond it a write is refused with 503 (bounded memory).
    commands_in_flight_max: int = 10_000
    # Per-API-key rate limit (requests per second, sustained) and burst, kept in Redis.
    rate_limit_per_s: int = 200
    rate_limit_burst: int = 400
    # How long the API's producer waits to batch commands before sending; 0: at once (while a send is in
    # flight to the broker, the next commands batch up anyway).
    command_publish_linger_ms: int = 0
    # Hold lifetime when a request names none, and the longest one accepted (30 days).
    hold_expires_in_s_default: int = 7 * 24 * 3600
    hold_expires_in_s_max: int = 30 * 24 * 3600
    # Connections one web process keeps to Redis; a request beyond them waits for a free one.
    redis_connections_max: int = 64
    # Bound of one strong read from the owning processor's table (min_version waits count in it).
    table_read_timeout_ms: int = 2000
    # Wallet currencies a web process remembers (a currency never changes once a wallet is open).
    wallet_cache_size_max: int = 100_000

    def __post_init__(self) -> None:
        if self.processing_guarantee not in PROCESSING_GUARANTEES:
            raise SettingsError(f"WALLET_PROCESSING_GUARANTEE={self.processing_guarantee!r} is not one of "
                                f"{sorted(PROCESSING_GUARANTEES)}")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"WALLET_EVENT_LOOP={self.event_loop!r} is not one of {sorted(EVENT_LOOPS)}")
        for name in _POSITIVE:
            value = getattr(self, name)
            if not value > 0:  # also refuses NaN
                raise SettingsError(f"WALLET_{name.upper()}={value!r} must be greater than zero")
        for name in _NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise SettingsError(f"WALLET_{name.upper()}={getattr(self, name)!r} must not be negative")
        if not 1 <= self.processor_transaction_slots <= PROCESSOR_TRANSACTION_SLOTS_MAX:
            raise SettingsError(f"WALLET_PROCESSOR_TRANSACTION_SLOTS={self.processor_transaction_slots!r} must be "
                                f"between 1 and {PROCESSOR_TRANSACTION_SLOTS_MAX}")
        if self.processor_heartbeat_interval_ms >= self.processor_session_timeout_ms:
            raise SettingsError(f"WALLET_PROCESSOR_HEARTBEAT_INTERVAL_MS={self.processor_heartbeat_interval_ms} "
                                f"must be below WALLET_PROCESSOR_SESSION_TIMEOUT_MS="
                                f"{self.processor_session_timeout_ms}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """Build settings from `WALLET_<FIELD>` variables (upper case), defaults elsewhere."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"WALLET_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """These settings as `WALLET_*` variables (for child processes)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[f"WALLET_{f.name.upper()}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    @property
    def kafka_port(self) -> int:
        first = self.kafka_bootstrap.split(",", 1)[0]
        return int(first.rsplit(":", 1)[1]) if ":" in first else 9092

    @property
    def registry_port(self) -> int:
        scheme, rest = self.registry_url.split("://", 1)
        hostpart = rest.split("/", 1)[0]
        return int(hostpart.rsplit(":", 1)[1]) if ":" in hostpart else (443 if scheme == "https" else 80)

    @property
    def mysql_port(self) -> int:
        return _dsn_port(self.mysql_dsn, 3306)

    @property
    def redis_port(self) -> int:
        return _dsn_port(self.redis_url, 6379)


def _dsn_port(dsn: str, default: int) -> int:
    hostpart = dsn.split("@", 1)[-1].split("//", 1)[-1].split("/", 1)[0]
    return int(hostpart.rsplit(":", 1)[1]) if ":" in hostpart else default


def _parse(name: str, type_name: object, raw: str) -> object:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError as exc:
        raise SettingsError(f"WALLET_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
