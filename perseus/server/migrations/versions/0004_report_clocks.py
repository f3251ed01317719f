"""iteration reports carry what the GPU did: measure-only, read-back clock, planned-clock counts

Revision ID: 0004_report_clocks
Revises: 0003_runs
Create Date: 2026-11-30 10:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004_report_clocks'
down_revision: Union[str, Sequence[str], None] = '0003_runs'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = 'scheduler_iteration_reports'


def upgrade() -> None:
    """Upgrade schema: earlier reports read as controlled runs with nothing read back (0 MHz, no plan counts)."""
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.add_column(sa.Column('measure_only', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('clock_mhz', sa.Float(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('planned_instructions', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('at_planned_clock', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    """Downgrade schema: the read-back fields are dropped."""
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_column('at_planned_clock')
        batch_op.drop_column('planned_instructions')
        batch_op.drop_column('clock_mhz')
        batch_op.drop_column('measure_only')
