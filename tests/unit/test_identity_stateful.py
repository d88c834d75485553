"""The identity rules under adversarial input, as a hypothesis state machine over a real partition store.

The machine plays a processor without Kafka: commands go through the real intake (`app.intake.validate`),
deduplication and decision (`agents.deciding`), retention sweep (`agents.retention`), hold-expiry timer
(`agents.hold_expiry`) and restore (`agents.restore.fold_records`) against a real RocksDB store. The event log
is a list; a commit appends a batch's events and writes the store, a crash loses the uncommitted batch, a
restart reopens (or wipes) the store and replays the log from its marker. Public ids are drawn to look like
every internal id form, and producer timestamps range from 1970 to the far future.
"""

from __future__ import annotations

import pickle
from collections import namedtuple
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agents.deciding import decide_command
from agents.hold_expiry import HoldExpiry
from agents.restore import fold_records
from agents.retention import sweep
from app import identity
from app.codec import CodecError
from app.domain import commands as c
from app.domain import events as e
from app.domain.limits import Limits
from app.intake import FINGERPRINT_HEADER, validate
from tables.wallet_store import PartitionStore

RETENTION_S = 10
# A consumer record as the fold reads it (aiokafka's ConsumerRecord has these attributes).
Record = namedtuple("Record", "offset value headers")


class PickleCodec:
    """The machine's wire format: events are pickled (decide_command's `encode` here is pickle.dumps)."""

    decode = staticmethod(pickle.loads)
START_MS = 1_800_000_000_000
WALLETS = ("wa", "wb")
TIMESTAMPS = st.sampled_from([0, 1, START_MS - 8 * 24 * 3600 * 1000, START_MS, START_MS + 365 * 24 * 3600 * 1000,
                              2**53 - 1])


def _lookalike_ids() -> st.SearchStrategy[str]:
    tail = st.sampled_from(["t1", "t2", "h", "c-1"])
    wallet = st.sampled_from(WALLETS)
    return st.one_of(
        st.builds(lambda t: f"{t}:credit", tail), st.builds(lambda t: f"{t}:refund", tail),
        st.builds(lambda w, t: f"{w}:{t}:expire", wallet, tail),
        st.builds(identity.credit_command_id, wallet, tail), st.builds(identity.refund_command_id, wallet, tail),
        st.builds(identity.expiry_command_id, wallet, tail), st.builds(lambda t: f"~{t}", tail),
        st.sampled_from(["t1", "t2", "c-1", "dep-1", "dep-2"]))


