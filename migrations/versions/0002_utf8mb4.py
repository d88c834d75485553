"""Every table in utf8mb4 with binary collation.

The first revision took the server's default (latin1, case-insensitive): a text outside Latin-1 (an
owner id in Greek, an emoji in a reference) could not be stored, which stalled the sink, and ids that
differ only in case ("Alice", "alice") collided in primary keys although they name different wallets.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("wallets", "ledger_entries", "transfers", "command_outcomes")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET latin1 COLLATE latin1_swedish_ci")
