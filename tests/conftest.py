"""Session set-up: the real local stack for integration and system tests (unit tests need nothing)."""

from __future__ import annotations

import pytest

from app.settings import Settings

# A topic just created is listed by the broker's metadata within moments, even on a loaded machine.
TOPICS_VISIBLE_TIMEOUT_S = 30.0


def _needs_stack(items) -> bool:
    return any("tests/integration" in str(item.fspath) or "tests/system" in str(item.fspath) for item in items)


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
    """Create the isolated topics of `settings` and check them (what `wallet init` does)."""
    from app.topics import TopicMissing, check_partitions, create_topics
    from tests.harness import wait_for

    create_topics(settings)

    def visible() -> bool:  # the broker's metadata cache may publish new topics a moment later
        try:
            return bool(check_partitions(settings))
        except TopicMissing:
            return False
    wait_for(visible, TOPICS_VISIBLE_TIMEOUT_S, "the new topics in the broker's metadata", interval_s=0.2)
    return settings
