"""The OpenAPI 3.1 document of the HTTP API v1, and the two routes that serve it: `/openapi.json` and `/docs`.

The document is built from code, not kept as a file, so its limits (largest amount, longest `wait_ms`) are
the ones the running process enforces. `/docs` is a small self-contained page that renders the document with
no network access beyond this service (no CDN, no external fonts or scripts).
"""

from __future__ import annotations

import functools
import json
import weakref
from pathlib import Path

from aiohttp import web

from app import identity
from app.domain.money import CURRENCY_EXPONENTS
from app.intake import CURRENCY_RE, HOLD_ID_RE, PUBLIC_COMMAND_ID_RE, TEXT_LENGTH_MAX, WALLET_ID_RE
from app.settings import Settings
from web.reads import ENTRIES_LIMIT_DEFAULT, ENTRIES_LIMIT_MAX

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
# Versions travel as Avro longs (signed 64-bit).
VERSION_MAX = 2**63 - 1

WALLET_ID_PATTERN = f"^{WALLET_ID_RE.pattern}$"
COMMAND_ID_PATTERN = f"^{PUBLIC_COMMAND_ID_RE.pattern}$"
HOLD_ID_PATTERN = f"^{HOLD_ID_RE.pattern}$"
CURRENCY_PATTERN = f"^{CURRENCY_RE.pattern}$"
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,18})(\.[0-9]+)?$"
SIGNED_AMOUNT_PATTERN = r"^-?(0|[1-9][0-9]{0,18})(\.[0-9]+)?$"

DOCS_PAGE_PATH = Path(__file__).resolve().parent / "static" / "docs.html"
# The page runs only its own inline script and talks only to this origin.
DOCS_CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; img-src 'self' data:")

SCOPE_READ = "wallets:read"
SCOPE_WRITE = "wallets:write"
SCOPE_ADMIN = "admin"

_ERROR_RESPONSES = {
    "400": ("BadRequest", "Malformed request: unknown or missing field, wrong type, bad parameter."),
    "401": ("Unauthorized", "No API key or an unknown one (`UNAUTHORIZED`)."),
    "403": ("Forbidden", "The key lacks the scope this route needs (`FORBIDDEN`)."),
    "404": ("NotFound", "Unknown wallet, transfer or command (`WALLET_NOT_FOUND`, ...)."),
    "409": ("Conflict", "`Idempotency-Key` reused with another body (`IDEMPOTENCY_CONFLICT`)."),
    "412": ("MinVersionNotReached", "The owning table has not reached `min_version` within the wait "
            "(`MIN_VERSION_NOT_REACHED`): that version does not exist yet."),
    "413": ("PayloadTooLarge", "Request body larger than the limit."),
    "415": ("UnsupportedMediaType", "Request body is not `application/json`."),
    "422": ("Unprocessable", "Rejected by the ledger; `code` says why (`INSUFFICIENT_FUNDS`, `WALLET_FROZEN`, ...)."),
    "429": ("TooManyRequests", "Rate limit of the key exceeded (`RATE_LIMITED`); retry after `Retry-After` seconds."),
    "503": ("Unavailable", "A store or Kafka is unavailable; try again shortly."),
}
_POST_ERRORS = ("400", "401", "403", "404", "409", "413", "415", "422", "429", "503")
_GET_ERRORS = ("400", "401", "403", "404", "429", "503")
_VERSIONED_GET_ERRORS = ("400", "401", "403", "404", "412", "429", "503")


