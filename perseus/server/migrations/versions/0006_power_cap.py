"""cluster power cap: the cap row, per-job weight and the plan the cap chose

Revision ID: 0006_power_cap
Revises: 0005_closed_loop
Create Date: 2026-11-30 10:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006_power_cap'
down_revision: Union[str, Sequence[str], None] = '0005_closed_loop'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: existing jobs get weight 1 and no cap plan."""
    op.create_table(
        'cluster_power_cap',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('watts', sa.Float(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('status_json', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('scheduler_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weight', sa.Float(), server_default='1.0', nullable=False))
        batch_op.add_column(sa.Column('cap_plan_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema: the cap and the weights are dropped."""
    with op.batch_alter_table('scheduler_jobs', schema=None) as batch_op:
        batch_op.drop_column('cap_plan_id')
        batch_op.drop_column('weight')
    op.drop_table('cluster_power_cap')
