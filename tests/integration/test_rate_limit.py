"""The per-key rate limit on the real Redis: GCRA burst and refill, one script call that also reads and
claims, auto-pipelined concurrent calls, and recovery when Redis forgets its scripts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from readside.redis import make_client
from web.ratelimit import Passage, RateLimiter


@pytest.fixture
async def redis_client(stack):
    client = make_client(stack.redis_url, 16)
    yield client
    await client.aclose()


def _key() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def test_a_key_gets_its_burst_at_once_then_waits_for_the_rate(redis_client):
    limiter = RateLimiter(redis_client, per_s=2, burst=5)
    key = _key()
    passages = [await limiter.pass_(key) for _ in range(7)]
    assert [p.retry_after_s for p in passages[:5]] == [0] * 5
    assert all(p.retry_after_s >= 1 for p in passages[5:])
    assert (await limiter.pass_(_key())).retry_after_s == 0, "another key has its own budget"


async def test_concurrent_calls_are_pipelined_and_each_counted_once(redis_client):
    limiter = RateLimiter(redis_client, per_s=1, burst=100)
    key = _key()
    passages = await asyncio.gather(*(limiter.pass_(key) for _ in range(150)))
    assert sum(p.retry_after_s == 0 for p in passages) == 100
    assert sum(p.retry_after_s > 0 for p in passages) == 50


async def test_the_gate_reads_the_wallet_and_claims_a_key_for_one_wallet_only(redis_client):
    limiter = RateLimiter(redis_client, per_s=1000, burst=1000)
    wallet_key, claim_key = f"wallet:{_key()}", f"idempotency:{_key()}"
    await redis_client.hset(wallet_key, mapping={"balance": "5", "currency": "EUR"})
    first = await limiter.pass_(_key(), wallet_key=wallet_key, claim_key=claim_key, claim_value="w-1",
                                claim_ttl_s=60)
    assert first.wallet == {"balance": "5", "currency": "EUR"} and first.claim_owner == "w-1"
    second = await limiter.pass_(_key(), claim_key=claim_key, claim_value="w-2", claim_ttl_s=60)
    assert second.claim_owner == "w-1", "the first wallet keeps the key"
    assert 0 < await redis_client.ttl(claim_key) <= 60


async def test_the_gate_reloads_its_script_after_redis_flushed_it(redis_client):
    limiter = RateLimiter(redis_client, per_s=1000, burst=1000)
    assert (await limiter.pass_(_key())).redis_ok
    await redis_client.script_flush()
    again = await limiter.pass_(_key())
    assert again.redis_ok and again.retry_after_s == 0


async def test_the_limit_fails_open_when_redis_does_not_answer(stack):
    from tests.harness import free_port

    client = make_client(f"redis://127.0.0.1:{free_port()}/0", 4)
    try:
        passage = await RateLimiter(client, per_s=1, burst=1).pass_(_key())
    finally:
        await client.aclose()
    assert (passage.redis_ok, passage.retry_after_s) == (False, 0)


async def test_a_call_that_does_not_charge_claims_and_reads_without_spending_the_budget(redis_client):
    limiter = RateLimiter(redis_client, per_s=1, burst=2)
    key, claim_key = _key(), f"idempotency:{_key()}"
    assert (await limiter.pass_(key)).retry_after_s == 0  # charged: one of two left
    uncharged = [await limiter.pass_(key, charge=False, claim_key=claim_key, claim_value="w-1", claim_ttl_s=60)
                 for _ in range(5)]
    assert all(p.retry_after_s == 0 and p.claim_owner == "w-1" for p in uncharged)
    assert (await limiter.pass_(key)).retry_after_s == 0, "the uncharged calls left the second request"
    assert (await limiter.pass_(key)).retry_after_s >= 1
    assert await limiter.pass_(key, charge=False) == Passage(), "nothing to do: no round trip, nothing refused"


async def test_the_gate_connects_again_after_redis_dropped_its_connection(redis_client):
    limiter = RateLimiter(redis_client, per_s=1000, burst=1000)
    assert (await limiter.pass_(_key())).redis_ok
    host, port = limiter._connection._transport.get_extra_info("sockname")[:2]
    # Only this limiter's connection: the stack's Redis serves other tests and benchmarks.
    await redis_client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    deadline = asyncio.get_running_loop().time() + 10
    # A call written before the close is noticed fails open (counted, let through); a later one reconnects.
    while not (passage := await limiter.pass_(_key(), wallet_key=f"wallet:{_key()}")).redis_ok:
        assert asyncio.get_running_loop().time() < deadline, "the gate never connected again"
        await asyncio.sleep(0.05)
    assert passage.wallet == {} and passage.retry_after_s == 0
    await limiter.aclose()
