"""The counted crash checks of the Faust baseline (bench/faust_checks.py) and the benchmark's outcome tally.

No services: event logs are built with the pure domain, as a processor would have written them.
"""

from __future__ import annotations

from agents.transfer_relay import leg_for
from app import identity
from app.domain import commands as c
from app.domain import events as e
from app.domain.ledger import decide_and_evolve
from app.domain.state import WalletState
from bench.faust_checks import count_violations
from bench.processor_bench import _Tally

NOW_MS = 1_800_000_000_000


class _Log:
    """An event log and the wallet table, decided command by command."""

    def __init__(self) -> None:
        self.events: list[e.EventBase] = []
        self.table: dict[str, WalletState] = {}
        self.sent: set[str] = set()

    def decide(self, command: c.CommandBase) -> e.EventBase:
        self.sent.add(command.command_id)
        decided, after = decide_and_evolve(self.table.get(command.wallet_id), command, NOW_MS)
        self.events.extend(decided)
        if after is not None:
            self.table[command.wallet_id] = after
        return decided[-1]


def _two_wallets_and_a_transfer() -> tuple[_Log, list[str]]:
    log = _Log()
    for wallet in ("wa", "wb"):
        log.decide(c.OpenWallet(command_id=f"open-{wallet}", wallet_id=wallet, timestamp_ms=NOW_MS, owner_id="o",
                                currency="EUR"))
        log.decide(c.Deposit(command_id=f"fund-{wallet}", wallet_id=wallet, timestamp_ms=NOW_MS, amount_minor=1_000,
                             currency="EUR"))
    debit = log.decide(c.Transfer(command_id="t-1", wallet_id="wa", timestamp_ms=NOW_MS, destination_wallet_id="wb",
                                  amount_minor=300, currency="EUR"))
    leg = leg_for(debit)
    log.decide(leg)
    log.sent.discard(leg.command_id)  # a leg is the ledger's own command, not one a producer sent
    return log, [leg.command_id]


def test_a_clean_run_counts_no_violation() -> None:
    log, legs = _two_wallets_and_a_transfer()

    counts = count_violations(log.events, log.sent, [b"poison"], [b"poison"], legs, {"table": log.table},
                              log.sent | set(legs))

    violations = {name: n for name, n in counts.items()
                  if name not in {"commands_sent", "outcome_events", "poison_sent", "legs_expected", "wallets"} and n}
    assert violations == {}
    assert counts["legs_expected"] == 1 and counts["wallets"] == 2


def test_a_deposit_decided_twice_counts_a_doubled_outcome_a_forgotten_id_and_money_the_table_lacks() -> None:
    log, legs = _two_wallets_and_a_transfer()
    deposit = c.Deposit(command_id="d-1", wallet_id="wa", timestamp_ms=NOW_MS, amount_minor=50, currency="EUR")
    log.decide(deposit)
    table_before_the_repeat = dict(log.table)
    # What a worker that lost its dedupe table does with a command it had decided: decide it again.
    log.decide(deposit)

    counts = count_violations(log.events, log.sent, [], [], legs, {"table": table_before_the_repeat},
                              (log.sent | set(legs)) - {"d-1"})

    assert counts["commands_with_several_outcomes"] == 1 and counts["extra_outcome_events"] == 1
    assert counts["decided_ids_missing_from_committed_dedupe_table"] == 1
    assert counts["wallets_with_broken_hash_chain"] == 0  # the second Deposited chains on the first: valid links
    assert counts["applied_events_decided_on_a_stale_state"] == 0
    # The log says 50 more was deposited than the table holds.
    assert counts["money_created_by_table_minor"] == -50
    assert counts["wallets_where_table_differs_from_replay"] == 1


def test_lost_and_doubled_side_outputs_are_counted() -> None:
    log, legs = _two_wallets_and_a_transfer()
    log.sent.add("never-decided")

    counts = count_violations(log.events, log.sent, [b"p1", b"p1", b"stray"], [b"p1", b"p2"], [],
                              {"table": log.table}, log.sent)

    assert counts["commands_without_outcome"] == 1
    assert counts["poison_missing_from_dlq"] == 1 and counts["poison_in_dlq_twice_or_more"] == 1
    assert counts["dlq_records_not_poison"] == 1
    assert counts["legs_missing"] == 1


def test_a_stuck_transfer_counts_as_in_transit_and_keeps_money_conserved() -> None:
    log, _ = _two_wallets_and_a_transfer()
    credit = log.events.pop()  # the credit leg's outcome never happened
    log.table["wb"] = decide_and_evolve(None, c.OpenWallet(command_id="open-wb", wallet_id="wb", timestamp_ms=NOW_MS,
                                                           owner_id="o", currency="EUR"), NOW_MS)[1]
    log.table["wb"] = decide_and_evolve(log.table["wb"], c.Deposit(command_id="fund-wb", wallet_id="wb",
                                                                   timestamp_ms=NOW_MS, amount_minor=1_000,
                                                                   currency="EUR"), NOW_MS)[1]

    counts = count_violations(log.events, log.sent, [], [], [credit.command_id], {"table": log.table}, log.sent)

    assert counts["transfers_stuck_in_transit"] == 1
    assert counts["money_created_by_table_minor"] == 0


def test_credit_leg_outcomes_count_toward_the_benchmark_tally() -> None:
    log, _ = _two_wallets_and_a_transfer()
    tally = _Tally("t-")

    for offset, event in enumerate(log.events):
        tally.add(event, NOW_MS + offset)

    assert identity.credit_command_id("wa", "t-1", log.events[-2].timestamp_ms) == log.events[-1].command_id
    assert (tally.public, tally.debits, tally.legs) == (1, 1, 1)


def test_a_decision_on_a_state_that_lost_an_event_breaks_the_chain_and_repeats_a_version() -> None:
    log, legs = _two_wallets_and_a_transfer()
    before_deposit = log.table["wa"]
    log.decide(c.Deposit(command_id="d-1", wallet_id="wa", timestamp_ms=NOW_MS, amount_minor=50, currency="EUR"))
    # A worker whose table lost the deposit decides the next command on the state before it.
    log.table["wa"] = before_deposit
    log.decide(c.Withdraw(command_id="w-1", wallet_id="wa", timestamp_ms=NOW_MS, amount_minor=20, currency="EUR"))

    counts = count_violations(log.events, log.sent, [], [], legs, {"table": log.table}, log.sent | set(legs))

    assert counts["applied_events_decided_on_a_stale_state"] == 1
    assert counts["wallets_with_broken_hash_chain"] == 1
    assert counts["commands_with_several_outcomes"] == 0
