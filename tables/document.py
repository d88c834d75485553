"""The contract of the processor's table view: its path and the wallet document it answers.

The worker serves it (agents/table_view.py); the API reads it for strong reads (web/reads.py).
"""

from __future__ import annotations

TABLE_PATH = "/internal/v1/wallets/{wallet_id}"


def wallet_document(state) -> dict[str, object]:
    """A wallet state as the table view sends it (amounts in minor units)."""
    return {"wallet_id": state.wallet_id, "owner_id": state.owner_id, "currency": state.currency,
            "status": state.status, "balance_minor": state.balance_minor,
            "available_minor": state.available_minor, "held_minor": state.held_minor, "version": state.version}
