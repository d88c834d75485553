"""Benchmarks and tests run in namespaces of their own (wallet/isolation.py) and keep out of the read model of
the settings they are started with: after a `wallet bench http`, `wallet reconcile` of those settings agrees.

The settings the bench is started with stand in for the live ledger: topics, a migrated MySQL database and
a Redis database of their own, as `wallet init` leaves a fresh stack, so that a concurrent test of the same
session cannot make the check pass or fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import redis

from app.settings import REPO_ROOT, Settings
from app.topics import topic_specs
from ops.local import stack as local_stack
from tests.conftest import prepare_topics
from tests.harness import isolated_settings
from wallet import isolation

# A short run: 20 wallets, wrk for 1 s after a 1 s warm-up on each server, deposits at 20/s for 1 s after the
# client's 3 s warm-up. Most of its time is starting the worker, the API and the baseline server.
SHORT_HTTP_BENCH = ["--wallets", "20", "--connections", "2", "--read-seconds", "1", "--warmup-s", "1",
                    "--command-rate", "20", "--command-seconds", "1", "--json"]
BENCH_TIMEOUT_S = 300
RECONCILE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def live(stack):
    """A ledger for the bench to be started against: topics, database and Redis database of its own."""
    settings = isolation.claim_redis_database(isolation.with_database(prepare_topics(isolated_settings(stack, "live"))))
    yield settings
    isolation.discard(settings, database=True, redis_claimed=True)


def _cli(settings: Settings, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wallet.cli", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **settings.to_env()}, timeout=timeout_s)


def _databases(settings: Settings) -> set[str]:
    return set((local_stack._mysql_root(settings, "SHOW DATABASES") or "").split())


def _topics(settings: Settings) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=15).topics)


def test_a_short_http_bench_leaves_the_read_model_it_ran_against_reconciled_and_removes_its_namespace(live):
    bench = _cli(live, "bench", "http", *SHORT_HTTP_BENCH, timeout_s=BENCH_TIMEOUT_S)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    result = json.loads(bench.stdout.strip().splitlines()[-1])
    assert result["command_statuses"] == {"200": 20}, result

    # --no-table: no processor ever ran for these settings, so there is no table to compare; the bench's
    # processor kept its store in its own state folder.
    reconcile = _cli(live, "reconcile", "--no-table", timeout_s=RECONCILE_TIMEOUT_S)
    assert reconcile.returncode == 0, reconcile.stdout[-3000:] + reconcile.stderr[-3000:]
    assert "0 wallets, 0 events: agree" in reconcile.stdout + reconcile.stderr

    namespace = result["namespace"]
    assert namespace.startswith("bench-http-")
    assert namespace.replace("-", "_") not in _databases(live)
    assert not {topic for topic in _topics(live) if topic.startswith(f"{namespace}.")}
    assert not (live.state_dir / "bench" / namespace.removeprefix("bench-")).exists()  # the bench's state folder
    for number in isolation.REDIS_DATABASES_CLAIMED:  # its claimed Redis database was flushed with its claim
        owner = redis.Redis.from_url(isolation.with_redis_database(live, number).redis_url).get(isolation.REDIS_CLAIM_KEY)
        assert owner is None or not owner.decode().endswith(f":{namespace}")


@pytest.fixture
def fresh(stack):
    """Settings as `wallet stack up` leaves a fresh machine: an empty database, an empty Redis database, no topics."""
    settings = isolation.claim_redis_database(isolated_settings(stack, "fresh"))
    database = settings.app_id.replace("-", "_")
    settings = replace(settings, mysql_dsn=local_stack.create_database(settings, database, drop=True),
                       mysql_replica_dsn="")
    yield settings
    isolation.discard(settings, database=True, redis_claimed=True, topics=False)


def test_a_short_http_bench_runs_on_a_fresh_stack_and_creates_nothing_in_its_read_model_or_topics(fresh):
    bench = _cli(fresh, "bench", "http", *SHORT_HTTP_BENCH, timeout_s=BENCH_TIMEOUT_S)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert json.loads(bench.stdout.strip().splitlines()[-1])["command_statuses"] == {"200": 20}
    database = isolation.database_name(fresh)
    tables = local_stack._mysql_root(fresh, f"SELECT COUNT(*) FROM information_schema.TABLES "
                                            f"WHERE TABLE_SCHEMA = '{database}'")
    assert tables is not None and int(tables) == 0
    assert redis.Redis.from_url(fresh.redis_url).keys("wallet:*") == []
    assert not {spec.name for spec in topic_specs(fresh)} & _topics(fresh)


def test_two_claims_get_different_redis_databases_flushed_and_a_release_frees_only_its_own(stack):
    first = isolation.claim_redis_database(isolated_settings(stack, "claim-a"))
    second = isolation.claim_redis_database(isolated_settings(stack, "claim-b"))
    try:
        assert first.redis_url != second.redis_url
        assert first.redis_url != stack.redis_url and second.redis_url != stack.redis_url
        client = redis.Redis.from_url(first.redis_url)
        assert client.dbsize() == 1  # only the claim: whatever a stale claimer left was flushed
        client.set("wallet:left-behind", "1")
        assert isolation.release_redis_database(second) is True
        assert isolation.release_redis_database(replace(first, app_id="tests-someone-else")) is False
        assert client.get("wallet:left-behind") == b"1"
    finally:
        isolation.release_redis_database(first)
        isolation.release_redis_database(second)
    assert redis.Redis.from_url(first.redis_url).dbsize() == 0


def test_a_claim_whose_process_is_gone_is_stale_and_one_of_a_running_process_is_not():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    assert isolation._claim_alive(f"{host}:{finished.stdout.strip()}:bench-http-gone") is False
    assert isolation._claim_alive(f"{host}:{os.getpid()}:bench-http-here") is True
    assert isolation._claim_alive("another-host:1:bench-http-there") is True


def test_the_live_read_model_and_topics_cannot_be_discarded(base_settings):
    with pytest.raises(isolation.IsolationError):
        isolation.drop_database(base_settings)
    with pytest.raises(isolation.IsolationError):
        isolation.delete_topics(base_settings)
    live_topics = {spec.name for spec in topic_specs(base_settings)}
    assert isolated_settings(base_settings, "x").commands_topic not in live_topics
