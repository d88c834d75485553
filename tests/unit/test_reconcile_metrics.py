"""`wallet reconcile` leaves its verdict for the worker's metrics; the collector exports it."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest

from app.metrics import ReconcileResult
from wallet.reconcile import RESULT_FILE, record_result
from app.settings import Settings


def _exported(path) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ReconcileResult(path))
    lines = generate_latest(registry).decode().splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line and not line.startswith("#")}


def test_no_reconcile_run_yet_exports_nothing(tmp_path):
    assert _exported(tmp_path / RESULT_FILE) == {}


def test_a_failed_run_keeps_the_last_success_time_and_reports_its_differences(tmp_path):
    settings = replace(Settings(), state_dir=tmp_path)
    record_result(settings, 0, 1000.0)
    record_result(settings, 3, 2000.0)
    assert _exported(tmp_path / RESULT_FILE) == {
        "wallet_reconcile_differences": 3.0, "wallet_reconcile_last_success_timestamp_seconds": 1000.0}
    record_result(settings, 0, 3000.0)
    assert _exported(tmp_path / RESULT_FILE)["wallet_reconcile_last_success_timestamp_seconds"] == 3000.0
