"""The HTTP API v1 against a real worker on the real stack: every route, every status and error code of the
contract (docs/API.md, ARCHITECTURE.md "HTTP API (v1)").

One module-scoped worker (`all` roles) serves most tests; a second, web-only worker with a tiny rate limit
serves the rate-limit test. Both start together. Every response any test receives is checked by `call`:
no API key in it, and every error is `application/problem+json` with `type, title, status, detail, code`
and no trace.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.message import Message
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from readside.redis import wallet_key
from app.kafka import partition_for
from app.settings import Settings
from tests.conftest import prepare_topics
from tests.harness import WorkerProcess, isolated_settings, new_id, now_ms, wait_for

# Bound of one HTTP call; writes wait at most `command_wait_ms_default` (5 s) for their outcome.
HTTP_TIMEOUT_S = 15.0
# Bound of waiting for an asynchronous outcome (transfer legs, projections, the replica).
EVENTUALLY_S = 30.0
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
_NO_BODY = object()


@dataclass(frozen=True)
class Keys:
    """Keys of their own (not shared with other modules' workers): their rate-limit counters in Redis start
    fresh, and a log line holding one cannot come from anywhere else."""

    read: str = field(default_factory=lambda: f"read-{uuid.uuid4().hex}")
    write: str = field(default_factory=lambda: f"write-{uuid.uuid4().hex}")
    other_write: str = field(default_factory=lambda: f"write2-{uuid.uuid4().hex}")  # a second API client
    admin: str = field(default_factory=lambda: f"admin-{uuid.uuid4().hex}")
    unknown: str = field(default_factory=lambda: f"unknown-{uuid.uuid4().hex}")

    def spec(self) -> str:
        return (f"{self.read}=wallets:read,{self.write}=wallets:read+wallets:write,"
                f"{self.other_write}=wallets:read+wallets:write,{self.admin}=admin")

    def secrets(self) -> tuple[str, ...]:
        return (self.read, self.write, self.other_write, self.admin, self.unknown)


@dataclass
class Api:
    settings: Settings
    worker: WorkerProcess
    keys: Keys
    secrets: tuple[str, ...]
    limited: "Api | None" = None  # the web-only worker with a tiny rate limit

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message  # case-insensitive `.get`
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def code(self) -> str | None:
        return self.json.get("code") if self.status >= 400 else None


def call(api: Api, method: str, path: str, *, key: str | None = None, body: object = _NO_BODY,
         raw: bytes | None = None, content_type: str = "application/json", query: dict | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    """One HTTP call; checks what every response must satisfy (no key echoed, errors as problem+json)."""
    url = api.base + path + ("?" + urlencode(query) if query else "")
    data = raw if raw is not None else (json.dumps(body).encode() if body is not _NO_BODY else None)
    request = urllib.request.Request(url, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            reply = Reply(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as error:
        reply = Reply(error.code, error.headers, error.read().decode())
    for secret in api.secrets:
        assert secret not in reply.text, f"{method} {path} echoed an API key in its body"
        assert all(secret not in value for value in reply.headers.values()), f"{method} {path} echoed a key"
    if reply.status >= 400:
        assert_problem_shape(reply)
    return reply


def assert_problem_shape(reply: Reply) -> None:
    assert reply.headers.get("Content-Type", "").startswith("application/problem+json"), reply.headers
    assert "Traceback" not in reply.text and 'File "' not in reply.text
    body = reply.json
    assert PROBLEM_MEMBERS <= set(body), body
    assert body["status"] == reply.status
    assert all(isinstance(body[name], str) for name in ("type", "title", "detail", "code"))


def assert_problem(reply: Reply, status: int, code: str) -> dict:
    assert (reply.status, reply.code) == (status, code), reply.text
    return reply.json


# ---------------------------------------------------------------- fixtures and small steps


@pytest.fixture(scope="module")
def api(stack):
    keys = Keys()
    settings = replace(prepare_topics(isolated_settings(stack, "http-api")), api_keys=keys.spec())
    worker = WorkerProcess(settings, ["all"]).start(wait_ready=False)
    limited = _rate_limited_api(stack)
    worker.wait_ready()
    limited.worker.wait_ready()
    yield Api(settings, worker, keys, keys.secrets() + limited.secrets, limited)
    limited.worker.stop()
    assert worker.stop() == 0, "the worker should stop cleanly on SIGTERM"


def _rate_limited_api(stack) -> Api:
    keys = Keys()
    settings = replace(prepare_topics(isolated_settings(stack, "http-rl", rate_limit_per_s=5, rate_limit_burst=5)),
                       api_keys=keys.spec())
    worker = WorkerProcess(settings, ["web"]).start(wait_ready=False)
    return Api(settings, worker, keys, keys.secrets())


def open_wallet(api: Api, currency: str = "EUR", **fields: object) -> str:
    wallet_id = new_id()
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write,
                 body={"wallet_id": wallet_id, "owner_id": "alice", "currency": currency, **fields})
    assert reply.status == 201, reply.text
    return wallet_id


def move(api: Api, wallet_id: str, kind: str, amount: object, *, key: str | None = None,
         idempotency_key: str | None = None, query: dict | None = None) -> Reply:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return call(api, "POST", f"/v1/wallets/{wallet_id}/{kind}", key=key or api.keys.write, body={"amount": amount},
                headers=headers, query=query)


def scoped(idempotency_key: str, api_key: str) -> str:
    """The command id an Idempotency-Key becomes for `api_key` (app/identity.py `http_command_id`)."""
    return f"{hashlib.sha256(api_key.encode()).hexdigest()[:8]}.{idempotency_key}"


def funded_wallet(api: Api, amount: str, currency: str = "EUR") -> str:
    wallet_id = open_wallet(api, currency)
    reply = move(api, wallet_id, "deposits", amount)
    assert reply.status == 200, reply.text
    return wallet_id


def strong_balance(api: Api, wallet_id: str, min_version: int = 0) -> dict:
    reply = call(api, "GET", f"/v1/wallets/{wallet_id}/balance", key=api.keys.read,
                 query={"consistency": "strong", "min_version": min_version})
    assert reply.status == 200, reply.text
    return reply.json


def eventually(api: Api, path: str, accept, what: str, query: dict | None = None) -> Reply:
    """Poll a GET until `accept(reply)`; fail after EVENTUALLY_S."""
    def attempt():
        reply = call(api, "GET", path, key=api.keys.read, query=query)
        return reply if accept(reply) else None
    return wait_for(attempt, EVENTUALLY_S, what, interval_s=0.2)


def rfc3339(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


# ---------------------------------------------------------------- POST /v1/wallets


def test_open_wallet_answers_201_with_location_and_the_new_wallet(api):
    wallet_id = new_id()
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write,
                 body={"wallet_id": wallet_id, "owner_id": "alice", "currency": "EUR", "overdraft_limit": "20.00"})
    assert reply.status == 201, reply.text
    assert reply.headers["Location"] == f"/v1/wallets/{wallet_id}"
    body = reply.json
    assert body["event"] == "WalletOpened" and body["command_id"]
    assert {k: body[k] for k in ("wallet_id", "owner_id", "currency", "status", "balance", "available", "held",
                                 "version")} == {
        "wallet_id": wallet_id, "owner_id": "alice", "currency": "EUR", "status": "ACTIVE", "balance": "0.00",
        "available": "20.00", "held": "0.00", "version": 1}
    fetched = call(api, "GET", f"/v1/wallets/{wallet_id}", key=api.keys.read, query={"min_version": 1})
    assert fetched.status == 200 and fetched.json["owner_id"] == "alice"


def test_open_wallet_without_an_id_derives_one_that_a_retry_with_the_same_key_repeats(api):
    key = f"open-{uuid.uuid4().hex}"
    body = {"owner_id": "bob", "currency": "USD"}
    first = call(api, "POST", "/v1/wallets", key=api.keys.write, body=body, headers={"Idempotency-Key": key})
    again = call(api, "POST", "/v1/wallets", key=api.keys.write, body=body, headers={"Idempotency-Key": key})
    other = call(api, "POST", "/v1/wallets", key=api.keys.write, body=body,
                 headers={"Idempotency-Key": f"open-{uuid.uuid4().hex}"})
    assert first.status == again.status == other.status == 201, (first.text, again.text, other.text)
    wallet_id = first.json["wallet_id"]
    assert wallet_id and first.headers["Location"] == f"/v1/wallets/{wallet_id}"
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    assert other.json["wallet_id"] != wallet_id


def test_open_wallet_with_a_taken_id_is_rejected_as_wallet_exists(api):
    wallet_id = open_wallet(api)
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write,
                 body={"wallet_id": wallet_id, "owner_id": "mallory", "currency": "EUR"})
    assert assert_problem(reply, 422, "WALLET_EXISTS")["command_id"]
    assert strong_balance(api, wallet_id)["version"] == 1


@pytest.mark.parametrize("body", [
    {"owner_id": "a", "currency": "EUR", "colour": "red"},
    {"currency": "EUR"},
    {"owner_id": "", "currency": "EUR"},
    {"owner_id": 7, "currency": "EUR"},
    {"owner_id": "a", "currency": "XXX"},
    {"owner_id": "a", "currency": "eur"},
    {"owner_id": "a"},
    {"owner_id": "a", "currency": "EUR", "wallet_id": "has space"},
    {"owner_id": "a", "currency": "EUR", "wallet_id": "w" * 65},
    {"owner_id": "a", "currency": "EUR", "wallet_id": True},
    {"owner_id": "a", "currency": "EUR", "overdraft_limit": True},
    {"owner_id": "a", "currency": "EUR", "overdraft_limit": "-5"},
], ids=["unknown-field", "no-owner", "empty-owner", "int-owner", "unknown-currency", "lowercase-currency",
        "no-currency", "wallet-id-space", "wallet-id-too-long", "bool-wallet-id", "bool-overdraft",
        "negative-overdraft"])
def test_open_wallet_refuses_an_invalid_body_with_400(api, body):
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write, body=body)
    assert reply.status == 400, reply.text


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"wallet"', b"42", b"null", b'{"owner_id": NaN}'],
                         ids=["malformed", "array", "string", "number", "null", "nan"])
def test_open_wallet_refuses_a_body_that_is_not_a_json_object(api, raw):
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write, raw=raw)
    assert reply.status == 400, reply.text


def test_open_wallet_refuses_another_content_type_with_415(api):
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write, content_type="text/plain",
                 raw=json.dumps({"owner_id": "a", "currency": "EUR"}).encode())
    assert_problem(reply, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_over_16_kib_is_413(api):
    raw = json.dumps({"owner_id": "a" * (17 * 1024), "currency": "EUR"}).encode()
    reply = call(api, "POST", "/v1/wallets", key=api.keys.write, raw=raw)
    assert reply.status == 413, reply.text


# ---------------------------------------------------------------- reads of a wallet


def test_wallet_and_balance_show_the_position_a_deposit_returned(api):
    wallet_id = open_wallet(api)
    deposit = move(api, wallet_id, "deposits", "150.75")
    assert deposit.status == 200, deposit.text
    version = deposit.json["version"]
    wallet = call(api, "GET", f"/v1/wallets/{wallet_id}", key=api.keys.read, query={"min_version": version})
    assert wallet.status == 200 and wallet.json == {
        "wallet_id": wallet_id, "owner_id": "alice", "currency": "EUR", "status": "ACTIVE", "balance": "150.75",
        "available": "150.75", "held": "0.00", "version": 2}
    balance = call(api, "GET", f"/v1/wallets/{wallet_id}/balance", key=api.keys.read, query={"min_version": version})
    assert balance.status == 200 and balance.json == {
        "wallet_id": wallet_id, "currency": "EUR", "status": "ACTIVE", "balance": "150.75", "available": "150.75",
        "held": "0.00", "version": 2}


@pytest.mark.parametrize("suffix", ["", "/balance", "/entries"])
def test_an_unknown_wallet_is_404_wallet_not_found(api, suffix):
    reply = call(api, "GET", f"/v1/wallets/{new_id()}{suffix}", key=api.keys.read)
    assert_problem(reply, 404, "WALLET_NOT_FOUND")


@pytest.mark.parametrize("suffix", ["", "/balance", "/entries"])
@pytest.mark.parametrize("wallet_id", ["bad.id", "w" * 65, "bad%20id"], ids=["dot", "too-long", "space"])
def test_a_malformed_wallet_id_is_400_invalid_wallet_id(api, suffix, wallet_id):
    reply = call(api, "GET", f"/v1/wallets/{wallet_id}{suffix}", key=api.keys.read)
    assert_problem(reply, 400, "INVALID_WALLET_ID")


def _poison_cache(api: Api, wallet_id: str, **fields: object) -> None:
    client = redis.Redis.from_url(api.settings.redis_url, decode_responses=True)
    try:
        client.hset(wallet_key(wallet_id), mapping={k: str(v) for k, v in fields.items()})
    finally:
        client.close()


def test_strong_read_answers_from_the_owning_table_not_the_cache(api):
    wallet_id = funded_wallet(api, "10.00")
    eventually(api, f"/v1/wallets/{wallet_id}", lambda r: r.status == 200 and r.json["version"] == 2,
               "the cache to hold version 2")
    # A whole cache entry far ahead of the truth: the sink never overwrites it, an eventual read shows it.
    _poison_cache(api, wallet_id, balance=999_999, available=999_999, held=0, version=100, currency="EUR",
                  status="ACTIVE", owner_id="alice")
    cached = call(api, "GET", f"/v1/wallets/{wallet_id}", key=api.keys.read)
    assert cached.json["balance"] == "9999.99"
    for suffix in ("", "/balance"):
        strong = call(api, "GET", f"/v1/wallets/{wallet_id}{suffix}", key=api.keys.read,
                      query={"consistency": "strong"})
        assert strong.status == 200, strong.text
        assert (strong.json["balance"], strong.json["version"]) == ("10.00", 2)


def test_min_version_never_answers_a_state_older_than_the_write_returned(api):
    wallet_id = open_wallet(api)
    for step in range(1, 6):
        deposit = move(api, wallet_id, "deposits", "1.00")
        assert deposit.status == 200, deposit.text
        version = deposit.json["version"]
        # An older copy in the cache must not be served to a client that saw `version`.
        _poison_cache(api, wallet_id, balance=0, available=0, held=0, version=1, currency="EUR", status="ACTIVE")
        for suffix in ("", "/balance"):
            read = call(api, "GET", f"/v1/wallets/{wallet_id}{suffix}", key=api.keys.read,
                        query={"min_version": version})
            assert read.status == 200, read.text
            assert read.json["version"] >= version
            assert read.json["balance"] == f"{step}.00"


def test_a_min_version_the_wallet_has_not_reached_is_412_not_an_older_state(api):
    wallet_id = open_wallet(api)
    for suffix in ("", "/balance"):
        read = call(api, "GET", f"/v1/wallets/{wallet_id}{suffix}", key=api.keys.read, query={"min_version": 5})
        assert (read.status, read.json["code"]) == (412, "MIN_VERSION_NOT_REACHED"), read.text


def test_balance_at_a_time_is_the_balance_after_the_last_entry_at_or_before_it(api):
    before_ms = now_ms() - 60_000
    wallet_id = funded_wallet(api, "10.00")
    between_ms = now_ms()
    # The second deposit's time must be after `between_ms` at millisecond resolution.
    wait_for(lambda: now_ms() > between_ms, 1, "the clock to pass between_ms", interval_s=0.001)
    second = move(api, wallet_id, "deposits", "20.00")
    assert second.status == 200
    after_ms = now_ms() + 1
    path = f"/v1/wallets/{wallet_id}/balance"
    latest = eventually(api, path, lambda r: r.status == 200 and r.json["version"] == 3,
                        "the replica to hold the second deposit", query={"at": rfc3339(after_ms)})
    assert (latest.json["balance"], latest.json["currency"]) == ("30.00", "EUR")
    middle = call(api, "GET", path, key=api.keys.read, query={"at": rfc3339(between_ms)})
    assert middle.status == 200, middle.text
    assert {k: middle.json[k] for k in ("balance", "available", "held", "version")} == {
        "balance": "10.00", "available": "10.00", "held": "0.00", "version": 2}
    assert middle.json["at"] == rfc3339(between_ms)
    plus_one_hour = timezone(timedelta(hours=1))
    offset = call(api, "GET", path, key=api.keys.read, query={"at": datetime.fromtimestamp(
        between_ms / 1000, plus_one_hour).isoformat(timespec="milliseconds")})
    assert offset.status == 200 and offset.json["balance"] == "10.00"
    earlier = call(api, "GET", path, key=api.keys.read, query={"at": rfc3339(before_ms)})
    assert_problem(earlier, 404, "WALLET_NOT_FOUND")


@pytest.mark.parametrize("query", [
    {"at": "yesterday"}, {"at": "2025-01-01T00:00:00"}, {"at": "2025-13-01T00:00:00Z"},
    {"at": "2025-01-01T00:00:00Z", "consistency": "strong"}, {"at": "2025-01-01T00:00:00Z", "min_version": "1"},
    {"consistency": "linearizable"}, {"min_version": "-1"}, {"min_version": "two"},
], ids=["words", "no-offset", "month-13", "at-and-strong", "at-and-min-version", "bad-consistency",
        "negative-min-version", "word-min-version"])
def test_balance_refuses_bad_query_parameters_with_400(api, query):
    wallet_id = open_wallet(api)
    reply = call(api, "GET", f"/v1/wallets/{wallet_id}/balance", key=api.keys.read, query=query)
    assert reply.status == 400, reply.text


@pytest.mark.parametrize("query", [{"consistency": "STRONG"}, {"min_version": "1.5"}])
def test_wallet_refuses_bad_consistency_parameters_with_400(api, query):
    reply = call(api, "GET", f"/v1/wallets/{new_id()}", key=api.keys.read, query=query)
    assert reply.status == 400, reply.text


# ---------------------------------------------------------------- deposits and withdrawals


def test_deposit_and_withdrawal_answer_200_with_the_new_position(api):
    wallet_id = open_wallet(api)
    deposit = move(api, wallet_id, "deposits", "100.00")
    assert deposit.status == 200, deposit.text
    assert {k: deposit.json[k] for k in ("event", "wallet_id", "currency", "amount", "balance", "available", "held",
                                         "version")} == {
        "event": "Deposited", "wallet_id": wallet_id, "currency": "EUR", "amount": "100.00", "balance": "100.00",
        "available": "100.00", "held": "0.00", "version": 2}
    withdrawal = move(api, wallet_id, "withdrawals", "30.25")
    assert withdrawal.status == 200, withdrawal.text
    assert {k: withdrawal.json[k] for k in ("event", "amount", "balance", "available", "held", "version")} == {
        "event": "Withdrawn", "amount": "30.25", "balance": "69.75", "available": "69.75", "held": "0.00",
        "version": 3}


def test_withdraw_over_available_is_rejected_and_balance_unchanged(api):
    wallet_id = funded_wallet(api, "10.00")
    reply = move(api, wallet_id, "withdrawals", "10.01")
    problem = assert_problem(reply, 422, "INSUFFICIENT_FUNDS")
    assert problem["command_id"]
    assert problem["version"] == 2, "a rejection changes no version"
    balance = strong_balance(api, wallet_id, min_version=2)
    assert (balance["balance"], balance["available"]) == ("10.00", "10.00")


@pytest.mark.parametrize("kind", ["deposits", "withdrawals"])
@pytest.mark.parametrize("amount", ["1.001", "0", "0.00", "-1", "1e3", 1.5, 100, " 1", "1 ", "", "1.", ".5",
                                    "+1", "01", "1,00"])
def test_a_malformed_amount_is_400_invalid_amount(api, eur_wallet, kind, amount):
    reply = move(api, eur_wallet, kind, amount)
    assert_problem(reply, 400, "INVALID_AMOUNT")


@pytest.fixture(scope="module")
def eur_wallet(api) -> str:
    return funded_wallet(api, "500.00")


def test_a_missing_amount_is_400(api, eur_wallet):
    reply = call(api, "POST", f"/v1/wallets/{eur_wallet}/deposits", key=api.keys.write, body={"reference": "x"})
    assert reply.status == 400, reply.text


def test_an_amount_above_the_per_command_maximum_is_422_limit_exceeded(api):
    wallet_id = open_wallet(api)
    assert_problem(move(api, wallet_id, "deposits", "1000000.01"), 422, "LIMIT_EXCEEDED")
    at_limit = move(api, wallet_id, "deposits", "1000000.00")
    assert at_limit.status == 200 and at_limit.json["balance"] == "1000000.00", at_limit.text
    assert_problem(move(api, wallet_id, "withdrawals", "1000000.01"), 422, "LIMIT_EXCEEDED")


@pytest.mark.parametrize("kind", ["deposits", "withdrawals", "holds"])
def test_a_write_to_an_unknown_wallet_is_404_wallet_not_found(api, kind):
    reply = move(api, new_id(), kind, "1.00")
    assert_problem(reply, 404, "WALLET_NOT_FOUND")


def test_jpy_amounts_have_no_fraction_and_bhd_amounts_have_three_digits(api):
    yen = open_wallet(api, "JPY")
    deposit = move(api, yen, "deposits", "1500")
    assert deposit.status == 200 and (deposit.json["amount"], deposit.json["balance"]) == ("1500", "1500")
    assert_problem(move(api, yen, "deposits", "1.5"), 400, "INVALID_AMOUNT")
    assert_problem(move(api, yen, "deposits", "1.0"), 400, "INVALID_AMOUNT")
    assert_problem(move(api, yen, "deposits", "1000001"), 422, "LIMIT_EXCEEDED")
    withdrawal = move(api, yen, "withdrawals", "499")
    assert withdrawal.status == 200 and withdrawal.json["balance"] == "1001"

    dinar = open_wallet(api, "BHD")
    deposit = move(api, dinar, "deposits", "1.5")
    assert deposit.status == 200 and deposit.json["balance"] == "1.500", deposit.text
    deposit = move(api, dinar, "deposits", "0.001")
    assert deposit.status == 200 and (deposit.json["amount"], deposit.json["balance"]) == ("0.001", "1.501")
    assert_problem(move(api, dinar, "deposits", "0.0001"), 400, "INVALID_AMOUNT")
    assert strong_balance(api, dinar, min_version=3)["balance"] == "1.501"


# ---------------------------------------------------------------- idempotency


def test_the_same_key_and_body_return_the_first_response_and_move_money_once(api):
    wallet_id = open_wallet(api)
    key = f"dep-{uuid.uuid4().hex}"
    first = move(api, wallet_id, "deposits", "7.00", idempotency_key=key)
    again = move(api, wallet_id, "deposits", "7.00", idempotency_key=key)
    assert first.status == again.status == 200, (first.text, again.text)
    assert again.json == first.json and first.json["command_id"] == scoped(key, api.keys.write)
    balance = strong_balance(api, wallet_id)
    assert (balance["balance"], balance["version"]) == ("7.00", 2)


def test_a_retried_rejection_returns_the_same_422_even_after_funds_arrive(api):
    wallet_id = funded_wallet(api, "5.00")
    key = f"wd-{uuid.uuid4().hex}"
    first = move(api, wallet_id, "withdrawals", "8.00", idempotency_key=key)
    assert_problem(first, 422, "INSUFFICIENT_FUNDS")
    again = move(api, wallet_id, "withdrawals", "8.00", idempotency_key=key)
    assert again.status == 422 and again.json == first.json
    assert move(api, wallet_id, "deposits", "10.00").status == 200
    later = move(api, wallet_id, "withdrawals", "8.00", idempotency_key=key)
    assert later.status == 422 and later.json == first.json
    assert strong_balance(api, wallet_id)["balance"] == "15.00"


def test_the_same_key_with_another_amount_is_409_idempotency_conflict(api):
    wallet_id = open_wallet(api)
    key = f"dep-{uuid.uuid4().hex}"
    assert move(api, wallet_id, "deposits", "1.00", idempotency_key=key).status == 200
    conflict = move(api, wallet_id, "deposits", "2.00", idempotency_key=key)
    assert_problem(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert strong_balance(api, wallet_id)["balance"] == "1.00"


def _wallet_on_another_partition(api: Api, wallet_id: str) -> str:
    partitions = api.settings.partitions
    while True:
        other = open_wallet(api)
        if partition_for(other.encode(), partitions) != partition_for(wallet_id.encode(), partitions):
            return other


def test_the_same_key_for_another_wallet_is_409_idempotency_conflict(api):
    wallet_id = open_wallet(api)
    other = _wallet_on_another_partition(api, wallet_id)
    key = f"dep-{uuid.uuid4().hex}"
    assert move(api, wallet_id, "deposits", "1.00", idempotency_key=key).status == 200
    conflict = move(api, other, "deposits", "1.00", idempotency_key=key)
    assert_problem(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert strong_balance(api, other)["balance"] == "0.00"


@pytest.mark.parametrize("key", ["has space", "semi;colon", "k" * 101, "slash/key"])
def test_a_malformed_idempotency_key_is_400(api, eur_wallet, key):
    reply = move(api, eur_wallet, "deposits", "1.00", idempotency_key=key)
    assert_problem(reply, 400, "INVALID_IDEMPOTENCY_KEY")


def test_two_api_clients_that_pick_the_same_idempotency_key_name_two_commands(api):
    wallet_id, other = open_wallet(api), open_wallet(api)
    key = f"order-{uuid.uuid4().hex}"
    first = move(api, wallet_id, "deposits", "1.00", idempotency_key=key)
    second = move(api, other, "deposits", "2.00", idempotency_key=key, key=api.keys.other_write)
    assert (first.status, second.status) == (200, 200), (first.text, second.text)
    assert first.json["command_id"] != second.json["command_id"]
    assert (strong_balance(api, wallet_id)["balance"], strong_balance(api, other)["balance"]) == ("1.00", "2.00")


def test_a_deposit_keyed_like_a_transfer_leg_does_not_strand_the_transfer(api):
    source, destination = funded_wallet(api, "50.00"), open_wallet(api)
    transfer_key = f"T-{uuid.uuid4().hex}"
    assert move(api, destination, "deposits", "1.00", idempotency_key=f"{transfer_key}:credit").status == 200
    reply = call(api, "POST", "/v1/transfers", key=api.keys.write, headers={"Idempotency-Key": transfer_key},
                 body={"source_wallet_id": source, "destination_wallet_id": destination, "amount": "20.00"})
    assert reply.status == 201, reply.text
    wait_for(lambda: strong_balance(api, destination)["balance"] == "21.00", EVENTUALLY_S,
             "the credit leg to reach the destination")
    assert strong_balance(api, source)["balance"] == "30.00"


@pytest.mark.parametrize("key", ["~credit/w/t", "~expire/w/c", "~anything"])
def test_a_reserved_idempotency_key_is_400_reserved_command_id(api, eur_wallet, key):
    reply = move(api, eur_wallet, "deposits", "1.00", idempotency_key=key)
    assert_problem(reply, 400, "RESERVED_COMMAND_ID")


def test_an_idempotency_key_claim_lives_as_long_as_the_processor_remembers_the_command(api):
    wallet_id = open_wallet(api)
    key = f"dep-{uuid.uuid4().hex}"
    assert move(api, wallet_id, "deposits", "1.00", idempotency_key=key).status == 200
    client = redis.Redis.from_url(api.settings.redis_url)
    ttl_s = client.ttl(f"idempotency:{scoped(key, api.keys.write)}")
    retention_s = api.settings.command_retention_s
    assert retention_s - 60 <= ttl_s <= retention_s, (ttl_s, retention_s)


# ---------------------------------------------------------------- wait_ms and /v1/commands


def test_wait_ms_zero_answers_202_and_the_command_is_applied_later(api):
    wallet_id = open_wallet(api)
    key = f"async-{uuid.uuid4().hex}"
    reply = move(api, wallet_id, "deposits", "3.00", idempotency_key=key, query={"wait_ms": 0})
    key = scoped(key, api.keys.write)
    assert reply.status == 202, reply.text
    assert reply.headers["Location"] == f"/v1/commands/{key}"
    assert reply.json == {"command_id": key, "status": "pending"}
    status = call(api, "GET", f"/v1/commands/{key}", key=api.keys.read)
    assert status.status == 200 and status.json["status"] in ("pending", "applied"), status.text
    applied = eventually(api, f"/v1/commands/{key}", lambda r: r.status == 200 and r.json["status"] == "applied",
                         "the command to be applied")
    assert {k: applied.json[k] for k in ("command_id", "wallet_id", "event", "version")} == {
        "command_id": key, "wallet_id": wallet_id, "event": "Deposited", "version": 2}
    assert strong_balance(api, wallet_id, min_version=2)["balance"] == "3.00"


@pytest.mark.parametrize("wait_ms", ["-1", "abc", "1.5", "30001", ""])
def test_a_wait_ms_outside_0_to_the_maximum_is_400(api, eur_wallet, wait_ms):
    reply = move(api, eur_wallet, "deposits", "1.00", query={"wait_ms": wait_ms})
    assert reply.status == 400, reply.text
    assert strong_balance(api, eur_wallet)["balance"] == "500.00"


def test_command_outcomes_show_applied_and_rejected_commands(api):
    wallet_id = funded_wallet(api, "1.00")
    applied_key, rejected_key = f"ok-{uuid.uuid4().hex}", f"no-{uuid.uuid4().hex}"
    assert move(api, wallet_id, "deposits", "1.00", idempotency_key=applied_key).status == 200
    assert move(api, wallet_id, "withdrawals", "5.00", idempotency_key=rejected_key).status == 422
    applied_key, rejected_key = scoped(applied_key, api.keys.write), scoped(rejected_key, api.keys.write)
    applied = eventually(api, f"/v1/commands/{applied_key}", lambda r: r.status == 200, "the applied outcome")
    assert {k: applied.json[k] for k in ("command_id", "status", "wallet_id", "event", "version")} == {
        "command_id": applied_key, "status": "applied", "wallet_id": wallet_id, "event": "Deposited", "version": 3}
    rejected = eventually(api, f"/v1/commands/{rejected_key}", lambda r: r.status == 200, "the rejected outcome")
    assert (rejected.json["status"], rejected.json["code"], rejected.json["wallet_id"]) == (
        "rejected", "INSUFFICIENT_FUNDS", wallet_id)
    assert rejected.json["detail"]


def test_an_unknown_command_is_404_command_not_found(api):
    assert_problem(call(api, "GET", f"/v1/commands/{uuid.uuid4().hex}", key=api.keys.read), 404, "COMMAND_NOT_FOUND")
    assert call(api, "GET", "/v1/commands/bad%20id", key=api.keys.read).status == 400


# ---------------------------------------------------------------- transfers


def _transfer(api: Api, source: str, destination: str, amount: str, **extra: object) -> Reply:
    return call(api, "POST", "/v1/transfers", key=api.keys.write,
                body={"source_wallet_id": source, "destination_wallet_id": destination, "amount": amount, **extra})


def test_a_transfer_answers_201_and_completes(api):
    source, destination = funded_wallet(api, "100.00"), open_wallet(api)
    reply = _transfer(api, source, destination, "40.00", reference="rent")
    assert reply.status == 201, reply.text
    transfer_id = reply.json["transfer_id"]
    assert reply.headers["Location"] == f"/v1/transfers/{transfer_id}"
    assert {k: reply.json[k] for k in ("event", "source_wallet_id", "destination_wallet_id", "amount", "balance",
                                       "status")} == {
        "event": "TransferDebited", "source_wallet_id": source, "destination_wallet_id": destination,
        "amount": "40.00", "balance": "60.00", "status": "pending"}
    done = eventually(api, f"/v1/transfers/{transfer_id}",
                      lambda r: r.status == 200 and r.json["status"] == "completed", "the transfer to complete")
    assert {k: done.json[k] for k in ("transfer_id", "source_wallet_id", "destination_wallet_id", "amount",
                                      "currency", "reason_code", "refunded_at")} == {
        "transfer_id": transfer_id, "source_wallet_id": source, "destination_wallet_id": destination,
        "amount": "40.00", "currency": "EUR", "reason_code": None, "refunded_at": None}
    assert done.json["completed_at"] and done.json["created_at"]
    eventually(api, f"/v1/wallets/{destination}/balance", lambda r: r.json.get("balance") == "40.00",
               "the destination to be credited", query={"consistency": "strong"})


def test_a_transfer_to_a_frozen_wallet_is_refunded_with_the_reason(api):
    source, destination = funded_wallet(api, "100.00"), open_wallet(api)
    frozen = call(api, "POST", f"/v1/wallets/{destination}/freeze", key=api.keys.admin, body={"reason": "kyc"})
    assert frozen.status == 200, frozen.text
    reply = _transfer(api, source, destination, "25.00")
    assert reply.status == 201, reply.text
    transfer_id = reply.json["transfer_id"]
    refunded = eventually(api, f"/v1/transfers/{transfer_id}",
                          lambda r: r.status == 200 and r.json["status"] == "refunded", "the refund")
    assert refunded.json["reason_code"] == "WALLET_FROZEN" and refunded.json["refunded_at"]
    eventually(api, f"/v1/wallets/{source}/balance", lambda r: r.json.get("balance") == "100.00",
               "the source to be refunded", query={"consistency": "strong"})
    assert strong_balance(api, destination)["balance"] == "0.00"


def test_a_transfer_from_or_to_an_unknown_wallet_is_404(api):
    wallet_id = funded_wallet(api, "10.00")
    assert_problem(_transfer(api, new_id(), wallet_id, "1.00"), 404, "WALLET_NOT_FOUND")
    assert_problem(_transfer(api, wallet_id, new_id(), "1.00"), 404, "WALLET_NOT_FOUND")
    assert strong_balance(api, wallet_id)["balance"] == "10.00"


def test_a_transfer_between_currencies_is_422_currency_mismatch(api):
    source, destination = funded_wallet(api, "10.00"), open_wallet(api, "USD")
    assert_problem(_transfer(api, source, destination, "1.00"), 422, "CURRENCY_MISMATCH")
    assert strong_balance(api, source)["balance"] == "10.00"


def test_a_transfer_to_the_source_itself_is_422_self_transfer(api):
    wallet_id = funded_wallet(api, "10.00")
    assert_problem(_transfer(api, wallet_id, wallet_id, "1.00"), 422, "SELF_TRANSFER")
    assert strong_balance(api, wallet_id)["balance"] == "10.00"


def test_a_transfer_body_with_an_unknown_field_or_bad_amount_is_400(api):
    source, destination = funded_wallet(api, "10.00"), open_wallet(api)
    assert _transfer(api, source, destination, "1.00", memo="x").status == 400
    assert_problem(_transfer(api, source, destination, "-1.00"), 400, "INVALID_AMOUNT")
    assert call(api, "POST", "/v1/transfers", key=api.keys.write, body={"source_wallet_id": source}).status == 400


def test_an_unknown_transfer_is_404_transfer_not_found(api):
    assert_problem(call(api, "GET", f"/v1/transfers/{uuid.uuid4().hex}", key=api.keys.read), 404, "TRANSFER_NOT_FOUND")


# ---------------------------------------------------------------- holds


def _hold(api: Api, wallet_id: str, body: dict, *, idempotency_key: str | None = None) -> Reply:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return call(api, "POST", f"/v1/wallets/{wallet_id}/holds", key=api.keys.write, body=body, headers=headers)


def test_a_partial_capture_takes_part_of_a_hold_and_releases_the_rest(api):
    wallet_id = funded_wallet(api, "100.00")
    placed_at_ms = now_ms()
    placed = _hold(api, wallet_id, {"amount": "30.00", "expires_in_s": 600})
    assert placed.status == 201, placed.text
    hold_id = placed.json["hold_id"]
    assert hold_id and placed.json["event"] == "HoldPlaced"
    assert (placed.json["balance"], placed.json["available"], placed.json["held"]) == ("100.00", "70.00", "30.00")
    expires_ms = datetime.fromisoformat(placed.json["expires_at"].replace("Z", "+00:00")).timestamp() * 1000
    assert abs(expires_ms - (placed_at_ms + 600_000)) < 30_000
    captured = call(api, "POST", f"/v1/wallets/{wallet_id}/holds/{hold_id}/capture", key=api.keys.write,
                    body={"amount": "20.00"})
    assert captured.status == 200, captured.text
    assert {k: captured.json[k] for k in ("event", "hold_id", "amount", "released", "balance", "available",
                                          "held")} == {
        "event": "HoldCaptured", "hold_id": hold_id, "amount": "20.00", "released": "10.00", "balance": "80.00",
        "available": "80.00", "held": "0.00"}


def test_releasing_a_hold_returns_its_amount_to_available(api):
    wallet_id = funded_wallet(api, "100.00")
    placed = _hold(api, wallet_id, {"amount": "25.00"})
    assert placed.status == 201 and placed.json["available"] == "75.00", placed.text
    released = call(api, "POST", f"/v1/wallets/{wallet_id}/holds/{placed.json['hold_id']}/release",
                    key=api.keys.write)
    assert released.status == 200, released.text
    assert (released.json["event"], released.json["available"], released.json["held"], released.json["balance"]) == (
        "HoldReleased", "100.00", "0.00", "100.00")


def test_a_retried_hold_names_the_same_hold(api):
    wallet_id = funded_wallet(api, "100.00")
    key = f"hold-{uuid.uuid4().hex}"
    first = _hold(api, wallet_id, {"amount": "5.00"}, idempotency_key=key)
    again = _hold(api, wallet_id, {"amount": "5.00"}, idempotency_key=key)
    assert first.status == again.status == 201 and again.json == first.json
    assert strong_balance(api, wallet_id)["held"] == "5.00"


@pytest.mark.parametrize("action", ["capture", "release"])
def test_capturing_or_releasing_an_unknown_hold_is_422_hold_not_found(api, eur_wallet, action):
    reply = call(api, "POST", f"/v1/wallets/{eur_wallet}/holds/h_nothing{uuid.uuid4().hex[:8]}/{action}",
                 key=api.keys.write)
    assert_problem(reply, 422, "HOLD_NOT_FOUND")


@pytest.mark.parametrize("expires_in_s", [0, -1, 30 * 24 * 3600 + 1, "60", 1.5, True],
                         ids=["zero", "negative", "over-max", "string", "float", "bool"])
def test_a_hold_expiry_that_is_not_a_bounded_positive_integer_is_400(api, eur_wallet, expires_in_s):
    reply = _hold(api, eur_wallet, {"amount": "1.00", "expires_in_s": expires_in_s})
    assert reply.status == 400, reply.text
    assert strong_balance(api, eur_wallet)["held"] == "0.00"


# ---------------------------------------------------------------- freeze, unfreeze, close


def _admin(api: Api, wallet_id: str, action: str) -> Reply:
    return call(api, "POST", f"/v1/wallets/{wallet_id}/{action}", key=api.keys.admin)


def test_a_deposit_to_a_frozen_wallet_is_422_wallet_frozen_until_it_is_unfrozen(api):
    wallet_id = funded_wallet(api, "10.00")
    frozen = _admin(api, wallet_id, "freeze")
    assert frozen.status == 200 and frozen.json["status"] == "FROZEN", frozen.text
    assert_problem(move(api, wallet_id, "deposits", "1.00"), 422, "WALLET_FROZEN")
    assert strong_balance(api, wallet_id)["status"] == "FROZEN"
    unfrozen = _admin(api, wallet_id, "unfreeze")
    assert unfrozen.status == 200 and unfrozen.json["status"] == "ACTIVE", unfrozen.text
    deposit = move(api, wallet_id, "deposits", "1.00")
    assert deposit.status == 200 and deposit.json["balance"] == "11.00"


def test_close_needs_a_zero_balance_and_then_answers_closed(api):
    wallet_id = funded_wallet(api, "5.00")
    assert_problem(_admin(api, wallet_id, "close"), 422, "BALANCE_NOT_ZERO")
    assert move(api, wallet_id, "withdrawals", "5.00").status == 200
    closed = _admin(api, wallet_id, "close")
    assert closed.status == 200 and closed.json["status"] == "CLOSED", closed.text
    wallet = call(api, "GET", f"/v1/wallets/{wallet_id}", key=api.keys.read,
                  query={"min_version": closed.json["version"]})
    assert wallet.json["status"] == "CLOSED"


@pytest.mark.parametrize("action", ["freeze", "unfreeze", "close"])
def test_an_admin_action_on_an_unknown_wallet_is_404(api, action):
    assert_problem(_admin(api, new_id(), action), 404, "WALLET_NOT_FOUND")


# ---------------------------------------------------------------- entries


def test_entries_are_newest_first_and_pages_cover_every_entry_exactly_once(api):
    wallet_id = open_wallet(api)
    for step in range(1, 7):
        assert move(api, wallet_id, "deposits", f"{step}.00").status == 200
    path = f"/v1/wallets/{wallet_id}/entries"
    everything = eventually(api, path, lambda r: r.status == 200 and len(r.json["entries"]) == 7,
                            "seven entries in the history store", query={"limit": 200})
    assert everything.json["next_cursor"] is None
    assert [e["version"] for e in everything.json["entries"]] == [7, 6, 5, 4, 3, 2, 1]
    newest = everything.json["entries"][0]
    assert {k: newest[k] for k in ("kind", "amount", "currency", "balance_after", "available_after", "held_after")} == {
        "kind": "Deposited", "amount": "6.00", "currency": "EUR", "balance_after": "21.00",
        "available_after": "21.00", "held_after": "0.00"}
    assert everything.json["entries"][-1]["kind"] == "WalletOpened"

    pages, cursor = [], None
    for _ in range(10):  # bounded: 7 entries in pages of 3
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = call(api, "GET", path, key=api.keys.read, query=query)
        assert page.status == 200, page.text
        pages.append([e["version"] for e in page.json["entries"]])
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    exact = call(api, "GET", path, key=api.keys.read, query={"limit": 7})
    assert len(exact.json["entries"]) == 7 and exact.json["next_cursor"] is None


@pytest.mark.parametrize("query,code", [
    ({"cursor": "abc"}, "INVALID_CURSOR"), ({"cursor": "0"}, "INVALID_CURSOR"), ({"cursor": "-1"}, "INVALID_CURSOR"),
    ({"cursor": "9" * 17}, "INVALID_CURSOR"), ({"limit": "0"}, None), ({"limit": "201"}, None),
    ({"limit": "ten"}, None),
])
def test_entries_refuse_a_bad_cursor_or_limit_with_400(api, eur_wallet, query, code):
    reply = call(api, "GET", f"/v1/wallets/{eur_wallet}/entries", key=api.keys.read, query=query)
    assert reply.status == 400, reply.text
    if code:
        assert reply.code == code


# ---------------------------------------------------------------- auth


WALLET = "w-auth-target"
ROUTES = [  # (method, path, scope)
    ("GET", f"/v1/wallets/{WALLET}", "read"),
    ("GET", f"/v1/wallets/{WALLET}/balance", "read"),
    ("GET", f"/v1/wallets/{WALLET}/entries", "read"),
    ("GET", "/v1/transfers/t-1", "read"),
    ("GET", "/v1/commands/c-1", "read"),
    ("POST", "/v1/wallets", "write"),
    ("POST", f"/v1/wallets/{WALLET}/deposits", "write"),
    ("POST", f"/v1/wallets/{WALLET}/withdrawals", "write"),
    ("POST", f"/v1/wallets/{WALLET}/holds", "write"),
    ("POST", f"/v1/wallets/{WALLET}/holds/h-1/capture", "write"),
    ("POST", f"/v1/wallets/{WALLET}/holds/h-1/release", "write"),
    ("POST", "/v1/transfers", "write"),
    ("POST", f"/v1/wallets/{WALLET}/freeze", "admin"),
    ("POST", f"/v1/wallets/{WALLET}/unfreeze", "admin"),
    ("POST", f"/v1/wallets/{WALLET}/close", "admin"),
]
_ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


@pytest.mark.parametrize("method,path,scope", ROUTES, ids=_ROUTE_IDS)
def test_every_route_needs_a_key_with_its_scope(api, method, path, scope):
    body = {} if method == "POST" else _NO_BODY
    for key, headers in ((None, None), (api.keys.unknown, None), (None, {"Authorization": "Basic dXNlcjpwYXNz"}),
                         (None, {"Authorization": "Bearer "})):
        reply = call(api, method, path, key=key, body=body, headers=headers)
        assert_problem(reply, 401, "UNAUTHORIZED")
        assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")
    forbidden = {"read": [], "write": [api.keys.read], "admin": [api.keys.read, api.keys.write]}[scope]
    for key in forbidden:
        assert_problem(call(api, method, path, key=key, body=body), 403, "FORBIDDEN")
    allowed = {"read": [api.keys.read, api.keys.write, api.keys.admin], "write": [api.keys.write, api.keys.admin],
               "admin": [api.keys.admin]}[scope]
    for key in allowed:  # past auth: the request fails later (unknown wallet, empty body), not with 401/403
        reply = call(api, method, path, key=key, body=body)
        assert reply.status not in (401, 403, 429), reply.text


def test_operations_routes_need_no_key(api):
    health = call(api, "GET", "/healthz")
    assert health.status == 200 and health.json == {"status": "ok"}
    ready = call(api, "GET", "/readyz")
    assert ready.status == 200 and ready.json["status"] == "ready"
    metrics = call(api, "GET", "/metrics")
    assert metrics.status == 200 and "wallet_http_requests_total" in metrics.text
    document = call(api, "GET", "/openapi.json")
    assert document.status == 200 and document.json["openapi"].startswith("3.1")
    assert "/v1/wallets/{wallet_id}/balance" in document.json["paths"]
    docs = call(api, "GET", "/docs")
    assert docs.status == 200 and docs.headers["Content-Type"].startswith("text/html")


def test_no_api_key_reaches_the_worker_log(api):
    # Calls with each key, valid and not, on reads, writes and failures, then read the whole log.
    wallet_id = funded_wallet(api, "1.00")
    for key in api.keys.secrets():
        call(api, "GET", f"/v1/wallets/{wallet_id}", key=key)
        move(api, wallet_id, "withdrawals", "5.00", key=key)
        call(api, "POST", f"/v1/wallets/{wallet_id}/freeze", key=key, raw=b"{broken")
    log_text = api.worker.log_path.read_text(errors="replace")
    assert log_text, "the worker log should not be empty"
    for secret in api.secrets:
        assert secret not in log_text, "an API key was written to the worker log"


# ---------------------------------------------------------------- rate limit


def test_a_key_over_its_burst_is_429_with_retry_after_while_another_key_is_served(api):
    limited = api.limited
    path = f"/v1/commands/{uuid.uuid4().hex}"
    statuses = []
    refused = None
    for _ in range(20):  # bounded: a burst of 5 at 5/s refuses well within 20 quick requests
        reply = call(limited, "GET", path, key=limited.keys.read)
        statuses.append(reply.status)
        if reply.status == 429:
            refused = reply
            break
    assert refused is not None, f"no 429 within {len(statuses)} requests: {statuses}"
    assert len(statuses) >= 6 and set(statuses[:5]) == {404}, statuses
    assert_problem(refused, 429, "RATE_LIMITED")
    retry_after = refused.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    other = call(limited, "GET", path, key=limited.keys.write)
    assert other.status == 404 and other.code == "COMMAND_NOT_FOUND"


# ---------------------------------------------------------------- routing, metrics, restart


def test_an_unknown_route_is_404_problem_json(api):
    for path in ("/v1/nothing", "/v2/wallets", f"/v1/wallets/{new_id()}/unknown"):
        reply = call(api, "GET", path, key=api.keys.read)
        assert_problem(reply, 404, "NOT_FOUND")


@pytest.mark.parametrize("method,path", [("DELETE", "/v1/wallets/w-1"), ("PUT", "/v1/transfers"),
                                         ("GET", "/v1/wallets/w-1/deposits"), ("POST", "/v1/commands/c-1"),
                                         ("POST", "/healthz")])
def test_a_wrong_method_is_405_problem_json(api, method, path):
    reply = call(api, method, path, key=api.keys.admin, body={} if method in ("POST", "PUT") else _NO_BODY)
    assert_problem(reply, 405, "METHOD_NOT_ALLOWED")
    assert reply.headers.get("Allow")


def test_metrics_count_requests_by_route_and_status(api):
    call(api, "GET", f"/v1/wallets/{new_id()}", key=api.keys.read)
    call(api, "GET", "/v1/wallets/x/balance")
    text = call(api, "GET", "/metrics").text
    samples = {(s.labels.get("method"), s.labels.get("route"), s.labels.get("status")): s.value
               for family in text_string_to_metric_families(text) if family.name == "wallet_http_requests"
               for s in family.samples if s.name == "wallet_http_requests_total"}
    assert samples.get(("GET", "/v1/wallets/{wallet_id}", "404"), 0) >= 1, sorted(samples)
    assert samples.get(("GET", "/v1/wallets/{wallet_id}/balance", "401"), 0) >= 1, sorted(samples)


def test_a_restarted_web_process_answers_a_retry_with_the_first_response(api):
    wallet_id = open_wallet(api)
    deposit_key, open_key, reject_key = (f"{name}-{uuid.uuid4().hex}" for name in ("dep", "open", "rej"))
    deposit = move(api, wallet_id, "deposits", "12.34", idempotency_key=deposit_key)
    opened = call(api, "POST", "/v1/wallets", key=api.keys.write, body={"owner_id": "carol", "currency": "EUR"},
                  headers={"Idempotency-Key": open_key})
    rejected = move(api, wallet_id, "withdrawals", "99.00", idempotency_key=reject_key)
    assert (deposit.status, opened.status, rejected.status) == (200, 201, 422)

    assert api.worker.stop() == 0
    api.worker.start()

    deposit_again = move(api, wallet_id, "deposits", "12.34", idempotency_key=deposit_key)
    assert (deposit_again.status, deposit_again.json) == (200, deposit.json)
    opened_again = call(api, "POST", "/v1/wallets", key=api.keys.write, body={"owner_id": "carol", "currency": "EUR"},
                        headers={"Idempotency-Key": open_key})
    assert (opened_again.status, opened_again.json) == (201, opened.json)
    assert opened_again.headers["Location"] == opened.headers["Location"]
    rejected_again = move(api, wallet_id, "withdrawals", "99.00", idempotency_key=reject_key)
    assert (rejected_again.status, rejected_again.json) == (422, rejected.json)
    conflict = move(api, wallet_id, "deposits", "1.00", idempotency_key=deposit_key)
    assert_problem(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert strong_balance(api, wallet_id)["balance"] == "12.34"
