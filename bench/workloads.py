"""Workloads shared by the benchmarks and the system tests, so that a benchmark's checks and a test's are run
on the same mix."""

from __future__ import annotations

import argparse
import random
import time

from app.domain import commands as c


def offline_options(doc: str, commands: int, wallets: int, rounds: int) -> argparse.Namespace:
    """The command line of a benchmark that runs the processor bench's mix without Kafka (bench/decide_offline.py,
    bench/codec_bench.py): `--commands`, `--wallets`, `--rounds` (these defaults) and `--json`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--commands", type=int, default=commands)
    parser.add_argument("--wallets", type=int, default=wallets)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


# What each benchmark wallet is funded with: enough that the workload's withdrawals and transfers mostly apply.
FUNDING_MINOR = 1_000_000


def open_and_fund(wallets: list[str]) -> list[c.CommandBase]:
    """The benchmarks' untimed set-up: open every wallet (`open-<id>`), then fund it (`fund-<id>`)."""
    ts = int(time.time() * 1000)
    return ([c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=ts, owner_id="bench", currency="EUR")
             for w in wallets]
            + [c.Deposit(command_id=f"fund-{w}", wallet_id=w, timestamp_ms=ts, amount_minor=FUNDING_MINOR,
                         currency="EUR") for w in wallets])


def crash_mix(rng: random.Random, count: int, wallets_count: int, prefix: str) -> tuple[list[str], list[c.CommandBase]]:
    """The crash test's mix, `count` commands over `wallets_count` wallets named `<prefix>-...`: each wallet
    opened and seeded with 1,000.00, then 30% deposits, 30% withdrawals, 25% transfers (some to a wallet that
    does not exist), holds placed, captured and released."""
    ts = int(time.time() * 1000)
    wallets = [f"{prefix}-{i:04d}-{rng.randrange(10**6):06d}" for i in range(wallets_count)]
    commands: list[c.CommandBase] = []
    for w in wallets:
        commands.append(c.OpenWallet(command_id=f"open-{w}", wallet_id=w, timestamp_ms=ts, owner_id="crash",
                                     currency="EUR"))
        commands.append(c.Deposit(command_id=f"seed-{w}", wallet_id=w, timestamp_ms=ts, amount_minor=100_000,
                                  currency="EUR"))
    open_holds: list[tuple[str, str]] = []
    for i in range(count - len(commands)):
        w = rng.choice(wallets)
        roll = rng.random()
        cid = f"cmd-{i}"
        if roll < 0.30:
            commands.append(c.Deposit(command_id=cid, wallet_id=w, timestamp_ms=ts,
                                      amount_minor=rng.randint(1, 5_000), currency="EUR"))
        elif roll < 0.60:
            commands.append(c.Withdraw(command_id=cid, wallet_id=w, timestamp_ms=ts,
                                       amount_minor=rng.randint(1, 8_000), currency="EUR"))
        elif roll < 0.85:
            destination = rng.choice(wallets + [f"{prefix}-missing-wallet"])
            commands.append(c.Transfer(command_id=cid, wallet_id=w, timestamp_ms=ts, destination_wallet_id=destination,
                                       amount_minor=rng.randint(1, 6_000), currency="EUR"))
        elif roll < 0.93 or not open_holds:
            hold_id = f"h{i}"
            open_holds.append((w, hold_id))
            commands.append(c.PlaceHold(command_id=cid, wallet_id=w, timestamp_ms=ts, hold_id=hold_id,
                                        amount_minor=rng.randint(1, 3_000), currency="EUR",
                                        expires_at_ms=ts + 3_600_000))
        else:
            hw, hold_id = open_holds.pop(rng.randrange(len(open_holds)))
            if rng.random() < 0.5:
                commands.append(c.CaptureHold(command_id=cid, wallet_id=hw, timestamp_ms=ts, hold_id=hold_id,
                                              amount_minor=None))
            else:
                commands.append(c.ReleaseHold(command_id=cid, wallet_id=hw, timestamp_ms=ts, hold_id=hold_id))
    return wallets, commands
