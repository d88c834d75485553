"""The transfer relay: the leg a transfer outcome calls for, produced in the transaction that decided it.

A `TransferDebited` calls for the credit leg on the destination's partition; a `TransferCreditRejected` for
the refund leg on the source's. Both go to `wallet.transfer-legs` under ids derived from the transfer and the
time of the event calling for them (app/identity.py), so a leg published twice is applied once. docs/DESIGN.md
section 2 says why the relay is not a separate agent.
"""

from __future__ import annotations

from app import identity
from app.domain import commands as c
from app.domain import events as e


def leg_for(event: e.EventBase) -> c.CommandBase | None:
    """The transfer leg `event` calls for, or None."""
    if isinstance(event, e.TransferDebited):
        return c.TransferCredit(
            command_id=identity.credit_command_id(event.wallet_id, event.transfer_id, event.timestamp_ms),
            wallet_id=event.destination_wallet_id, timestamp_ms=event.timestamp_ms, transfer_id=event.transfer_id,
            source_wallet_id=event.wallet_id, amount_minor=event.amount_minor, currency=event.currency)
    if isinstance(event, e.TransferCreditRejected):
        return c.TransferRefund(
            command_id=identity.refund_command_id(event.source_wallet_id, event.transfer_id, event.timestamp_ms),
            wallet_id=event.source_wallet_id, timestamp_ms=event.timestamp_ms, transfer_id=event.transfer_id,
            destination_wallet_id=event.wallet_id, amount_minor=event.amount_minor, currency=event.currency,
            reason_code=event.code)
    return None
