"""Which processor worker owns a partition, read from the live consumer group (no formula, no flags).

Processor workers are members of the group `<app_id>-processor` (agents/membership.py); each names its table
view's port in its Kafka client id (`<app_id>-processor:<port>`) and the broker reports the host it connects
from. `describe_consumer_groups` gives the live assignment: partition p of `wallet.commands` belongs to the
member that has it. While the group rebalances (state not Stable) no owner is answered: a strong read waits
(bounded) or answers 503 with Retry-After, never a stale state.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.settings import Settings

log = logging.getLogger("wallet.web.owners")

# How long a known assignment is trusted before it is asked again; a 421 from a table asks at once.
OWNERS_CACHE_TTL_S = 2.0
# Bound of one describe call to the group coordinator.
DESCRIBE_TIMEOUT_S = 5.0


class OwnerDirectory:
    """Partition -> base URL of the owning processor's table view, from the group coordinator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group_id = f"{settings.app_id}-processor"
        self._owners: dict[int, str] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._admin = None

    async def owner(self, partition: int, *, refresh: bool = False) -> str | None:
        """The owner's base URL, or None while the partition has no stable owner."""
        if refresh or time.monotonic() - self._fetched_at > OWNERS_CACHE_TTL_S:
            async with self._lock:
                if refresh or time.monotonic() - self._fetched_at > OWNERS_CACHE_TTL_S:
                    self._owners = await asyncio.wait_for(asyncio.to_thread(self._describe), DESCRIBE_TIMEOUT_S + 1)
                    self._fetched_at = time.monotonic()
        return self._owners.get(partition)

    def _describe(self) -> dict[int, str]:
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        try:
            futures = self._admin.describe_consumer_groups([self.group_id], request_timeout=DESCRIBE_TIMEOUT_S)
            description = futures[self.group_id].result(timeout=DESCRIBE_TIMEOUT_S)
        except Exception as exc:  # the group coordinator is a remote service: any failure is "unknown now"
            log.warning("processor group not described", extra={"group": self.group_id, "error": str(exc)})
            return {}
        if description.state != ConsumerGroupState.STABLE:
            return {}
        owners = {}
        for member in description.members:
            _, _, port = (member.client_id or "").rpartition(":")
            host = (member.host or "").lstrip("/")
            if not port.isdigit() or not host:
                continue
            for tp in member.assignment.topic_partitions if member.assignment else ():
                if tp.topic == self.settings.commands_topic:
                    owners[tp.partition] = f"http://{host}:{port}"
        return owners
