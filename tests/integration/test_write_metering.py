"""Every write attempt is metered by the per-key rate limit, on a real web worker and the real Redis: writes
refused before the gate (a malformed body, an unknown wallet, a transfer to an unknown wallet) count against
the key, get 429 once its budget is spent, and spend the budget that valid writes need too.

The worker serves the API only (no processor): a valid write is published to Kafka and answered 202 with
`wait_ms=0`. Every key is used by one test only, so its budget starts full.

The bound checked is GCRA's own: over any stretch of T seconds a key gets at most `burst + T * per_s`
requests through, whatever they asked. It holds however slow the machine is; before every attempt was
metered, refused requests were free and a burst of them went through far beyond it.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace

import pytest
import redis

from readside.redis import wallet_key
from tests.conftest import prepare_topics
from tests.harness import WorkerProcess, isolated_settings, new_id

RATE_PER_S = 1
BURST = 10
# Bound of the attempts one test makes (a 429 comes after BURST + a few at most, unless requests took ~1 s each).
ATTEMPTS_MAX = 40
HTTP_TIMEOUT_S = 15.0
KEY_NAMES = ("invalid-body", "unknown-wallet", "unknown-destination", "shared-budget", "known-source")


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after: str | None
    body: dict


@dataclass
class Api:
    base: str
    keys: dict[str, str]
    redis_url: str


@pytest.fixture(scope="module")
def api(stack):
    keys = {name: f"{name}-{uuid.uuid4().hex}" for name in KEY_NAMES}
    settings = replace(
        prepare_topics(isolated_settings(stack, "metering", rate_limit_per_s=RATE_PER_S, rate_limit_burst=BURST)),
        api_keys=",".join(f"{key}=wallets:read+wallets:write" for key in keys.values()))
    worker = WorkerProcess(settings, ["web"]).start()
    yield Api(f"http://127.0.0.1:{settings.http_port}", keys, settings.redis_url)
    assert worker.stop() == 0


def post(api: Api, key_name: str, path: str, body: object, *, raw: bytes | None = None) -> Reply:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(api.base + path, data=data, method="POST")
    request.add_header("Authorization", f"Bearer {api.keys[key_name]}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return Reply(response.status, response.headers.get("Retry-After"), json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers.get("Retry-After"), json.loads(error.read()))


def gcra_allowance(elapsed_s: float) -> int:
    """Most requests a key gets through in `elapsed_s` seconds (one more for the edges of the window)."""
    return BURST + math.ceil(elapsed_s * RATE_PER_S) + 1


def burst_until_refused(send) -> tuple[list[int], Reply | None, float]:
    """Call `send()` until a 429 (or ATTEMPTS_MAX): the statuses before it, the 429, and the seconds taken."""
    started = time.monotonic()
    statuses: list[int] = []
    for _ in range(ATTEMPTS_MAX):
        reply = send()
        if reply.status == 429:
            return statuses, reply, time.monotonic() - started
        statuses.append(reply.status)
    return statuses, None, time.monotonic() - started


def assert_rate_limited(reply: Reply | None, statuses: list[int]) -> None:
    assert reply is not None, f"no 429 within {ATTEMPTS_MAX} attempts: {statuses}"
    assert reply.body["code"] == "RATE_LIMITED", reply.body
    assert reply.retry_after is not None and int(reply.retry_after) >= 1


@pytest.fixture
def known_wallet(api):
    """A wallet the API finds (its Redis hash, as the Redis sink writes it), removed afterwards."""
    wallet_id = new_id("known")
    client = redis.Redis.from_url(api.redis_url, decode_responses=True)
    client.hset(wallet_key(wallet_id), mapping={"currency": "EUR", "balance": "1000", "available": "1000",
                                                "held": "0", "version": "2", "status": "ACTIVE",
                                                "owner_id": "o"})
    yield wallet_id
    client.delete(wallet_key(wallet_id))
    client.close()


def test_a_burst_of_invalid_bodies_is_429_once_the_key_budget_is_spent(api):
    statuses, refused, elapsed_s = burst_until_refused(
        lambda: post(api, "invalid-body", "/v1/wallets", {"owner_id": "a", "currency": "EUR", "colour": "red"}))
    assert_rate_limited(refused, statuses)
    assert set(statuses) == {400}, statuses
    assert len(statuses) <= gcra_allowance(elapsed_s), statuses


def test_a_burst_of_deposits_to_unknown_wallets_is_429_once_the_key_budget_is_spent(api):
    statuses, refused, elapsed_s = burst_until_refused(
        lambda: post(api, "unknown-wallet", f"/v1/wallets/{new_id('nobody')}/deposits", {"amount": "1.00"}))
    assert_rate_limited(refused, statuses)
    assert set(statuses) == {404}, statuses
    assert len(statuses) <= gcra_allowance(elapsed_s), statuses


def test_a_burst_of_transfers_to_unknown_wallets_is_429_once_the_key_budget_is_spent(api, known_wallet):
    body = lambda: {"source_wallet_id": known_wallet, "destination_wallet_id": new_id("nobody"),  # noqa: E731
                    "amount": "1.00"}
    statuses, refused, elapsed_s = burst_until_refused(
        lambda: post(api, "unknown-destination", "/v1/transfers", body()))
    assert_rate_limited(refused, statuses)
    assert set(statuses) == {404}, statuses
    assert len(statuses) <= gcra_allowance(elapsed_s), statuses


def test_the_budget_spent_by_refused_writes_limits_valid_writes(api):
    started = time.monotonic()
    refused = [post(api, "shared-budget", "/v1/wallets", {"owner_id": 7, "currency": "EUR"}).status
               for _ in range(BURST)]
    assert refused == [400] * BURST  # a full budget: none of them is rate limited

    def open_wallet() -> Reply:
        return post(api, "shared-budget", "/v1/wallets?wait_ms=0", {"owner_id": "a", "currency": "EUR"})

    accepted, limited, _ = burst_until_refused(open_wallet)
    elapsed_s = time.monotonic() - started
    assert_rate_limited(limited, accepted)
    assert set(accepted) <= {202}, accepted
    # The refused writes took the burst: what is left for valid ones is what refilled meanwhile.
    assert BURST + len(accepted) <= gcra_allowance(elapsed_s), accepted


def test_a_valid_write_to_a_known_wallet_passes_the_gate(api, known_wallet):
    reply = post(api, "known-source", f"/v1/wallets/{known_wallet}/deposits?wait_ms=0", {"amount": "1.00"})
    assert reply.status == 202, reply.body
