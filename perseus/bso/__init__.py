"""Batch size optimizer for recurring training jobs.

Pruning exploration then Gaussian Thompson sampling (after Zeus, NSDI '23), served over gRPC with
its state in the Perseus database. Pure policy: :mod:`perseus.bso.search`, :mod:`perseus.bso.pruning`,
:mod:`perseus.bso.bandit`. Edges: :mod:`perseus.bso.store` (database transactions), :mod:`perseus.bso.service` (gRPC), :mod:`perseus.bso.client`,
:mod:`perseus.bso.simulator` (trace-driven), :mod:`perseus.bso.hparam` (hyperparameter profiler).
Heavy dependencies (grpc, sqlalchemy) are imported only by the edge modules.
"""

from perseus.bso.spec import JobSpec

__all__ = ["JobSpec"]
