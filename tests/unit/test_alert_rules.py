"""The alert rules (ops/prometheus/alerts.yml) are valid and behave as their promtool unit tests say."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from app.settings import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "ops" / "prometheus"


def _alert_names() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    # Never a skip: the test session installs promtool first (tests/conftest.py), so its absence is a fault.
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed (Debian: prometheus; tests/conftest.py installs it)"
    return subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)


def test_the_session_installs_every_debian_package_the_tests_need_before_collecting():
    from ops.local.stack import APT_PACKAGES, missing_packages

    assert "promtool" in APT_PACKAGES and "wrk" in APT_PACKAGES
    assert missing_packages() == [], "tests/conftest.py pytest_configure should have installed these"


def test_alert_rules_pass_promtool_check():
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_expect():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_section_and_a_firing_unit_test():
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert _alert_names() - fired == set(), "alerts without a test that shows them firing"
    runbook = (REPO_ROOT / "docs" / "OPERATIONS.md").read_text()
    missing = {name for name in _alert_names() if f"### {name}" not in runbook}
    assert missing == set(), "alerts without a runbook section in docs/OPERATIONS.md"


def test_prometheus_loads_the_rule_file_the_tests_cover():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]


def test_local_prometheus_config_is_the_compose_config_with_local_targets_and_the_same_rules():
    from pathlib import Path

    from app.settings import Settings
    from ops.local.stack import prometheus_config

    source = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    local = prometheus_config(Settings(worker_web_port=16066, sinks_web_port=16076, http_port=18080))
    targets = {job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
               for job in local["scrape_configs"]}
    assert targets == {"wallet-worker": ["127.0.0.1:16066"], "wallet-sinks": ["127.0.0.1:16076"],
                       "wallet-web": ["127.0.0.1:18080"]}
    assert [Path(f) for f in local["rule_files"]] == [PROMETHEUS_DIR / "alerts.yml"]
    assert local["global"] == source["global"]


def test_every_processor_worker_is_scraped_since_the_alerts_sum_partitions_owned_across_them():
    # Before: one target (worker:6066), so with three workers WalletProcessorPartitionsUnowned saw a third of
    # the partitions owned and fired.
    from app.settings import Settings
    from ops.local.stack import prometheus_config

    source = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    worker = next(job for job in source["scrape_configs"] if job["job_name"] == "wallet-worker")
    assert worker["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": 6066, "refresh_interval": "15s"}]
    local = prometheus_config(Settings(worker_web_port=16066, processor_workers=3))
    worker = next(job for job in local["scrape_configs"] if job["job_name"] == "wallet-worker")
    assert worker["static_configs"] == [{"targets": ["127.0.0.1:16066", "127.0.0.1:16067", "127.0.0.1:16068"]}]
    assert "dns_sd_configs" not in worker
