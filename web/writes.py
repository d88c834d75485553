"""Write routes: each validates the request, publishes one command and answers with its outcome.

The command id is the `Idempotency-Key` scoped by the caller's API key (`<key_id>.<key>`, app/identity.py), or
a random UUID. Ids derived from it (a new wallet's id when
the body names none, a hold's id) are deterministic, so a retry of the same request is the same command
and the processor answers it with the first outcome; another body under the same key is a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid

from aiohttp import web
from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy import select

from readside.redis import wallet_key
from app import identity
from app.domain import commands as c
from app.domain.limits import Limits
from app.domain.money import AMOUNT_MINOR_MAX
from app.intake import HOLD_ID_RE
from readside.readmodel import command_outcomes
from app.replies import REPLY_CONFLICT, REPLY_INVALID
from web import render, validation
from web.access import ADMIN, PRINCIPAL, WRITE, authorize, pass_gate, pay_before_lookup
from web.commands import GatewayBusy, GatewayUnavailable
from web.context import GATEWAY, REDIS, SETTINGS, WALLET_CURRENCIES
from web.problems import ProblemError
from readside.errors import StoreUnavailable
from web.reads import (PENDING_KEY_PREFIX, STORE_TIMEOUT_S, path_wallet_id, primary_row,
                        remember_currency, wallet_currency)

log = logging.getLogger("wallet.web.writes")

http_command_results_total = Counter(
    "wallet_http_command_results_total",
    "Writes over HTTP by what the client got: applied, rejected, pending (202), conflict (409), "
    "invalid, unavailable (503).", ["result"])

V = validation
# Redis key claiming an Idempotency-Key for one wallet (see `_gate`).
CLAIM_KEY_PREFIX = "idempotency:"
IDEMPOTENCY_KEY = web.RequestKey("idempotency_key", object)


def _derived_id(prefix: str, command_id: str) -> str:
    """A short id that is a function of the command id (so a retried request names the same thing)."""
    return prefix + hashlib.blake2b(command_id.encode(), digest_size=12).hexdigest()


def _command_id(request: web.Request) -> str:
    """The command id: the Idempotency-Key scoped by the caller's API key (app/identity.py), or a random id."""
    key = V.idempotency_key(request)
    request[IDEMPOTENCY_KEY] = key
    if key is None:
        return uuid.uuid4().hex
    return identity.http_command_id(request[PRINCIPAL].key_id, key)


async def _gate(request: web.Request, command: c.CommandBase) -> None:
    """The rate limit (429), and the claim of the request's Idempotency-Key, in one Redis round trip.

    409 when the key already belongs to a command for another wallet. The processor remembers command ids
    per partition, so it sees a key reused for the same wallet (and answers conflict or the first outcome)
    but not one reused for a wallet on another partition. The claim in Redis (atomic SET NX) closes that gap;
    it lives `command_retention_s`, exactly as long as the processor remembers the command, so there is no
    window where one forgets what the other still knows. Without Redis the MySQL primary's outcomes are
    checked instead (not atomic, but it catches every settled command).
    """
    keyed = request.get(IDEMPOTENCY_KEY) is not None
    claim = {"claim_key": CLAIM_KEY_PREFIX + command.command_id, "claim_value": command.wallet_id,
             "claim_ttl_s": request.app[SETTINGS].command_retention_s} if keyed else {}
    passage = await pass_gate(request, **claim)
    if not keyed:
        return
    owner = passage.claim_owner if passage.redis_ok else await _outcome_wallet(request, command.command_id)
    if owner is not None and owner != command.wallet_id:
        http_command_results_total.labels("conflict").inc()
        raise ProblemError(409, "IDEMPOTENCY_CONFLICT", "Idempotency key reused",
                           "this Idempotency-Key was used with another request", extra={"command_id": command.command_id})


