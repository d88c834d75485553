"""Command and transfer ids up to 255 characters.

Internal command ids name their cause (`~credit/<source_wallet_id>/<transfer_id>`, app/identity.py), at most
201 characters, more than the 160 the first revision allowed.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (("ledger_entries", "command_id", "NOT NULL"), ("ledger_entries", "transfer_id", "NULL"),
           ("transfers", "transfer_id", "NOT NULL"), ("command_outcomes", "command_id", "NOT NULL"))


def upgrade() -> None:
    for table, column, nullable in COLUMNS:
        op.execute(f"ALTER TABLE {table} MODIFY {column} VARCHAR(255) "
                   f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {nullable}")


def downgrade() -> None:
    for table, column, nullable in COLUMNS:
        op.execute(f"ALTER TABLE {table} MODIFY {column} VARCHAR(160) "
                   f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {nullable}")
