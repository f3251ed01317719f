"""training runs: iteration reports keyed by (job, run, rank, iteration)

Revision ID: 0003_runs
Revises: 0002_bso
Create Date: 2026-11-30 07:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003_runs'
down_revision: Union[str, Sequence[str], None] = '0002_bso'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = 'scheduler_iteration_reports'
# 0001 left the (job_id, rank, iteration) constraint unnamed: PostgreSQL named it itself, SQLite
# reflects it without a name, and batch mode names it through this convention.
NAMING = {'uq': 'uq_%(table_name)s_%(column_0_N_name)s'}


def _old_constraint() -> str:
    if op.get_bind().dialect.name == 'postgresql':
        return 'scheduler_iteration_reports_job_id_rank_iteration_key'
    return 'uq_scheduler_iteration_reports_job_id_rank_iteration'


def upgrade() -> None:
    """Upgrade schema: existing reports become run '' (clients that predate runs keep using it)."""
    with op.batch_alter_table(TABLE, schema=None, naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.String(length=64), server_default='', nullable=False))
        batch_op.drop_constraint(_old_constraint(), type_='unique')
        batch_op.create_unique_constraint('uq_scheduler_iteration_run', ['job_id', 'run_id', 'rank', 'iteration'])


def downgrade() -> None:
    """Downgrade schema: of reports that differ only by run, the first one stays."""
    op.execute(f'DELETE FROM {TABLE} WHERE id NOT IN '
               f'(SELECT keep FROM (SELECT MIN(id) AS keep FROM {TABLE} GROUP BY job_id, rank, iteration) AS firsts)')
    with op.batch_alter_table(TABLE, schema=None, naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint('uq_scheduler_iteration_run', type_='unique')
        batch_op.create_unique_constraint(_old_constraint(), ['job_id', 'rank', 'iteration'])
        batch_op.drop_column('run_id')
