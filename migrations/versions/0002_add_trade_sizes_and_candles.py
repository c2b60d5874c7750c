"""Add the trade size to the log, and the candles rolled up from it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Additive only: the previous version still runs against this schema during a
rolling upgrade (it writes no size, and never reads the candles).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Old rows keep no size: the source gave none.
    with op.batch_alter_table("ticks") as batch:
        batch.add_column(sa.Column("size", sa.String(length=40), nullable=True))
    op.create_table(
        "candles",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.String(length=40), nullable=False),
        sa.Column("high", sa.String(length=40), nullable=False),
        sa.Column("low", sa.String(length=40), nullable=False),
        sa.Column("close", sa.String(length=40), nullable=False),
        sa.Column("volume", sa.String(length=80), nullable=False),
        sa.Column("ticks", sa.BigInteger(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("open_ts", sa.BigInteger(), nullable=False),
        sa.Column("open_id", sa.BigInteger(), nullable=False),
        sa.Column("close_ts", sa.BigInteger(), nullable=False),
        sa.Column("close_id", sa.BigInteger(), nullable=False),
        sa.Column("high_id", sa.BigInteger(), nullable=False),
        sa.Column("low_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "width", "start", name=op.f("pk_candles")),
    )
    # Retention deletes by width and age, across symbols.
    op.create_index(op.f("ix_candles_width_start"), "candles", ["width", "start"])


def downgrade() -> None:
    op.drop_index(op.f("ix_candles_width_start"), table_name="candles")
    op.drop_table("candles")
    # SQLite rebuilds the table to drop a column: keep AUTOINCREMENT in the copy.
    with op.batch_alter_table("ticks", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("size")
