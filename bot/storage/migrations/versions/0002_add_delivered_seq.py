"""add conversations.delivered_seq

Channels without push (the REST webhook) record here the last message the user received, instead of
one connector_state row per conversation, so that a turn reads and writes it with the conversation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 00:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

REST_PREFIX = "rest:delivered:"


def upgrade() -> None:
    with op.batch_alter_table('conversations') as batch:
        batch.add_column(sa.Column('delivered_seq', sa.Integer(), nullable=False, server_default='0'))
    # What existed before counts as delivered, except for REST conversations, which carry their own mark.
    op.execute("UPDATE conversations SET delivered_seq = last_seq")
    op.execute(
        "UPDATE conversations SET delivered_seq = ("
        " SELECT CAST(value AS INTEGER) FROM connector_state"
        f" WHERE connector_state.key = '{REST_PREFIX}' || conversations.id)"
        f" WHERE EXISTS (SELECT 1 FROM connector_state WHERE connector_state.key = '{REST_PREFIX}' || conversations.id)"
    )
    op.execute(f"DELETE FROM connector_state WHERE key LIKE '{REST_PREFIX}%'")


def downgrade() -> None:
    op.execute(
        "INSERT INTO connector_state (key, value, updated_at)"
        f" SELECT '{REST_PREFIX}' || id, CAST(delivered_seq AS TEXT), last_active_at FROM conversations WHERE channel = 'rest'"
    )
    with op.batch_alter_table('conversations') as batch:
        batch.drop_column('delivered_seq')
