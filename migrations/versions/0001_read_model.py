"""The read model: wallets, ledger_entries, transfers, command_outcomes.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("wallet_id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(1024), nullable=False, server_default=""),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"),
        sa.Column("balance_minor", sa.BigInteger, nullable=False),
        sa.Column("available_minor", sa.BigInteger, nullable=False),
        sa.Column("held_minor", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "ledger_entries",
        sa.Column("wallet_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("command_id", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("balance_after_minor", sa.BigInteger, nullable=False),
        sa.Column("available_after_minor", sa.BigInteger, nullable=False),
        sa.Column("held_after_minor", sa.BigInteger, nullable=False),
        sa.Column("counterparty_wallet_id", sa.String(64), nullable=True),
        sa.Column("transfer_id", sa.String(160), nullable=True),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("reference", sa.String(1024), nullable=False, server_default=""),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("event_time_ms", sa.BigInteger, nullable=False),
        mysql_engine="InnoDB",
    )
    # Balance at a time: the last entry of a wallet at or before a time.
    op.create_index("ix_ledger_entries_wallet_time", "ledger_entries", ["wallet_id", "event_time_ms", "version"])
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(160), primary_key=True),
        sa.Column("source_wallet_id", sa.String(64), nullable=False),
        sa.Column("destination_wallet_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger, nullable=True),
        sa.Column("completed_at_ms", sa.BigInteger, nullable=True),
        sa.Column("refunded_at_ms", sa.BigInteger, nullable=True),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "command_outcomes",
        sa.Column("command_id", sa.String(160), primary_key=True),
        sa.Column("wallet_id", sa.String(64), nullable=False),
        sa.Column("event_kind", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False, server_default=""),
        sa.Column("event_time_ms", sa.BigInteger, nullable=False),
        mysql_engine="InnoDB",
    )
    op.create_index("ix_command_outcomes_wallet", "command_outcomes", ["wallet_id"])


def downgrade() -> None:
    for table in ("command_outcomes", "transfers", "ledger_entries", "wallets"):
        op.drop_table(table)
