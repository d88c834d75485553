"""Observability on the real stack: every Grafana panel has data in a real Prometheus after real traffic,
and every metric the dashboard and the alert rules name is exported by the running service.

The ledger runs as compose runs it (the processor, the sinks and the API each in a process of its own), and
a Prometheus of its own (the local stack's service, started with these isolated settings) scrapes the three
with the config derived from ops/prometheus/prometheus.yml.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request

import pytest
import yaml

from app.domain import commands as c
from app.settings import REPO_ROOT
from ops.local import stack as local_stack
from tests.conftest import prepare_topics
from tests.harness import (Ledger, WorkerProcess, free_port, http_json, isolated_settings, new_id, now_ms,
                           wait_for, wait_for_async)

DASHBOARD = REPO_ROOT / "ops" / "grafana" / "dashboards" / "wallet.json"
ALERTS = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
# Grafana's range variable, as Prometheus sees it here (scrapes every 5 s: a 1 m window holds 12 samples).
RATE_INTERVAL = "1m"
PANELS_DATA_TIMEOUT_S = 60
TARGETS_UP_TIMEOUT_S = 30
METRIC_NAME_RE = re.compile(r"\bwallet_[a-z0-9_]+")
# Named in the alerts, exported by the sinks worker only once a `wallet reconcile` run left its verdict
# (tests/unit/test_reconcile_metrics.py covers them).
NOT_FROM_THE_SERVICE = {
    "wallet_reconcile_differences": "exported after a `wallet reconcile` run (a scheduled job)",
    "wallet_reconcile_last_success_timestamp_seconds": "exported after a `wallet reconcile` run",
}
# Named in the alerts ahead of the code that exports them (the replica-lag poller of the read-model work):
# required as soon as app/metrics.py defines them.
EXPORTED_ONCE_DEFINED = {"wallet_mysql_replica_lag_seconds"}


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"{panel['title']} [{target['refId']}]",
                            target["expr"].replace("$__rate_interval", RATE_INTERVAL)))
    return queries


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _prometheus(settings, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{settings.prometheus_port}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def _finite_values(settings, expr: str) -> list[float]:
    result = _prometheus(settings, "/api/v1/query", query=expr)["result"]
    return [float(sample["value"][1]) for sample in result if math.isfinite(float(sample["value"][1]))]


def _exported_names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and line[0] != "#"}


@pytest.fixture(scope="module")
def observed(stack):
    settings = prepare_topics(isolated_settings(stack, "obs", prometheus_port=free_port()))
    started = local_stack.up(settings, ["prometheus"])
    assert started == ["prometheus"], "the test's own Prometheus must be started here"
    workers = [WorkerProcess(settings, ["processor"]), WorkerProcess(settings, ["sinks"]),
               WorkerProcess(settings, ["web"])]
    try:
        for worker in workers:
            worker.start()

        def every_target_up() -> bool:
            targets = _prometheus(settings, "/api/v1/targets")["activeTargets"]
            return sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == [
                "wallet-sinks", "wallet-web", "wallet-worker"]

        wait_for(every_target_up, TARGETS_UP_TIMEOUT_S, "Prometheus to scrape the processor, the sinks and the API")
        yield settings
    finally:
        codes = [worker.stop() for worker in workers]
        local_stack.down(settings, started)
    assert codes == [0, 0, 0]


async def _traffic(settings) -> None:
    """Deposits, a transfer, a hold, a poison message and API reads: every panel's source moves."""
    alice, bob = new_id("alice"), new_id("bob")
    async with Ledger(settings) as ledger:
        await ledger.send(
            c.OpenWallet(command_id=new_id("open"), wallet_id=alice, timestamp_ms=now_ms(), owner_id="o",
                         currency="EUR"),
            c.OpenWallet(command_id=new_id("open"), wallet_id=bob, timestamp_ms=now_ms(), owner_id="o",
                         currency="EUR"))
        await ledger.send(
            c.Deposit(command_id=new_id("dep"), wallet_id=alice, timestamp_ms=now_ms(), amount_minor=10_000,
                      currency="EUR"),
            c.Withdraw(command_id=new_id("wd"), wallet_id=bob, timestamp_ms=now_ms(), amount_minor=1,
                       currency="EUR"),  # rejected: INSUFFICIENT_FUNDS
            c.Transfer(command_id=new_id("tr"), wallet_id=alice, timestamp_ms=now_ms(),
                       destination_wallet_id=bob, amount_minor=2_500, currency="EUR"),
            c.PlaceHold(command_id=new_id("hold"), wallet_id=alice, timestamp_ms=now_ms(), hold_id="h1",
                        amount_minor=100, currency="EUR", expires_at_ms=now_ms() + 3_600_000))
        await ledger.send_raw(alice.encode(), b"not avro at all")

    base = f"http://127.0.0.1:{settings.http_port}"

    async def bob_credited():
        status, _, body = http_json("GET", f"{base}/v1/wallets/{bob}/balance", key="test-read")
        return status == 200 and body["balance"] == "25.00"

    await wait_for_async(bob_credited, 30, "the transfer to reach the API's read model", interval_s=0.3)
    assert http_json("GET", f"{base}/v1/wallets/{new_id('nobody')}/balance", key="test-read")[0] == 404
    assert http_json("GET", f"{base}/v1/wallets/{alice}/balance")[0] == 401


async def test_every_dashboard_panel_has_data_in_prometheus_after_real_traffic(observed):
    await _traffic(observed)
    queries = _panel_queries()
    assert len(queries) >= 20

    # A panel counts once any poll shows it data: rate windows slide past the traffic while others fill.
    missing = dict(queries)

    def all_have_data() -> bool:
        for title, expr in list(missing.items()):
            if _finite_values(observed, expr):
                del missing[title]
        return not missing

    try:
        wait_for(all_have_data, PANELS_DATA_TIMEOUT_S, "every panel to have data", interval_s=2)
    except AssertionError:
        pytest.fail(f"dashboard panels without data after real traffic: {sorted(missing)}")


def test_every_metric_named_in_the_dashboard_and_alerts_is_exported_by_the_service(observed):
    from prometheus_client import REGISTRY

    named = set()
    for expr in [expr for _, expr in _panel_queries()] + _alert_expressions():
        named |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in METRIC_NAME_RE.findall(expr)}
    exported = (_exported_names(observed.worker_web_port) | _exported_names(observed.sinks_web_port)
                | _exported_names(observed.http_port))
    exported_families = exported | {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in exported}

    import app.metrics  # noqa: F401  (defines every metric in this process too)
    defined = {name for collector in list(REGISTRY._collector_to_names) for name in
               REGISTRY._collector_to_names[collector]}
    required = {name for name in named if name not in NOT_FROM_THE_SERVICE
                and (name not in EXPORTED_ONCE_DEFINED or name in defined)}
    assert required - exported_families == set(), "named in the dashboard or alerts but not exported"
    assert "wallet_commands_total" in required and "wallet_http_requests_total" in required
