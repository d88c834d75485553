"""Session set-up: the Debian packages every test needs, and the real local stack for integration and
system tests (unit tests need no service)."""

from __future__ import annotations

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
    """Start (or reuse) Kafka, the registry, MariaDB and Redis; migrate MySQL; stop what we started."""
    from wallet import bootstrap
    from ops.local import stack as local_stack

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        started = local_stack.up(base_settings)
    bootstrap.migrate(base_settings)
    yield base_settings
    from tests.harness import kill_leftover_workers

    kill_leftover_workers()
    with capture.global_and_fixture_disabled():
        local_stack.down(base_settings, started)


def prepare_topics(settings: Settings) -> Settings:
    """Create the isolated topics of `settings`, check them and register their schemas (what `wallet init`
    does; wallet/isolation.py, shared with the benchmarks)."""
    from wallet.isolation import prepare_topics as prepare

    return prepare(settings)
