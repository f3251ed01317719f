"""iteration reports keep busy time and energy, so any replica's closed loop reads every rank's reports

Revision ID: 0010_report_busy
Revises: 0006_power_cap
Create Date: 2026-11-30 14:20:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010_report_busy'
down_revision: Union[str, Sequence[str], None] = '0006_power_cap'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = 'scheduler_iteration_reports'


def upgrade() -> None:
    """Upgrade schema: earlier reports read as reports without busy time (the closed loop skips them)."""
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.add_column(sa.Column('busy_time', sa.Float(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('busy_energy', sa.Float(), server_default='0', nullable=False))


def downgrade() -> None:
    """Downgrade schema: the busy fields are dropped."""
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_column('busy_energy')
        batch_op.drop_column('busy_time')