def _schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _parameter(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _location(pattern: str, description: str) -> dict:
    return {"Location": {"description": description, "required": True,
                         "schema": {"type": "string", "pattern": pattern}}}


def _object(required: list[str], properties: dict, *, closed: bool = False, description: str = "") -> dict:
    schema: dict = {"type": "object", "required": required, "properties": properties}
    if closed:  # request bodies: an unknown field is a 400
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _nullable(schema: dict) -> dict:
    return {"oneOf": [schema, {"type": "null"}]}


def _text(description: str) -> dict:
    return {"type": "string", "maxLength": TEXT_LENGTH_MAX, "description": description}


def _components(settings: Settings) -> dict:
    amount_rule = (f"A positive decimal string in the wallet's currency with at most the currency's minor-unit "
                   f"digits, at most {settings.amount_max_major:,} major units.")
    position = {  # the wallet's position after a command, or now
        "balance": _schema("SignedAmount"), "available": _schema("SignedAmount"), "held": _schema("Amount"),
        "version": _schema("Version"),
    }
    wallet = {
        "wallet_id": _schema("WalletId"), "owner_id": {"type": "string"}, "currency": _schema("Currency"),
        "status": _schema("WalletStatus"), **position,
    }
    wallet_required = ["wallet_id", "owner_id", "currency", "status", "balance", "available", "held", "version"]
    schemas = {
        "Amount": {"type": "string", "pattern": AMOUNT_PATTERN, "example": "150.75", "description": amount_rule},
        "SignedAmount": {"type": "string", "pattern": SIGNED_AMOUNT_PATTERN, "example": "-20.00",
                         "description": "A decimal string in the wallet's currency; negative within an overdraft."},
        "WalletId": {"type": "string", "pattern": WALLET_ID_PATTERN, "example": "w-alice-eur"},
        "CommandId": {"type": "string", "pattern": COMMAND_ID_PATTERN, "example": "order-4711:pay"},
        # A ledger entry may be the outcome of one of the ledger's own commands (a transfer leg, an expiry).
        "RecordedCommandId": {"type": "string", "example": "~credit/w-1/order-4711:1800000000000",
                              "pattern": f"^(?:{PUBLIC_COMMAND_ID_RE.pattern}|{identity.INTERNAL_COMMAND_ID_PATTERN})$",
                              "description": "A public command id, or an internal one (`~credit/...`, "
                                             "`~refund/...`, `~expire/...`; see docs/DESIGN.md section 7)."},
        "Currency": {"type": "string", "pattern": CURRENCY_PATTERN, "enum": sorted(CURRENCY_EXPONENTS),
                     "example": "EUR", "description": "ISO 4217 code. Minor-unit digits: " + ", ".join(
                         f"{code} {digits}" for code, digits in sorted(CURRENCY_EXPONENTS.items())) + "."},
        "Version": {"type": "integer", "minimum": 0, "maximum": VERSION_MAX,
                    "description": "The wallet's version: the count of events applied to it."},
        "Timestamp": {"type": "string", "format": "date-time", "example": "2025-01-31T12:00:00Z"},
        "WalletStatus": {"type": "string", "enum": ["ACTIVE", "FROZEN", "CLOSED"]},
        "Problem": _object(["type", "title", "status", "detail", "code"], {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "example": "INSUFFICIENT_FUNDS"},
            "command_id": _schema("CommandId"),
        }, description="An error (RFC 9457). No stack trace ever reaches a client."),
        "Wallet": _object(wallet_required, wallet),
        "WalletCreated": _object(["command_id", "event", *wallet_required], {
            "command_id": _schema("CommandId"), "event": {"type": "string", "example": "WalletOpened"}, **wallet,
        }),
        "Balance": _object(["wallet_id", "currency", "balance", "available", "held", "version"], {
            "wallet_id": _schema("WalletId"), "currency": _schema("Currency"), "status": _schema("WalletStatus"),
            **position,
            "at": {**_schema("Timestamp"), "description": "Present only when `?at=` was given."},
        }),
        "CommandResult": _object(
            ["command_id", "event", "wallet_id", "currency", "version", "balance", "available", "held"], {
                "command_id": _schema("CommandId"),
                "event": {"type": "string", "description": "The event the command produced.",
                          "example": "Deposited"},
                "wallet_id": _schema("WalletId"), "currency": _schema("Currency"), **position,
                "amount": _schema("Amount"),
                "hold_id": {"type": "string", "pattern": HOLD_ID_PATTERN},
                "expires_at": _schema("Timestamp"),
                "status": _schema("WalletStatus"),
                "released": {**_schema("Amount"), "description": "Capture: the remainder of the hold released."},
                "reference": {"type": "string"},
            }, description="The wallet's position after the command was applied."),
        "TransferAccepted": _object(
            ["command_id", "event", "transfer_id", "source_wallet_id", "destination_wallet_id", "amount",
             "currency", "status", "version", "balance", "available", "held"], {
                "command_id": _schema("CommandId"), "event": {"type": "string", "example": "TransferDebited"},
                "transfer_id": _schema("CommandId"), "source_wallet_id": _schema("WalletId"),
                "destination_wallet_id": _schema("WalletId"), "amount": _schema("Amount"),
                "currency": _schema("Currency"), "status": _schema("TransferStatus"), **position,
            }, description="The source wallet's position after the debit; the credit follows."),
        "TransferStatus": {"type": "string", "enum": ["pending", "completed", "refunded"]},
        "Transfer": _object(
            ["transfer_id", "source_wallet_id", "destination_wallet_id", "amount", "currency", "status"], {
                "transfer_id": _schema("CommandId"), "source_wallet_id": _schema("WalletId"),
                "destination_wallet_id": _schema("WalletId"), "amount": _schema("Amount"),
                "currency": _schema("Currency"), "status": _schema("TransferStatus"),
                "reason_code": _nullable({"type": "string"}),
                "created_at": _nullable(_schema("Timestamp")),
                "completed_at": _nullable(_schema("Timestamp")),
                "refunded_at": _nullable(_schema("Timestamp")),
            }),
        "Pending": _object(["command_id", "status"], {
            "command_id": _schema("CommandId"), "status": {"type": "string", "enum": ["pending"]},
        }, description="No outcome within `wait_ms`; poll `Location`."),
        "CommandOutcome": _object(["command_id", "status"], {
            "command_id": _schema("CommandId"),
            "status": {"type": "string", "enum": ["applied", "rejected", "pending"]},
            "wallet_id": _schema("WalletId"), "event": {"type": "string"}, "version": _schema("Version"),
            "code": {"type": "string", "description": "Rejection code when rejected."},
            "detail": {"type": "string"},
        }),
        "Entry": _object(
            ["version", "kind", "amount", "currency", "balance_after", "available_after", "held_after",
             "command_id", "reference", "hash", "time"], {
                "version": _schema("Version"), "kind": {"type": "string", "example": "Deposited"},
                "amount": {**_schema("SignedAmount"), "description": "Signed: negative for money leaving."},
                "currency": _schema("Currency"), "balance_after": _schema("SignedAmount"),
                "available_after": _schema("SignedAmount"), "held_after": _schema("Amount"),
                "command_id": _schema("RecordedCommandId"), "reference": {"type": "string"},
                "hash": {"type": "string", "description": "Hash chain over the wallet's entries."},
                "time": _schema("Timestamp"),
                "counterparty_wallet_id": _nullable(_schema("WalletId")),
                "transfer_id": _nullable({"type": "string"}),
                "hold_id": _nullable({"type": "string"}),
            }),
        "EntriesPage": _object(["wallet_id", "entries", "next_cursor"], {
            "wallet_id": _schema("WalletId"), "entries": {"type": "array", "items": _schema("Entry")},
            "next_cursor": {"type": ["string", "null"], "description": "Null on the last page."},
        }),
        "OpenWalletRequest": _object(["owner_id", "currency"], {
            "wallet_id": {**_schema("WalletId"),
                          "description": "Optional; derived from the command id when absent."},
            "owner_id": {"type": "string", "minLength": 1, "maxLength": TEXT_LENGTH_MAX},
            "currency": _schema("Currency"),
            "overdraft_limit": {"type": "string", "pattern": AMOUNT_PATTERN, "example": "100.00",
                                "description": "How far `available` may go below zero; \"0\" (none) by default."},
        }, closed=True),
        "MoneyMovementRequest": _object(["amount"], {
            "amount": _schema("Amount"), "reference": _text("Client reference, kept on the entry."),
            "description": _text("Free text, kept on the entry."),
        }, closed=True),
        "TransferRequest": _object(["source_wallet_id", "destination_wallet_id", "amount"], {
            "source_wallet_id": _schema("WalletId"), "destination_wallet_id": _schema("WalletId"),
            "amount": _schema("Amount"), "reference": _text("Client reference, kept on both entries."),
        }, closed=True),
        "PlaceHoldRequest": _object(["amount"], {
            "amount": _schema("Amount"),
            "expires_in_s": {"type": "integer", "minimum": 1, "maximum": settings.hold_expires_in_s_max,
                             "description": "Seconds until the hold is released by itself; "
                                            f"{settings.hold_expires_in_s_default} when absent."},
        }, closed=True),
        "CaptureHoldRequest": _object([], {
            "amount": {**_schema("Amount"), "description": "At most the held amount; the whole hold when absent."},
        }, closed=True),
        "FreezeRequest": _object([], {"reason": _text("Why the wallet is frozen (audit).")}, closed=True),
        "EmptyRequest": _object([], {}, closed=True),
        "Health": _object(["status"], {"status": {"type": "string", "example": "ok"}}),
        "Readiness": _object(["status", "checks"], {
            "status": {"type": "string", "enum": ["ready", "not ready"]},
            "checks": {"type": "object", "additionalProperties": _object(["ok"], {
                "ok": {"type": "boolean"}, "error": {"type": "string"}})},
        }),
    }
    responses: dict = {}
    for name, description in _ERROR_RESPONSES.values():
        responses[name] = {"description": description, "content": {
            "application/problem+json": {"schema": _schema("Problem")}}}
    responses["Unauthorized"]["headers"] = {"WWW-Authenticate": {
        "description": "`Bearer`.", "required": True, "schema": {"type": "string"}}}
    responses["TooManyRequests"]["headers"] = {"Retry-After": {
        "description": "Whole seconds to wait.", "required": True, "schema": {"type": "integer", "minimum": 0}}}
    responses["Pending"] = {
        "description": "Accepted, no outcome within `wait_ms`: poll `GET /v1/commands/{command_id}`.",
        "headers": _location(r"^/v1/commands/[^/]+$", "`/v1/commands/{command_id}`."),
        "content": _json(_schema("Pending")),
    }
    parameters = {
        "WalletId": {"name": "wallet_id", "in": "path", "required": True, "schema": _schema("WalletId")},
        "HoldId": {"name": "hold_id", "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": HOLD_ID_PATTERN}},
        "IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "pattern": f"^{identity.IDEMPOTENCY_KEY_RE.pattern}$",
                       "example": "order-4711:pay"},
            "description": "Scoped by your API key, it names the command (`command_id` is `<key_id>.<key>`). The "
                           "same key with the same body returns the first response for as long as the ledger "
                           "remembers the command (`command_retention_s`, 7 days by default); with another body "
                           "it is a 409. Keys starting with `~` are reserved (400 `RESERVED_COMMAND_ID`).",
        },
        "WaitMs": {
            "name": "wait_ms", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": settings.command_wait_ms_max,
                       "default": settings.command_wait_ms_default},
            "description": "Milliseconds to wait for the outcome before answering 202.",
        },
        "MinVersion": {
            "name": "min_version", "in": "query", "required": False, "schema": _schema("Version"),
            "description": "Read-your-writes: never answer with a state older than this version.",
        },
        "Consistency": {
            "name": "consistency", "in": "query", "required": False,
            "schema": {"type": "string", "enum": ["eventual", "strong"], "default": "eventual"},
            "description": "`strong` reads the owning processor's table instead of Redis.",
        },
    }
    return {
        "securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "`Authorization: Bearer <key>`; keys and scopes come from `WALLET_API_KEYS`."}},
        "schemas": schemas, "responses": responses, "parameters": parameters,
    }


