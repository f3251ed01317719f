"""gRPC servicer of the batch size optimizer (``perseus.v1.BatchSizeOptimizer``).

Mount it on any ``grpc.server``::

    servicer = BatchSizeOptimizerServicer(session_factory)
    add_to_server(servicer, server)

The servicer keeps no state in memory: every call is one database transaction (see
:mod:`perseus.bso.store`), so any number of replicas can serve the same jobs from one PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import grpc
from sqlalchemy.orm import Session

from perseus.bso.convert import spec_from_proto, spec_to_proto
from perseus.bso.store import BsoStore, ConflictError, NotFoundError
from perseus.errors import InputError
from perseus.v1 import bso_pb2, bso_pb2_grpc


def _abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, NotFoundError):
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, InputError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, ConflictError):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    raise exc


class BatchSizeOptimizerServicer(bso_pb2_grpc.BatchSizeOptimizerServicer):
    """Serves the batch size optimizer from the database behind ``session_factory``.

    Args:
        session_factory: Makes a new SQLAlchemy session (e.g. ``sessionmaker(engine)``); the tables
            are :mod:`perseus.bso.models` and must exist (Alembic migration or ``create_all``).
        clock: Seconds since the epoch, for trial leases.
    """

    def __init__(self, session_factory: Callable[[], Session], clock: Callable[[], float] = time.time) -> None:
        self.store = BsoStore(session_factory, clock=clock)

    def RegisterJob(self, request: bso_pb2.RegisterJobRequest, context: grpc.ServicerContext) -> bso_pb2.RegisterJobResponse:
        try:
            spec, created = self.store.register(spec_from_proto(request.spec))
        except (InputError, ConflictError) as exc:
            _abort(context, exc)
        return bso_pb2.RegisterJobResponse(spec=spec_to_proto(spec), created=created)

    def GetBatchSize(self, request: bso_pb2.GetBatchSizeRequest, context: grpc.ServicerContext) -> bso_pb2.TrialAssignment:
        try:
            got = self.store.start_trial(request.job_id)
        except NotFoundError as exc:
            _abort(context, exc)
        return bso_pb2.TrialAssignment(
            job_id=got.job_id, trial_number=got.trial_number, batch_size=got.batch_size,
            kind=got.kind.value, lease_seconds=got.lease_seconds,
        )  # fmt: skip

    def ReportEpoch(self, request: bso_pb2.ReportEpochRequest, context: grpc.ServicerContext) -> bso_pb2.ReportEpochResponse:
        try:
            answer = self.store.report_epoch(
                request.job_id, request.trial_number, request.epoch, request.time, request.energy, request.metric
            )
        except (NotFoundError, InputError) as exc:
            _abort(context, exc)
        return bso_pb2.ReportEpochResponse(decision=bso_pb2.Decision.Name(answer.decision.value), cost=answer.cost, message=answer.message)

    def EndTrial(self, request: bso_pb2.EndTrialRequest, context: grpc.ServicerContext) -> bso_pb2.EndTrialResponse:
        try:
            status = self.store.end_trial(request.job_id, request.trial_number, request.failed, request.reason)
        except NotFoundError as exc:
            _abort(context, exc)
        return bso_pb2.EndTrialResponse(status=status)

    def GetJob(self, request: bso_pb2.GetJobRequest, context: grpc.ServicerContext) -> bso_pb2.JobState:
        try:
            view = self.store.job_view(request.job_id)
        except NotFoundError as exc:
            _abort(context, exc)
        return bso_pb2.JobState(
            spec=spec_to_proto(view.spec),
            phase=view.phase,
            survivors=list(view.survivors),
            has_best=view.best_cost is not None,
            best_cost=view.best_cost or 0.0,
            best_batch_size=view.best_batch_size or 0,
            trials=[
                bso_pb2.TrialState(
                    trial_number=t.trial_number, batch_size=t.batch_size, kind=t.kind, status=t.status,
                    epochs=t.epochs, time=t.time, energy=t.energy, cost=t.cost, reason=t.reason,
                )
                for t in view.trials
            ],
        )


def add_to_server(servicer: BatchSizeOptimizerServicer, server: grpc.Server) -> None:
    """Register the servicer on a gRPC server."""
    bso_pb2_grpc.add_BatchSizeOptimizerServicer_to_server(servicer, server)
