"""The processor's table: one RocksDB database per owned partition, holding only committed state.

What is stored (bytes keys, raw mode):
- `w/<wallet_id>`                       the wallet's state (JSON of `WalletState`)
- `c/<command_id>`                      a seen command: `<decided_at_ms>:<fingerprint>`, then `\n` and the Avro
                                        bytes of its outcome event (the first answer, repeated to a retry over
                                        HTTP), kept for the retention window. `decided_at_ms` is the
                                        processor's clock when it first decided the command (the outcome
                                        event's `timestamp_ms`), never the producer's timestamp
- `x/<decided_at_ms:019d>/<command_id>` expiry index of the seen commands
- `h/<expires_at_ms:019d>/<wallet_id>/<hold_id>`  open holds by expiry time (the expiry timer's index); the
                                        value is the id of the command that placed the hold (the
                                        expiry release is named by hold id and expiry, app/identity.py)
  (19 digits: every non-negative Avro long sorts in numeric order)
- `m/events_offset`                     next offset of this partition of `wallet.events` reflected here
- `m/gauges`                            business figures of this partition, folded from its events:
                                        money in transit per currency and open holds (JSON)

The changelog of this table is `wallet.events` itself: the store is a fold of the event log, written
only after the Kafka transaction that produced the events committed, together with the offset marker in
one atomic RocksDB write batch. After a crash the store is behind, never ahead: `restore` replays the
events partition from the marker (read_committed) and it equals the committed log again. This is why
a kill -9 cannot leave state from an aborted transaction behind (see docs/DESIGN.md).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rocksdict import AccessType, BlockBasedOptions, Options, Rdict, WriteBatch

from app.domain.state import WalletState, build_hold, build_state

_MARKER = b"m/events_offset"
# Committed wallet states kept decoded in memory: a hit skips a RocksDB read and a JSON decode.
STATE_CACHE_SIZE_MAX = 200_000
# Bits per key of the bloom filter in each table file. Every new command's id is looked up (`c/<id>`) and is
# almost never there: with a filter such a miss skips the file's index and data blocks (5.6 -> 2.2 us here).
BLOOM_BITS_PER_KEY = 10
_GAUGES = b"m/gauges"


# The partition's figures (`m/gauges`) as compact JSON: `json.dumps` with `separators` builds an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# JSON's own string encoder (the one `json.dumps` uses with `ensure_ascii`, in C).
_json_string = encode_basestring_ascii


def encode_state(state: WalletState) -> bytes:
    """The state's record: compact JSON `[owner_id, status, currency, balance_minor, held_minor,
    overdraft_limit_minor, version, last_hash, [[hold_id, amount_minor, expires_at_ms], ...]]` (the wallet id is
    the key's). Formatted directly, byte for byte what `json.dumps(..., separators=(",", ":"))` writes for it,
    at half its cost (one state per wallet per batch, in every store write)."""
    holds = ",".join([f"[{_json_string(h.hold_id)},{h.amount_minor},{h.expires_at_ms}]"
                      for h in state.holds]) if state.holds else ""
    return (f"[{_json_string(state.owner_id)},{_json_string(state.status)},{_json_string(state.currency)},"
            f"{state.balance_minor},{state.held_minor},{state.overdraft_limit_minor},{state.version},"
            f"{_json_string(state.last_hash)},[{holds}]]").encode()


def decode_state(wallet_id: str, raw: bytes) -> WalletState:
    owner, status, currency, balance, held, overdraft, version, last_hash, holds = json.loads(raw)
    return build_state(
        wallet_id=wallet_id, owner_id=owner, status=status, currency=currency, balance_minor=balance,
        held_minor=held, overdraft_limit_minor=overdraft, version=version, last_hash=last_hash,
        holds=tuple(build_hold(hold_id=h[0], amount_minor=h[1], expires_at_ms=h[2]) for h in holds),
    )


def _hold_key(wallet_id: str, hold_id: str, expires_at_ms: int) -> bytes:
    return f"h/{expires_at_ms:019d}/{wallet_id}/{hold_id}".encode()


@dataclass
class BatchChanges:
    """What one processed batch changes in one partition's store; applied after the commit."""

    wallets: dict[str, WalletState] = field(default_factory=dict)
    commands: dict[str, tuple[int, str]] = field(default_factory=dict)  # command_id -> (decided_at_ms, fingerprint)
    outcomes: dict[str, bytes] = field(default_factory=dict)  # command_id -> its outcome event (wire bytes)
    # Ordered (put?, key) operations on the hold index: order matters when one batch places,
    # captures and places again a hold of the same id.
    hold_ops: list[tuple[bool, bytes, bytes]] = field(default_factory=list)  # (put?, key, placing command id)
    commands_expired: list[tuple[bytes, bytes]] = field(default_factory=list)
    events_offset: int | None = None
    gauges: dict | None = None  # the partition's figures after the batch, when it changed them

    def __bool__(self) -> bool:
        return bool(self.wallets or self.commands or self.commands_expired or self.events_offset is not None)


class PartitionStore:
    """Committed state of one partition, with a read-through overlay for the batch being decided."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        tables = BlockBasedOptions()
        tables.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
        options.set_block_based_table_factory(tables)
        self._db = Rdict(str(path), options)
        self.changes = BatchChanges()
        self._cache: dict[str, WalletState] = {}  # committed states only (filled on read and on apply)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ reads (overlay first)

    def wallet(self, wallet_id: str) -> WalletState | None:
        found = self.changes.wallets.get(wallet_id) or self._cache.get(wallet_id)
        if found is not None:
            return found
        raw = self._db.get(b"w/" + wallet_id.encode())
        if raw is None:
            return None
        state = decode_state(wallet_id, raw)
        self._remember(state)
        return state

    def committed_wallet(self, wallet_id: str) -> WalletState | None:
        """The wallet as of the last committed batch (never a staged, maybe-aborted state)."""
        found = self._cache.get(wallet_id)
        if found is not None:
            return found
        raw = self._db.get(b"w/" + wallet_id.encode())
        return None if raw is None else decode_state(wallet_id, raw)

    def _remember(self, state: WalletState) -> None:
        if len(self._cache) >= STATE_CACHE_SIZE_MAX:
            self._cache.clear()  # bounded; the store still has everything
        self._cache[state.wallet_id] = state

    def seen_command(self, command_id: str) -> str | None:
        """`"<decided_at_ms>:<fingerprint>"` of a command already decided, or None."""
        found = self.changes.commands.get(command_id)
        if found is not None:
            return f"{found[0]}:{found[1]}"
        raw = self._db.get(b"c/" + command_id.encode())
        return None if raw is None else raw.split(b"\n", 1)[0].decode()

    def first_outcome(self, command_id: str) -> bytes | None:
        """The outcome event (wire bytes) of a command already decided, or None when not kept."""
        found = self.changes.outcomes.get(command_id)
        if found is not None:
            return found
        raw = self._db.get(b"c/" + command_id.encode())
        if raw is None or b"\n" not in raw:
            return None
        return raw.split(b"\n", 1)[1] or None

    @property
    def events_offset(self) -> int:
        raw = self._db.get(_MARKER)
        return 0 if raw is None else int(raw)

    # ------------------------------------------------------------ staging

    def stage(self, before: WalletState | None, after: WalletState | None, command_id: str,
              decided_at_ms: int, fingerprint: str, outcome: bytes = b"") -> None:
        """Record one decided command: its seen-marker with its outcome event (wire bytes) and the
        wallet's new state (if it changed). `decided_at_ms` is the processor's clock at the decision."""
        self.stage_wallet(before, after, command_id)
        self.changes.commands[command_id] = (decided_at_ms, fingerprint)
        if outcome:
            self.changes.outcomes[command_id] = outcome

    def stage_wallet(self, before: WalletState | None, after: WalletState | None, command_id: str) -> None:
        """Record the wallet's new state (if it changed) and its hold index; `command_id` caused the change."""
        if after is None or after is before:
            return
        self.changes.wallets[after.wallet_id] = after
        if before is not None and after.holds is before.holds:
            return  # the holds did not change (evolve keeps the same tuple): nothing to index
        before_holds = {h.hold_id: h for h in before.holds} if before is not None else {}
        after_holds = {h.hold_id for h in after.holds}
        for hold in after.holds:
            if hold.hold_id not in before_holds:
                self.changes.hold_ops.append(
                    (True, _hold_key(after.wallet_id, hold.hold_id, hold.expires_at_ms), command_id.encode()))
        for hold_id, hold in before_holds.items():
            if hold_id not in after_holds:
                self.changes.hold_ops.append((False, _hold_key(after.wallet_id, hold_id, hold.expires_at_ms), b""))

    def gauges(self) -> dict:
        """{"in_transit": {currency: minor units}, "holds_open": count} after the staged batch."""
        if self.changes.gauges is not None:
            return self.changes.gauges
        raw = self._db.get(_GAUGES)
        return json.loads(raw) if raw is not None else {"in_transit": {}, "holds_open": 0}

    def track(self, event: object, in_transit_delta_minor: int, holds_open_delta: int) -> None:
        """Fold one event's effect on the partition's business figures into the staged batch."""
        if in_transit_delta_minor or holds_open_delta:
            self.track_sums({event.currency: in_transit_delta_minor} if in_transit_delta_minor else {},
                            holds_open_delta)

    def track_sums(self, in_transit_delta_minor: dict[str, int], holds_open_delta: int) -> None:
        """Fold the summed effect of several events on the partition's figures into the staged batch: money in
        transit per currency (minor units; every currency named is written, even at a zero change) and open
        holds. Equals `track` of each event in turn."""
        gauges = self.gauges()
        in_transit = dict(gauges["in_transit"])
        for currency, delta_minor in in_transit_delta_minor.items():
            in_transit[currency] = in_transit.get(currency, 0) + delta_minor
        self.changes.gauges = {"in_transit": in_transit, "holds_open": gauges["holds_open"] + holds_open_delta}

    def discard(self) -> None:
        """Forget the staged batch (its transaction aborted)."""
        self.changes = BatchChanges()

    def apply(self) -> None:
        """Write the staged batch and its offset marker atomically (after the Kafka commit)."""
        changes, self.changes = self.changes, BatchChanges()
        if not changes:
            return
        batch = WriteBatch(raw_mode=True)
        # Expired markers first: a command id seen again in this batch must survive its old marker.
        for index_key, command_key in changes.commands_expired:
            batch.delete(index_key)
            batch.delete(command_key)
        for wallet_id, state in changes.wallets.items():
            batch.put(b"w/" + wallet_id.encode(), encode_state(state))
            self._remember(state)
        outcomes = changes.outcomes
        for command_id, (decided_at_ms, fingerprint) in changes.commands.items():
            key = command_id.encode()
            batch.put(b"c/" + key, b"%d:%s\n%s" % (decided_at_ms, fingerprint.encode(), outcomes.get(command_id, b"")))
            batch.put(b"x/%019d/%s" % (decided_at_ms, key), b"")
        for put, key, placed_by in changes.hold_ops:
            if put:
                batch.put(key, placed_by)
            else:
                batch.delete(key)
        if changes.events_offset is not None:
            batch.put(_MARKER, str(changes.events_offset).encode())
        if changes.gauges is not None:
            batch.put(_GAUGES, _COMPACT_JSON.encode(changes.gauges).encode())
        self._db.write(batch)

    # ------------------------------------------------------------ scans (bounded)

    def due_holds(self, now_ms: int, limit: int) -> Iterator[tuple[str, str, int, str]]:
        """(wallet_id, hold_id, expires_at_ms, placing command id) of open holds with expires_at_ms <= now_ms,
        oldest first, at most `limit`."""
        count = 0
        for key, placed_by in self._db.items(from_key=b"h/"):
            if not key.startswith(b"h/") or count >= limit:
                return
            _, expires, wallet_id, hold_id = key.decode().split("/", 3)
            if int(expires) > now_ms:
                return
            count += 1
            yield wallet_id, hold_id, int(expires), placed_by.decode()

    def expire_commands(self, before_ms: int, limit: int) -> int:
        """Stage the removal of seen-command markers first decided before `before_ms` (processor clock); at
        most `limit`."""
        count = 0
        for key in self._db.keys(from_key=b"x/"):
            if not key.startswith(b"x/") or count >= limit:
                break
            _, timestamp, command_id = key.decode().split("/", 2)
            if int(timestamp) >= before_ms:
                break
            self.changes.commands_expired.append((key, b"c/" + command_id.encode()))
            count += 1
        return count

    def wallets(self) -> Iterator[WalletState]:
        """Every wallet of this partition (for reconcile and strong reads)."""
        for key, value in self._db.items(from_key=b"w/"):
            if not key.startswith(b"w/"):
                return
            yield decode_state(key[2:].decode(), value)


def open_read_only(path: Path) -> Rdict:
    """Open a partition store for reading while its processor runs (secondary instance)."""
    return Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