def _errors(statuses: tuple[str, ...]) -> dict:
    return {status: _response(_ERROR_RESPONSES[status][0]) for status in statuses}


def _secured(scope: str) -> dict:
    return {"security": [{"bearerAuth": [scope]}], "x-scope": scope}


def _post(operation_id: str, summary: str, description: str, scope: str, body: str, success: dict, *,
          tag: str, body_required: bool = True, path_parameters: tuple[str, ...] = ("WalletId",),
          addresses_wallet: bool = True) -> dict:
    errors = _POST_ERRORS if addresses_wallet else tuple(s for s in _POST_ERRORS if s != "404")
    return {"post": {
        "operationId": operation_id, "summary": summary, "tags": [tag],
        "description": f"{description}\n\nScope: `{scope}`.",
        **_secured(scope),
        "parameters": [_parameter(p) for p in (*path_parameters, "IdempotencyKey", "WaitMs")],
        "requestBody": {"required": body_required, "content": _json(_schema(body))},
        "responses": {**success, "202": _response("Pending"), **_errors(errors)},
    }}


def _get(operation_id: str, summary: str, description: str, schema: str, *, tag: str,
         parameters: list[dict], errors: tuple[str, ...] = _GET_ERRORS) -> dict:
    return {"get": {
        "operationId": operation_id, "summary": summary, "tags": [tag],
        "description": f"{description}\n\nScope: `{SCOPE_READ}`.",
        **_secured(SCOPE_READ), "parameters": parameters,
        "responses": {"200": {"description": "OK.", "content": _json(_schema(schema))}, **_errors(errors)},
    }}


