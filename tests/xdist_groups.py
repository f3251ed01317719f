"""How ``bash run.sh test`` spreads the suite over two pytest workers (pytest-xdist, ``--dist loadgroup``).

Worker tests start the launcher: torchrun and two to five processes pacing simulated GPUs, and several
check what those GPUs measured. They form one group that runs on one pytest worker, one test at a time
(never two launcher trees at once), while the other worker takes the rest of the suite, test by test.

xdist's own ``loadgroup`` reads ``xdist_group`` marks by renaming test ids, which pytest 9 no longer
allows (the marks are silently ignored), so the group is named here, by folder, through xdist's
``pytest_xdist_make_scheduler`` hook.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

SERIAL = ("tests/workers/",)
"""Test id prefixes whose tests run one at a time on one pytest worker."""


class SerialGroupScheduling(LoadScopeScheduling):
    """xdist's ``loadscope`` with one scope per :data:`SERIAL` prefix and one scope per test elsewhere.

    Scopes go out largest first (xdist's default reordering), so the serial group starts at once and
    the other worker balances around it.
    """

    def _split_scope(self, nodeid: str) -> str:
        return next((prefix for prefix in SERIAL if nodeid.startswith(prefix)), nodeid)
