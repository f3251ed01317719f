"""closed loop: straggler source (manual or auto) and a job's drift state

Revision ID: 0005_closed_loop
Revises: 0004_report_clocks
Create Date: 2026-11-30 10:45:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005_closed_loop'
down_revision: Union[str, Sequence[str], None] = '0004_report_clocks'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: existing stragglers were reported by hand; existing jobs have not drifted."""
    with op.batch_alter_table('scheduler_stragglers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), server_default='manual', nullable=False))
    with op.batch_alter_table('scheduler_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drift_json', sa.Text(), server_default='{}', nullable=False))


def downgrade() -> None:
    """Downgrade schema: automatic stragglers are forgotten."""
    op.execute("DELETE FROM scheduler_stragglers WHERE source = 'auto'")
    with op.batch_alter_table('scheduler_jobs', schema=None) as batch_op:
        batch_op.drop_column('drift_json')
    with op.batch_alter_table('scheduler_stragglers', schema=None) as batch_op:
        batch_op.drop_column('source')