def _operations_route(operation_id: str, summary: str, responses: dict) -> dict:
    return {"get": {"operationId": operation_id, "summary": summary, "tags": ["operations"], "security": [],
                    "description": "No API key needed.", "responses": responses}}


def _paths(settings: Settings) -> dict:
    applied = {"200": {"description": "Applied: the wallet's new position.",
                       "content": _json(_schema("CommandResult"))}}
    wallet_path = "/v1/wallets/{wallet_id}"
    hold_path = wallet_path + "/holds/{hold_id}"
    return {
        "/v1/wallets": _post(
            "openWallet", "Open a wallet", "Opens a wallet in one currency. `WALLET_EXISTS` (422) when the id "
            "is taken.", SCOPE_WRITE, "OpenWalletRequest", {"201": {
                "description": "Opened.", "content": _json(_schema("WalletCreated")),
                "headers": _location(r"^/v1/wallets/[A-Za-z0-9_-]{1,64}$", "`/v1/wallets/{wallet_id}`.")}},
            tag="wallets", path_parameters=(), addresses_wallet=False),
        wallet_path: _get(
            "getWallet", "Get a wallet", "The wallet and its position.", "Wallet", tag="wallets",
            parameters=[_parameter("WalletId"), _parameter("Consistency"), _parameter("MinVersion")],
            errors=_VERSIONED_GET_ERRORS),
        wallet_path + "/balance": _get(
            "getBalance", "Get a balance", "The balance now, or at a past time with `?at=`.", "Balance",
            tag="wallets", parameters=[
                _parameter("WalletId"),
                {"name": "at", "in": "query", "required": False, "schema": _schema("Timestamp"),
                 "description": "RFC 3339 time: the balance after the last entry at or before it."},
                _parameter("MinVersion"), _parameter("Consistency")], errors=_VERSIONED_GET_ERRORS),
        wallet_path + "/deposits": _post(
            "deposit", "Deposit", "Credits the wallet.", SCOPE_WRITE, "MoneyMovementRequest", applied,
            tag="money"),
        wallet_path + "/withdrawals": _post(
            "withdraw", "Withdraw", "Debits the wallet; `INSUFFICIENT_FUNDS` (422) beyond `available` and the "
            "overdraft.", SCOPE_WRITE, "MoneyMovementRequest", applied, tag="money"),
        "/v1/transfers": _post(
            "createTransfer", "Transfer between wallets", "Debits the source and credits the destination "
            "(same currency). A failed credit refunds the source.", SCOPE_WRITE, "TransferRequest", {"201": {
                "description": "Debited; the credit follows.", "content": _json(_schema("TransferAccepted")),
                "headers": _location(r"^/v1/transfers/[^/]+$", "`/v1/transfers/{transfer_id}`.")}},
            tag="transfers", path_parameters=()),
        "/v1/transfers/{transfer_id}": _get(
            "getTransfer", "Get a transfer", "A transfer and its status. One id may name transfers of several "
            "source wallets (ids are unique per source) and, once the command retention has passed, a later "
            "transfer of the same source: the latest debited is answered, or the latest of one source with "
            "`?source_wallet_id=`.", "Transfer", tag="transfers",
            parameters=[{"name": "transfer_id", "in": "path", "required": True, "schema": _schema("CommandId")},
                        {"name": "source_wallet_id", "in": "query", "required": False, "schema": _schema("WalletId"),
                         "description": "Only transfers debited from this wallet."}]),
        wallet_path + "/holds": _post(
            "placeHold", "Place a hold", "Reserves an amount of `available` until captured, released or "
            "expired.", SCOPE_WRITE, "PlaceHoldRequest", {"201": {
                "description": "Placed; `hold_id` and `expires_at` name it.",
                "content": _json(_schema("CommandResult"))}}, tag="holds"),
        hold_path + "/capture": _post(
            "captureHold", "Capture a hold", "Debits the captured amount and releases the remainder.",
            SCOPE_WRITE, "CaptureHoldRequest", applied, tag="holds", path_parameters=("WalletId", "HoldId")),
        hold_path + "/release": _post(
            "releaseHold", "Release a hold", "Releases the whole hold. The body is optional.", SCOPE_WRITE,
            "EmptyRequest", applied, tag="holds", body_required=False, path_parameters=("WalletId", "HoldId")),
        wallet_path + "/freeze": _post(
            "freezeWallet", "Freeze a wallet", "Refuses debits until unfrozen. The body is optional.",
            SCOPE_ADMIN, "FreezeRequest", applied, tag="admin", body_required=False),
        wallet_path + "/unfreeze": _post(
            "unfreezeWallet", "Unfreeze a wallet", "The body is optional.", SCOPE_ADMIN, "EmptyRequest", applied,
            tag="admin", body_required=False),
        wallet_path + "/close": _post(
            "closeWallet", "Close a wallet", "Only a zero balance with no open hold can close. The body is "
            "optional.", SCOPE_ADMIN, "EmptyRequest", applied, tag="admin", body_required=False),
        wallet_path + "/entries": _get(
            "listEntries", "List ledger entries", "Newest first, keyset pagination: pass `next_cursor` back "
            "as `cursor`.", "EntriesPage", tag="history", parameters=[
                _parameter("WalletId"),
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": ENTRIES_LIMIT_MAX,
                            "default": ENTRIES_LIMIT_DEFAULT}},
                {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "Opaque; `next_cursor` of the previous page."}]),
        "/v1/commands/{command_id}": _get(
            "getCommand", "Get a command's outcome", "The outcome of any command, by its id.", "CommandOutcome",
            tag="commands",
            parameters=[{"name": "command_id", "in": "path", "required": True, "schema": _schema("CommandId")}]),
        "/healthz": _operations_route("healthz", "Liveness", {
            "200": {"description": "The process serves requests.", "content": _json(_schema("Health"))}}),
        "/readyz": _operations_route("readyz", "Readiness: Kafka, MySQL and Redis answer", {
            "200": {"description": "Ready.", "content": _json(_schema("Readiness"))},
            "503": {"description": "Not ready; `checks` names the failing dependency.",
                    "content": _json(_schema("Readiness"))}}),
        "/metrics": _operations_route("metrics", "Prometheus metrics", {
            "200": {"description": "Prometheus text exposition.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/openapi.json": _operations_route("openapi", "This document", {
            "200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}}),
        "/docs": _operations_route("docs", "API reference page (works offline)", {
            "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}}),
    }


def openapi_document(settings: Settings) -> dict:
    """The OpenAPI 3.1 document of the v1 API, with the limits of `settings` (milliseconds, major units)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Wallet ledger API", "version": API_VERSION,
            "description": (
                "A Kafka-native wallet ledger. JSON in and out; amounts are decimal strings in the wallet's "
                "currency. Errors are `application/problem+json`.\n\n"
                f"Scopes: `{SCOPE_READ}` for every GET under `/v1`; `{SCOPE_WRITE}` to open wallets, move money, "
                f"transfer and hold; `{SCOPE_ADMIN}` for freeze, unfreeze and close (and implies every scope).\n\n"
                "Every POST takes an optional `Idempotency-Key` and waits up to `wait_ms` "
                f"(default {settings.command_wait_ms_default}, at most {settings.command_wait_ms_max}) for the "
                "outcome: applied is 200/201, rejected 422, still pending 202 with `Location`. Each key has a "
                "rate limit (429 with `Retry-After`)."),
        },
        "tags": [{"name": name} for name in
                 ("wallets", "money", "transfers", "holds", "admin", "history", "commands", "operations")],
        "paths": _paths(settings),
        "components": _components(settings),
    }


# Rendered once per application (the settings of an app never change while it runs).
_rendered: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


async def openapi_view(request: web.Request) -> web.Response:
    """`GET /openapi.json`: the document as JSON; no key needed."""
    from web import app as web_app  # web.app registers this view: import it late to avoid a cycle

    body = _rendered.get(request.app)
    if body is None:
        body = json.dumps(openapi_document(request.app[web_app.SETTINGS]), indent=1).encode()
        _rendered[request.app] = body
    return web.Response(body=body, content_type="application/json")


@functools.cache
def _docs_page() -> bytes:
    return DOCS_PAGE_PATH.read_bytes()


async def docs_view(request: web.Request) -> web.Response:
    """`GET /docs`: the self-contained reference page that renders `/openapi.json`; no key needed."""
    return web.Response(body=_docs_page(), content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY})
