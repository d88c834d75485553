"""One `transfers` row per transfer: the key is (transfer_id, source_wallet_id, debited_at_ms).

A transfer id is unique per source wallet's partition while the processor remembers it, not globally and not
for ever: keyed by the id alone, two transfers under one id (two sources, or one id reused after the
retention) shared a row. `debited_at_ms` is the debit's time (readside/readmodel.py transfer_row). An
existing row gets it from `created_at_ms` (the debit's time, written by the debit); a row the debit has not
reached yet (NULL: its credit was projected first) gets it from its credit's id in `ledger_entries`
(`~credit/<source>/<transfer>:<debited_at_ms>`, app/identity.py), and failing that 0,
readside.readmodel.DEBITED_AT_UNKNOWN_MS, where the sink puts a leg that finds no debit. Two transfers that
already share a row stay one row: what the row holds cannot be split.

The downgrade restores the key on `transfer_id` alone: it keeps, of the rows sharing an id, the one debited
last (what GET /v1/transfers/{id} answers) and deletes the others.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE transfers ADD COLUMN debited_at_ms BIGINT NOT NULL DEFAULT 0 AFTER source_wallet_id")
    op.execute("UPDATE transfers SET debited_at_ms = COALESCE(created_at_ms, 0)")
    prefix = "CONCAT('~credit/', t.source_wallet_id, '/', t.transfer_id, ':')"
    named = f"SUBSTRING(credit.command_id, CHAR_LENGTH({prefix}) + 1)"
    op.execute(
        "UPDATE transfers AS t JOIN ledger_entries AS credit ON credit.wallet_id = t.destination_wallet_id "
        "AND credit.kind = 'TransferCredited' AND credit.transfer_id = t.transfer_id "
        f"AND LEFT(credit.command_id, CHAR_LENGTH({prefix})) = {prefix} AND {named} REGEXP '^[0-9]{{1,19}}$' "
        f"SET t.debited_at_ms = CAST({named} AS UNSIGNED) WHERE t.created_at_ms IS NULL")
    # One statement: the table is never without a key, and the default goes (the sink always names the debit).
    op.execute("ALTER TABLE transfers ALTER COLUMN debited_at_ms DROP DEFAULT, DROP PRIMARY KEY, "
               "ADD PRIMARY KEY (transfer_id, source_wallet_id, debited_at_ms)")


def downgrade() -> None:
    op.execute("DELETE older FROM transfers AS older JOIN transfers AS newer ON newer.transfer_id = older.transfer_id "
               "AND (newer.debited_at_ms, newer.source_wallet_id) > (older.debited_at_ms, older.source_wallet_id)")
    op.execute("ALTER TABLE transfers DROP PRIMARY KEY, ADD PRIMARY KEY (transfer_id), DROP COLUMN debited_at_ms")