class IdentityMachine(RuleBasedStateMachine):
    @initialize()
    def open_store(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="identity-"))
        self.store = PartitionStore(self.root / "p0")
        self.now_ms = START_MS
        self.log: list[tuple[e.EventBase, bytes, str]] = []  # committed (event, wire bytes, fingerprint)
        self.pending: list[tuple[e.EventBase, bytes, str]] = []
        self.legs: list[c.CommandBase] = []  # internal commands committed to the internal topic
        self.pending_legs: list[c.CommandBase] = []
        self.expiry = HoldExpiry()
        self.monotonic_s = 0.0
        self.placements: dict[str, int] = {}  # PlaceHold id -> applied count
        for wallet_id in WALLETS:
            self._decide(c.OpenWallet(command_id=f"open-{wallet_id}", wallet_id=wallet_id, timestamp_ms=0,
                                      owner_id="o", currency="EUR"), public=True)
            self._decide(c.Deposit(command_id=f"fund-{wallet_id}", wallet_id=wallet_id, timestamp_ms=0,
                                   amount_minor=1_000_000, currency="EUR"), public=True)
        self.commit()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ the processor, in miniature

    def _decide(self, command: c.CommandBase, *, public: bool) -> str:
        try:
            validate(command, command.wallet_id.encode(), public=public)
            decision = decide_command(self.store, command, self.now_ms, Limits(), pickle.dumps)
        except CodecError as error:
            if public and command.command_id.startswith("~"):
                assert error.code in (identity.RESERVED_COMMAND_ID, "INTERNAL_KIND_REFUSED")
            assert error.code in {identity.RESERVED_COMMAND_ID, identity.INTERNAL_ID_MISMATCH, "DUPLICATE_COMMAND",
                                  "INVALID_FIELD", "INTERNAL_KIND_REFUSED"}, error.code
            return error.code
        if decision.duplicate:
            return "duplicate"
        for event, value in zip(decision.events, decision.values):
            assert event.timestamp_ms == self.now_ms, "decided on the processor's clock, not the producer's"
            self.pending.append((event, value, decision.digest))
        self.pending_legs.extend(decision.legs)
        return "decided"

    @rule()
    def commit(self) -> None:
        self.log.extend(self.pending)
        self.legs.extend(self.pending_legs)
        self.pending, self.pending_legs = [], []
        self.store.changes.events_offset = len(self.log)
        self.store.apply()

    @rule()
    def crash_before_commit(self) -> None:
        """The transaction aborts: its events never reach the log, its store changes are dropped."""
        self.pending, self.pending_legs = [], []
        self.store.discard()

    @rule(wipe=st.booleans())
    def restart(self, wipe: bool) -> None:
        self.crash_before_commit()
        self.store.close()
        if wipe:
            shutil.rmtree(self.root / "p0")
        self.store = PartitionStore(self.root / "p0")
        retention_start_ms = identity.retention_start_ms(self.now_ms, RETENTION_S)
        records = [Record(offset, value, ((FINGERPRINT_HEADER, digest.encode()),))
                   for offset, (_, value, digest) in enumerate(self.log) if offset >= self.store.events_offset]
        fold_records(self.store, PickleCodec(), records, retention_start_ms)
        self.store.apply()

    @rule(ms=st.sampled_from([1, 500, RETENTION_S * 1000 - 1, RETENTION_S * 1000, RETENTION_S * 1000 + 1]))
    def clock_advances(self, ms: int) -> None:
        self.now_ms += ms
        self.monotonic_s += ms / 1000

    @rule()
    def retention_sweep(self) -> None:
        sweep([self.store], self.now_ms, RETENTION_S)
        self.commit()

    # ------------------------------------------------------------ adversarial producers

    @rule(command_id=_lookalike_ids(), wallet_id=st.sampled_from(WALLETS), timestamp_ms=TIMESTAMPS,
          amount_minor=st.sampled_from([1, 2]))
    def producer_deposits(self, command_id: str, wallet_id: str, timestamp_ms: int, amount_minor: int) -> None:
        self._decide(c.Deposit(command_id=command_id, wallet_id=wallet_id, timestamp_ms=timestamp_ms,
                               amount_minor=amount_minor, currency="EUR"), public=True)

    @rule(command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS)
    def producer_transfers(self, command_id: str, timestamp_ms: int) -> None:
        self._decide(c.Transfer(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms,
                                destination_wallet_id="wb", amount_minor=5, currency="EUR"), public=True)

    @rule(command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS, expires_in_ms=st.sampled_from([1, 2_000, 60_000]))
    def producer_places_the_hold_h(self, command_id: str, timestamp_ms: int, expires_in_ms: int) -> None:
        outcome = self._decide(c.PlaceHold(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms,
                                           hold_id="h", amount_minor=7, currency="EUR",
                                           expires_at_ms=self.now_ms + expires_in_ms), public=True)
        if outcome == "decided" and isinstance(self.pending[-1][0], e.HoldPlaced):
            self.placements[command_id] = self.placements.get(command_id, 0) + 1

    @rule(command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS)
    def producer_releases_the_hold_h(self, command_id: str, timestamp_ms: int) -> None:
        self._decide(c.ReleaseHold(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms, hold_id="h",
                                   reason="client"), public=True)

    @precondition(lambda self: self.legs)
    @rule(resend=st.booleans())
    def relay_delivers_legs(self, resend: bool) -> None:
        legs, self.legs = self.legs, []
        for leg in legs + (legs if resend else []):
            outcome = self._decide(leg, public=False)
            assert outcome in ("decided", "duplicate"), (leg, outcome)
            assert self._decide(leg, public=True) == "INTERNAL_KIND_REFUSED" or isinstance(leg, c.ReleaseHold)
        self.commit()  # consumed and decided in one transaction

    @rule()
    def expiry_timer_fires(self) -> None:
        self.commit()  # the timer reads committed state
        for release in self.expiry.due_releases([self.store], self.now_ms, self.monotonic_s):
            assert self._decide(release, public=False) in ("decided", "duplicate")
        self.monotonic_s += 1.0

    # ------------------------------------------------------------ what must always hold

    @invariant()
    def each_command_id_applies_once_per_retention_window(self) -> None:
        decided_at: dict[str, int] = {}
        for event, _, _ in self.log + self.pending:
            previous = decided_at.get(event.command_id)
            assert previous is None or event.timestamp_ms - previous >= RETENTION_S * 1000, (
                f"{event.command_id} decided twice within the retention window")
            decided_at[event.command_id] = event.timestamp_ms

    @invariant()
    def internal_ids_are_never_outcomes_of_public_commands(self) -> None:
        for event, _, _ in self.log + self.pending:
            if identity.is_reserved(event.command_id):
                assert isinstance(event, (e.TransferCredited, e.TransferCreditRejected, e.TransferRefunded,
                                          e.HoldReleased, e.CommandRejected))
                assert identity.INTERNAL_COMMAND_ID_RE.fullmatch(event.command_id)

    @invariant()
    def an_expired_placement_is_released_by_its_own_expiry_id(self) -> None:
        releases = [ev for ev, _, _ in self.log if isinstance(ev, e.HoldReleased) and ev.reason == "EXPIRED"]
        assert len({ev.command_id for ev in releases}) == len(releases), "two expiries under one id"


TestIdentity = IdentityMachine.TestCase
TestIdentity.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