async def _outcome_wallet(request: web.Request, command_id: str) -> str | None:
    query = select(command_outcomes.c.wallet_id).where(command_outcomes.c.command_id == command_id)
    try:
        row = await primary_row(request.app, query)
    except StoreUnavailable:
        return None  # neither store answers: the processor's per-partition check is what is left
    return None if row is None else row["wallet_id"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _max_minor(request: web.Request, currency: str) -> int:
    return Limits(amount_max_major=request.app[SETTINGS].amount_max_major).amount_max_minor(currency)


async def _existing_currency(request: web.Request, wallet_id: str) -> str:
    passage = None
    if wallet_id not in request.app[WALLET_CURRENCIES]:  # a store lookup: the request pays its rate limit first
        passage = await pay_before_lookup(request, wallet_key=wallet_key(wallet_id))
    currency = await wallet_currency(request.app, wallet_id, passage)
    if currency is None:
        raise ProblemError(404, "WALLET_NOT_FOUND", "Unknown wallet", f"no wallet {wallet_id}")
    return currency


async def _submit(request: web.Request, command: c.CommandBase, currency: str, *, created: bool = False,
                  location: str | None = None) -> web.Response:
    """Publish `command`, wait for its outcome, and answer 200/201, 202, 409 or 422."""
    settings = request.app[SETTINGS]
    wait_ms = V.query_int(request, "wait_ms", settings.command_wait_ms_default, 0, settings.command_wait_ms_max)
    command_id = command.command_id
    await _gate(request, command)
    try:
        answer = await request.app[GATEWAY].submit(command, wait_ms)
    except GatewayBusy:
        http_command_results_total.labels("unavailable").inc()
        raise ProblemError(503, "BUSY", "Too many writes in flight", "retry shortly",
                           {"Retry-After": "1"}, {"command_id": command_id}) from None
    except GatewayUnavailable as exc:
        http_command_results_total.labels("unavailable").inc()
        log.warning("command not published", extra={"command_id": command_id, "error": str(exc)})
        raise ProblemError(503, "KAFKA_UNAVAILABLE", "Command not accepted",
                           "Kafka did not take the command; retry with the same Idempotency-Key",
                           {"Retry-After": "1"}, {"command_id": command_id}) from None
    if answer is None or answer.event is None and answer.result not in (REPLY_CONFLICT, REPLY_INVALID):
        http_command_results_total.labels("pending").inc()
        return await _pending(request, command_id)
    if answer.result == REPLY_CONFLICT:
        http_command_results_total.labels("conflict").inc()
        raise ProblemError(409, "IDEMPOTENCY_CONFLICT", "Idempotency key reused",
                           "this Idempotency-Key was used with another request", extra={"command_id": command_id})
    if answer.result == REPLY_INVALID:
        http_command_results_total.labels("invalid").inc()
        log.warning("command refused as poison", extra={"command_id": command_id, "reason": answer.error_code})
        raise V.invalid(answer.error_detail or answer.error_code)
    event = answer.event
    if isinstance(event, render.REJECTIONS):
        http_command_results_total.labels("rejected").inc()
        raise ProblemError(422, event.code, "Command rejected", event.detail,
                           extra={"command_id": command_id, "version": event.version})
    http_command_results_total.labels("applied").inc()
    headers = {"Location": location} if location else None
    return web.json_response(render.command_result(event, currency), status=201 if created else 200,
                             headers=headers)


async def _pending(request: web.Request, command_id: str) -> web.Response:
    """202: the outcome did not come in time; it will be at /v1/commands/{id}."""
    settings = request.app[SETTINGS]
    try:
        await asyncio.wait_for(request.app[REDIS].set(PENDING_KEY_PREFIX + command_id, "1",
                                                      ex=settings.command_retention_s), STORE_TIMEOUT_S)
    except (RedisError, OSError, asyncio.TimeoutError):
        pass  # the outcome still lands in MySQL; until then /v1/commands answers 404
    location = f"/v1/commands/{command_id}"
    return web.json_response({"command_id": command_id, "status": "pending"}, status=202,
                             headers={"Location": location})


async def open_wallet(request: web.Request) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    body = V.fields(await V.json_body(request), {"owner_id": V.owner_id, "currency": V.currency},
                    {"wallet_id": V.wallet_id, "overdraft_limit": V.amount_text})
    command_id = _command_id(request)
    currency = body["currency"]
    overdraft_minor = 0
    if "overdraft_limit" in body:
        overdraft_minor = V.amount_minor(body["overdraft_limit"], currency, name="overdraft_limit",
                                         max_minor=AMOUNT_MINOR_MAX, allow_zero=True)
    wallet_id = body.get("wallet_id") or _derived_id("w_", command_id)
    command = c.OpenWallet(command_id=command_id, wallet_id=wallet_id, timestamp_ms=_now_ms(),
                           owner_id=body["owner_id"], currency=currency, overdraft_limit_minor=overdraft_minor)
    response = await _submit(request, command, currency, created=True, location=f"/v1/wallets/{wallet_id}")
    if response.status == 201:
        remember_currency(request.app, wallet_id, currency)
    return response


async def _move(request: web.Request, kind: type[c.Deposit] | type[c.Withdraw]) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    wallet_id = path_wallet_id(request)
    body = V.fields(await V.json_body(request), {"amount": V.amount_text},
                    {"reference": V.text, "description": V.text})
    currency = await _existing_currency(request, wallet_id)
    amount_minor = V.amount_minor(body["amount"], currency, max_minor=_max_minor(request, currency))
    command = kind(command_id=_command_id(request), wallet_id=wallet_id, timestamp_ms=_now_ms(),
                   amount_minor=amount_minor, currency=currency, reference=body.get("reference", ""),
                   description=body.get("description", ""))
    return await _submit(request, command, currency)


async def deposit(request: web.Request) -> web.Response:
    return await _move(request, c.Deposit)


async def withdraw(request: web.Request) -> web.Response:
    return await _move(request, c.Withdraw)


async def transfer(request: web.Request) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    body = V.fields(await V.json_body(request),
                    {"source_wallet_id": V.wallet_id, "destination_wallet_id": V.wallet_id, "amount": V.amount_text},
                    {"reference": V.text})
    source, destination = body["source_wallet_id"], body["destination_wallet_id"]
    currency = await _existing_currency(request, source)
    destination_currency = await _existing_currency(request, destination)
    if destination_currency != currency:
        raise ProblemError(422, "CURRENCY_MISMATCH", "Currencies differ",
                           f"{source} holds {currency} and {destination} holds {destination_currency}")
    amount_minor = V.amount_minor(body["amount"], currency, max_minor=_max_minor(request, currency))
    command_id = _command_id(request)
    command = c.Transfer(command_id=command_id, wallet_id=source, timestamp_ms=_now_ms(),
                         destination_wallet_id=destination, amount_minor=amount_minor, currency=currency,
                         reference=body.get("reference", ""))
    return await _submit(request, command, currency, created=True, location=f"/v1/transfers/{command_id}")


async def place_hold(request: web.Request) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    wallet_id = path_wallet_id(request)
    settings = request.app[SETTINGS]
    body = V.fields(await V.json_body(request), {"amount": V.amount_text},
                    {"expires_in_s": V.integer(1, settings.hold_expires_in_s_max)})
    currency = await _existing_currency(request, wallet_id)
    amount_minor = V.amount_minor(body["amount"], currency, max_minor=_max_minor(request, currency))
    command_id = _command_id(request)
    now_ms = _now_ms()
    expires_in_s = body.get("expires_in_s", settings.hold_expires_in_s_default)
    command = c.PlaceHold(command_id=command_id, wallet_id=wallet_id, timestamp_ms=now_ms,
                          hold_id=_derived_id("h_", command_id), amount_minor=amount_minor, currency=currency,
                          expires_at_ms=now_ms + expires_in_s * 1000)
    return await _submit(request, command, currency, created=True)


def _hold_id(request: web.Request) -> str:
    return V.path_id(request, "hold_id", HOLD_ID_RE, "INVALID_HOLD_ID")


async def capture_hold(request: web.Request) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    wallet_id, hold_id = path_wallet_id(request), _hold_id(request)
    body = V.fields(await V.json_body(request, optional=True), {}, {"amount": V.amount_text})
    currency = await _existing_currency(request, wallet_id)
    amount_minor = None
    if "amount" in body:
        amount_minor = V.amount_minor(body["amount"], currency, max_minor=_max_minor(request, currency))
    command = c.CaptureHold(command_id=_command_id(request), wallet_id=wallet_id, timestamp_ms=_now_ms(),
                            hold_id=hold_id, amount_minor=amount_minor)
    return await _submit(request, command, currency)


async def release_hold(request: web.Request) -> web.Response:
    await authorize(request, WRITE, limit_now=False)
    wallet_id, hold_id = path_wallet_id(request), _hold_id(request)
    V.fields(await V.json_body(request, optional=True), {}, {})
    currency = await _existing_currency(request, wallet_id)
    command = c.ReleaseHold(command_id=_command_id(request), wallet_id=wallet_id, timestamp_ms=_now_ms(),
                            hold_id=hold_id)
    return await _submit(request, command, currency)


async def freeze(request: web.Request) -> web.Response:
    await authorize(request, ADMIN, limit_now=False)
    wallet_id = path_wallet_id(request)
    body = V.fields(await V.json_body(request, optional=True), {}, {"reason": V.text})
    currency = await _existing_currency(request, wallet_id)
    command = c.Freeze(command_id=_command_id(request), wallet_id=wallet_id, timestamp_ms=_now_ms(),
                       reason=body.get("reason", ""))
    return await _submit(request, command, currency)


async def _admin_action(request: web.Request, kind: type[c.Unfreeze] | type[c.Close]) -> web.Response:
    await authorize(request, ADMIN, limit_now=False)
    wallet_id = path_wallet_id(request)
    V.fields(await V.json_body(request, optional=True), {}, {})
    currency = await _existing_currency(request, wallet_id)
    return await _submit(request, kind(command_id=_command_id(request), wallet_id=wallet_id,
                                       timestamp_ms=_now_ms()), currency)


async def unfreeze(request: web.Request) -> web.Response:
    return await _admin_action(request, c.Unfreeze)


async def close(request: web.Request) -> web.Response:
    return await _admin_action(request, c.Close)
