"""Cascade endpoints learn their thresholds from rows of labels: each label also carries the
step's signal score and the row's sampling weight (both NULL for a routed endpoint's labels).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("score", sa.Float))
        batch.add_column(sa.Column("weight", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("weight")
        batch.drop_column("score")
