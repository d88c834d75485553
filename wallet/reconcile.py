"""`wallet reconcile`: compare every copy of every wallet, verify every hash chain and the conservation law.

Sources, wallet by wallet:
- `replay`: a fold of `wallet.events` (the truth) with `app.domain.ledger.replay`;
- `table`:  the processor's RocksDB stores under `<state_dir>/processor/p<N>`, opened read-only;
- `mysql`:  the `wallets` row, and the `ledger_entries` rows against the applied events (version, hash,
            balance after) on the primary; and the `transfers` rows, one per transfer (source, transfer id,
            debit time: `transfers_in_log`), against the status the log gives each;
- `redis`:  the `wallet:<id>` hash.
Each difference is printed; the exit status is 1 when there is any. Run it on a quiet system: a copy
that is merely behind (a sink still catching up) is reported as a difference too.

Money in transit (a transfer debited at its source, neither credited at its destination nor refunded)
satisfies conservation, but a transfer in transit for longer than `transfer_in_transit_max_s` is stuck: its
credit leg is not arriving. Each one is a difference, named with its wallets, amount and age.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

from app import identity
from app.domain import events as e
from app.domain.effects import money_effect
from app.domain.errors import ChainBroken, DomainError
from app.domain.ledger import replay, verify_chain
from app.domain.state import WalletState
from app.settings import Settings
from readside.readmodel import DEBITED_AT_UNKNOWN_MS

# The wallet fields every copy must agree on (minor units where amounts).
COMPARED_FIELDS = ("version", "balance_minor", "held_minor", "available_minor", "currency", "status")
# The last run's verdict, read by the worker's metrics (app.metrics.ReconcileResult).
RESULT_FILE = "reconcile-last.json"
# Wallets per MySQL/Redis read round trip.
READ_CHUNK_WALLETS = 1_000


@dataclass
class Report:
    wallets: int = 0
    events: int = 0
    differences: list[str] = field(default_factory=list)

    def differ(self, text: str) -> None:
        self.differences.append(text)


def _position(state: WalletState) -> dict[str, object]:
    return {"version": state.version, "balance_minor": state.balance_minor, "held_minor": state.held_minor,
            "available_minor": state.available_minor, "currency": state.currency, "status": state.status}


def _compare(report: Report, source: str, wallet_id: str, expected: dict[str, object],
             found: dict[str, object] | None) -> None:
    if found is None:
        report.differ(f"{wallet_id}: missing in {source}")
        return
    for name in COMPARED_FIELDS:
        if name in found and str(found[name]) != str(expected[name]):
            report.differ(f"{wallet_id}: {source} {name}={found[name]} but the event log says {expected[name]}")


# A transfer: its source wallet, its id and its debit's time (ms). One id may name transfers of several
# sources (ids are unique per source's partition) and one source's id again after the command retention.
TransferKey = tuple[str, str, int]


def in_transit(events: list[e.EventBase]) -> list[e.TransferDebited]:
    """The debits of the transfers neither credited nor refunded in `events`, oldest first."""
    debits, settled = transfers_in_log(events)
    return unsettled_debits(debits, settled)


def unsettled_debits(debits: dict[TransferKey, e.TransferDebited],
                     settled: dict[TransferKey, str]) -> list[e.TransferDebited]:
    """The debits of `debits` no leg of `settled` settled, oldest first."""
    return sorted((debit for key, debit in debits.items() if key not in settled),
                  key=lambda debit: (debit.timestamp_ms, debit.transfer_id, debit.wallet_id))


def transfers_in_log(events: list[e.EventBase]) -> tuple[dict[TransferKey, e.TransferDebited], dict[TransferKey, str]]:
    """The transfers of `events`: their debits by key, and the status each settled one has ("completed" or
    "refunded", by the key settled_debit gives its leg). The legs of a transfer live on different partitions,
    so a credit may come before its debit in `events`."""
    debits: dict[TransferKey, e.TransferDebited] = {}
    legs: list[e.TransferCredited | e.TransferRefunded] = []
    refusals: dict[TransferKey, int] = {}
    for event in events:
        in_transit_minor = money_effect(event).in_transit_minor
        if in_transit_minor > 0:
            debits[(event.wallet_id, event.transfer_id, event.timestamp_ms)] = event
        elif in_transit_minor < 0:
            legs.append(event)
        elif isinstance(event, e.TransferCreditRejected):
            debited_at_ms = identity.leg_decided_at_ms(event.command_id, identity.CREDIT, event.source_wallet_id,
                                                       event.transfer_id)
            if debited_at_ms is not None:
                refusals[(event.source_wallet_id, event.transfer_id, event.timestamp_ms)] = debited_at_ms
    latest: dict[tuple[str, str], int] = {}
    for source, transfer_id, debited_at_ms in debits:
        latest[(source, transfer_id)] = max(debited_at_ms, latest.get((source, transfer_id), debited_at_ms))
    settled = {settled_debit(leg, refusals, latest): "completed" if isinstance(leg, e.TransferCredited) else "refunded"
               for leg in legs}
    return debits, settled


def settled_debit(leg: e.TransferCredited | e.TransferRefunded, refusals: dict[TransferKey, int],
                  latest: dict[tuple[str, str], int]) -> TransferKey:
    """The transfer a credit or refund leg settles. A credit leg's id names its debit's time; a refund's names
    the refusal of the credit, whose id (a `TransferCreditRejected` in `refusals`: its source, transfer id
    and time -> the debit time its id names) names the debit's. A leg under the earlier id form names no time:
    it settles the latest debit of its source and transfer id (`latest`), as the MySQL sink does."""
    if isinstance(leg, e.TransferCredited):
        source = leg.source_wallet_id
        debited_at_ms = identity.leg_decided_at_ms(leg.command_id, identity.CREDIT, source, leg.transfer_id)
    else:
        source = leg.wallet_id
        refused_at_ms = identity.leg_decided_at_ms(leg.command_id, identity.REFUND, source, leg.transfer_id)
        debited_at_ms = None if refused_at_ms is None else refusals.get((source, leg.transfer_id, refused_at_ms))
    if debited_at_ms is None:
        debited_at_ms = latest.get((source, leg.transfer_id), DEBITED_AT_UNKNOWN_MS)
    return source, leg.transfer_id, debited_at_ms


def _conservation(report: Report, events: list[e.EventBase], states: dict[str, WalletState],
                  unsettled: list[e.TransferDebited]) -> None:
    """Σ balances + in transit = Σ deposits − Σ withdrawals − Σ captures, per currency (minor units)."""
    flows: dict[str, int] = defaultdict(int)
    for event in events:
        external_minor = money_effect(event).external_minor
        if external_minor:
            flows[event.currency] += external_minor
    balances: dict[str, int] = defaultdict(int)
    for state in states.values():
        balances[state.currency] += state.balance_minor
    transit: dict[str, int] = defaultdict(int)
    for debit in unsettled:
        transit[debit.currency] += debit.amount_minor
    for currency in sorted(set(flows) | set(balances) | set(transit)):
        left = balances[currency] + transit[currency]
        if left != flows[currency]:
            report.differ(f"conservation {currency}: balances {balances[currency]} + in transit "
                          f"{transit[currency]} != deposits - withdrawals - captures {flows[currency]}")


def stuck_in_transit(unsettled: list[e.TransferDebited], now_ms: int, max_s: int) -> list[str]:
    """A difference for each transfer of `unsettled` (oldest first) debited more than `max_s` seconds before
    `now_ms` (ms since the epoch)."""
    stuck = []
    for debit in unsettled:
        age_s = (now_ms - debit.timestamp_ms) // 1000
        if age_s <= max_s:
            break  # oldest first: the rest are younger
        stuck.append(f"transfer {debit.transfer_id}: in transit for {age_s} s (transfer_in_transit_max_s is "
                     f"{max_s}): {debit.amount_minor} minor units of {debit.currency} debited from "
                     f"{debit.wallet_id}, neither credited to {debit.destination_wallet_id} nor refunded")
    return stuck


def _table_states(settings: Settings) -> dict[str, WalletState] | None:
    """Every wallet of the processor stores found under state_dir (None when there are none here)."""
    from tables.wallet_store import decode_state, open_read_only

    root = settings.state_dir / "processor"
    # Every processor worker on this host keeps its stores under its member name; the freshest copy of each
    # partition (owner or standby: the highest events offset) is the one compared.
    paths = []
    for partition in range(settings.partitions):
        copies = [path for path in root.glob(f"*/p{partition}") if path.is_dir()]
        if copies:
            paths.append(max(copies, key=_events_offset))
    if not paths:
        return None
    states: dict[str, WalletState] = {}
    for path in paths:
        db = open_read_only(path)
        try:
            for key, value in db.items(from_key=b"w/"):
                if not key.startswith(b"w/"):
                    break
                wallet_id = key[2:].decode()
                states[wallet_id] = decode_state(wallet_id, value)
        finally:
            db.close()
    return states


def _events_offset(path) -> int:
    from tables.wallet_store import open_read_only

    db = open_read_only(path)
    try:
        raw = db.get(b"m/events_offset")
        return int(raw) if raw is not None else 0
    finally:
        db.close()


async def _mysql(settings: Settings, wallet_ids: list[str]):
    from sqlalchemy import select

    from readside.mysql import make_engine
    from readside.readmodel import ledger_entries, transfers, wallets

    engine = make_engine(settings.mysql_dsn)
    rows: dict[str, dict] = {}
    entries: dict[str, dict[int, tuple]] = defaultdict(dict)
    statuses: dict[TransferKey, str] = {}
    try:
        async with engine.connect() as conn:
            for row in (await conn.execute(select(wallets))).mappings():
                rows[row["wallet_id"]] = dict(row)
            query = select(ledger_entries.c.wallet_id, ledger_entries.c.version, ledger_entries.c.hash,
                           ledger_entries.c.balance_after_minor)
            for wallet_id, version, hash_, balance in (await conn.execute(query)):
                entries[wallet_id][version] = (hash_, balance)
            query = select(transfers.c.source_wallet_id, transfers.c.transfer_id, transfers.c.debited_at_ms,
                           transfers.c.status)
            for source, transfer_id, debited_at_ms, status in (await conn.execute(query)):
                statuses[(source, transfer_id, debited_at_ms)] = status
    finally:
        await engine.dispose()
    return rows, entries, statuses


def _compare_transfers(report: Report, expected: dict[TransferKey, str], found: dict[TransferKey, str]) -> None:
    """A difference for each transfer whose MySQL `transfers` row is missing, extra, or has another status
    than the event log gives it (`expected`: pending, completed or refunded by transfer key)."""
    for key in sorted(set(expected) | set(found)):
        source, transfer_id, debited_at_ms = key
        name = f"mysql transfers: {transfer_id} from {source} debited at {debited_at_ms}"
        if key not in found:
            report.differ(f"{name} is missing (the event log says {expected[key]})")
        elif key not in expected:
            report.differ(f"{name} is {found[key]} but not in the event log")
        elif found[key] != expected[key]:
            report.differ(f"{name} is {found[key]} but the event log says {expected[key]}")


async def _redis(settings: Settings, wallet_ids: list[str]) -> tuple[dict[str, dict], set[str]]:
    from readside.redis import WALLET_KEY_PREFIX, make_client, wallet_key

    client = make_client(settings.redis_url)
    found: dict[str, dict] = {}
    try:
        for start in range(0, len(wallet_ids), READ_CHUNK_WALLETS):
            chunk = wallet_ids[start:start + READ_CHUNK_WALLETS]
            async with client.pipeline(transaction=False) as pipe:
                for wallet_id in chunk:
                    pipe.hgetall(wallet_key(wallet_id))
                for wallet_id, values in zip(chunk, await pipe.execute()):
                    if values:
                        found[wallet_id] = values
        keys = {key[len(WALLET_KEY_PREFIX):] async for key in client.scan_iter(match=f"{WALLET_KEY_PREFIX}*",
                                                                              count=1000)}
    finally:
        await client.aclose()
    return found, keys


async def reconcile(settings: Settings, *, check_table: bool = True, now_ms: int | None = None) -> Report:
    """Compare replay, table, MySQL and Redis wallet by wallet; verify chains and conservation; find transfers
    in transit for longer than `transfer_in_transit_max_s` at `now_ms` (ms since the epoch; default: now)."""
    from wallet.rebuild import read_event_batches

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    report = Report()
    events: list[e.EventBase] = []
    async for items in read_event_batches(settings):
        events.extend(item.event for item in items)
    report.events = len(events)
    by_wallet: dict[str, list[e.EventBase]] = defaultdict(list)
    for event in events:
        by_wallet[event.wallet_id].append(event)
    try:
        states = replay(events)
    except DomainError as exc:
        report.differ(f"the event log does not replay: {exc}")
        return report
    report.wallets = len(states)
    for wallet_id, stream in by_wallet.items():
        try:
            verify_chain(stream)
        except ChainBroken as exc:
            report.differ(f"{wallet_id}: hash chain broken: {exc}")
    debits, settled = transfers_in_log(events)
    unsettled = unsettled_debits(debits, settled)
    _conservation(report, events, states, unsettled)
    report.differences.extend(stuck_in_transit(unsettled, now_ms, settings.transfer_in_transit_max_s))

    wallet_ids = sorted(states)
    if check_table:
        table = await asyncio.to_thread(_table_states, settings)
        if table is None:
            report.differ(f"table: no processor store under {settings.state_dir / 'processor'} "
                          "(run reconcile where the processor keeps its state, or pass --no-table)")
        else:
            for wallet_id in wallet_ids:
                found = table.get(wallet_id)
                _compare(report, "table", wallet_id, _position(states[wallet_id]),
                         None if found is None else _position(found))
                if found is not None and found.last_hash != states[wallet_id].last_hash:
                    report.differ(f"{wallet_id}: table last_hash differs from the event log")
            for wallet_id in sorted(set(table) - set(states)):
                report.differ(f"{wallet_id}: in the table but not in the event log")

    rows, entries, transfer_statuses = await _mysql(settings, wallet_ids)
    _compare_transfers(report, {**{key: "pending" for key in debits}, **settled}, transfer_statuses)
    for wallet_id in wallet_ids:
        state = states[wallet_id]
        row = rows.get(wallet_id)
        _compare(report, "mysql", wallet_id, _position(state), None if row is None else {
            "version": row["version"], "balance_minor": row["balance_minor"], "held_minor": row["held_minor"],
            "available_minor": row["available_minor"], "currency": row["currency"], "status": row["status"]})
        if row is not None and row["last_hash"] != state.last_hash:
            report.differ(f"{wallet_id}: mysql last_hash differs from the event log")
        expected = {ev.version: (ev.hash, ev.balance_after_minor) for ev in by_wallet[wallet_id]
                    if e.is_applied(ev)}
        found_entries = entries.get(wallet_id, {})
        for version in sorted(set(expected) | set(found_entries)):
            if version not in found_entries:
                report.differ(f"{wallet_id}: mysql ledger_entries lacks version {version}")
            elif version not in expected:
                report.differ(f"{wallet_id}: mysql ledger_entries has version {version} the log does not")
            elif found_entries[version] != expected[version]:
                report.differ(f"{wallet_id}: mysql ledger entry {version} (hash, balance after) "
                              f"{found_entries[version]} != {expected[version]}")
    for wallet_id in sorted(set(rows) - set(states)):
        report.differ(f"{wallet_id}: in mysql wallets but not in the event log")

    hashes, keys = await _redis(settings, wallet_ids)
    for wallet_id in wallet_ids:
        values = hashes.get(wallet_id)
        _compare(report, "redis", wallet_id, _position(states[wallet_id]), None if values is None else {
            "version": values.get("version"), "balance_minor": values.get("balance"),
            "held_minor": values.get("held"), "available_minor": values.get("available"),
            "currency": values.get("currency"), "status": values.get("status")})
    for wallet_id in sorted(keys - set(states)):
        report.differ(f"{wallet_id}: in redis but not in the event log")
    return report


def record_result(settings: Settings, differences: int, now_s: float) -> None:
    """Keep the last run's verdict in `<state_dir>/reconcile-last.json` for the worker's metrics."""
    path = settings.state_dir / RESULT_FILE
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = {"finished_at_s": now_s, "differences": differences,
              "last_success_at_s": now_s if differences == 0 else previous.get("last_success_at_s", 0)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def main(settings: Settings, *, check_table: bool = True) -> int:
    report = asyncio.run(reconcile(settings, check_table=check_table))
    record_result(settings, len(report.differences), time.time())
    for line in report.differences:
        print(f"DIFF {line}")
    verdict = "agree" if not report.differences else f"{len(report.differences)} differences"
    print(f"reconcile: {report.wallets:,} wallets, {report.events:,} events: {verdict}",
          file=sys.stdout if not report.differences else sys.stderr)
    return 0 if not report.differences else 1
