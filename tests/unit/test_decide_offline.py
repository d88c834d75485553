"""bench/decide_offline.py decides the whole workload: every command and one credit leg per applied transfer."""

from __future__ import annotations

from app.domain import commands as c
from bench.decide_offline import run
from bench.processor_bench import build_workload


def test_the_offline_decide_bench_decides_every_command_and_its_legs() -> None:
    result = run(count=400, wallets=100, rounds=1)
    _, work = build_workload(400, 100, hot=False)
    transfers = sum(isinstance(command, c.Transfer) for command in work)
    # Funded wallets apply nearly every transfer; each applied one adds its credit leg to the decisions.
    assert 400 < result["decisions"] <= 400 + transfers
    assert result["cpu_us_per_decision"] > 0
