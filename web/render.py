"""JSON representations the API sends: wallets, balances, command results, transfers, entries.

Amounts leave as decimal strings of the wallet's currency (`web.amounts.format_minor`); times as
RFC 3339 UTC with milliseconds. A command's response is a pure function of its outcome event and the
wallet's currency, so a retry with the same Idempotency-Key gets the same body as the first request.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from app.domain import events as e
from web.amounts import format_minor

_STATUS_AFTER = {e.WalletOpened: "ACTIVE", e.WalletFrozen: "FROZEN", e.WalletUnfrozen: "ACTIVE",
                 e.WalletClosed: "CLOSED"}
REJECTIONS = (e.CommandRejected, e.TransferCreditRejected)


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def position(wallet_id: str, found: Mapping[str, Any], *, with_owner: bool) -> dict[str, Any]:
    """A wallet's position (`balance_minor`, ... or Redis's `balance`, ...) as the API shows it."""
    currency = str(found["currency"])

    def money(name: str) -> str:
        value = found[name + "_minor"] if name + "_minor" in found else found[name]
        return format_minor(int(value), currency)

    body: dict[str, Any] = {"wallet_id": wallet_id}
    if with_owner:
        body["owner_id"] = found.get("owner_id", "")
    body.update({"currency": currency, "status": found["status"], "balance": money("balance"),
                 "available": money("available"), "held": money("held"), "version": int(found["version"])})
    return body


def command_result(event: e.EventBase, currency: str) -> dict[str, Any]:
    """The body of an applied command: the wallet's new money position and what the event says."""
    currency = getattr(event, "currency", "") or currency
    body: dict[str, Any] = {
        "command_id": event.command_id, "event": type(event).__name__, "wallet_id": event.wallet_id,
        "currency": currency, "version": event.version,
        "balance": format_minor(event.balance_after_minor, currency),
        "available": format_minor(event.available_after_minor, currency),
        "held": format_minor(event.held_after_minor, currency),
    }
    if isinstance(event, (e.Deposited, e.Withdrawn, e.HoldPlaced, e.HoldCaptured, e.HoldReleased, e.TransferDebited)):
        body["amount"] = format_minor(event.amount_minor, currency)
    if isinstance(event, (e.HoldPlaced, e.HoldCaptured, e.HoldReleased)):
        body["hold_id"] = event.hold_id
    if isinstance(event, e.HoldPlaced):
        body["expires_at"] = rfc3339(event.expires_at_ms)
    if isinstance(event, e.HoldCaptured):
        body["released"] = format_minor(event.released_minor, currency)
    if isinstance(event, (e.Deposited, e.Withdrawn)) and event.reference:
        body["reference"] = event.reference
    status = _STATUS_AFTER.get(type(event))
    if status is not None:
        body["status"] = status
    if isinstance(event, e.WalletOpened):
        body["owner_id"] = event.owner_id
    if isinstance(event, e.TransferDebited):
        body.update({"transfer_id": event.transfer_id, "source_wallet_id": event.wallet_id,
                     "destination_wallet_id": event.destination_wallet_id, "status": "pending"})
    return body


def transfer(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "transfer_id": row["transfer_id"], "source_wallet_id": row["source_wallet_id"],
        "destination_wallet_id": row["destination_wallet_id"],
        "amount": format_minor(row["amount_minor"], row["currency"]), "currency": row["currency"],
        "status": row["status"], "reason_code": row["reason_code"], "created_at": rfc3339(row["created_at_ms"]),
        "completed_at": rfc3339(row["completed_at_ms"]), "refunded_at": rfc3339(row["refunded_at_ms"]),
    }


def entry(row: Mapping[str, Any], currency: str) -> dict[str, Any]:
    return {
        "version": row["version"], "kind": row["kind"], "amount": format_minor(row["amount_minor"], currency),
        "currency": currency, "balance_after": format_minor(row["balance_after_minor"], currency),
        "available_after": format_minor(row["available_after_minor"], currency),
        "held_after": format_minor(row["held_after_minor"], currency), "command_id": row["command_id"],
        "counterparty_wallet_id": row["counterparty_wallet_id"], "transfer_id": row["transfer_id"],
        "hold_id": row["hold_id"], "reference": row["reference"], "hash": row["hash"],
        "time": rfc3339(row["event_time_ms"]),
    }


def command_outcome(row: Mapping[str, Any]) -> dict[str, Any]:
    body = {"command_id": row["command_id"], "status": row["outcome"], "wallet_id": row["wallet_id"],
            "event": row["event_kind"], "version": row["version"]}
    if row["outcome"] == "rejected":
        body.update({"code": row["code"], "detail": row["detail"] or ""})
    return body
