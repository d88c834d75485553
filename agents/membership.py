"""Processor membership: which worker owns which partitions, decided by Kafka's group coordinator.

Processor workers join one consumer group on `wallet.commands` and `wallet.transfer-legs`. The group's
leader runs `CopartitionedAssignor` (Kafka's client-side assignment protocol), which:
- gives partition number p of BOTH topics to the same member (they are co-partitioned: a wallet's commands
  and its transfer legs meet the same store);
- balances: every member owns ⌊n/m⌋ or ⌈n/m⌉ partitions;
- prefers, for each partition, the member whose local store of it is warmest (the highest offset of
  `wallet.events` it reflects, reported in the member's subscription), so a takeover replays the lag, not the
  history, and a restarted worker gets its own partitions back;
- names up to `standby_replicas` standby members per partition (warmest first), which tail the partition's
  events to keep their store warm (agents/standby.py).
Every member's assignment carries the whole plan (owners and standbys), so each knows its standbys.

The member's subscription user data and assignment user data are small JSON documents (`MemberInfo`,
`Plan`). Assignors in aiokafka are used as classes, so a processor builds its own subclass bound to its
`MemberInfo` source with `assignor_for`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("wallet.membership")

ASSIGNOR_NAME = "wallet-copartitioned"


@dataclass(frozen=True)
class MemberInfo:
    """What a member tells the leader when it joins: its name and how warm its local stores are."""

    name: str  # stable per worker slot (settings.processor_member_name)
    warm: dict[int, int] = field(default_factory=dict)  # partition -> events offset its local store reflects

    def encode(self) -> bytes:
        return json.dumps({"name": self.name, "warm": {str(p): o for p, o in self.warm.items()}}).encode()

    @staticmethod
    def decode(raw: bytes) -> "MemberInfo":
        try:
            doc = json.loads(raw or b"{}")
            return MemberInfo(str(doc.get("name", "")), {int(p): int(o) for p, o in doc.get("warm", {}).items()})
        except (ValueError, TypeError, AttributeError):
            return MemberInfo("")  # a member of another version: no preferences


@dataclass(frozen=True)
class Plan:
    """The group's whole plan, sent to every member: owner and standbys of each partition (member names)."""

    owners: dict[int, str]
    standbys: dict[int, list[str]]

    def encode(self) -> bytes:
        return json.dumps({"owners": {str(p): m for p, m in self.owners.items()},
                           "standbys": {str(p): ms for p, ms in self.standbys.items()}}).encode()

    @staticmethod
    def decode(raw: bytes) -> "Plan":
        try:
            doc = json.loads(raw or b"{}")
            return Plan({int(p): m for p, m in doc.get("owners", {}).items()},
                        {int(p): list(ms) for p, ms in doc.get("standbys", {}).items()})
        except (ValueError, TypeError, AttributeError):
            return Plan({}, {})


def plan(partitions: Iterable[int], members: Mapping[str, MemberInfo], standby_replicas: int) -> Plan:
    """Owners and standbys of `partitions` among `members` (member id -> info). Pure and deterministic."""
    partitions = sorted(partitions)
    names = sorted(members)
    if not names:
        return Plan({}, {})
    capacity_low, extras_left = divmod(len(partitions), len(names))
    load = {name: 0 for name in names}
    owners: dict[int, str] = {}

    def warmth(p: int) -> int:
        return max((members[n].warm.get(p, -1) for n in names), default=-1)

    # Warmest partitions first, so the members' best stores are honoured before their capacity fills.
    for p in sorted(partitions, key=lambda p: (-warmth(p), p)):
        candidates = [n for n in names if load[n] < capacity_low or (load[n] == capacity_low and extras_left)]
        best = max(candidates, key=lambda n: (members[n].warm.get(p, -1), -load[n], _reverse(n)))
        if load[best] == capacity_low:
            extras_left -= 1
        owners[p] = best
        load[best] += 1
    standbys: dict[int, list[str]] = {}
    for p in partitions:
        others = [n for n in names if n != owners[p]]
        others.sort(key=lambda n: (-members[n].warm.get(p, -1), n))
        standbys[p] = others[:standby_replicas]
    return Plan(owners, standbys)


def _reverse(name: str) -> tuple[int, ...]:
    """A key that makes `max` prefer the lexicographically smallest name on a tie."""
    return tuple(-ord(ch) for ch in name)


class CopartitionedAssignor(AbstractPartitionAssignor):
    """See the module docstring. Subclassed per processor by `assignor_for`."""

    name = ASSIGNOR_NAME
    version = 0
    # Bound by `assignor_for`: the member's current info, what to do with the plan, standby replicas.
    member_info: Callable[[], MemberInfo] = staticmethod(lambda: MemberInfo(""))
    on_plan: Callable[[Plan], None] = staticmethod(lambda plan: None)
    standby_replicas: int = 1

    @classmethod
    def assign(cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({topic for metadata in members.values() for topic in metadata.subscription})
        counts = {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in topics}
        if len(set(counts.values())) > 1:
            log.error("subscribed topics are not co-partitioned", extra={"partitions": counts})
        partitions = range(min(counts.values(), default=0))
        infos = {member_id: MemberInfo.decode(metadata.user_data) for member_id, metadata in members.items()}
        # Plan by member id (unique in the group); members report names for the logs and standbys.
        the_plan = plan(partitions, infos, cls.standby_replicas)
        log.info("partitions assigned", extra={
            "owners": {p: infos[m].name for p, m in the_plan.owners.items()}, "members": len(members)})
        by_name = Plan({p: infos[m].name for p, m in the_plan.owners.items()},
                       {p: [infos[m].name for m in ms] for p, ms in the_plan.standbys.items()})
        assignments = {}
        for member_id in members:
            mine = sorted(p for p, owner in the_plan.owners.items() if owner == member_id)
            assignments[member_id] = ConsumerProtocolMemberAssignment(
                cls.version, [(topic, mine) for topic in topics], by_name.encode())
        return assignments

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, sorted(topics), cls.member_info().encode())

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        cls.on_plan(Plan.decode(assignment.user_data))


def assignor_for(member_info: Callable[[], MemberInfo], on_plan: Callable[[Plan], None],
                 standby_replicas: int) -> type[CopartitionedAssignor]:
    """An assignor class bound to one processor's member info and plan handler."""
    return type("BoundCopartitionedAssignor", (CopartitionedAssignor,), {
        "member_info": staticmethod(member_info), "on_plan": staticmethod(on_plan),
        "standby_replicas": standby_replicas})
