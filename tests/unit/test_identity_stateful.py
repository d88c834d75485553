"""The identity rules under adversarial input, as a hypothesis state machine over a real partition store.

The machine plays a processor without Kafka: commands go through the real intake (`app.intake.validate`),
deduplication and decision (`agents.deciding`), retention sweep (`agents.retention`), hold-expiry timer
(`agents.hold_expiry`) and restore (`agents.restore.fold_records`) against a real RocksDB store. The event log
is a list; a commit appends a batch's events and writes the store, a crash loses the uncommitted batch, a
restart reopens (or wipes) the store and replays the log from its marker. Public ids are drawn to look like
every internal id form, and producer timestamps range from 1970 to the far future.

Beside the store the machine keeps a model of what the processor must remember: every command id decided,
on the processor's clock, with its fingerprint and first outcome, until a sweep forgets it
(`RETENTION_S` later) or a restore from the log leaves it out (decided before the window). Every command the
machine sends is checked against that model (decided, duplicate with the first outcome, or conflict), and
the store's seen-markers and wallets are compared with the model and a replay of the log after every step.
The scenario that matters most, "the store is wiped, restored from the log, and the same ids are re-sent",
is a rule of its own (`wipe_restore_and_resend_everything`), so every example reaches it, and the producers'
commands are kept in a bundle the re-send rules draw from. The relay may lag the clock (legs are delivered
by a rule of their own), and once every leg is decided no money may be in transit.

Scratch mutations this machine fails on (each run twice, the unmutated code passing; none is committed):
- restore writes no seen-marker (agents/restore.py `fold_records` stages the wallet only)
- restore keeps the markers outside the retention window instead of inside it (inverted window test)
- restore drops the fingerprint header (a re-send after a restore becomes a conflict)
- restore drops the first outcome's bytes (a duplicate's answer after a restore is empty)
- restore files its markers in the `x/` index under the window's start instead of the decision time
- the store writes no `x/` retention key (tables/wallet_store.py `apply`: ids are never forgotten)
- the reserved `~` prefix is not refused (app/identity.py `check_public`)
- an internal leg's id is not checked against its transfer (app/identity.py `check_internal` cause id)
- an internal command kind is accepted on the public topic (app/intake.py `validate`)
- the expiry release is named by the hold id alone (agents/hold_expiry.py: a hold id placed again never expires)
- the expiry release is named by its placing command, the scheme before this machine found a placement under a
  reused command id that never expired (`test_a_hold_placed_under_an_id_the_sweep_forgot_expires_again`)
- a leg's id names its transfer id without the time of its debit or refusal (app/identity.py `leg_cause_id`),
  the scheme before this machine found a reused transfer id whose credit was taken for a duplicate
  (`test_a_transfer_id_reused_while_its_first_credit_leg_is_remembered_is_credited_again`)
- retention runs on the producer's `timestamp_ms` (agents/deciding.py stages the command's timestamp)
- the sweep reads the retention in seconds as milliseconds (agents/retention.py `sweep`)
- a known id with another body is a duplicate instead of a conflict (agents/deciding.py fingerprint check)
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, precondition, rule

from agents.deciding import Decision, decide_command
from agents.hold_expiry import EXPIRY_SCAN_INTERVAL_S, HoldExpiry
from agents.restore import fold_records
from agents.retention import sweep
from app import identity
from app.codec import CodecError
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import replay
from app.domain.limits import Limits
from app.intake import DUPLICATE_COMMAND_CONFLICT, FINGERPRINT_HEADER, INTERNAL_KIND_REFUSED, fingerprint, validate
from tables.wallet_store import PartitionStore

RETENTION_S = 10
RETENTION_MS = RETENTION_S * 1000  # the model's own arithmetic, not app/identity.py's
# A consumer record as the fold reads it (aiokafka's ConsumerRecord has these attributes).
Record = namedtuple("Record", "offset value headers")
# What the processor must remember of a decided command id: the processor's clock at the decision (ms), the
# command's fingerprint and the wire bytes of its (last) outcome event.
Remembered = namedtuple("Remembered", "decided_at_ms digest outcome")


class PickleCodec:
    """The machine's wire format: events are pickled (decide_command's `encode` here is pickle.dumps)."""

    decode = staticmethod(pickle.loads)


START_MS = 1_800_000_000_000
WALLETS = ("wa", "wb")
TIMESTAMPS = st.sampled_from([0, 1, START_MS - 8 * 24 * 3600 * 1000, START_MS, START_MS + 365 * 24 * 3600 * 1000,
                              2**53 - 1])
CLOCK_STEPS_MS = st.sampled_from([1, 500, RETENTION_MS - 1, RETENTION_MS, RETENTION_MS + 1])
PUBLIC_IDS = ("t1", "t2", "c-1", "dep-1", "dep-2")


def _lookalike_ids() -> st.SearchStrategy[str]:
    tail = st.sampled_from(["t1", "t2", "h", "c-1"])
    wallet = st.sampled_from(WALLETS)
    return st.one_of(
        st.builds(lambda t: f"{t}:credit", tail), st.builds(lambda t: f"{t}:refund", tail),
        st.builds(lambda w, t: f"{w}:{t}:expire", wallet, tail),
        st.builds(identity.credit_command_id, wallet, tail, st.just(START_MS)),
        st.builds(identity.refund_command_id, wallet, tail, st.just(START_MS)),
        st.builds(identity.expiry_command_id, wallet, tail, st.just(START_MS)), st.builds(lambda t: f"~{t}", tail),
        st.sampled_from(PUBLIC_IDS))


def _intake_verdict(command: c.CommandBase, public: bool) -> str | None:
    """The refusal the intake owes `command` by the identity rules (every other field the machine draws is
    well formed), or None when it must be accepted."""
    if public and isinstance(command, c.INTERNAL_COMMAND_TYPES):
        return INTERNAL_KIND_REFUSED
    if public and command.command_id.startswith("~"):
        return identity.RESERVED_COMMAND_ID
    return None


def _another_body(command: c.CommandBase) -> c.CommandBase:
    """The same command id asking for something else (a conflict while the id is remembered)."""
    if isinstance(command, (c.Deposit, c.Transfer, c.PlaceHold)):
        return dataclasses.replace(command, amount_minor=command.amount_minor + 1)
    if isinstance(command, c.ReleaseHold):
        return dataclasses.replace(command, reason=command.reason + "-again")
    return dataclasses.replace(command, owner_id="someone-else")  # OpenWallet


class IdentityMachine(RuleBasedStateMachine):
    sent = Bundle("sent")  # public commands the intake accepted: what a producer may send again

    @initialize(target=sent)
    def seed_history(self):
        """Two wallets opened and funded, then (half a retention later) a deposit and a transfer: a restore
        at once keeps every id, one after the clock moved keeps only the later ones."""
        self.root = Path(tempfile.mkdtemp(prefix="identity-"))
        self.store = PartitionStore(self.root / "p0")
        self.now_ms = START_MS
        self.log: list[tuple[e.EventBase, bytes, str]] = []  # committed (event, wire bytes, fingerprint)
        self.pending: list[tuple[e.EventBase, bytes, str]] = []
        self.legs: list[c.CommandBase] = []  # internal commands committed to the internal topic
        self.pending_legs: list[c.CommandBase] = []
        self.expiry = HoldExpiry()
        self.monotonic_s = 0.0
        self.remembered: dict[str, Remembered] = {}  # the model, as committed
        self.pending_remembered: dict[str, Remembered] = {}  # the model, decided in the open batch
        self.decided_ids: set[str] = set()  # every id ever decided (the store is checked for each)
        self.sent_commands: dict[tuple[str, str], c.CommandBase] = {}  # (id, fingerprint) -> a public command
        seeds: list[c.CommandBase] = []
        for wallet_id in WALLETS:
            seeds.append(c.OpenWallet(command_id=f"open-{wallet_id}", wallet_id=wallet_id, timestamp_ms=0,
                                      owner_id="o", currency="EUR"))
            seeds.append(c.Deposit(command_id=f"fund-{wallet_id}", wallet_id=wallet_id, timestamp_ms=0,
                                   amount_minor=1_000_000, currency="EUR"))
        for command in seeds:
            self._send(command)
        self.commit()
        self.now_ms += RETENTION_MS // 2
        later = [c.Deposit(command_id="dep-1", wallet_id="wa", timestamp_ms=START_MS, amount_minor=1,
                           currency="EUR"),
                 c.Transfer(command_id="t1", wallet_id="wa", timestamp_ms=START_MS, destination_wallet_id="wb",
                            amount_minor=5, currency="EUR")]
        for command in later:
            self._send(command)
        self.commit()
        return multiple(*seeds, *later)

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ the processor, in miniature

    def _remembered(self, command_id: str) -> Remembered | None:
        return self.pending_remembered.get(command_id) or self.remembered.get(command_id)

    def _decide(self, command: c.CommandBase, *, public: bool, refused: str | None = None) -> str:
        """Decide `command` as the processor does and check the outcome against the model: the refusal the
        identity rules owe it, else a duplicate (with the first outcome) or a conflict while its id is
        remembered, else a new decision on the processor's clock. Returns the outcome."""
        decision: Decision | None = None
        try:
            validate(command, command.wallet_id.encode(), public=public)
            decision = decide_command(self.store, command, self.now_ms, Limits(), pickle.dumps)
        except CodecError as error:
            outcome = error.code
        else:
            outcome = "duplicate" if decision.duplicate else "decided"
        known = self._remembered(command.command_id)
        if refused is None:
            refused = _intake_verdict(command, public)
        if refused is not None:
            expected = refused
        elif known is None:
            expected = "decided"
        else:
            expected = "duplicate" if known.digest == fingerprint(command) else DUPLICATE_COMMAND_CONFLICT
        assert outcome == expected, (f"{command!r}: {outcome}, expected {expected} "
                                     f"(remembered: {known and known[:2]}, now {self.now_ms})")
        if outcome == "duplicate":
            assert decision.first_outcome == known.outcome, f"{command.command_id}: not the first outcome"
        if outcome != "decided":
            return outcome
        for event, value in zip(decision.events, decision.values):
            assert event.timestamp_ms == self.now_ms, "decided on the processor's clock, not the producer's"
            self.pending.append((event, value, decision.digest))
        self.pending_legs.extend(decision.legs)
        self.pending_remembered[command.command_id] = Remembered(self.now_ms, fingerprint(command),
                                                                 decision.values[-1])
        self.decided_ids.add(command.command_id)
        return outcome

    def _send(self, command: c.CommandBase):
        """A producer sends `command` on the public topic; the command, for the bundle, if it was accepted."""
        outcome = self._decide(command, public=True)
        if outcome in (INTERNAL_KIND_REFUSED, identity.RESERVED_COMMAND_ID):
            return multiple()
        self.sent_commands.setdefault((command.command_id, fingerprint(command)), command)
        return command

    def _restore(self, *, wipe: bool) -> None:
        """The process dies (its open batch with it) and a new one opens the store, or an empty one, and
        replays the log from the store's marker as agents/restore.py `catch_up` does."""
        self.crash_before_commit()
        self.store.close()
        if wipe:
            shutil.rmtree(self.root / "p0")
        self.store = PartitionStore(self.root / "p0")
        records = [Record(offset, value, ((FINGERPRINT_HEADER, digest.encode()),))
                   for offset, (_, value, digest) in enumerate(self.log) if offset >= self.store.events_offset]
        fold_records(self.store, PickleCodec(), records, identity.retention_start_ms(self.now_ms, RETENTION_S))
        self.store.apply()
        if wipe:  # the log remembers an id while its (last) outcome is inside the window
            self.remembered = {event.command_id: Remembered(event.timestamp_ms, digest, value)
                               for event, value, digest in self.log
                               if event.timestamp_ms >= self.now_ms - RETENTION_MS}

    @rule()
    def commit(self) -> None:
        self.log.extend(self.pending)
        self.legs.extend(self.pending_legs)
        self.remembered.update(self.pending_remembered)
        self.pending, self.pending_legs, self.pending_remembered = [], [], {}
        self.store.changes.events_offset = len(self.log)
        self.store.apply()

    @rule()
    def crash_before_commit(self) -> None:
        """The transaction aborts and the process with it: its events never reach the log, its store changes
        are dropped, and the new process's expiry timer has requested nothing yet."""
        self.pending, self.pending_legs, self.pending_remembered = [], [], {}
        self.store.discard()
        self.expiry = HoldExpiry()

    @rule(wipe=st.booleans())
    def restart(self, wipe: bool) -> None:
        self._restore(wipe=wipe)

    @rule(ms=CLOCK_STEPS_MS)
    def clock_advances(self, ms: int) -> None:
        self.now_ms += ms
        self.monotonic_s += ms / 1000

    @rule()
    def retention_sweep(self) -> None:
        forgotten = {command_id for command_id, known in self.remembered.items()
                     if known.decided_at_ms < self.now_ms - RETENTION_MS}
        assert sweep([self.store], self.now_ms, RETENTION_S) == len(forgotten)
        self.commit()
        for command_id in forgotten:
            del self.remembered[command_id]

    # ------------------------------------------------------------ adversarial producers

    @rule(target=sent, command_id=_lookalike_ids(), wallet_id=st.sampled_from(WALLETS), timestamp_ms=TIMESTAMPS,
          amount_minor=st.sampled_from([1, 2]))
    def producer_deposits(self, command_id: str, wallet_id: str, timestamp_ms: int, amount_minor: int):
        return self._send(c.Deposit(command_id=command_id, wallet_id=wallet_id, timestamp_ms=timestamp_ms,
                                    amount_minor=amount_minor, currency="EUR"))

    @rule(target=sent, command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS)
    def producer_transfers(self, command_id: str, timestamp_ms: int):
        return self._send(c.Transfer(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms,
                                     destination_wallet_id="wb", amount_minor=5, currency="EUR"))

    @rule(target=sent, command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS,
          expires_in_ms=st.sampled_from([1, 2_000, 60_000]))
    def producer_places_the_hold_h(self, command_id: str, timestamp_ms: int, expires_in_ms: int):
        return self._send(c.PlaceHold(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms,
                                      hold_id="h", amount_minor=7, currency="EUR",
                                      expires_at_ms=self.now_ms + expires_in_ms))

    @rule(target=sent, command_id=_lookalike_ids(), timestamp_ms=TIMESTAMPS)
    def producer_releases_the_hold_h(self, command_id: str, timestamp_ms: int):
        return self._send(c.ReleaseHold(command_id=command_id, wallet_id="wa", timestamp_ms=timestamp_ms,
                                        hold_id="h", reason="client"))

    @rule(command=sent, timestamp_ms=TIMESTAMPS)
    def producer_resends(self, command: c.CommandBase, timestamp_ms: int) -> None:
        """An outbox replays a command: same body, another timestamp (and, for a hold, a later expiry)."""
        again = dataclasses.replace(command, timestamp_ms=timestamp_ms)
        if isinstance(again, c.PlaceHold):
            again = dataclasses.replace(again, expires_at_ms=self.now_ms + 60_000)
        self._send(again)

    @rule(command=sent)
    def producer_reuses_an_id_for_another_body(self, command: c.CommandBase) -> None:
        self._send(_another_body(command))

    @precondition(lambda self: self.sent_commands)
    @rule(ms=st.sampled_from([0, 1, RETENTION_MS - 1, RETENTION_MS + 1]), sweep_after=st.booleans())
    def wipe_restore_and_resend_everything(self, ms: int, sweep_after: bool) -> None:
        """The store is lost, rebuilt from the log (and, a moment later, swept), and every producer sends every
        command again: each id the window still covers is a duplicate answered with its first outcome (or a
        conflict for another body), each id before it is decided anew."""
        self.commit()
        self.clock_advances(ms)
        self._restore(wipe=True)
        if sweep_after:
            self.clock_advances(1)
            self.retention_sweep()
        for command in list(self.sent_commands.values()):
            self._send(dataclasses.replace(command, timestamp_ms=0))
        self.commit()

    # ------------------------------------------------------------ the internal topic

    @precondition(lambda self: self.legs)
    @rule(resend=st.booleans())
    def relay_delivers_legs(self, resend: bool) -> None:
        legs, self.legs = self.legs, []
        for leg in legs + (legs if resend else []):
            assert self._decide(leg, public=False) in ("decided", "duplicate"), leg
            self._decide(leg, public=True)  # an internal kind on the public topic is refused
        self.commit()  # consumed and decided in one transaction

    @rule(transfer_id=st.sampled_from(["t1", "t2"]), forgery=st.sampled_from(range(7)))
    def someone_forges_a_credit_leg(self, transfer_id: str, forgery: int) -> None:
        """A credit leg on the internal topic whose id does not name its debit is refused: no id can be filed
        under another cause (the genuine id here is ~credit/wa/<transfer_id>:<now>)."""
        now_ms = self.now_ms
        forged_id = [identity.credit_command_id("wa", "t2", now_ms), identity.credit_command_id("wb", "t1", now_ms),
                     identity.credit_command_id("wa", transfer_id, now_ms - 1),
                     identity.refund_command_id("wa", "t1", now_ms), identity.expiry_command_id("wb", "h", START_MS),
                     "t1", "t1:credit"][forgery]
        if forged_id == identity.credit_command_id("wa", transfer_id, self.now_ms):
            return
        leg = c.TransferCredit(command_id=forged_id, wallet_id="wb", timestamp_ms=self.now_ms,
                               transfer_id=transfer_id, source_wallet_id="wa", amount_minor=5, currency="EUR")
        self._decide(leg, public=False, refused=identity.INTERNAL_ID_MISMATCH)

    @rule()
    def expiry_timer_fires(self) -> None:
        """The timer scans the committed store; its releases are decided and committed. Afterwards no open hold
        is past its expiry: every placement gets its own release."""
        self.commit()  # the timer reads committed state
        self.monotonic_s += EXPIRY_SCAN_INTERVAL_S  # a scan is due
        for release in self.expiry.due_releases([self.store], self.now_ms, self.monotonic_s):
            assert self._decide(release, public=False) in ("decided", "duplicate")
        self.commit()
        holds = self.store.committed_wallet("wa").holds
        assert all(hold.expires_at_ms > self.now_ms for hold in holds), f"expired and still open: {holds}"

    @rule(target=sent, command_id=st.sampled_from(["p1", "p2"]), expires_in_ms=st.sampled_from([1, RETENTION_MS + 1]))
    def the_hold_h_is_placed_and_expires(self, command_id: str, expires_in_ms: int):
        """A placement whose expiry comes, then a sweep: another placement of the hold id expires again, also
        under a placing command id the sweep forgot (a few ids, so they are reused)."""
        placement = self._send(c.PlaceHold(command_id=command_id, wallet_id="wa", timestamp_ms=0, hold_id="h",
                                           amount_minor=7, currency="EUR", expires_at_ms=self.now_ms + expires_in_ms))
        self.clock_advances(expires_in_ms)
        self.expiry_timer_fires()
        self.retention_sweep()
        return placement

    # ------------------------------------------------------------ what must always hold

    @invariant()
    def the_store_remembers_exactly_the_ids_the_model_remembers(self) -> None:
        for command_id in self.decided_ids:
            known = self._remembered(command_id)
            expected = None if known is None else f"{known.decided_at_ms}:{known.digest}"
            assert self.store.seen_command(command_id) == expected, command_id

    @invariant()
    def the_store_holds_the_replay_of_the_committed_log(self) -> None:
        states = replay(event for event, _, _ in self.log)
        for wallet_id in WALLETS:
            assert self.store.committed_wallet(wallet_id) == states.get(wallet_id), wallet_id

    @invariant()
    def no_money_stays_in_transit_once_every_leg_is_decided(self) -> None:
        if self.legs or self.pending_legs:
            return
        in_transit_minor = 0
        for event, _, _ in self.log + self.pending:
            if isinstance(event, e.TransferDebited):
                in_transit_minor += event.amount_minor
            elif isinstance(event, (e.TransferCredited, e.TransferRefunded)):
                in_transit_minor -= event.amount_minor
        assert in_transit_minor == 0

    @invariant()
    def each_command_id_applies_once_per_retention_window(self) -> None:
        decided_at: dict[str, int] = {}
        for event, _, _ in self.log + self.pending:
            previous = decided_at.get(event.command_id)
            assert previous is None or event.timestamp_ms - previous >= RETENTION_MS, (
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
TestIdentity.settings = settings(
    max_examples=80,  # about 10 s on the shared 2-core box; each mutation in the docstring fails within 10 examples
    stateful_step_count=50,
    deadline=None,  # the run is bounded by its step count, not by wall time per example
    derandomize=True,  # the same examples on every run: a CI run cannot flake
    database=None,  # write no .hypothesis directory into the repository
)


def test_a_hold_placed_under_an_id_the_sweep_forgot_expires_again() -> None:
    """A placing command id may name a new placement once the sweep forgot it, while the release that expired
    its first placement is still remembered: the second placement must get a release of its own (it stayed
    open for ever when the release id was `~expire/<wallet>/<placing command id>`)."""
    machine = IdentityMachine()
    try:
        machine.seed_history()
        machine.the_hold_h_is_placed_and_expires("p1", RETENTION_MS + 1)  # expired and released; p1 forgotten
        assert machine.store.seen_command("p1") is None
        machine.the_hold_h_is_placed_and_expires("p1", 1)  # the timer asserts the hold was released
        assert machine.store.committed_wallet("wa").holds == ()
    finally:
        machine.teardown()


def test_a_transfer_id_reused_while_its_first_credit_leg_is_remembered_is_credited_again() -> None:
    """Transfer `t1` is decided, the clock passes the retention before its credit leg is decided (the legs topic
    lags), the sweep forgets `t1` and a producer sends `t1` again: a new debit, whose credit leg must not be taken
    for the first one's (decided moments ago). When a leg's id was `~credit/<source>/<transfer id>` it was a
    duplicate (same body) and the second debit's money stayed in transit for ever (another amount: the DLQ)."""
    machine = IdentityMachine()
    try:
        machine.seed_history()  # t1 is decided, its credit leg is on the legs topic
        machine.now_ms += RETENTION_MS + 1  # the relay lags: no leg decided yet
        machine.retention_sweep()  # t1 forgotten
        transfer = c.Transfer(command_id="t1", wallet_id="wa", timestamp_ms=0, destination_wallet_id="wb",
                              amount_minor=5, currency="EUR")
        assert machine._send(transfer) == transfer
        machine.commit()
        machine.relay_delivers_legs(resend=False)  # both legs: the second is a duplicate of the first
        machine.no_money_stays_in_transit_once_every_leg_is_decided()
    finally:
        machine.teardown()
