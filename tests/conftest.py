"""Session set-up: the Debian packages every test needs, and the real local stack for integration and
system tests (unit tests need no service)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from app.settings import Settings


def pytest_configure(config: pytest.Config) -> None:
    """Install the stack's Debian packages (ops/local/stack.py APT_PACKAGES: promtool, wrk, MariaDB, Redis)
    before collection, so a fresh machine's first run skips nothing: tests that need a binary find it."""
    from ops.local import stack as local_stack

    if not local_stack.missing_packages():
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:  # `-p no:capture`: output goes to the terminal anyway
        local_stack.ensure_packages()
        return
    with capture.global_and_fixture_disabled():  # apt-get's progress and errors reach the terminal
        local_stack.ensure_packages()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def stack(request, base_settings: Settings):
    """Start (or reuse) Kafka, the registry, MariaDB and Redis; yield the settings every test namespace starts
    from: the live ones, except for a read model of the session's own (a migrated MySQL database
    `tests_session_<hex>` that the replica applies, and a claimed Redis database), so tests leave no trace in
    the live read model. At the end: drop that database, release the Redis database, delete the topics of the
    session's namespaces (kept with their state folders when a test failed), and stop what was started."""
    from ops.local import stack as local_stack
    from wallet import bootstrap, isolation

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        started = local_stack.up(base_settings)
    bootstrap.migrate(base_settings)  # the live schema, for tests of `wallet init`'s own database
    session = isolation.isolated_settings(base_settings, "session")
    session = isolation.claim_redis_database(isolation.with_database(session))
    yield replace(base_settings, mysql_dsn=session.mysql_dsn, mysql_replica_dsn=session.mysql_replica_dsn,
                  redis_url=session.redis_url)
    from tests.harness import CREATED_TOPICS, kill_leftover_workers

    kill_leftover_workers()
    passed = request.session.testsfailed == 0
    isolation.discard(session, database=True, redis_claimed=True, topics=False, state=False)
    if passed:
        isolation.delete_namespaces_topics(base_settings, isolation.NAMED, CREATED_TOPICS)
        for namespace in isolation.NAMED:
            shutil.rmtree(namespace.state_dir, ignore_errors=True)
    with capture.global_and_fixture_disabled():
        local_stack.down(base_settings, started)


def prepare_topics(settings: Settings) -> Settings:
    """Create the isolated topics of `settings`, check them and register their schemas (what `wallet init`
    does; wallet/isolation.py, shared with the benchmarks)."""
    from wallet.isolation import prepare_topics as prepare

    return prepare(settings)
