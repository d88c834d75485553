"""Every Prometheus metric of the service, in one place (docs/OPERATIONS.md lists them)."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)

compiled_module = Gauge(
    "wallet_compiled_module",
    "1 when the module runs compiled (setup.py), 0 when it runs interpreted: the same code, slower (the install "
    "found no C compiler).", ["module"])
registry_fetch_failures_total = Counter(
    "wallet_registry_fetch_failures_total",
    "Schema lookups and start-up registrations the registry could not answer (down, slow, 5xx); the process "
    "waited and retried. "
    "By error: connection, timeout, status.", ["error"])
registry_waiting = Gauge(
    "wallet_registry_waiting", "1 while a consumer of this process waits for the schema registry to answer.")
commands_total = Counter(
    "wallet_commands_total", "Commands decided, by kind and outcome (applied or the rejection code).",
    ["kind", "outcome"])
commands_duplicate_total = Counter(
    "wallet_commands_duplicate_total", "Commands skipped because their command id already has an outcome.")
commands_forwarded_total = Counter(
    "wallet_commands_forwarded_total",
    "Commands that arrived on a partition that is not their wallet's and were forwarded to it, by topic.",
    ["topic"])
retention_sweeps_total = Counter(
    "wallet_retention_sweeps_total", "Sweeps of command ids older than command_retention_s (processor clock).")
command_ids_forgotten_total = Counter(
    "wallet_command_ids_forgotten_total", "Command ids forgotten by the retention sweep.")
dlq_messages_total = Counter(
    "wallet_dlq_messages_total", "Messages sent to the DLQ, by reason code.", ["reason"])
processor_batch_size = Histogram(
    "wallet_processor_batch_size", "Messages per processed batch.", buckets=_BATCH_BUCKETS)
processor_batch_seconds = Histogram(
    "wallet_processor_batch_seconds", "Time to decide and commit one batch.", buckets=_LATENCY_BUCKETS_S)
processor_decide_seconds = Histogram(
    "wallet_processor_decide_seconds", "Time spent in decide/evolve per batch.", buckets=_LATENCY_BUCKETS_S)
end_to_end_seconds = Histogram(
    "wallet_end_to_end_seconds", "Command timestamp to committed outcome event.", buckets=_LATENCY_BUCKETS_S)
processor_partitions_total = Gauge(
    "wallet_processor_partitions_total", "Partitions of wallet.commands (what the group must own in total).")
processor_partitions_owned = Gauge(
    "wallet_processor_partitions_owned", "Partitions this processor worker owns in the group (caught up).")
processor_standby_partitions = Gauge(
    "wallet_processor_standby_partitions", "Partitions this processor worker keeps a warm standby store of.")
processor_standby_lag_events = Gauge(
    "wallet_processor_standby_lag_events", "Events of wallet.events a standby store is behind, per partition.",
    ["partition"])
processor_standby_lag_events_max = Gauge(
    "wallet_processor_standby_lag_events_max",
    "The most events any standby store of this worker is behind (0 when it stands by for none).")
processor_rebalances_total = Counter(
    "wallet_processor_rebalances_total", "Group rebalances this processor worker took part in.")
processor_rebalance_seconds = Histogram(
    "wallet_processor_rebalance_seconds",
    "From a revoke (or the join) to the new partitions caught up and processing, per rebalance.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120))
processor_consumer_lag = Gauge(
    "wallet_processor_consumer_lag", "Messages not yet processed, per topic partition.", ["topic", "partition"])
holds_expired_total = Counter(
    "wallet_holds_expired_total", "Release commands published by the hold-expiry timer.")

sink_events_total = Counter("wallet_sink_events_total", "Events written by a sink.", ["sink"])
sink_batch_seconds = Histogram(
    "wallet_sink_batch_seconds", "Time to write one batch to the store.", ["sink"], buckets=_LATENCY_BUCKETS_S)
sink_lag_events = Gauge("wallet_sink_lag_events", "Events not yet projected, per sink.", ["sink"])
sink_lag_seconds = Gauge(
    "wallet_sink_lag_seconds", "Age of the newest projected event when it was written.", ["sink"])
sink_retries_total = Counter("wallet_sink_retries_total", "Store writes retried after a fault.", ["sink"])
sink_dlq_events_total = Counter(
    "wallet_sink_dlq_events_total", "Events a sink's store refused, sent to the sink DLQ, by sink and reason.",
    ["sink", "reason"])

# Business gauges, kept exact by the processor's store (a fold of the events) per partition. Money in
# transit is debited by the source partition and settled by the destination's (credit) or the source's
# (refund), so one partition's value can be negative: sum over partitions for the ledger's total.
money_in_transit_minor = Gauge(
    "wallet_money_in_transit_minor", "Transfers debited and not yet credited or refunded, minor units.",
    ["partition", "currency"])
holds_open = Gauge("wallet_holds_open", "Open holds, per partition.", ["partition"])

# DLQ reason codes (docs/DESIGN.md "Poison reasons"), exported at 0 from the start so that the first poison
# message is an increase Prometheus can see (a counter series born at 1 has no increase) and the dashboard
# shows every reason. Codes not listed here still count: they appear when first used.
DLQ_REASONS = ("TRUNCATED", "BAD_MAGIC_BYTE", "UNKNOWN_SCHEMA", "UNDECODABLE", "INVALID_FIELD", "KEY_MISMATCH",
               "INTERNAL_KIND_REFUSED", "RESERVED_COMMAND_ID", "INTERNAL_ID_MISMATCH", "DUPLICATE_COMMAND")
for _reason in DLQ_REASONS:
    dlq_messages_total.labels(_reason)
# Exported by the sinks role only (app/worker.py registers it, app/in_transit.py keeps it current), like the
# reconcile verdict below: one process, no duplicate series.
transfer_in_transit_oldest_seconds = Gauge(
    "wallet_transfer_in_transit_oldest_seconds",
    "Age of the oldest transfer debited and neither credited nor refunded (MySQL read model), seconds; 0 if none.",
    registry=None)
transfers_in_transit = Gauge(
    "wallet_transfers_in_transit",
    "Transfers debited and neither credited nor refunded (MySQL read model), each counted once.",
    registry=None)
mysql_replica_lag_seconds = Gauge(
    "wallet_mysql_replica_lag_seconds",
    "Seconds_Behind_Master of the MySQL read replica; -1 when replication is stopped or unreachable.")

# The sinks (agents/projection.py names them), likewise exported at 0 from the start: a histogram or counter
# series born with its first observation shows no rate for its first batch.
SINKS = ("mysql", "redis")
for _sink in SINKS:
    sink_events_total.labels(_sink)
    sink_batch_seconds.labels(_sink)
    sink_retries_total.labels(_sink)
# The reasons each sink's store refuses data with (agents/mysql_sink.py store_error, agents/redis_sink.py), so
# the first refused event is an increase the alert sees. Reasons not listed still count from their first use.
SINK_DLQ_REASONS = {"mysql": ("DataError", "IntegrityError", "OperationalError", "ProgrammingError"),
                    "redis": ("ResponseError",)}
for _sink, _reasons in SINK_DLQ_REASONS.items():
    for _reason in _reasons:
        sink_dlq_events_total.labels(_sink, _reason)


# The registry's fault kinds (app/codec.py RegistryUnavailable), exported at 0 from the start for the same reason.
REGISTRY_ERRORS = ("connection", "timeout", "status")
for _error in REGISTRY_ERRORS:
    registry_fetch_failures_total.labels(_error)


class ReconcileResult:
    """Exports the verdict `wallet reconcile` (a scheduled job) left in the state folder, read per scrape."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self):
        try:
            result = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # no run yet: the alert on the success timestamp's absence covers it
        yield GaugeMetricFamily("wallet_reconcile_differences", "Differences found by the last `wallet reconcile`.",
                                value=result["differences"])
        yield GaugeMetricFamily("wallet_reconcile_last_success_timestamp_seconds",
                                "When `wallet reconcile` last found no difference (Unix time).",
                                value=result["last_success_at_s"])
